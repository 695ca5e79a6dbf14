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

use serde_json::{json, Value};
use switchyard_core::ParamStore;
use switchyard_data::hf_tokenizer::TOKENIZER_CONFIG_FILE;
use switchyard_models::MoeLm;
use switchyard_train::checkpoint::{save_checkpoint, CheckpointContents, TrainState, STATE_FILE};

use crate::arch::HfArch;
use crate::error::{InteropError, Result};
use crate::hf_config::{read_json, SpecialIds};
use crate::import::{import, ImportedModel, CONFIG_FILE, INDEX_FILE, SINGLE_FILE, TOKENIZER_FILE};
use crate::tokenizer::HfTokenizer;

pub use switchyard_train::trainer::restore::HF_SOURCE_FILE;
/// Training window written into the checkpoint's config (`data.seq_len`), capped at the
/// model's `max_seq_len`.
const DEFAULT_TRAIN_SEQ_LEN: usize = 128;

// Router buffers (e.g. V3's correction bias) are stored under the trainer's keys, so an
// import and a training run read and write them the same way.
use switchyard_train::trainer::restore::{self, router_buffers};

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
        let m = import(path)?;
        return Ok(LoadedModel {
            model: m.model,
            store: m.store,
            arch: Some(m.arch),
            tokenizer: m.tokenizer,
            special_ids: m.special_ids,
        });
    }
    // the trainer's loader: config checked, every router buffer required, tokenizer found
    let l = restore::load_model(path)?;
    let (mut arch, mut special_ids) = (None, SpecialIds::default());
    if let Some(p) = restore::carried_file(path, &l.checkpoint.dir, HF_SOURCE_FILE) {
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
        model: l.model,
        store: l.store,
        arch,
        tokenizer: l.tokenizer,
        special_ids,
    })
}
