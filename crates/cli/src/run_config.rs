//! The run config a loaded model is evaluated or analysed with: the checkpoint's own
//! `config.json`, or, for an HF directory, the defaults (built-in corpus) around its model.

use switchyard_interop::LoadedModel;
use switchyard_io::{ModelSource, CONFIG_FILE};
use switchyard_train::trainer::{restore::config_from_value, TrainConfig};

/// The run config of `m`: a checkpoint's `config.json`; for an HF directory the default
/// config with the model's config, its windows capped at the model's `max_seq_len`.
pub fn run_config(m: &LoadedModel) -> anyhow::Result<TrainConfig> {
    match &m.source {
        ModelSource::Checkpoint {
            step_dir, config, ..
        } => Ok(config_from_value(
            config.clone(),
            &step_dir.join(CONFIG_FILE),
        )?),
        ModelSource::HfDir { .. } => {
            let mut cfg = TrainConfig::default();
            cfg.model = m.model.cfg.clone();
            cfg.data.seq_len = cfg.data.seq_len.min(cfg.model.max_seq_len);
            Ok(cfg)
        }
    }
}
