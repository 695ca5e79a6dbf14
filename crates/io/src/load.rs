//! One loader from a checkpoint path (a run directory or one of its step directories) to a
//! model ready to run, with its tokenizer and where it came from.
//!
//! HF directories are converted by `switchyard-interop`, whose `load_any` recognises them and
//! hands everything else to [`load_checkpoint_model`]; both return a [`LoadedModel`].

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_data::{ByteTokenizer, HfTokenizer, Tokenizer};
use switchyard_models::{check_memory, Job, LmConfig, MoeLm};

use crate::buffers::load_router_buffers;
use crate::checkpoint::{load_checkpoint, restore_into, Checkpoint};
use crate::run_dir::{carried_file, HfSource, CONFIG_FILE, HF_SOURCE_FILE, TOKENIZER_FILE};
use crate::LoadError;

/// Where a loaded model came from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A Switchyard checkpoint (trained, imported or fine-tuned).
    Checkpoint {
        /// The step directory read.
        step_dir: PathBuf,
        step: u64,
        /// Its `config.json`: the run config (a `switchyard_train::TrainConfig` in JSON).
        config: serde_json::Value,
    },
    /// A HuggingFace directory, converted on load.
    HfDir { dir: PathBuf },
}

/// A model ready for generation or evaluation.
pub struct LoadedModel {
    /// The model; its config is `model.cfg`.
    pub model: MoeLm,
    /// The store holding its parameters.
    pub store: ParamStore,
    /// The HF tokenizer the model carries; `None`: the byte tokenizer.
    pub tokenizer: Option<HfTokenizer>,
    /// The HF architecture, special ids and config it came from, when it came from one (an
    /// HF directory, or a checkpoint that carries `hf_source.json`).
    pub hf_source: Option<HfSource>,
    pub source: ModelSource,
}

impl LoadedModel {
    /// The tokenizer to encode and decode text with: the carried HF one, else bytes.
    pub fn text_tokenizer(&self) -> &dyn Tokenizer {
        match &self.tokenizer {
            Some(t) => t,
            None => &ByteTokenizer,
        }
    }

    pub fn config(&self) -> &LmConfig {
        &self.model.cfg
    }
}

/// A checkpoint's `config.json` value as the model config it holds (its `model` section),
/// checked; `path` is the file it was read from, for messages.
pub fn model_config(config: &serde_json::Value, path: &Path) -> Result<LmConfig, LoadError> {
    let fail = |reason: String| LoadError::Incompatible {
        path: path.to_path_buf(),
        reason,
    };
    let model = config
        .get("model")
        .cloned()
        .ok_or_else(|| fail("not a Switchyard training config: no `model` section".into()))?;
    let cfg: LmConfig = serde_json::from_value(model)
        .map_err(|e| fail(format!("not a Switchyard training config: `model`: {e}")))?;
    cfg.validate().map_err(|e| fail(e.to_string()))?;
    Ok(cfg)
}

/// The model of a loaded checkpoint: built from its config (with the run's seed, although
/// every parameter is then overwritten), its parameters and router buffers restored.
pub fn model_from_checkpoint<L>(ckpt: &Checkpoint<L>) -> Result<(ParamStore, MoeLm), LoadError> {
    let cfg = model_config(&ckpt.config, &ckpt.dir.join(CONFIG_FILE))?;
    // the model is built before the checkpoint's tensors are copied in: both are alive
    check_memory(&cfg, Job::Load)?;
    let seed = ckpt.config.get("seed").and_then(serde_json::Value::as_u64);
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, seed.unwrap_or(0), DType::F32, &Device::Cpu);
    let mut model = MoeLm::new(&pb, &cfg)?;
    restore_into(&store, ckpt)?;
    load_router_buffers(&mut model, &ckpt.state.buffers).map_err(|reason| {
        LoadError::Incompatible {
            path: ckpt.dir.clone(),
            reason,
        }
    })?;
    Ok((store, model))
}

/// Loads a Switchyard checkpoint (a step directory, or a run directory's latest) into a model
/// built from the checkpoint's own config. The tokenizer and `hf_source.json` are looked up
/// in `path`, then in the step directory, then in its run directory.
pub fn load_checkpoint_model(path: &Path) -> Result<LoadedModel, LoadError> {
    let ckpt = load_checkpoint::<serde_json::Value>(path)?;
    let (store, model) = model_from_checkpoint(&ckpt)?;
    let tokenizer = match carried_file(path, &ckpt.dir, TOKENIZER_FILE) {
        Some(p) => Some(HfTokenizer::from_file(&p)?),
        None => None,
    };
    let hf_source = match carried_file(path, &ckpt.dir, HF_SOURCE_FILE) {
        Some(p) => Some(HfSource::read(&p)?),
        None => None,
    };
    Ok(LoadedModel {
        model,
        store,
        tokenizer,
        hf_source,
        source: ModelSource::Checkpoint {
            step_dir: ckpt.dir,
            step: ckpt.step,
            config: ckpt.config,
        },
    })
}

/// Whether the JSON file at `path` is a Switchyard run config (the `config.json` of a step
/// directory: a `model` table, no `model_type`) rather than a HuggingFace `config.json`.
pub fn is_run_config_file(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) else {
        return false;
    };
    !map.contains_key("model_type") && map.get("model").is_some_and(|m| m.is_object())
}
