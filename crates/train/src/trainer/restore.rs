//! Building a model from a config, and everything a checkpoint holds besides tensors and
//! optimiser state: router buffers and the run's config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_models::{ffn::Ffn, MoeLm};

use super::config::TrainConfig;
use super::error::{ConfigError, RunError, RunResult};
use crate::checkpoint::{
    find_step_dir, load_checkpoint, restore_into, Checkpoint, CONFIG_FILE, STATE_FILE,
};
use switchyard_data::hf_tokenizer::TOKENIZER_FILE;
use switchyard_data::HfTokenizer;
use switchyard_models::LmConfig;

/// A fresh model of `cfg.model`, initialised from `cfg.seed`, with its parameter store.
pub fn build_model(cfg: &TrainConfig) -> RunResult<(ParamStore, MoeLm)> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, cfg.seed, DType::F32, &Device::Cpu);
    let model = MoeLm::new(&pb, &cfg.model)?;
    Ok((store, model))
}

/// Name of a router buffer in `state.json`: `model.layers.{i}.block_sparse_moe.router.{name}`,
/// next to the layer's parameters.
pub fn buffer_key(layer: usize, name: &str) -> String {
    format!("model.layers.{layer}.block_sparse_moe.router.{name}")
}

/// Every router buffer of the model (e.g. aux-loss-free selection biases), by key.
pub fn router_buffers(model: &MoeLm) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    for (i, block) in model.layers.iter().enumerate() {
        if let Ffn::Moe(m) = &block.ffn {
            for (name, values) in m.router.buffers() {
                out.insert(buffer_key(i, &name), values);
            }
        }
    }
    out
}

/// Restores router buffers saved by [`router_buffers`]; every buffer the model has must be
/// present and nothing else.
pub fn load_router_buffers(
    model: &mut MoeLm,
    saved: &BTreeMap<String, Vec<f32>>,
    from: &Path,
) -> RunResult<()> {
    let mut problems = Vec::new();
    let mut used = 0;
    for (i, block) in model.layers.iter_mut().enumerate() {
        let Ffn::Moe(m) = &mut block.ffn else {
            continue;
        };
        for (name, _) in m.router.buffers() {
            let key = buffer_key(i, &name);
            match saved.get(&key) {
                None => problems.push(format!("missing router buffer `{key}`")),
                Some(values) => {
                    used += 1;
                    if let Err(e) = m.router.load_buffer(&name, values) {
                        problems.push(format!("`{key}`: {e}"));
                    }
                }
            }
        }
    }
    if used < saved.len() {
        let known = router_buffers(model);
        problems.extend(
            saved
                .keys()
                .filter(|k| !known.contains_key(*k))
                .map(|k| format!("unexpected router buffer `{k}`")),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::Resume {
            path: from.into(),
            reason: format!("router buffers do not match: {}", problems.join("; ")),
        })
    }
}

/// The run config stored in a checkpoint's `config.json`.
pub fn checkpoint_config(ckpt: &Checkpoint) -> RunResult<TrainConfig> {
    config_from_value(ckpt.config.clone(), &ckpt.dir.join(CONFIG_FILE))
}

/// A checkpoint's `config.json` (read from `path`) as a run config whose model is sound.
fn config_from_value(v: serde_json::Value, path: &Path) -> RunResult<TrainConfig> {
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

/// A trained model, ready for evaluation or generation.
pub struct LoadedModel {
    pub cfg: TrainConfig,
    pub model: MoeLm,
    pub store: ParamStore,
    pub checkpoint: Checkpoint,
    /// The HF tokenizer the model carries ([`carried_tokenizer`]); `None`: bytes.
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

/// The file `name` that goes with a checkpoint: in the directory given, in the step
/// directory, or in its run directory (where `switchyard import` and a fine-tuning run put
/// `tokenizer.json` and `hf_source.json`).
pub fn carried_file(given: &Path, step_dir: &Path, name: &str) -> Option<PathBuf> {
    [Some(given), Some(step_dir), step_dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
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

/// The HF tokenizer a checkpoint carries (see [`carried_tokenizer_file`]); `None` when it
/// carries none (a byte-level model).
pub fn carried_tokenizer(given: &Path, ckpt: &Checkpoint) -> RunResult<Option<HfTokenizer>> {
    match carried_tokenizer_file(given, &ckpt.dir) {
        Some(p) => Ok(Some(HfTokenizer::from_file(&p)?)),
        None => Ok(None),
    }
}

/// Reads what `init.from` names: its step directory, model config and tokenizer.
pub fn init_source(from: &Path) -> Result<InitSource, ConfigError> {
    let fail = |reason: String| ConfigError::Init {
        path: from.to_path_buf(),
        reason,
    };
    let step_dir = find_step_dir(from).map_err(|e| {
        let hf = from.join(CONFIG_FILE).is_file() && !from.join(STATE_FILE).is_file();
        if hf {
            fail(format!(
                "this looks like a HuggingFace checkpoint; convert it first with \
                 `switchyard import {} --out <run-dir>` and start from <run-dir>",
                from.display()
            ))
        } else {
            fail(e.to_string())
        }
    })?;
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
    let ckpt = load_checkpoint(from)?;
    restore_into(store, &ckpt)?;
    load_router_buffers(model, &ckpt.state.buffers, &ckpt.dir)
}

/// Loads a checkpoint (a step directory, or a run directory's latest) into a model built from
/// the checkpoint's own config.
pub fn load_model(path: &Path) -> RunResult<LoadedModel> {
    let checkpoint = load_checkpoint(path)?;
    let cfg = checkpoint_config(&checkpoint)?;
    let (store, mut model) = build_model(&cfg)?;
    restore_into(&store, &checkpoint)?;
    load_router_buffers(&mut model, &checkpoint.state.buffers, &checkpoint.dir)?;
    let tokenizer = carried_tokenizer(path, &checkpoint)?;
    Ok(LoadedModel {
        cfg,
        model,
        store,
        checkpoint,
        tokenizer,
    })
}

/// Files beside an imported model's checkpoints that describe it beyond its weights (what
/// `switchyard import` writes next to `latest`): the tokenizer, its special tokens, and
/// `hf_source.json` (the HF architecture, for `export`).
const TOKENIZER_CONFIG_FILE: &str = switchyard_data::hf_tokenizer::TOKENIZER_CONFIG_FILE;
pub const HF_SOURCE_FILE: &str = "hf_source.json";

/// Copies into the run directory (the trainer calls it at every checkpoint; a file already
/// there is left alone) the tokenizer the run uses (`data.tokenizer`, with
/// its `tokenizer_config.json`) and the init checkpoint's `hf_source.json`, so that the run's
/// checkpoints are used with the same tokenizer and export to the same architecture. A source
/// that is gone is taken from the copies next to `resumed_from` (the step directory a resumed
/// run started from), so resuming into another run directory carries them too. Each file is
/// written to a temporary name, synced and renamed.
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
    for (src, name) in copies {
        let dst = cfg.run_dir.join(name);
        // a source that is gone (the directory a resumed run started from): the copy its
        // checkpoint's run directory carries
        let src = match resumed_from {
            Some(step_dir) if !src.is_file() => match carried_file(step_dir, step_dir, name) {
                Some(copy) => copy,
                None => continue,
            },
            _ => src,
        };
        if dst.exists() || !src.is_file() {
            continue;
        }
        let data = std::fs::read(&src).map_err(RunError::io("read", &src))?;
        let tmp = cfg.run_dir.join(format!(".{name}.tmp"));
        crate::checkpoint::fsio::write_synced(&tmp, &data)?;
        std::fs::rename(&tmp, &dst).map_err(RunError::io("rename", &tmp))?;
    }
    Ok(())
}
