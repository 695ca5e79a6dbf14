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
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
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
