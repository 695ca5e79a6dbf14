//! One file per HuggingFace architecture family, behind the [`HfFamily`] trait, and the
//! registry of them all.
//!
//! A family says what differs between architectures: its names (`model_type`, the
//! transformers class), how its `config.json` keys become the MoE part of an [`LmConfig`],
//! which Switchyard models it can express and how it writes them back, and its tensor names.
//! Everything every family shares (the JSON access, the attention and RoPE keys, the
//! parameter mapping) stays in [`crate::hf_config`] and [`crate::names`], which call in here.
//!
//! Adding a family: a file in this folder with a unit struct implementing [`HfFamily`], its
//! `mod` line, and one line in the `registry!` call below. Every list of supported
//! architectures ([`supported_architectures`], [`HfArch::ALL`], error messages) follows.

use serde_json::{Map, Value};
use switchyard_core::router::TopKConfig;
use switchyard_core::{ExpertSpec, GateConfig, LossWeights, MoeConfig, RouterConfig};
use switchyard_models::LmConfig;

use crate::error::{InteropError, Result};
use crate::hf_config::Raw;

mod deepseek;
mod mixtral;
mod olmoe;
mod qwen_moe;

/// Declares the registry: one line per family, `Variant => family value`. Generates the
/// [`HfArch`] enum (the stable identity written into checkpoints and taken by `--arch`),
/// [`HfArch::ALL`], [`HfArch::family`] and [`FAMILIES`], all in the listed order.
macro_rules! registry {
    ($($variant:ident => $family:expr,)+) => {
        /// A supported HF MoE architecture. Its names and conventions are those of its
        /// [`HfFamily`] ([`HfArch::family`]); it is written as its `model_type`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum HfArch {
            $($variant,)+
        }

        impl HfArch {
            /// Every supported architecture, in registry order: export without `--arch`
            /// takes the first that expresses the model.
            pub const ALL: [HfArch; [$(stringify!($variant)),+].len()] = [$(HfArch::$variant),+];

            /// The family that implements this architecture.
            pub fn family(self) -> &'static dyn HfFamily {
                match self {
                    $(HfArch::$variant => &$family,)+
                }
            }
        }

        /// Every family, in the order of [`HfArch::ALL`].
        pub static FAMILIES: &[&dyn HfFamily] = &[$(&$family),+];
    };
}

// Simplest first: a model that several architectures express exports as the first of them.
registry! {
    Mixtral => mixtral::Mixtral,
    Qwen2Moe => qwen_moe::Qwen2Moe,
    Qwen3Moe => qwen_moe::Qwen3Moe,
    Olmoe => olmoe::Olmoe,
    DeepseekV2 => deepseek::DeepseekV2,
    DeepseekV3 => deepseek::DeepseekV3,
}

/// The `model_type` of every supported architecture, in registry order.
pub fn supported_architectures() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.model_type()).collect()
}

/// What differs between HF architecture families. The generic code in
/// [`crate::hf_config`] reads and checks what all families share, then calls these.
pub trait HfFamily: Sync {
    /// `config.json`'s `model_type`.
    fn model_type(&self) -> &'static str;
    /// `config.json`'s `architectures[0]`: the transformers class.
    fn class_name(&self) -> &'static str;
    /// How people write it ("Qwen2-MoE"), in export problems.
    fn display_name(&self) -> &'static str;
    /// The optional attention and shared-expert features it has.
    fn features(&self) -> Features;

    /// The sliding attention window its config asks for, if any: `max_seq_len` is capped at
    /// it, where full attention is exact.
    fn sliding_window(&self, _c: &Raw<'_>) -> Result<Option<usize>> {
        Ok(None)
    }
    /// Reads the family's keys: the FFN (experts, router, shared and dense layers) and its
    /// attention options. `cfg` holds everything the families share.
    fn read(&self, c: &Raw<'_>, moe: &MoeBase, cfg: &mut LmConfig) -> Result<()>;

    /// Whether its routing, shared experts and dense layers can express `m` and `dense`
    /// (the indices of the layers that are not MoE).
    fn check_moe(&self, m: &MoeConfig, dense: &[usize], p: &mut Problems);
    /// Checks of how experts and dense layers are laid out, after the shared-gate check.
    fn check_layout(&self, _m: &MoeConfig, _dense: &[usize], _p: &mut Problems) {}
    /// Writes the family's keys of a Hub-layout `config.json` (the shared ones are there).
    fn write(&self, cfg: &LmConfig, m: &MoeConfig, dense: &[usize], out: &mut HfJson<'_>);

    /// Prefix of an MoE layer's tensors inside `model.layers.{i}.`.
    fn moe_prefix(&self) -> &'static str {
        "mlp"
    }
    /// Names of an expert's gate, up and down projections.
    fn expert_proj_names(&self) -> [&'static str; 3] {
        ["gate_proj", "up_proj", "down_proj"]
    }
    /// Sub-module of the always-on shared expert(s), if the family has them.
    fn shared_prefix(&self) -> Option<&'static str> {
        None
    }
    /// Router buffers stored as HF tensors: `(router buffer name, HF tensor name)` for an
    /// MoE layer whose tensors start with `moe_prefix` (`model.layers.{i}.mlp.`); each holds
    /// one value per routed expert.
    fn router_buffers(&self, _moe_prefix: &str) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// Optional features of a family; a model using one exports only to families that have it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Multi-head latent attention instead of q/k/v projections (required when set).
    pub mla: bool,
    /// MLA may apply RoPE without interleaving (`rope_interleave = false`).
    pub optional_rope_interleave: bool,
    /// A shared expert scaled by a sigmoid gate.
    pub gated_shared_expert: bool,
    /// Biases on the q/k/v projections.
    pub qkv_bias: bool,
    /// RMSNorm on queries and keys (required when set).
    pub qk_norm: QkNorm,
    /// Clamping of q/k/v to `±clip_qkv`.
    pub clip_qkv: bool,
}

/// Which q/k RMSNorm a family applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QkNorm {
    #[default]
    None,
    /// Over the whole projection (`qk_norm`).
    Full,
    /// Per head (`qk_norm_per_head`).
    PerHead,
}

/// The display names of the families that have a feature: "Qwen2-MoE" in
/// "q/k/v biases are Qwen2-MoE-only".
pub(crate) fn owners(has: impl Fn(&Features) -> bool) -> String {
    FAMILIES
        .iter()
        .filter(|f| has(&f.features()))
        .map(|f| f.display_name())
        .collect::<Vec<_>>()
        .join("/")
}

/// What every family's MoE layers share, read from the common keys.
pub struct MoeBase {
    pub d_model: usize,
    /// `num_experts_per_tok`.
    pub k: usize,
    /// `norm_topk_prob` (default false).
    pub norm_topk: bool,
    pub losses: LossWeights,
}

impl MoeBase {
    /// `experts` SwiGLU experts of width `hidden` behind a linear gate.
    pub fn moe(
        &self,
        experts: usize,
        hidden: usize,
        router: RouterConfig,
        renormalize: bool,
    ) -> MoeConfig {
        MoeConfig {
            d_model: self.d_model,
            experts: vec![ExpertSpec::swiglu(hidden); experts],
            router,
            renormalize,
            gate: GateConfig::Linear { context: false },
            losses: self.losses.clone(),
            ..Default::default()
        }
    }

    /// Softmax top-`k` routing.
    pub fn topk(&self) -> RouterConfig {
        RouterConfig::TopK(TopKConfig { k: self.k })
    }
}

/// The reasons a model cannot be exported as one architecture.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// Records `what` unless `ok`.
    pub fn want(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
}

/// A `config.json` object being written.
pub struct HfJson<'a>(pub &'a mut Map<String, Value>);

impl HfJson<'_> {
    pub fn set(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_string(), value);
    }
}

/// A feature of the checkpoint the family does not implement.
pub(crate) fn unsupported(
    family: &dyn HfFamily,
    what: impl Into<String>,
    hint: Option<&str>,
) -> InteropError {
    InteropError::Unsupported {
        arch: family.model_type().to_string(),
        what: what.into(),
        hint: hint.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_found_by_its_names_and_written_as_its_model_type() {
        assert_eq!(FAMILIES.len(), HfArch::ALL.len());
        for (a, f) in HfArch::ALL.into_iter().zip(FAMILIES) {
            assert_eq!(a.model_type(), f.model_type());
            assert_eq!(HfArch::from_name(f.model_type()), Some(a));
            assert_eq!(HfArch::from_name(f.class_name()), Some(a));
            let json = serde_json::to_value(a).unwrap();
            assert_eq!(json, Value::from(f.model_type()));
            assert_eq!(serde_json::from_value::<HfArch>(json).unwrap(), a);
        }
        let mut names = supported_architectures();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            FAMILIES.len(),
            "model_type names must be unique"
        );
    }
}
