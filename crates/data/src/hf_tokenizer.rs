//! A HuggingFace `tokenizer.json` (the `tokenizers` crate) behind [`Tokenizer`], so imported
//! models are trained, evaluated and analysed on the text their own tokenizer produces.
//!
//! Special ids come from `tokenizer_config.json` (`bos_token`, …) beside the file, else from
//! `config.json` (`bos_token_id`, …) beside it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::DataError;
use crate::tokenizer::Tokenizer;

/// The tokenizer's file name in HF checkpoints and Switchyard run directories.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Its companion with the special tokens.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
const MODEL_CONFIG_FILE: &str = "config.json";

/// A HF tokenizer with its special ids.
pub struct HfTokenizer {
    pub inner: tokenizers::Tokenizer,
    /// The `tokenizer.json` it was read from.
    pub path: PathBuf,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

/// BOS / EOS / PAD ids as a model's `config.json` gives them (`eos_token_id` may be a list;
/// the first is taken).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

impl SpecialIds {
    pub fn from_config(config: &Value) -> Self {
        let id = |k: &str| config.get(k).and_then(Value::as_u64).map(|n| n as u32);
        let eos = id("eos_token_id").or_else(|| {
            config
                .get("eos_token_id")
                .and_then(|v| v.get(0))
                .and_then(Value::as_u64)
                .map(|n| n as u32)
        });
        Self {
            bos: id("bos_token_id"),
            eos,
            pad: id("pad_token_id"),
        }
    }
}

/// Parses a `tokenizer.json`. The `tokenizers` crate (0.23) panics on some malformed files
/// instead of returning an error (found by the `tokenizer` fuzz target: a JSON syntax error
/// inside `decoder`; a bad `precompiled_charsmap`; a `TemplateProcessing` post-processor
/// whose template names a special token it does not define, or uses sequence B in `single`,
/// which it only trips over when encoding), so the file is checked here first. A panic from
/// the crate that is still left is caught and reported as an error.
pub fn parse_tokenizer(bytes: &[u8]) -> Result<tokenizers::Tokenizer, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    if let Some(normalizer) = value.get("normalizer") {
        check_precompiled(normalizer)?;
    }
    if let Some(post) = value.get("post_processor") {
        check_template(post)?;
    }
    let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes));
    match parsed {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the tokenizers library cannot read it (it panicked; see above)".into()),
    }
}

/// Checks every `{"type": "Precompiled", …}` normalizer (also inside a `Sequence`) decodes.
fn check_precompiled(normalizer: &Value) -> Result<(), String> {
    if let Some(list) = normalizer.get("normalizers").and_then(Value::as_array) {
        return list.iter().try_for_each(check_precompiled);
    }
    if normalizer.get("type").and_then(Value::as_str) == Some("Precompiled") {
        serde_json::from_value::<tokenizers::normalizers::Precompiled>(normalizer.clone())
            .map_err(|e| format!("its Precompiled normalizer is invalid: {e}"))?;
    }
    Ok(())
}

/// Checks a `TemplateProcessing` post-processor (also inside a `Sequence`) as its builder
/// would: every special token its templates name is defined, with as many ids as tokens;
/// `single` uses only sequence A, `pair` both.
fn check_template(post: &Value) -> Result<(), String> {
    if let Some(list) = post.get("processors").and_then(Value::as_array) {
        return list.iter().try_for_each(check_template);
    }
    if post.get("type").and_then(Value::as_str) != Some("TemplateProcessing") {
        return Ok(());
    }
    let bad = |what: String| Err(format!("its TemplateProcessing post-processor {what}"));
    let specials = post.get("special_tokens").and_then(Value::as_object);
    for (name, token) in specials.into_iter().flatten() {
        let len = |k: &str| token.get(k).and_then(Value::as_array).map(Vec::len);
        if len("ids") != len("tokens") {
            return bad(format!(
                "defines special token {name:?} with a different number of ids and tokens"
            ));
        }
    }
    for key in ["single", "pair"] {
        let Some(pieces) = post.get(key).and_then(Value::as_array) else {
            continue;
        };
        let mut sequences = Vec::new();
        for piece in pieces {
            if let Some(id) = piece.pointer("/SpecialToken/id").and_then(Value::as_str) {
                if !specials.is_some_and(|m| m.contains_key(id)) {
                    return bad(format!(
                        "uses special token {id:?} in `{key}` but does not define it"
                    ));
                }
            }
            if let Some(id) = piece.pointer("/Sequence/id").and_then(Value::as_str) {
                sequences.push(id);
            }
        }
        let ok = match key {
            "single" => sequences.iter().all(|s| *s == "A"),
            _ => sequences.contains(&"A") && sequences.contains(&"B"),
        };
        if !ok {
            return bad(format!(
                "has a `{key}` template with sequences {sequences:?} (single: only A; pair: A and B)"
            ));
        }
    }
    Ok(())
}

impl HfTokenizer {
    /// `dir/tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, DataError> {
        Self::from_file(&dir.join(TOKENIZER_FILE))
    }

    /// A `tokenizer.json` file, or a directory holding one.
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        if path.is_dir() {
            Self::from_dir(path)
        } else {
            Self::from_file(path)
        }
    }

    /// A `tokenizer.json` file; the special tokens are read from the files beside it.
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        if !path.is_file() {
            return Err(DataError::MissingTokenizer {
                path: path.to_path_buf(),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            reason: format!("cannot read it: {e}"),
        })?;
        let inner = parse_tokenizer(&bytes).map_err(|reason| DataError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |name: &str| -> Option<Value> {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        };
        let ids = read(MODEL_CONFIG_FILE)
            .map(|c| SpecialIds::from_config(&c))
            .unwrap_or_default();
        let tok_cfg = read(TOKENIZER_CONFIG_FILE);
        let token = |key: &str| -> Option<u32> {
            let v = tok_cfg.as_ref()?.get(key)?;
            // a string, or an AddedToken object {"content": "<s>", ...}
            let s = v
                .as_str()
                .or_else(|| v.get("content").and_then(Value::as_str))?;
            inner.token_to_id(s)
        };
        Ok(Self {
            bos: token("bos_token").or(ids.bos),
            eos: token("eos_token").or(ids.eos),
            pad: token("pad_token").or(ids.pad),
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (e.g.
    /// a leading BOS), as `tokenizer(text)` does in transformers.
    pub fn try_encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, DataError> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.error(e))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn try_decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.inner.decode(ids, true).map_err(|e| self.error(e))
    }

    fn error(&self, e: tokenizers::Error) -> DataError {
        DataError::Tokenizer {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}

impl Tokenizer for HfTokenizer {
    /// Without special tokens: the data pipeline adds BOS/EOS itself. An encoding error (the
    /// tokenizers crate reports none for plain text) gives no tokens.
    fn encode(&self, text: &str) -> Vec<u32> {
        self.try_encode(text, false).unwrap_or_default()
    }

    /// Special tokens are skipped; an id outside the vocabulary decodes to nothing.
    fn decode(&self, ids: &[u32]) -> String {
        self.try_decode(ids).unwrap_or_default()
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn bos(&self) -> u32 {
        self.bos.or(self.eos).unwrap_or(0)
    }

    fn eos(&self) -> u32 {
        self.eos.or(self.bos).unwrap_or(0)
    }

    fn pad(&self) -> Option<u32> {
        self.pad
    }
}
