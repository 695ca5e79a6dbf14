//! The HuggingFace architectures this crate reads and writes, and their tensor-name
//! conventions.

use std::fmt;
use std::str::FromStr;

/// A supported HF MoE architecture (`config.json`'s `model_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HfArch {
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
    DeepseekV2,
    DeepseekV3,
}

impl HfArch {
    pub const ALL: [HfArch; 6] = [
        HfArch::Mixtral,
        HfArch::Qwen2Moe,
        HfArch::Qwen3Moe,
        HfArch::Olmoe,
        HfArch::DeepseekV2,
        HfArch::DeepseekV3,
    ];

    /// `config.json`'s `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            HfArch::Mixtral => "mixtral",
            HfArch::Qwen2Moe => "qwen2_moe",
            HfArch::Qwen3Moe => "qwen3_moe",
            HfArch::Olmoe => "olmoe",
            HfArch::DeepseekV2 => "deepseek_v2",
            HfArch::DeepseekV3 => "deepseek_v3",
        }
    }

    /// `config.json`'s `architectures[0]`: the transformers class.
    pub fn class_name(self) -> &'static str {
        match self {
            HfArch::Mixtral => "MixtralForCausalLM",
            HfArch::Qwen2Moe => "Qwen2MoeForCausalLM",
            HfArch::Qwen3Moe => "Qwen3MoeForCausalLM",
            HfArch::Olmoe => "OlmoeForCausalLM",
            HfArch::DeepseekV2 => "DeepseekV2ForCausalLM",
            HfArch::DeepseekV3 => "DeepseekV3ForCausalLM",
        }
    }

    /// "mixtral, qwen2_moe, …" for error messages.
    pub fn supported_list() -> String {
        Self::ALL
            .iter()
            .map(|a| a.model_type())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// By `model_type` or class name, case-insensitively (`-` and `_` alike).
    pub fn from_name(name: &str) -> Option<Self> {
        let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
        let n = norm(name);
        Self::ALL
            .into_iter()
            .find(|a| n == a.model_type() || n == norm(a.class_name()))
    }

    pub fn is_deepseek(self) -> bool {
        matches!(self, HfArch::DeepseekV2 | HfArch::DeepseekV3)
    }

    /// Prefix of an MoE layer's tensors inside `model.layers.{i}.`.
    pub fn moe_prefix(self) -> &'static str {
        match self {
            HfArch::Mixtral => "block_sparse_moe",
            _ => "mlp",
        }
    }

    /// Names of an expert's gate, up and down projections.
    pub fn expert_proj_names(self) -> [&'static str; 3] {
        match self {
            HfArch::Mixtral => ["w1", "w3", "w2"],
            _ => ["gate_proj", "up_proj", "down_proj"],
        }
    }

    /// Sub-module of the always-on shared expert(s), if the architecture has one.
    pub fn shared_prefix(self) -> Option<&'static str> {
        match self {
            HfArch::Qwen2Moe => Some("shared_expert"),
            HfArch::DeepseekV2 | HfArch::DeepseekV3 => Some("shared_experts"),
            _ => None,
        }
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
