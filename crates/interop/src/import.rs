//! HF checkpoint directory → [`MoeLm`].
//!
//! The shards are memory-mapped (candle's `MmapedSafetensors`); each Switchyard parameter is
//! converted to f32 straight from the mapping, one at a time, and handed to the model as it
//! is built (the parameter store is pre-filled, so nothing is randomly initialised first).
//! Peak memory is the converted model plus one packed expert bank in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_io::non_finite;
use switchyard_models::ffn::Ffn;
use switchyard_models::{check_memory, Job, LmConfig, MoeLm};

use crate::arch::HfArch;
use crate::error::{InteropError, Result};
use crate::hf_config::{detect_arch, lm_config_from_hf, read_json, SpecialIds};
use crate::names::{ignorable, mapping, Mapping, Source};
use crate::tokenizer::HfTokenizer;

pub const CONFIG_FILE: &str = "config.json";
pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const SINGLE_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A model read from an HF checkpoint directory.
pub struct ImportedModel {
    pub model: MoeLm,
    /// The store holding the model's parameters (for checkpoints and optimisers).
    pub store: ParamStore,
    pub cfg: LmConfig,
    pub arch: HfArch,
    /// `tokenizer.json` of the directory, when it has one.
    pub tokenizer: Option<HfTokenizer>,
    /// The source `config.json`, verbatim.
    pub hf_config: Value,
    pub special_ids: SpecialIds,
    pub source_dir: PathBuf,
}

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Refuse a model whose f32 weights (from its config, before any tensor is read) exceed
    /// the memory available ([`switchyard_models::memory`]) instead of letting the process be
    /// killed mid-way.
    pub check_memory: bool,
    pub load_tokenizer: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            check_memory: true,
            load_tokenizer: true,
        }
    }
}

/// [`import_with`] with the default options.
pub fn import(dir: impl AsRef<Path>) -> Result<ImportedModel> {
    import_with(dir, &ImportOptions::default())
}

/// Reads `config.json`, the safetensors shard(s) and `tokenizer.json` of an HF checkpoint.
pub fn import_with(dir: impl AsRef<Path>, opts: &ImportOptions) -> Result<ImportedModel> {
    let dir = dir.as_ref();
    let config_path = dir.join(CONFIG_FILE);
    let hf_config = read_json(&config_path)?;
    let arch = detect_arch(&hf_config, &config_path)?;
    let cfg = lm_config_from_hf(arch, &hf_config, &config_path)?;
    if opts.check_memory {
        // before the tensor mapping, whose size grows with the config too
        check_memory(&cfg, Job::Load)?;
    }
    let map = mapping(arch, &cfg);
    let shards = Shards::open(dir)?;
    check_tensors(&shards, &map, arch, &cfg)?;

    let store = ParamStore::new();
    for entry in &map.params {
        let t = match &entry.source {
            Source::Direct { hf, shape } => shards.load(hf, shape)?,
            Source::Experts { experts, d_model } => {
                let mut parts = Vec::with_capacity(3 * experts.len());
                for ([gate, up, down], h) in experts {
                    parts.push(shards.load(gate, &[*h, *d_model])?.flatten_all()?);
                    parts.push(shards.load(up, &[*h, *d_model])?.flatten_all()?);
                    // stored transposed so each expert's block is contiguous
                    parts.push(
                        shards
                            .load(down, &[*d_model, *h])?
                            .t()?
                            .contiguous()?
                            .flatten_all()?,
                    );
                }
                Tensor::cat(&parts, 0)?
            }
        };
        store.insert(&entry.ours, Var::from_tensor(&t)?);
    }
    let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
    let mut model = MoeLm::new(&pb, &cfg)?;
    let mapped: BTreeSet<&str> = map.params.iter().map(|e| e.ours.as_str()).collect();
    if let Some((name, _)) = store
        .all()
        .into_iter()
        .find(|(n, _)| !mapped.contains(n.as_str()))
    {
        return Err(InteropError::Unsupported {
            arch: arch.to_string(),
            what: format!("parameter `{name}` has no source in the checkpoint mapping"),
            hint: Some("this is a bug in switchyard-interop's names.rs".into()),
        });
    }
    for b in &map.buffers {
        let values = shards.load(&b.hf, &[b.len])?.to_vec1::<f32>()?;
        let Ffn::Moe(layer) = &mut model.layers[b.layer].ffn else {
            unreachable!("buffers belong to MoE layers")
        };
        layer.router.load_buffer(b.name, &values)?;
    }
    let tokenizer = match (opts.load_tokenizer, dir.join(TOKENIZER_FILE)) {
        (true, p) if p.is_file() => Some(HfTokenizer::from_dir(dir)?),
        _ => None,
    };
    Ok(ImportedModel {
        model,
        store,
        cfg,
        arch,
        tokenizer,
        special_ids: SpecialIds::from_config(&hf_config),
        hf_config,
        source_dir: dir.into(),
    })
}

/// The memory-mapped shards of a checkpoint and the shape and dtype of every tensor.
pub struct Shards {
    st: MmapedSafetensors,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub tensors: BTreeMap<String, (Vec<usize>, safetensors::Dtype)>,
}

impl Shards {
    /// `model.safetensors.index.json` and the shards it lists (each must exist), else
    /// `model.safetensors`, else every `model*.safetensors` in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let files = if index.is_file() {
            let v = read_json(&index)?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| InteropError::Config {
                    path: index.clone(),
                    key: "weight_map".into(),
                    reason: "required: an object from tensor name to shard file".into(),
                })?;
            let names: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
            let mut files = Vec::with_capacity(names.len());
            for n in names {
                // a shard is a file inside the model directory: no absolute paths, no `..`
                let inside = Path::new(n)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !inside {
                    return Err(InteropError::Config {
                        path: index.clone(),
                        key: "weight_map".into(),
                        reason: format!(
                            "shard path `{n}` leaves the model directory; shards must be files \
                             inside {}",
                            dir.display()
                        ),
                    });
                }
                let p = dir.join(n);
                if !p.is_file() {
                    return Err(InteropError::MissingFile {
                        path: p,
                        listed_in: Some(index),
                    });
                }
                files.push(p);
            }
            files
        } else if dir.join(SINGLE_FILE).is_file() {
            vec![dir.join(SINGLE_FILE)]
        } else {
            let rd = std::fs::read_dir(dir).map_err(InteropError::io(dir))?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.starts_with("model") && name.ends_with(".safetensors")
                })
                .collect();
            files.sort();
            files
        };
        if files.is_empty() {
            return Err(InteropError::NoWeights { dir: dir.into() });
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on them
        // not being truncated while the import runs.
        let st =
            unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| InteropError::Safetensors {
                path: dir.into(),
                reason: e.to_string(),
            })?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, (v.shape().to_vec(), v.dtype())))
            .collect();
        Ok(Self {
            st,
            dir: dir.into(),
            files,
            tensors,
        })
    }

    /// One tensor as f32, checked against the shape the config implies and for NaN and
    /// infinity (refused, naming the tensor).
    pub fn load(&self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let (shape, _) = self
            .tensors
            .get(name)
            .ok_or_else(|| InteropError::MissingTensor {
                name: name.into(),
                dir: self.dir.clone(),
            })?;
        if shape != expected {
            return Err(InteropError::ShapeMismatch {
                name: name.into(),
                expected: expected.to_vec(),
                found: shape.clone(),
            });
        }
        let t = self
            .st
            .load(name, &Device::Cpu)
            .map_err(|e| InteropError::Safetensors {
                path: self.dir.clone(),
                reason: format!("`{name}`: {e}"),
            })?
            .to_dtype(DType::F32)?;
        if let Some(f) = non_finite(&t)? {
            return Err(InteropError::NonFinite {
                name: name.into(),
                dir: self.dir.clone(),
                count: f.count,
                first_index: f.first_index,
                first: f.first,
            });
        }
        Ok(t)
    }
}

/// Every needed tensor exists with the implied shape, and nothing else is left over.
fn check_tensors(shards: &Shards, map: &Mapping, arch: HfArch, cfg: &LmConfig) -> Result<()> {
    let expect = |name: &str, shape: &[usize]| -> Result<()> {
        match shards.tensors.get(name) {
            None => Err(InteropError::MissingTensor {
                name: name.into(),
                dir: shards.dir.clone(),
            }),
            Some((s, _)) if s != shape => Err(InteropError::ShapeMismatch {
                name: name.into(),
                expected: shape.to_vec(),
                found: s.clone(),
            }),
            Some(_) => Ok(()),
        }
    };
    for e in &map.params {
        match &e.source {
            Source::Direct { hf, shape } => expect(hf, shape)?,
            Source::Experts {
                experts,
                d_model: d,
            } => {
                for ([g, u, dn], h) in experts {
                    expect(g, &[*h, *d])?;
                    expect(u, &[*h, *d])?;
                    expect(dn, &[*d, *h])?;
                }
            }
        }
    }
    for b in &map.buffers {
        expect(&b.hf, &[b.len])?;
    }
    let used: BTreeSet<String> = map.hf_names().into_iter().collect();
    let unused: Vec<String> = shards
        .tensors
        .keys()
        .filter(|n| !used.contains(*n) && !ignorable(n, cfg.n_layers))
        .cloned()
        .collect();
    if !unused.is_empty() {
        return Err(InteropError::UnexpectedTensors {
            arch: arch.to_string(),
            dir: shards.dir.clone(),
            names: unused,
        });
    }
    Ok(())
}

/// Linux `MemAvailable` (shared with the checkpoint loader and the model-memory check).
pub use switchyard_io::mem_available_bytes;
