//! A HuggingFace `tokenizer.json` (the `tokenizers` crate) behind
//! [`switchyard_data::Tokenizer`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{InteropError, Result};
use crate::hf_config::SpecialIds;
use crate::import::{CONFIG_FILE, TOKENIZER_FILE};

const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// A HF tokenizer with its special ids.
pub struct HfTokenizer {
    pub inner: tokenizers::Tokenizer,
    /// The `tokenizer.json` it was read from.
    pub path: PathBuf,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

impl HfTokenizer {
    /// `dir/tokenizer.json`; special tokens from `dir/tokenizer_config.json` (`bos_token`,
    /// …), else from `dir/config.json` (`bos_token_id`, …).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Err(InteropError::MissingFile {
                path,
                listed_in: None,
            });
        }
        let inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| InteropError::Tokenizer {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let read = |name: &str| -> Option<Value> {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        };
        let ids = read(CONFIG_FILE)
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
            path,
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (e.g.
    /// a leading BOS), as `tokenizer(text)` does in transformers.
    pub fn try_encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc =
            self.inner
                .encode(text, add_special_tokens)
                .map_err(|e| InteropError::Tokenizer {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn try_decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| InteropError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }
}

impl switchyard_data::Tokenizer for HfTokenizer {
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
