//! The run's [`Dataset`] from its [`DataConfig`]: the built-in corpus, one text file, or a
//! directory of domains, byte-tokenized and packed.

use switchyard_data::{
    generate, load_domain_dir, load_text_file, ByteTokenizer, Dataset, DatasetConfig, Document,
};

use super::config::TrainConfig;
use super::error::RunResult;

/// The documents the config names (generated or read from disk).
pub fn load_documents(cfg: &TrainConfig) -> RunResult<Vec<Document>> {
    Ok(match &cfg.data.path {
        None => generate(&cfg.corpus()),
        Some(p) if p.is_file() => load_text_file(p)?,
        Some(p) => load_domain_dir(p)?,
    })
}

/// Split, tokenize and pack the run's data.
pub fn build_dataset(cfg: &TrainConfig) -> RunResult<Dataset> {
    let docs = load_documents(cfg)?;
    let dcfg = DatasetConfig {
        seq_len: cfg.data.seq_len,
        valid_fraction: cfg.data.valid_fraction,
        split_seed: cfg.data.split_seed,
    };
    Ok(Dataset::build(&docs, &ByteTokenizer, &dcfg)?)
}
