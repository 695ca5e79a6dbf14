//! `config.json` ↔ [`LmConfig`]. Reads both layouts transformers writes: the Hub
//! (transformers 4) one with top-level `rope_theta` / `rope_scaling`, and transformers 5's
//! `rope_parameters`. Writes the Hub layout, which both versions load.
//!
//! What each field means is spelled out in `scripts/reference/README.md` ("What an importer
//! must match") and executed in `scripts/reference/hf_spec_forward.py`.
//!
//! This file holds what every architecture shares (the JSON access, the attention keys, the
//! order of the checks); each family's own keys and rules are in [`crate::family`], and the
//! RoPE keys in `hf_rope.rs`.

use std::path::Path;

use serde_json::{json, Map, Value};
use switchyard_core::{ExpertKind, GateConfig, LossWeights, MoeConfig};
use switchyard_models::memory::MAX_EXPERTS;
use switchyard_models::{LayerFfn, LmConfig};

use crate::arch::HfArch;
use crate::error::{InteropError, Result};
use crate::family::{owners, unsupported, HfJson, MoeBase, Problems, QkNorm};
use crate::hf_rope::{rope, rope_scaling_json};

/// eps of DeepSeek's `q_a_layernorm` / `kv_a_layernorm`: HF builds them with the class default.
pub const MLA_NORM_EPS: f64 = 1e-6;
/// Default RoPE base when a config names none (transformers' default).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// Typed access to a `config.json` object, with errors that name the file and key.
pub struct Raw<'a> {
    pub(crate) v: &'a Map<String, Value>,
    pub(crate) path: &'a Path,
}

impl<'a> Raw<'a> {
    pub fn err(&self, key: &str, reason: impl Into<String>) -> InteropError {
        InteropError::Config {
            path: self.path.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "required but missing"))
    }
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }
    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }
    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|n| n as usize)
                        .ok_or_else(|| self.err(key, format!("expected integers, got {x}")))
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("expected a list of layer indices, got {v}"))),
        }
    }
    /// The first of `keys` that is present (the expert count has three names).
    pub fn first_usize(&self, keys: &[&str]) -> Result<usize> {
        for k in keys {
            if let Some(n) = self.opt_usize(k)? {
                return Ok(n);
            }
        }
        Err(self.err(
            keys[0],
            format!(
                "required but missing (also looked for {})",
                keys[1..].join(", ")
            ),
        ))
    }
    /// A number of routed experts (the first of `keys` present), at most [`MAX_EXPERTS`]:
    /// checked here because a list of that many experts is built before the config is
    /// validated.
    pub fn expert_count(&self, keys: &[&str]) -> Result<usize> {
        let n = match keys {
            [key] => self.usize(key)?,
            _ => self.first_usize(keys)?,
        };
        if n > MAX_EXPERTS {
            let key = keys
                .iter()
                .find(|k| self.get(k).is_some())
                .unwrap_or(&keys[0]);
            return Err(self.err(
                key,
                format!(
                    "{n} experts is beyond what any model here can hold (at most {MAX_EXPERTS})"
                ),
            ));
        }
        Ok(n)
    }
}

/// Which architecture a `config.json` describes: `model_type`, else `architectures[0]`.
pub fn detect_arch(config: &Value, path: &Path) -> Result<HfArch> {
    let model_type = config.get("model_type").and_then(Value::as_str);
    let class = config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str);
    if let Some(a) = model_type
        .and_then(HfArch::from_name)
        .or_else(|| class.and_then(HfArch::from_name))
    {
        return Ok(a);
    }
    let found = model_type
        .or(class)
        .unwrap_or("(no model_type or architectures)")
        .to_string();
    Err(InteropError::UnknownArchitecture {
        found,
        path: path.into(),
    })
}

/// Reads and parses `config.json`.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => InteropError::MissingFile {
            path: path.into(),
            listed_in: None,
        },
        _ => InteropError::Io {
            path: path.into(),
            source: e,
        },
    })?;
    serde_json::from_str(&text).map_err(|source| InteropError::Json {
        path: path.into(),
        source,
    })
}

/// The Switchyard config of an HF `config.json`: the keys every family shares here, then
/// the family's own ([`crate::family::HfFamily::read`]).
pub fn lm_config_from_hf(arch: HfArch, config: &Value, path: &Path) -> Result<LmConfig> {
    let family = arch.family();
    let v = config.as_object().ok_or_else(|| InteropError::Config {
        path: path.into(),
        key: "(root)".into(),
        reason: "config.json must hold a JSON object".into(),
    })?;
    let c = Raw { v, path };

    let act = c.str_or("hidden_act", "silu")?;
    if act != "silu" {
        return Err(unsupported(
            family,
            format!("hidden_act = \"{act}\""),
            Some("only SwiGLU (silu) experts are implemented"),
        ));
    }
    let (rope_theta, rope_scaling) = rope(&c, family)?;
    // a typed read (a string here is an error, not "absent"), inside `rope_parameters` first
    let params = c.get("rope_parameters").and_then(Value::as_object);
    let partial = match params.map(|v| Raw { v, path: c.path }) {
        Some(p) => p.opt_f64("partial_rotary_factor")?,
        None => None,
    };
    let partial = match partial {
        Some(f) => Some(f),
        None => c.opt_f64("partial_rotary_factor")?,
    };
    if let Some(f) = partial.filter(|&f| f != 1.0) {
        return Err(unsupported(
            family,
            format!("partial_rotary_factor = {f}"),
            Some("RoPE over part of the head is not implemented; only 1.0 (the whole head) is"),
        ));
    }
    let d = c.usize("hidden_size")?;
    let n_heads = c.usize("num_attention_heads")?;
    let n_layers = c.usize("num_hidden_layers")?;
    let n_kv = c.usize_or("num_key_value_heads", n_heads)?;
    let mut max_seq_len = c.usize_or("max_position_embeddings", 4096)?;
    // Attention here is always full: a sliding window only changes results past its length,
    // so the model is exact if sequences stay within it.
    if let Some(w) = family.sliding_window(&c)?.filter(|&w| w > 0) {
        max_seq_len = max_seq_len.min(w);
    }
    let attention_bias = c.bool_or("attention_bias", false)?;
    if attention_bias {
        return Err(unsupported(
            family,
            "attention_bias = true (a bias on every attention projection, o_proj included)",
            None,
        ));
    }

    let moe = MoeBase {
        d_model: d,
        k: c.usize("num_experts_per_tok")?,
        norm_topk: c.bool_or("norm_topk_prob", false)?,
        losses: LossWeights {
            switch_balance: c.f64_or("router_aux_loss_coef", 0.0)?,
            importance: 0.0,
            load: 0.0,
            z: c.f64_or("router_z_loss_coef", 0.0)?,
            domain_map: 0.0,
        },
    };
    let mut cfg = LmConfig {
        vocab_size: c.usize("vocab_size")?,
        d_model: d,
        n_layers,
        n_heads,
        n_kv_heads: Some(n_kv),
        max_seq_len,
        rope_theta,
        rope_scaling,
        norm_eps: c.f64_or("rms_norm_eps", 1e-6)?,
        tie_embeddings: c.bool_or("tie_word_embeddings", false)?,
        ..Default::default()
    };
    // explicit head_dim (Qwen3; Mixtral may write null); MLA has its own head widths
    let head_dim = c.opt_usize("head_dim")?;
    if !family.features().mla {
        cfg.head_dim = head_dim.filter(|&h| h.checked_mul(n_heads) != Some(d));
    }
    family.read(&c, &moe, &mut cfg)?;
    cfg.validate().map_err(|e| InteropError::Config {
        path: path.into(),
        key: "(mapped config)".into(),
        reason: e.to_string(),
    })?;
    Ok(cfg)
}

/// Checks that `cfg` has an exact equivalent in `arch`; lists every obstacle: the shared
/// ones, then the family's ([`crate::family::HfFamily::check_moe`]), then the attention
/// features against what the family has ([`crate::family::Features`]).
pub fn check_representable(arch: HfArch, cfg: &LmConfig) -> std::result::Result<(), Vec<String>> {
    let family = arch.family();
    let f = family.features();
    let mut p = Problems::default();
    let Some(m) = first_moe(cfg) else {
        return Err(vec!["the model has no MoE layer".into()]);
    };
    p.want(cfg.vocab_size != 0, "vocab_size is 0");
    p.want(
        cfg.is_uniform(),
        format!(
            "every MoE layer must have one config (HF configs hold one expert count and router \
             for all layers), but layer_moe gives layers {:?} their own (after `switchyard \
             experts` on some layers; apply the same surgery to every layer to export)",
            cfg.layer_moe.iter().map(|o| o.layer).collect::<Vec<_>>()
        ),
    );
    let widths: Vec<usize> = m.experts.iter().map(|e| e.hidden).collect();
    p.want(
        m.experts
            .iter()
            .chain(&m.shared_experts)
            .all(|e| e.kind == ExpertKind::SwiGlu),
        "every expert must be SwiGLU",
    );
    p.want(
        widths.iter().all(|&w| w == widths[0]),
        format!("routed experts must share one width, got {widths:?}"),
    );
    p.want(
        m.gate == (GateConfig::Linear { context: false }),
        "the gate must be linear without context",
    );
    let moe_layers = cfg.moe_layers();
    let dense: Vec<usize> = (0..cfg.n_layers)
        .filter(|i| !moe_layers.contains(i))
        .collect();
    p.want(
        cfg.mla.is_some() || !f.mla,
        "DeepSeek needs multi-head latent attention (mla)",
    );
    p.want(
        cfg.mla.is_none() || f.mla,
        "multi-head latent attention is DeepSeek-only",
    );
    family.check_moe(m, &dense, &mut p);
    if !f.gated_shared_expert {
        let only = owners(|f| f.gated_shared_expert);
        p.want(
            !m.shared_gate,
            format!("a gated shared expert is {only}-only"),
        );
    }
    family.check_layout(m, &dense, &mut p);
    let name = family.display_name();
    if !f.qkv_bias {
        let only = owners(|f| f.qkv_bias);
        p.want(!cfg.qkv_bias, format!("q/k/v biases are {only}-only"));
    }
    let full = f.qk_norm == QkNorm::Full;
    if !full {
        let only = owners(|f| f.qk_norm == QkNorm::Full);
        p.want(!cfg.qk_norm, format!("full-width q/k norm is {only}-only"));
    }
    p.want(
        cfg.qk_norm || !full,
        format!("{name} needs the full-width q/k norm (qk_norm)"),
    );
    let per_head = f.qk_norm == QkNorm::PerHead;
    if !per_head {
        let only = owners(|f| f.qk_norm == QkNorm::PerHead);
        p.want(
            !cfg.qk_norm_per_head,
            format!("per-head q/k norm is {only}-only"),
        );
    }
    p.want(
        cfg.qk_norm_per_head || !per_head,
        format!("{name} needs the per-head q/k norm (qk_norm_per_head)"),
    );
    if !f.clip_qkv {
        let only = owners(|f| f.clip_qkv);
        p.want(cfg.clip_qkv.is_none(), format!("clip_qkv is {only}-only"));
    }
    if let Some(mla) = &cfg.mla {
        p.want(
            mla.rope_interleave || f.optional_rope_interleave,
            "DeepSeek-V2 always interleaves RoPE",
        );
        p.want(
            mla.lora_norm_eps == MLA_NORM_EPS,
            "the MLA norms use eps 1e-6 in transformers",
        );
    }
    if p.0.is_empty() {
        Ok(())
    } else {
        Err(p.0)
    }
}

/// The routed-MoE config shared by all MoE layers.
pub(crate) fn first_moe(cfg: &LmConfig) -> Option<&MoeConfig> {
    match &cfg.ffn.sparse {
        LayerFfn::Moe(m) => Some(m),
        LayerFfn::Dense { .. } => None,
    }
}

/// The first architecture that represents `cfg` exactly (Mixtral first, the simplest).
pub fn infer_arch(cfg: &LmConfig) -> Option<HfArch> {
    HfArch::ALL
        .into_iter()
        .find(|&a| check_representable(a, cfg).is_ok())
}

pub use switchyard_data::SpecialIds;

/// A Hub-layout `config.json` for `cfg` as `arch` (call [`check_representable`] first): the
/// keys every family shares, then the family's ([`crate::family::HfFamily::write`]).
pub fn hf_config_from_lm(arch: HfArch, cfg: &LmConfig, ids: SpecialIds) -> Result<Value> {
    check_representable(arch, cfg).map_err(|problems| InteropError::NotRepresentable {
        arch: arch.to_string(),
        problems,
    })?;
    let family = arch.family();
    let m = first_moe(cfg).expect("checked: has an MoE layer");
    let mut c = json!({
        "architectures": [family.class_name()],
        "model_type": family.model_type(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads(),
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling_json(cfg.rope_scaling.as_ref()),
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "num_experts_per_tok": m.router.k(),
        "attention_dropout": 0.0,
        "use_cache": true,
        "torch_dtype": "float32",
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
    });
    let moe_layers = cfg.moe_layers();
    let dense_layers: Vec<usize> = (0..cfg.n_layers)
        .filter(|i| !moe_layers.contains(i))
        .collect();
    let mut out = HfJson(c.as_object_mut().expect("object"));
    family.write(cfg, m, &dense_layers, &mut out);
    Ok(c)
}
