//! Building a model from a config, and everything a checkpoint holds besides tensors and
//! optimiser state: router buffers and the run's config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_data::HfTokenizer;
use switchyard_io::find_step_dir;
use switchyard_io::run_dir::{
    carried_file, RunDir, CONFIG_FILE, HF_SOURCE_FILE, STATE_FILE, TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
};
use switchyard_models::{LmConfig, MoeLm};

use super::config::TrainConfig;
use super::error::{ConfigError, RunError, RunResult};
use crate::checkpoint::{load_checkpoint, restore_into, Checkpoint};

pub use switchyard_io::buffers::{buffer_key, router_buffers};

/// A fresh model of `cfg.model`, initialised from `cfg.seed`, with its parameter store.
pub fn build_model(cfg: &TrainConfig) -> RunResult<(ParamStore, MoeLm)> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, cfg.seed, DType::F32, &Device::Cpu);
    let model = MoeLm::new(&pb, &cfg.model)?;
    Ok((store, model))
}

/// Restores router buffers saved by [`router_buffers`]; every buffer the model has must be
/// present and nothing else.
pub fn load_router_buffers(
    model: &mut MoeLm,
    saved: &BTreeMap<String, Vec<f32>>,
    from: &Path,
) -> RunResult<()> {
    switchyard_io::load_router_buffers(model, saved).map_err(|reason| RunError::Resume {
        path: from.into(),
        reason,
    })
}

/// The run config stored in a checkpoint's `config.json`.
pub fn checkpoint_config(ckpt: &Checkpoint) -> RunResult<TrainConfig> {
    config_from_value(ckpt.config.clone(), &ckpt.dir.join(CONFIG_FILE))
}

/// A checkpoint's `config.json` (read from `path`) as a run config whose model is sound.
pub fn config_from_value(v: serde_json::Value, path: &Path) -> RunResult<TrainConfig> {
    let cfg: TrainConfig = serde_json::from_value(v).map_err(|e| RunError::Resume {
        path: path.to_path_buf(),
        reason: format!("not a Switchyard training config: {e}"),
    })?;
    // Only the model must be sound to load it; the rest is checked when training resumes.
    cfg.model.validate().map_err(|e| RunError::Resume {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(cfg)
}

/// A trained model, ready for evaluation or generation, with the run config it was trained
/// with.
pub struct LoadedModel {
    pub cfg: TrainConfig,
    pub model: MoeLm,
    pub store: ParamStore,
    /// The step of the checkpoint it was loaded from.
    pub step: u64,
    /// The HF tokenizer the model carries ([`carried_tokenizer_file`]); `None`: bytes.
    pub tokenizer: Option<HfTokenizer>,
}

/// What `init.from` names, read without loading the weights.
#[derive(Clone, Debug)]
pub struct InitSource {
    /// The step directory whose weights the run starts from.
    pub step_dir: PathBuf,
    /// The model of its `config.json`.
    pub model: LmConfig,
    /// The `tokenizer.json` it carries, if any (see [`carried_tokenizer_file`]).
    pub tokenizer: Option<PathBuf>,
}

/// The `tokenizer.json` that goes with a checkpoint (see [`carried_file`]).
pub fn carried_tokenizer_file(given: &Path, step_dir: &Path) -> Option<PathBuf> {
    carried_file(given, step_dir, TOKENIZER_FILE)
}

/// The run config in the `config.json` of the checkpoint at `path` (a step or run
/// directory), read without loading or verifying its tensors.
pub fn read_checkpoint_config(path: &Path) -> RunResult<TrainConfig> {
    let config_path = find_step_dir(path)?.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(RunError::io("read", &config_path))?;
    let v = serde_json::from_str(&text).map_err(|e| RunError::Resume {
        path: config_path.clone(),
        reason: format!("not JSON: {e}"),
    })?;
    config_from_value(v, &config_path)
}

/// The error for an `init.from` that is an HF directory (a `config.json`, no `state.json`)
/// rather than a Switchyard checkpoint: convert it with `switchyard import` first.
fn hf_dir_error(from: &Path) -> Option<ConfigError> {
    let config = from.join(CONFIG_FILE);
    let hf = config.is_file()
        && !from.join(STATE_FILE).is_file()
        && !switchyard_io::load::is_run_config_file(&config);
    hf.then(|| ConfigError::Init {
        path: from.to_path_buf(),
        reason: format!(
            "this looks like a HuggingFace checkpoint; convert it first with \
             `switchyard import {} --out <run-dir>` and start from <run-dir>",
            from.display()
        ),
    })
}

/// Reads what `init.from` names: its step directory, model config and tokenizer.
pub fn init_source(from: &Path) -> Result<InitSource, ConfigError> {
    let fail = |reason: String| ConfigError::Init {
        path: from.to_path_buf(),
        reason,
    };
    let step_dir = find_step_dir(from)
        .map_err(|e| hf_dir_error(from).unwrap_or_else(|| fail(e.to_string())))?;
    let config_path = step_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| fail(format!("cannot read {}: {e}", config_path.display())))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| fail(format!("{}: invalid JSON: {e}", config_path.display())))?;
    let model = config
        .get("model")
        .cloned()
        .ok_or_else(|| fail(format!("{} has no `model` section", config_path.display())))?;
    let model: LmConfig = serde_json::from_value(model)
        .map_err(|e| fail(format!("{}: `model`: {e}", config_path.display())))?;
    Ok(InitSource {
        tokenizer: carried_tokenizer_file(from, &step_dir),
        step_dir,
        model,
    })
}

/// Loads the weights and router buffers of `from` into a freshly built model (the config's
/// `init.from`); names and shapes must match exactly.
pub fn load_init_weights(store: &ParamStore, model: &mut MoeLm, from: &Path) -> RunResult<()> {
    // a config with its own [model] never read init.from's config.json, so an HF directory
    // is first noticed here
    let ckpt = load_checkpoint(from).map_err(|e| match hf_dir_error(from) {
        Some(hf) => RunError::Config(hf),
        None => RunError::from(e),
    })?;
    restore_into(store, &ckpt)?;
    load_router_buffers(model, &ckpt.state.buffers, &ckpt.dir)
}

/// Loads a checkpoint (a step directory, or a run directory's latest) through
/// [`switchyard_io::load_checkpoint_model`], the one checkpoint loader, and reads its run
/// config (generation and evaluation of any model, HF directories included, go through
/// `switchyard_interop::load_any`, which uses the same loader).
pub fn load_model(path: &Path) -> RunResult<LoadedModel> {
    let loaded = switchyard_io::load_checkpoint_model(path)?;
    let switchyard_io::ModelSource::Checkpoint {
        step_dir,
        step,
        config,
    } = loaded.source
    else {
        return Err(RunError::Resume {
            path: path.to_path_buf(),
            reason: "not a Switchyard checkpoint".into(),
        });
    };
    Ok(LoadedModel {
        cfg: config_from_value(config, &step_dir.join(CONFIG_FILE))?,
        model: loaded.model,
        store: loaded.store,
        step,
        tokenizer: loaded.tokenizer,
    })
}

/// Copies into the run directory (the trainer calls it at every checkpoint; a file already
/// there is left alone) the tokenizer the run uses (`data.tokenizer`, with
/// its `tokenizer_config.json`) and the init checkpoint's `hf_source.json`, so that the run's
/// checkpoints are used with the same tokenizer and export to the same architecture. A source
/// that is gone is taken from the copies next to `resumed_from` (the step directory a resumed
/// run started from), so resuming into another run directory carries them too. Each file is
/// written to a temporary name, synced and renamed. The files are `switchyard-io`'s run
/// directory sidecars (the tokenizer, its special tokens, `hf_source.json`).
pub fn carry_model_files(cfg: &TrainConfig, resumed_from: Option<&Path>) -> RunResult<()> {
    let mut copies: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(tok) = &cfg.data.tokenizer {
        let file = if tok.is_dir() {
            tok.join(TOKENIZER_FILE)
        } else {
            tok.clone()
        };
        if let Some(dir) = file.parent() {
            copies.push((dir.join(TOKENIZER_CONFIG_FILE), TOKENIZER_CONFIG_FILE));
        }
        copies.push((file, TOKENIZER_FILE));
    }
    if let Some(from) = &cfg.init.from {
        let found = find_step_dir(from)
            .ok()
            .and_then(|step_dir| carried_file(from, &step_dir, HF_SOURCE_FILE));
        // when `from` is gone, the placeholder sends the loop below to `resumed_from`'s copy
        copies.push((
            found.unwrap_or_else(|| from.join(HF_SOURCE_FILE)),
            HF_SOURCE_FILE,
        ));
    }
    let run_dir = RunDir::new(&cfg.run_dir);
    for (src, name) in copies {
        // a source that is gone (the directory a resumed run started from): the copy its
        // checkpoint's run directory carries
        let src = match resumed_from {
            Some(step_dir) if !src.is_file() => match carried_file(step_dir, step_dir, name) {
                Some(copy) => copy,
                None => continue,
            },
            _ => src,
        };
        run_dir.carry_file(&src, name)?;
    }
    Ok(())
}
