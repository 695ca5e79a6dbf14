//! Imported models as Switchyard run directories, and [`load_any`]: the one loader for a run
//! directory, a step directory or an HF directory.
//!
//! [`save_checkpoint_dir`] writes a run directory that `switchyard_io`'s checkpoint loader
//! reads (`latest` → `step-00000000/` with `model.safetensors`, an empty optimiser,
//! `config.json` holding a training config whose `model` is the imported [`LmConfig`], and
//! `state.json` with the router buffers), plus, next to `latest`:
//! - `tokenizer.json` (and `tokenizer_config.json`) copied from the HF directory;
//! - `hf_source.json`: the architecture, the special token ids and the source `config.json`,
//!   so `export` writes the same architecture back.
//!
//! [`LmConfig`]: switchyard_models::LmConfig

use std::path::{Path, PathBuf};

use serde_json::json;
use switchyard_core::ParamStore;
use switchyard_io::run_dir::{HfSource, RunDir, STATE_FILE, TOKENIZER_CONFIG_FILE};
use switchyard_io::{
    load_checkpoint_model, router_buffers, save_checkpoint, CheckpointContents, ModelSource,
    TrainState,
};
use switchyard_models::MoeLm;

use crate::arch::HfArch;
use crate::error::{InteropError, Result};
use crate::hf_config::SpecialIds;
use crate::import::{import, ImportedModel, CONFIG_FILE, INDEX_FILE, SINGLE_FILE, TOKENIZER_FILE};
use crate::tokenizer::HfTokenizer;

pub use switchyard_io::run_dir::HF_SOURCE_FILE;
/// Training window written into the checkpoint's config (`data.seq_len`), capped at the
/// model's `max_seq_len`.
const DEFAULT_TRAIN_SEQ_LEN: usize = 128;

/// Writes `m` as a Switchyard run directory `out` (step 0); returns the step directory.
pub fn save_checkpoint_dir(m: &ImportedModel, out: &Path) -> Result<PathBuf> {
    let seq_len = DEFAULT_TRAIN_SEQ_LEN.min(m.cfg.max_seq_len);
    // a `switchyard_train::TrainConfig` in JSON; every key not given takes its default
    let config =
        json!({ "seed": 0, "run_dir": out, "model": m.cfg, "data": { "seq_len": seq_len } });
    // router buffers (e.g. V3's correction bias) under the keys the trainer uses too
    let state: TrainState = TrainState {
        buffers: router_buffers(&m.model),
        ..Default::default()
    };
    let contents = CheckpointContents {
        params: &m.store,
        optimizer: Vec::new(),
        state,
        config,
    };
    let step_dir = save_checkpoint(out, 0, &contents)?;
    let run_dir = RunDir::new(out);
    if let Some(t) = &m.tokenizer {
        std::fs::copy(&t.path, out.join(TOKENIZER_FILE)).map_err(InteropError::io(&t.path))?;
        let tc = t.path.with_file_name(TOKENIZER_CONFIG_FILE);
        if tc.is_file() {
            std::fs::copy(&tc, out.join(TOKENIZER_CONFIG_FILE)).map_err(InteropError::io(&tc))?;
        }
    }
    run_dir.write_hf_source(&HfSource {
        arch: m.arch.model_type().to_string(),
        config: m.hf_config.clone(),
        special_ids: m.special_ids,
    })?;
    Ok(step_dir)
}

/// A model from an HF directory or a Switchyard checkpoint, ready to run.
pub struct LoadedModel {
    pub model: MoeLm,
    pub store: ParamStore,
    /// The HF architecture it came from, when known.
    pub arch: Option<HfArch>,
    /// The HF tokenizer it carries; `None`: the byte tokenizer.
    pub tokenizer: Option<HfTokenizer>,
    pub special_ids: SpecialIds,
    pub source: ModelSource,
}

impl LoadedModel {
    /// The tokenizer to encode and decode text with: the carried HF one, else bytes.
    pub fn text_tokenizer(&self) -> &dyn switchyard_data::Tokenizer {
        match &self.tokenizer {
            Some(t) => t,
            None => &switchyard_data::ByteTokenizer,
        }
    }
}

impl From<switchyard_io::LoadedModel> for LoadedModel {
    fn from(l: switchyard_io::LoadedModel) -> Self {
        let (arch, special_ids) = match &l.hf_source {
            Some(s) => (HfArch::from_name(&s.arch), s.special_ids),
            None => (None, SpecialIds::default()),
        };
        Self {
            model: l.model,
            store: l.store,
            arch,
            tokenizer: l.tokenizer,
            special_ids,
            source: l.source,
        }
    }
}

/// Whether `dir` looks like an HF checkpoint (a `config.json` and safetensors weights, and no
/// Switchyard `state.json`). A step directory that lost its `state.json` also has both, so a
/// `config.json` holding a Switchyard run config (a `model` table, no `model_type`) is not an
/// HF directory: it goes to the checkpoint loader, which names the missing file.
pub fn is_hf_dir(dir: &Path) -> bool {
    let has_weights = dir.join(INDEX_FILE).is_file() || dir.join(SINGLE_FILE).is_file();
    let config = dir.join(CONFIG_FILE);
    has_weights
        && config.is_file()
        && !dir.join(STATE_FILE).is_file()
        && !switchyard_io::load::is_run_config_file(&config)
}

/// The one loader: an HF directory (imported on the fly) or a Switchyard checkpoint (a run
/// directory or one of its step directories, through [`switchyard_io::load_checkpoint_model`]);
/// the tokenizer and `hf_source.json` are looked up in the given directory, then next to the
/// step directory.
pub fn load_any(path: &Path) -> Result<LoadedModel> {
    if is_hf_dir(path) {
        let m = import(path)?;
        return Ok(LoadedModel {
            model: m.model,
            store: m.store,
            arch: Some(m.arch),
            tokenizer: m.tokenizer,
            special_ids: m.special_ids,
            source: ModelSource::HfDir {
                dir: path.to_path_buf(),
            },
        });
    }
    Ok(load_checkpoint_model(path)?.into())
}
