//! [`HfArch`]: which HuggingFace architecture a checkpoint is, by name. The list of
//! architectures and everything each one means live in [`crate::family`]; this file only
//! names, parses and prints them.

use std::fmt;
use std::str::FromStr;

use crate::family::supported_architectures;
pub use crate::family::HfArch;

impl HfArch {
    /// `config.json`'s `model_type`.
    pub fn model_type(self) -> &'static str {
        self.family().model_type()
    }

    /// `config.json`'s `architectures[0]`: the transformers class.
    pub fn class_name(self) -> &'static str {
        self.family().class_name()
    }

    /// "mixtral, qwen2_moe, …" for error messages.
    pub fn supported_list() -> String {
        supported_architectures().join(", ")
    }

    /// By `model_type` or class name, case-insensitively (`-` and `_` alike).
    pub fn from_name(name: &str) -> Option<Self> {
        let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
        let n = norm(name);
        Self::ALL
            .into_iter()
            .find(|a| n == a.model_type() || n == norm(a.class_name()))
    }
}

impl fmt::Display for HfArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

impl FromStr for HfArch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_name(s).ok_or_else(|| {
            format!(
                "unknown architecture `{s}`; supported: {}",
                Self::supported_list()
            )
        })
    }
}

/// Written as its `model_type` (`hf_source.json`'s `"arch"`).
impl serde::Serialize for HfArch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.model_type())
    }
}

impl<'de> serde::Deserialize<'de> for HfArch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}
