//! Building a model from a config, and everything a checkpoint holds besides tensors and
//! optimiser state: router buffers and the run's config.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_models::{ffn::Ffn, MoeLm};

use super::config::TrainConfig;
use super::error::{RunError, RunResult};
use crate::checkpoint::{load_checkpoint, restore_into, Checkpoint, CONFIG_FILE};

/// A fresh model of `cfg.model`, initialised from `cfg.seed`, with its parameter store.
pub fn build_model(cfg: &TrainConfig) -> RunResult<(ParamStore, MoeLm)> {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, cfg.seed, DType::F32, &Device::Cpu);
    let model = MoeLm::new(&pb, &cfg.model)?;
    Ok((store, model))
}

/// Name of a router buffer in `state.json`: `model.layers.{i}.block_sparse_moe.router.{name}`,
/// next to the layer's parameters.
fn buffer_key(layer: usize, name: &str) -> String {
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
    let path = ckpt.dir.join(CONFIG_FILE);
    let cfg: TrainConfig =
        serde_json::from_value(ckpt.config.clone()).map_err(|e| RunError::Resume {
            path: path.clone(),
            reason: format!("not a Switchyard training config: {e}"),
        })?;
    // Only the model must be sound to load it; the rest is checked when training resumes.
    cfg.model.validate().map_err(|e| RunError::Resume {
        path,
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
}

/// Loads a checkpoint (a step directory, or a run directory's latest) into a model built from
/// the checkpoint's own config.
pub fn load_model(path: &Path) -> RunResult<LoadedModel> {
    let checkpoint = load_checkpoint(path)?;
    let cfg = checkpoint_config(&checkpoint)?;
    let (store, mut model) = build_model(&cfg)?;
    restore_into(&store, &checkpoint)?;
    load_router_buffers(&mut model, &checkpoint.state.buffers, &checkpoint.dir)?;
    Ok(LoadedModel {
        cfg,
        model,
        store,
        checkpoint,
    })
}
