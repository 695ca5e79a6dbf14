//! The work behind `switchyard import`, `switchyard export` and `switchyard logits`, as
//! library functions so the CLI stays a thin layer of argument parsing.
//!
//! ```text
//! switchyard import <hf-dir> --out DIR                  HF checkpoint -> Switchyard run directory
//! switchyard export --ckpt DIR --out DIR [--arch A]     Switchyard checkpoint (or HF dir) -> HF dir
//! switchyard logits --model DIR --ids FILE|TEXT --out out.safetensors [--greedy N]
//! ```

use std::path::{Path, PathBuf};

use switchyard_data::{ByteTokenizer, Tokenizer};

use crate::arch::HfArch;
use crate::ckpt::{load_any, save_checkpoint_dir, LoadedModel};
use crate::error::{InteropError, Result};
use crate::export::{export_with, ExportOptions, ExportReport};
use crate::import::import;
use crate::logits::{greedy, logits, LogitsReport};

/// What `import` did.
#[derive(Clone, Debug)]
pub struct ImportSummary {
    pub arch: HfArch,
    pub step_dir: PathBuf,
    pub params: usize,
    pub moe_layers: Vec<usize>,
    pub tokenizer: bool,
}

/// `switchyard import <hf-dir> --out DIR`: converts to a Switchyard run directory that
/// `switchyard_io`'s checkpoint loader (and everything built on it) reads.
pub fn import_to_checkpoint(hf_dir: &Path, out: &Path) -> Result<ImportSummary> {
    let m = import(hf_dir)?;
    let step_dir = save_checkpoint_dir(&m, out)?;
    Ok(ImportSummary {
        arch: m.arch,
        step_dir,
        params: m.model.num_params_total(),
        moe_layers: m.cfg.moe_layers(),
        tokenizer: m.tokenizer.is_some(),
    })
}

/// `switchyard export --ckpt DIR --out DIR [--arch A]`: `model_dir` is a Switchyard
/// checkpoint (imported or native) or an HF directory. Without `arch`, an imported model goes
/// back to its own architecture and a native one to the first that expresses it.
pub fn export_model_dir(
    model_dir: &Path,
    out: &Path,
    arch: Option<HfArch>,
) -> Result<ExportReport> {
    let m = load_any(model_dir)?;
    let opts = ExportOptions {
        tokenizer_json: m.tokenizer.as_ref().map(|t| t.path.clone()),
        special_ids: m.special_ids,
        ..Default::default()
    };
    export_with(&m.model, arch.or(m.arch), out, &opts)
}

/// Token ids given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdsInput {
    Ids(Vec<u32>),
    /// Encoded with the model's tokenizer, special tokens included (a leading BOS), as
    /// `tokenizer(text)` in transformers; native models use the byte tokenizer plus BOS.
    Text(String),
}

/// `--ids`: a file holding a JSON list of ids (or text), or the list / text itself.
///
/// A directory, or a single word that looks like a path (it has a `/` or a file extension
/// such as `.txt`) but names no file, is refused rather than encoded as text: it is almost
/// always a mistyped path.
pub fn parse_ids_arg(arg: &str) -> Result<IdsInput> {
    let p = Path::new(arg);
    let fail = |reason: &str| InteropError::Ids {
        arg: arg.to_string(),
        reason: reason.to_string(),
    };
    if p.is_dir() {
        return Err(fail(
            "is a directory; pass a JSON list of ids (e.g. '[1, 5, 9]'), a file holding one, or text",
        ));
    }
    if !p.is_file() && looks_like_path(arg) {
        return Err(fail(
            "no such file; check the path (text to encode that looks like a path can be passed in a file)",
        ));
    }
    let (content, from) = if p.is_file() {
        (
            std::fs::read_to_string(p).map_err(InteropError::io(p))?,
            Some(p),
        )
    } else {
        (arg.to_string(), None)
    };
    let trimmed = content.trim();
    if trimmed.starts_with('[') {
        let ids: Vec<u32> = serde_json::from_str(trimmed).map_err(|source| InteropError::Json {
            path: from.map_or_else(|| PathBuf::from("--ids"), Path::to_path_buf),
            source,
        })?;
        return Ok(IdsInput::Ids(ids));
    }
    // a file's trailing newline is not part of the text
    Ok(IdsInput::Text(if from.is_some() {
        content.trim_end_matches('\n').to_string()
    } else {
        content
    }))
}

/// A single word with a path separator, or ending in a short file extension (`prompt.txt`,
/// `ids.json`), that is not a JSON list.
fn looks_like_path(arg: &str) -> bool {
    if arg.trim_start().starts_with('[') || arg.chars().any(char::is_whitespace) {
        return false;
    }
    let extension = Path::new(arg)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| (1..=4).contains(&e.len()) && e.chars().all(|c| c.is_ascii_alphabetic()));
    arg.contains('/') || arg.contains(std::path::MAIN_SEPARATOR) || extension
}

/// The ids of `input` for model `m`.
pub fn resolve_ids(m: &LoadedModel, input: &IdsInput) -> Result<Vec<u32>> {
    match input {
        IdsInput::Ids(ids) => Ok(ids.clone()),
        IdsInput::Text(t) => match &m.tokenizer {
            Some(tok) => Ok(tok.try_encode(t, true)?),
            None => {
                let byte = ByteTokenizer;
                Ok(std::iter::once(byte.bos()).chain(byte.encode(t)).collect())
            }
        },
    }
}

/// `switchyard logits --model DIR --ids FILE|TEXT --out out.safetensors [--greedy N]`.
pub fn logits_to_file(
    model_dir: &Path,
    ids: &IdsInput,
    out: &Path,
    greedy_tokens: usize,
) -> Result<LogitsReport> {
    let m = load_any(model_dir)?;
    let ids = resolve_ids(&m, ids)?;
    let report = logits(&m.model, &ids)?;
    let g = if greedy_tokens > 0 {
        Some(greedy(&m.model, &ids, greedy_tokens)?)
    } else {
        None
    };
    report.save(out, g.as_deref())?;
    Ok(report)
}
