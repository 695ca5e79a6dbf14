//! [`MoeLm`] → HF checkpoint directory in the Hub layout (one tensor per expert), which
//! transformers 4 and 5 both load: `config.json`, `generation_config.json`,
//! `model.safetensors` (or shards + `model.safetensors.index.json`), and the tokenizer files
//! when given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use serde_json::{json, Value};
use switchyard_core::expert::ExpertLayout;
use switchyard_core::ExpertSpec;
use switchyard_models::ffn::Ffn;
use switchyard_models::MoeLm;

use crate::arch::HfArch;
use crate::error::{InteropError, Result};
use crate::hf_config::{check_representable, hf_config_from_lm, infer_arch, SpecialIds};
use crate::import::{ImportedModel, CONFIG_FILE, INDEX_FILE, SINGLE_FILE, TOKENIZER_FILE};
use crate::names::{mapping, Source};

/// Shard size at which `export` starts a new file (transformers' default is 5 GB).
pub const DEFAULT_MAX_SHARD_BYTES: usize = 4 << 30;
const GENERATION_CONFIG_FILE: &str = "generation_config.json";
const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// A `tokenizer.json` to copy (with the `tokenizer_config.json` next to it, if any).
    pub tokenizer_json: Option<PathBuf>,
    pub special_ids: SpecialIds,
    pub max_shard_bytes: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            tokenizer_json: None,
            special_ids: SpecialIds::default(),
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        }
    }
}

/// What [`export`] wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    pub arch: HfArch,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub tensors: usize,
}

/// Exports with default options; `arch: None` picks the first architecture that represents
/// the model exactly ([`infer_arch`]).
pub fn export(model: &MoeLm, arch: Option<HfArch>, dir: impl AsRef<Path>) -> Result<ExportReport> {
    export_with(model, arch, dir, &ExportOptions::default())
}

/// Exports an imported model back to its own architecture, with its tokenizer and special ids.
pub fn export_imported(m: &ImportedModel, dir: impl AsRef<Path>) -> Result<ExportReport> {
    let opts = ExportOptions {
        tokenizer_json: m.tokenizer.as_ref().map(|t| t.path.clone()),
        special_ids: m.special_ids,
        ..Default::default()
    };
    export_with(&m.model, Some(m.arch), dir, &opts)
}

/// The architecture to export `model` as: `arch`, checked, or the first that fits.
pub fn resolve_arch(model: &MoeLm, arch: Option<HfArch>) -> Result<HfArch> {
    match arch {
        Some(a) => check_representable(a, &model.cfg)
            .map(|_| a)
            .map_err(|problems| InteropError::NotRepresentable {
                arch: a.to_string(),
                problems,
            }),
        None => infer_arch(&model.cfg).ok_or_else(|| {
            let problems = HfArch::ALL
                .iter()
                .map(|&a| {
                    format!(
                        "{a}: {}",
                        check_representable(a, &model.cfg).unwrap_err().join(", ")
                    )
                })
                .collect();
            InteropError::NotRepresentable {
                arch: "any supported architecture".into(),
                problems,
            }
        }),
    }
}

pub fn export_with(
    model: &MoeLm,
    arch: Option<HfArch>,
    dir: impl AsRef<Path>,
    opts: &ExportOptions,
) -> Result<ExportReport> {
    let dir = dir.as_ref();
    let arch = resolve_arch(model, arch)?;
    let cfg = &model.cfg;
    let config = hf_config_from_lm(arch, cfg, opts.special_ids)?;
    let tensors = hf_tensors(model, arch)?;
    std::fs::create_dir_all(dir).map_err(InteropError::io(dir))?;
    remove_stale_weights(dir)?;

    let mut files = write_shards(dir, &tensors, opts.max_shard_bytes.max(1))?;
    let write_json = |name: &str, v: &Value| -> Result<PathBuf> {
        let p = dir.join(name);
        let text = serde_json::to_string_pretty(v).expect("JSON values serialise") + "\n";
        std::fs::write(&p, text).map_err(InteropError::io(&p))?;
        Ok(p)
    };
    files.push(write_json(CONFIG_FILE, &config)?);
    let ids = opts.special_ids;
    let gen = json!({ "bos_token_id": ids.bos, "eos_token_id": ids.eos, "pad_token_id": ids.pad });
    files.push(write_json(GENERATION_CONFIG_FILE, &gen)?);
    if let Some(src) = &opts.tokenizer_json {
        let copy = |from: &Path, name: &str| -> Result<PathBuf> {
            let to = dir.join(name);
            if from != to {
                std::fs::copy(from, &to).map_err(InteropError::io(from))?;
            }
            Ok(to)
        };
        files.push(copy(src, TOKENIZER_FILE)?);
        let tc = src.with_file_name(TOKENIZER_CONFIG_FILE);
        if tc.is_file() {
            files.push(copy(&tc, TOKENIZER_CONFIG_FILE)?);
        }
    }
    Ok(ExportReport {
        arch,
        dir: dir.into(),
        files,
        tensors: tensors.len(),
    })
}

/// Every HF tensor of `model` as `arch`, by name.
pub fn hf_tensors(model: &MoeLm, arch: HfArch) -> Result<BTreeMap<String, Tensor>> {
    let map = mapping(arch, &model.cfg);
    let vars: BTreeMap<String, Var> = model.named_vars().into_iter().collect();
    let get = |name: &str| -> Result<Tensor> {
        vars.get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| InteropError::Unsupported {
                arch: arch.to_string(),
                what: format!("the model has no parameter `{name}`"),
                hint: Some("its config and parameters disagree".into()),
            })
    };
    let mut out = BTreeMap::new();
    for e in &map.params {
        match &e.source {
            Source::Direct { hf, shape } => {
                let t = get(&e.ours)?;
                if t.dims() != shape.as_slice() {
                    return Err(InteropError::ShapeMismatch {
                        name: e.ours.clone(),
                        expected: shape.clone(),
                        found: t.dims().to_vec(),
                    });
                }
                out.insert(hf.clone(), t);
            }
            Source::Experts { experts, d_model } => {
                let d = *d_model;
                let packed = get(&e.ours)?;
                let specs: Vec<ExpertSpec> = experts
                    .iter()
                    .map(|(_, h)| ExpertSpec::swiglu(*h))
                    .collect();
                let layout = ExpertLayout::new(d, &specs);
                if packed.dims() != [layout.total] {
                    return Err(InteropError::ShapeMismatch {
                        name: e.ours.clone(),
                        expected: vec![layout.total],
                        found: packed.dims().to_vec(),
                    });
                }
                for ((names, h), slot) in experts.iter().zip(&layout.slots) {
                    let mat = |at: usize| -> Result<Tensor> {
                        Ok(packed.narrow(0, at, h * d)?.reshape((*h, d))?)
                    };
                    let w3 = slot.w3.expect("SwiGLU experts have w3");
                    out.insert(names[0].clone(), mat(slot.w1)?);
                    out.insert(names[1].clone(), mat(w3)?);
                    // torch: down_proj.weight [d, h] = w2t.T
                    out.insert(names[2].clone(), mat(slot.w2t)?.t()?.contiguous()?);
                }
            }
        }
    }
    for b in &map.buffers {
        let Ffn::Moe(layer) = &model.layers[b.layer].ffn else {
            unreachable!("buffers belong to MoE layers")
        };
        let values = layer
            .router
            .buffers()
            .into_iter()
            .find(|(n, _)| n == b.name)
            .map(|(_, v)| v)
            .ok_or_else(|| InteropError::Unsupported {
                arch: arch.to_string(),
                what: format!("layer {}'s router has no buffer `{}`", b.layer, b.name),
                hint: Some("its config and router disagree".into()),
            })?;
        out.insert(
            b.hf.clone(),
            Tensor::from_vec(values, b.len, &candle_core::Device::Cpu)?,
        );
    }
    Ok(out)
}

/// Weight files an earlier export may have left (other shard counts).
fn remove_stale_weights(dir: &Path) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(InteropError::io(dir))?;
    for entry in rd.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let shard =
            name.starts_with("model-") && name.contains("-of-") && name.ends_with(".safetensors");
        if shard || name == SINGLE_FILE || name == INDEX_FILE {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(InteropError::io(&p))?;
        }
    }
    Ok(())
}

/// One `model.safetensors`, or `model-0000i-of-0000n.safetensors` + index when the tensors
/// exceed `max_bytes`.
fn write_shards(
    dir: &Path,
    tensors: &BTreeMap<String, Tensor>,
    max_bytes: usize,
) -> Result<Vec<PathBuf>> {
    let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
    let mut groups: Vec<Vec<(&String, &Tensor)>> = vec![Vec::new()];
    let mut size = 0;
    for (name, t) in tensors {
        let last = groups.last_mut().expect("non-empty");
        if size + bytes(t) > max_bytes && !last.is_empty() {
            groups.push(Vec::new());
            size = 0;
        }
        groups.last_mut().expect("non-empty").push((name, t));
        size += bytes(t);
    }
    let n = groups.len();
    let metadata: Option<std::collections::HashMap<String, String>> =
        Some([("format".to_string(), "pt".to_string())].into());
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    for (i, g) in groups.iter().enumerate() {
        let name = if n == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
        };
        let path = dir.join(&name);
        let data: Vec<(String, Tensor)> = g
            .iter()
            .map(|(k, t)| ((*k).clone(), (*t).clone()))
            .collect();
        safetensors::serialize_to_file(data, metadata.clone(), &path).map_err(|e| {
            InteropError::Safetensors {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        for (k, _) in g {
            weight_map.insert((*k).clone(), json!(name));
        }
        files.push(path);
    }
    if n > 1 {
        let total: usize = tensors.values().map(bytes).sum();
        let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let p = dir.join(INDEX_FILE);
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&index).expect("JSON") + "\n",
        )
        .map_err(InteropError::io(&p))?;
        files.push(p);
    }
    Ok(files)
}
