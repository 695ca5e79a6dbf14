//! Imported models as Switchyard checkpoint directories, and loading either kind of
//! directory.
//!
//! `save_checkpoint_dir` writes a run directory that `switchyard_train`'s checkpoint loader
//! reads (`latest` → `step-00000000/` with `model.safetensors`, an empty optimiser,
//! `config.json` holding a training config whose `model` is the imported [`LmConfig`], and
//! `state.json` with the router buffers), plus, next to `latest`:
//! - `tokenizer.json` (and `tokenizer_config.json`) copied from the HF directory;
//! - `hf_source.json`: the architecture, the special token ids and the source `config.json`,
//!   so `export` writes the same architecture back.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::{json, Value};
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_models::ffn::Ffn;
use switchyard_models::{LmConfig, MoeLm};
use switchyard_train::checkpoint::{
    load_checkpoint, restore_into, save_checkpoint, CheckpointContents, TrainState, STATE_FILE,
};

use crate::arch::HfArch;
use crate::error::{InteropError, Result};
use crate::hf_config::{detect_arch, read_json, SpecialIds};
use crate::import::{import, ImportedModel, CONFIG_FILE, INDEX_FILE, SINGLE_FILE, TOKENIZER_FILE};
use crate::tokenizer::HfTokenizer;

pub const HF_SOURCE_FILE: &str = "hf_source.json";
const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Training window written into the checkpoint's config (`data.seq_len`), capped at the
/// model's `max_seq_len`.
const DEFAULT_TRAIN_SEQ_LEN: usize = 128;

// Router buffers (e.g. V3's correction bias) are stored under the trainer's keys, so an
// import and a training run read and write them the same way.
use switchyard_train::trainer::restore::{buffer_key, router_buffers};

/// Writes `m` as a Switchyard run directory `out` (step 0); returns the step directory.
pub fn save_checkpoint_dir(m: &ImportedModel, out: &Path) -> Result<PathBuf> {
    let seq_len = DEFAULT_TRAIN_SEQ_LEN.min(m.cfg.max_seq_len);
    // a `switchyard_train::TrainConfig` in JSON; every key not given takes its default
    let config =
        json!({ "seed": 0, "run_dir": out, "model": m.cfg, "data": { "seq_len": seq_len } });
    let state = TrainState {
        buffers: router_buffers(&m.model),
        ..Default::default()
    };
    let contents = CheckpointContents {
        params: &m.store,
        optimizer: None,
        state,
        config,
    };
    let step_dir = save_checkpoint(out, 0, &contents)?;
    if let Some(t) = &m.tokenizer {
        std::fs::copy(&t.path, out.join(TOKENIZER_FILE)).map_err(InteropError::io(&t.path))?;
        let tc = t.path.with_file_name(TOKENIZER_CONFIG_FILE);
        if tc.is_file() {
            std::fs::copy(&tc, out.join(TOKENIZER_CONFIG_FILE)).map_err(InteropError::io(&tc))?;
        }
    }
    let source = json!({ "arch": m.arch, "special_ids": m.special_ids, "config": m.hf_config });
    let p = out.join(HF_SOURCE_FILE);
    std::fs::write(
        &p,
        serde_json::to_string_pretty(&source).expect("JSON") + "\n",
    )
    .map_err(InteropError::io(&p))?;
    Ok(step_dir)
}

/// A model from either an HF directory or a Switchyard checkpoint.
pub struct LoadedModel {
    pub model: MoeLm,
    pub store: ParamStore,
    /// The HF architecture it came from, when known.
    pub arch: Option<HfArch>,
    pub tokenizer: Option<HfTokenizer>,
    pub special_ids: SpecialIds,
}

/// Whether `dir` looks like an HF checkpoint (a `config.json` with a `model_type` and
/// safetensors weights, and no Switchyard `state.json`).
pub fn is_hf_dir(dir: &Path) -> bool {
    let has_weights = dir.join(INDEX_FILE).is_file() || dir.join(SINGLE_FILE).is_file();
    has_weights && dir.join(CONFIG_FILE).is_file() && !dir.join(STATE_FILE).is_file()
}

/// Loads an HF directory (imported) or a Switchyard checkpoint (a run directory or one of its
/// step directories); the tokenizer and `hf_source.json` are looked up in the given
/// directory, then next to the step directory.
pub fn load_model_dir(path: &Path) -> Result<LoadedModel> {
    if is_hf_dir(path) {
        // report an unknown architecture before anything else
        detect_arch(
            &read_json(&path.join(CONFIG_FILE))?,
            &path.join(CONFIG_FILE),
        )?;
        let m = import(path)?;
        return Ok(LoadedModel {
            model: m.model,
            store: m.store,
            arch: Some(m.arch),
            tokenizer: m.tokenizer,
            special_ids: m.special_ids,
        });
    }
    let ckpt = load_checkpoint(path)?;
    let config_path = ckpt.dir.join(CONFIG_FILE);
    let model_cfg = ckpt
        .config
        .get("model")
        .cloned()
        .ok_or_else(|| InteropError::Config {
            path: config_path.clone(),
            key: "model".into(),
            reason: "not a Switchyard training config (no `model` section)".into(),
        })?;
    let cfg: LmConfig = serde_json::from_value(model_cfg).map_err(|e| InteropError::Config {
        path: config_path.clone(),
        key: "model".into(),
        reason: e.to_string(),
    })?;
    let store = ParamStore::new();
    let mut model = MoeLm::new(
        &ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu),
        &cfg,
    )?;
    restore_into(&store, &ckpt)?;
    for (i, block) in model.layers.iter_mut().enumerate() {
        if let Ffn::Moe(m) = &mut block.ffn {
            for (name, _) in m.router.buffers() {
                if let Some(values) = ckpt.state.buffers.get(&buffer_key(i, &name)) {
                    m.router.load_buffer(&name, values)?;
                }
            }
        }
    }
    let dirs: Vec<PathBuf> = [
        Some(path.to_path_buf()),
        Some(ckpt.dir.clone()),
        ckpt.dir.parent().map(Path::to_path_buf),
    ]
    .into_iter()
    .flatten()
    .collect();
    let tokenizer = match dirs.iter().find(|d| d.join(TOKENIZER_FILE).is_file()) {
        Some(d) => Some(HfTokenizer::from_dir(d)?),
        None => None,
    };
    let (mut arch, mut special_ids) = (None, SpecialIds::default());
    if let Some(d) = dirs.iter().find(|d| d.join(HF_SOURCE_FILE).is_file()) {
        let p = d.join(HF_SOURCE_FILE);
        let v: Value = read_json(&p)?;
        arch = v
            .get("arch")
            .and_then(Value::as_str)
            .and_then(HfArch::from_name);
        special_ids = v
            .get("special_ids")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
    }
    Ok(LoadedModel {
        model,
        store,
        arch,
        tokenizer,
        special_ids,
    })
}
