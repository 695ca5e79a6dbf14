//! The run's [`Dataset`] from its [`DataConfig`](super::DataConfig): the built-in corpus, one
//! text file, or a directory of domains, tokenized (bytes, or the HF tokenizer
//! `data.tokenizer` names) and packed.

use switchyard_data::{
    generate, load_domain_dir, load_text_file, ByteTokenizer, Dataset, DatasetConfig, Document,
    HfTokenizer, Tokenizer,
};

use std::path::Path;

use super::config::TrainConfig;
use super::error::{ConfigError, RunResult};

/// The documents the config names (generated or read from disk).
pub fn load_documents(cfg: &TrainConfig) -> RunResult<Vec<Document>> {
    Ok(match &cfg.data.path {
        None => generate(&cfg.corpus()),
        Some(p) if p.is_file() => load_text_file(p)?,
        Some(p) => load_domain_dir(p)?,
    })
}

/// The tokenizer `data.tokenizer` names, else the byte tokenizer. When that path is gone and
/// a `fallback` file is given (a resume passes the copy its checkpoint's run directory got,
/// see [`super::restore::carried_tokenizer_file`]), the fallback is used, so a resumed
/// fine-tuning run does not depend on the directory it started from; a fresh run never
/// falls back.
pub fn load_tokenizer(cfg: &TrainConfig, fallback: Option<&Path>) -> RunResult<Box<dyn Tokenizer>> {
    Ok(match (&cfg.data.tokenizer, fallback) {
        (None, _) => Box::new(ByteTokenizer),
        (Some(p), Some(copy)) if !p.exists() => Box::new(HfTokenizer::from_file(copy)?),
        (Some(p), _) => Box::new(HfTokenizer::from_path(p)?),
    })
}

/// Split, tokenize (with the config's tokenizer) and pack the run's data.
pub fn build_dataset(cfg: &TrainConfig) -> RunResult<Dataset> {
    build_dataset_with(cfg, load_tokenizer(cfg, None)?.as_ref())
}

/// Split, tokenize with `tok` and pack the run's data; every id must be below
/// `model.vocab_size`.
pub fn build_dataset_with(cfg: &TrainConfig, tok: &dyn Tokenizer) -> RunResult<Dataset> {
    Ok(build_datasets(cfg, tok)?.0)
}

/// The run's data, and with `data.new_domain` set, the data of the steps before that domain
/// appears (its documents left out of the training stream).
pub fn build_datasets(
    cfg: &TrainConfig,
    tok: &dyn Tokenizer,
) -> RunResult<(Dataset, Option<Dataset>)> {
    let docs = load_documents(cfg)?;
    let data = build_from(cfg, tok, &docs)?;
    let early = match &cfg.data.new_domain {
        None => None,
        Some(name) => Some(
            data.without_training_domain(&docs, tok, name)?
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "data.new_domain",
                        format!(
                            "no domain `{name}` in the data; the domains are {}",
                            data.domains.names().join(", ")
                        ),
                    )
                })?,
        ),
    };
    Ok((data, early))
}

fn build_from(cfg: &TrainConfig, tok: &dyn Tokenizer, docs: &[Document]) -> RunResult<Dataset> {
    let dcfg = DatasetConfig {
        seq_len: cfg.data.seq_len,
        valid_fraction: cfg.data.valid_fraction,
        split_seed: cfg.data.split_seed,
    };
    let data = Dataset::build(docs, tok, &dcfg)?;
    let vocab = cfg.model.vocab_size;
    let max_id = std::iter::once(&data.train)
        .chain(data.valid.iter())
        .filter_map(|s| s.tokens().iter().max())
        .max();
    if let Some(&id) = max_id.filter(|&&id| id as usize >= vocab) {
        return Err(ConfigError::invalid(
            "model.vocab_size",
            format!(
                "{vocab} is too small for the tokenizer ({} ids, the text uses id {id}); \
                 raise model.vocab_size to at least {} or use a smaller tokenizer",
                tok.vocab_size(),
                id + 1
            ),
        )
        .into());
    }
    Ok(data)
}
