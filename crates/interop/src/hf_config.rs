//! `config.json` ↔ [`LmConfig`]. Reads both layouts transformers writes: the Hub
//! (transformers 4) one with top-level `rope_theta` / `rope_scaling`, and transformers 5's
//! `rope_parameters`. Writes the Hub layout, which both versions load.
//!
//! What each field means is spelled out in `scripts/reference/README.md` ("What an importer
//! must match") and executed in `scripts/reference/hf_spec_forward.py`.

use std::path::Path;

use serde_json::{json, Map, Value};
use switchyard_core::router::{GroupLimitedConfig, TopKConfig};
use switchyard_core::{
    ExpertKind, ExpertSpec, GateConfig, GroupScore, LossWeights, MoeConfig, RouterConfig, ScoreFn,
};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, MlaConfig, RopeScaling, YarnScaling};

use crate::arch::HfArch;
use crate::error::{InteropError, Result};

/// eps of DeepSeek's `q_a_layernorm` / `kv_a_layernorm`: HF builds them with the class default.
pub const MLA_NORM_EPS: f64 = 1e-6;
/// Default RoPE base when a config names none (transformers' default).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// Typed access to a `config.json` object, with errors that name the file and key.
struct Raw<'a> {
    v: &'a Map<String, Value>,
    path: &'a Path,
}

impl<'a> Raw<'a> {
    fn err(&self, key: &str, reason: impl Into<String>) -> InteropError {
        InteropError::Config {
            path: self.path.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "required but missing"))
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }
    fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }
    fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
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
    fn first_usize(&self, keys: &[&str]) -> Result<usize> {
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

/// The Switchyard config of an HF `config.json`.
pub fn lm_config_from_hf(arch: HfArch, config: &Value, path: &Path) -> Result<LmConfig> {
    let v = config.as_object().ok_or_else(|| InteropError::Config {
        path: path.into(),
        key: "(root)".into(),
        reason: "config.json must hold a JSON object".into(),
    })?;
    let c = Raw { v, path };
    let unsupported = |what: String, hint: Option<&str>| InteropError::Unsupported {
        arch: arch.to_string(),
        what,
        hint: hint.map(str::to_string),
    };

    let act = c.str_or("hidden_act", "silu")?;
    if act != "silu" {
        return Err(unsupported(
            format!("hidden_act = \"{act}\""),
            Some("only SwiGLU (silu) experts are implemented"),
        ));
    }
    let (rope_theta, rope_scaling) = rope(&c, arch)?;
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
    let window = match arch {
        HfArch::Mixtral => c.opt_usize("sliding_window")?,
        HfArch::Qwen2Moe | HfArch::Qwen3Moe if c.bool_or("use_sliding_window", false)? => {
            c.opt_usize("sliding_window")?
        }
        _ => None,
    };
    if let Some(w) = window.filter(|&w| w > 0) {
        max_seq_len = max_seq_len.min(w);
    }
    let attention_bias = c.bool_or("attention_bias", false)?;
    if attention_bias {
        return Err(unsupported(
            "attention_bias = true (a bias on every attention projection, o_proj included)".into(),
            None,
        ));
    }

    let k = c.usize("num_experts_per_tok")?;
    let norm_topk = c.bool_or("norm_topk_prob", false)?;
    let losses = LossWeights {
        switch_balance: c.f64_or("router_aux_loss_coef", 0.0)?,
        importance: 0.0,
        load: 0.0,
        z: c.f64_or("router_z_loss_coef", 0.0)?,
    };
    let moe = |experts: usize, hidden: usize, router: RouterConfig, renormalize: bool| MoeConfig {
        d_model: d,
        experts: vec![ExpertSpec::swiglu(hidden); experts],
        router,
        renormalize,
        gate: GateConfig::Linear { context: false },
        losses: losses.clone(),
        ..Default::default()
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
    // explicit head_dim (Qwen3; Mixtral may write null)
    let head_dim = c.opt_usize("head_dim")?;
    if !arch.is_deepseek() {
        cfg.head_dim = head_dim.filter(|&h| h * n_heads != d);
    }

    let topk = RouterConfig::TopK(TopKConfig { k });
    match arch {
        HfArch::Mixtral => {
            let e = c.first_usize(&["num_local_experts", "num_experts"])?;
            let hidden = c.usize("intermediate_size")?;
            let m = moe(e, hidden, topk, true);
            // every layer is MoE: dense_hidden is unused
            cfg.ffn = FfnConfig {
                sparse: LayerFfn::Moe(m),
                moe_every: 1,
                first_dense: 0,
                dense_hidden: hidden,
            };
        }
        HfArch::Qwen2Moe | HfArch::Qwen3Moe => {
            let e = c.first_usize(&["num_experts", "num_local_experts"])?;
            let mut m = moe(e, c.usize("moe_intermediate_size")?, topk, norm_topk);
            if arch == HfArch::Qwen2Moe {
                let shared = c.usize("shared_expert_intermediate_size")?;
                if shared > 0 {
                    m.shared_experts = vec![ExpertSpec::swiglu(shared)];
                    m.shared_gate = true;
                }
                cfg.qkv_bias = c.bool_or("qkv_bias", true)?;
            } else {
                cfg.qk_norm_per_head = true;
            }
            let step = c.usize_or("decoder_sparse_step", 1)?;
            if step == 0 || e == 0 {
                return Err(unsupported(
                    "a model without MoE layers (num_experts or decoder_sparse_step = 0)".into(),
                    None,
                ));
            }
            cfg.ffn = FfnConfig {
                sparse: LayerFfn::Moe(m),
                moe_every: step,
                first_dense: 0,
                dense_hidden: c.usize("intermediate_size")?,
            };
            cfg.dense_layers = c.usize_list("mlp_only_layers")?;
        }
        HfArch::Olmoe => {
            let e = c.first_usize(&["num_experts", "num_local_experts"])?;
            let hidden = c.usize("intermediate_size")?;
            let m = moe(e, hidden, topk, norm_topk);
            cfg.ffn = FfnConfig {
                sparse: LayerFfn::Moe(m),
                moe_every: 1,
                first_dense: 0,
                dense_hidden: hidden,
            };
            cfg.qk_norm = true;
            cfg.clip_qkv = c.opt_f64("clip_qkv")?;
        }
        HfArch::DeepseekV2 | HfArch::DeepseekV3 => {
            let e = c.usize("n_routed_experts")?;
            let scaling = c.f64_or("routed_scaling_factor", 1.0)?;
            let (groups, topk_groups) = (c.usize_or("n_group", 1)?, c.usize_or("topk_group", 1)?);
            let (router, renormalize) = if arch == HfArch::DeepseekV2 {
                // transformers' V2 never renormalises (it ignores norm_topk_prob)
                let method = c.str_or("topk_method", "greedy")?;
                let (g, tg) = match method {
                    "greedy" => (1, 1),
                    "group_limited_greedy" => (groups, topk_groups),
                    other => {
                        return Err(unsupported(
                            format!("topk_method = \"{other}\""),
                            Some("V2 supports greedy and group_limited_greedy"),
                        ))
                    }
                };
                let r = RouterConfig::GroupLimited(GroupLimitedConfig {
                    k,
                    groups: g,
                    topk_groups: tg,
                    score: ScoreFn::Softmax,
                    group_score: GroupScore::Max,
                    bias_update_rate: 0.0,
                    scaling,
                });
                (r, false)
            } else {
                let method = c.str_or("topk_method", "noaux_tc")?;
                if method != "noaux_tc" {
                    return Err(unsupported(
                        format!("topk_method = \"{method}\""),
                        Some("transformers' V3 implements noaux_tc only"),
                    ));
                }
                let r = RouterConfig::GroupLimited(GroupLimitedConfig {
                    k,
                    groups,
                    topk_groups,
                    score: ScoreFn::Sigmoid,
                    group_score: GroupScore::Top2Sum,
                    // the bias is loaded from e_score_correction_bias; set a rate to fine-tune it
                    bias_update_rate: 0.0,
                    scaling,
                });
                (r, c.bool_or("norm_topk_prob", true)?)
            };
            let hidden = c.usize("moe_intermediate_size")?;
            let mut m = moe(e, hidden, router, renormalize);
            let shared = c.usize_or("n_shared_experts", 0)?;
            if shared > 0 {
                // HF builds the shared experts as one MLP of width n_shared · moe_intermediate_size
                m.shared_experts = vec![ExpertSpec::swiglu(shared * hidden)];
            }
            let first = c.usize_or("first_k_dense_replace", 0)?;
            cfg.ffn = FfnConfig {
                sparse: LayerFfn::Moe(m),
                moe_every: 1,
                first_dense: first.min(n_layers),
                dense_hidden: c.usize("intermediate_size")?,
            };
            cfg.n_kv_heads = None;
            cfg.mla = Some(MlaConfig {
                q_lora_rank: c.opt_usize("q_lora_rank")?,
                kv_lora_rank: c.usize("kv_lora_rank")?,
                qk_nope_head_dim: c.usize("qk_nope_head_dim")?,
                qk_rope_head_dim: c.usize("qk_rope_head_dim")?,
                v_head_dim: c.usize("v_head_dim")?,
                rope_interleave: arch == HfArch::DeepseekV2
                    || c.bool_or("rope_interleave", true)?,
                lora_norm_eps: MLA_NORM_EPS,
            });
        }
    }
    cfg.validate().map_err(|e| InteropError::Config {
        path: path.into(),
        key: "(mapped config)".into(),
        reason: e.to_string(),
    })?;
    Ok(cfg)
}

/// `rope_parameters.rope_theta` (transformers 5) or `rope_theta` (Hub), and the RoPE scaling
/// of `rope_scaling` (Hub) or `rope_parameters` (transformers 5): `default`, `linear` and
/// `yarn` are implemented, other types are refused. Defaults as transformers':
/// `original_max_position_embeddings` from the top level, else the scaling's, else
/// `max_position_embeddings`; `beta_fast` / `beta_slow` 32 / 1 when missing or 0.
fn rope(c: &Raw<'_>, arch: HfArch) -> Result<(f64, Option<RopeScaling>)> {
    let params = c.get("rope_parameters").and_then(Value::as_object);
    let theta = match params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
    {
        Some(t) => t,
        None => c.f64_or("rope_theta", DEFAULT_ROPE_THETA)?,
    };
    let (key, scaling) = match c.get("rope_scaling").and_then(Value::as_object) {
        Some(s) => ("rope_scaling", s),
        None => match params {
            Some(p) => ("rope_parameters", p),
            None => return Ok((theta, None)),
        },
    };
    // errors name the key inside the scaling object: `rope_scaling.factor`
    let s = Raw {
        v: scaling,
        path: c.path,
    };
    let within = |e: InteropError| match e {
        InteropError::Config {
            path,
            key: k,
            reason,
        } => InteropError::Config {
            path,
            key: format!("{key}.{k}"),
            reason,
        },
        other => other,
    };
    let kind = match s.get("rope_type") {
        Some(_) => s.str_or("rope_type", "default"),
        None => s.str_or("type", "default"),
    }
    .map_err(within)?;
    let factor = || {
        s.opt_f64("factor")?
            .ok_or_else(|| s.err("factor", "required for RoPE scaling but missing"))
    };
    let scaling = match kind {
        "default" => None,
        "linear" => {
            // transformers' DeepSeek would put m(factor, mscale_all_dim)² on the softmax
            // scale under any scaling type; Switchyard only does so for YaRN
            if arch.is_deepseek()
                && s.opt_f64("mscale_all_dim")
                    .map_err(within)?
                    .is_some_and(|m| m != 0.0)
            {
                return Err(InteropError::Unsupported {
                    arch: arch.to_string(),
                    what: "linear RoPE scaling with `mscale_all_dim`".into(),
                    hint: Some("mscale_all_dim is implemented with yarn scaling only".into()),
                });
            }
            Some(RopeScaling::Linear {
                factor: factor().map_err(within)?,
            })
        }
        "yarn" => {
            let original = match c.opt_usize("original_max_position_embeddings")? {
                Some(n) => n,
                None => match s
                    .opt_usize("original_max_position_embeddings")
                    .map_err(within)?
                {
                    Some(n) => n,
                    None => c.usize_or("max_position_embeddings", 4096)?,
                },
            };
            let nonzero_or = |k: &str, d: f64| -> Result<f64> {
                Ok(s.opt_f64(k)?.filter(|&v| v != 0.0).unwrap_or(d))
            };
            let y = (|| {
                Ok::<_, InteropError>(YarnScaling {
                    factor: factor()?,
                    original_max_seq_len: original,
                    beta_fast: nonzero_or("beta_fast", 32.0)?,
                    beta_slow: nonzero_or("beta_slow", 1.0)?,
                    mscale: s.opt_f64("mscale")?,
                    mscale_all_dim: s.opt_f64("mscale_all_dim")?,
                    attention_factor: s.opt_f64("attention_factor")?,
                    truncate: s.bool_or("truncate", true)?,
                })
            })()
            .map_err(within)?;
            Some(RopeScaling::Yarn(y))
        }
        other => {
            return Err(InteropError::Unsupported {
                arch: arch.to_string(),
                what: format!("RoPE scaling `{other}`"),
                hint: Some(
                    "linear and yarn RoPE scaling are implemented \
                     (dynamic, longrope, llama3 and others are not)"
                        .into(),
                ),
            })
        }
    };
    if let Some(sc) = &scaling {
        sc.validate().map_err(|e| {
            // name the HF key (`original_max_seq_len` is `original_max_position_embeddings`)
            let (field, reason) = match e {
                switchyard_models::ModelError::Config { field, reason } => (field, reason),
                other => (String::new(), other.to_string()),
            };
            let hf = match field.strip_prefix("rope_scaling.") {
                Some("original_max_seq_len") => ".original_max_position_embeddings",
                Some(_) => &field["rope_scaling".len()..],
                None => "",
            };
            InteropError::Config {
                path: c.path.into(),
                key: format!("{key}{hf}"),
                reason,
            }
        })?;
    }
    Ok((theta, scaling))
}

/// The Hub-layout `rope_scaling` of `s` (`null` when unscaled); [`rope`] reads it back.
fn rope_scaling_json(s: Option<&RopeScaling>) -> Value {
    match s {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => {
            json!({"type": "linear", "rope_type": "linear", "factor": factor})
        }
        Some(RopeScaling::Yarn(y)) => {
            let mut o = json!({
                "type": "yarn",
                "rope_type": "yarn",
                "factor": y.factor,
                "original_max_position_embeddings": y.original_max_seq_len,
                "beta_fast": y.beta_fast,
                "beta_slow": y.beta_slow,
            });
            let m = o.as_object_mut().expect("object");
            for (k, v) in [
                ("mscale", y.mscale),
                ("mscale_all_dim", y.mscale_all_dim),
                ("attention_factor", y.attention_factor),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            if !y.truncate {
                m.insert("truncate".into(), json!(false));
            }
            o
        }
    }
}

/// Checks that `cfg` has an exact equivalent in `arch`; lists every obstacle.
pub fn check_representable(arch: HfArch, cfg: &LmConfig) -> std::result::Result<(), Vec<String>> {
    let mut p = Vec::new();
    let moe_layers = cfg.moe_layers();
    let Some(m) = first_moe(cfg) else {
        return Err(vec!["the model has no MoE layer".into()]);
    };
    if cfg.vocab_size == 0 {
        p.push("vocab_size is 0".into());
    }
    let widths: Vec<usize> = m.experts.iter().map(|e| e.hidden).collect();
    if m.experts.iter().any(|e| e.kind != ExpertKind::SwiGlu)
        || m.shared_experts
            .iter()
            .any(|e| e.kind != ExpertKind::SwiGlu)
    {
        p.push("every expert must be SwiGLU".into());
    }
    if widths.iter().any(|&w| w != widths[0]) {
        p.push(format!(
            "routed experts must share one width, got {widths:?}"
        ));
    }
    if m.gate != (GateConfig::Linear { context: false }) {
        p.push("the gate must be linear without context".into());
    }
    let dense: Vec<usize> = (0..cfg.n_layers)
        .filter(|i| !moe_layers.contains(i))
        .collect();
    let deepseek = arch.is_deepseek();
    match (arch, &cfg.mla) {
        (a, None) if a.is_deepseek() => {
            p.push("DeepSeek needs multi-head latent attention (mla)".into())
        }
        (a, Some(_)) if !a.is_deepseek() => {
            p.push("multi-head latent attention is DeepSeek-only".into())
        }
        _ => {}
    }
    let mut want = |cond: bool, what: &str| {
        if !cond {
            p.push(what.to_string());
        }
    };
    let topk = matches!(m.router, RouterConfig::TopK(_));
    match arch {
        HfArch::Mixtral => {
            want(topk && m.renormalize, "Mixtral routes softmax top-k with renormalisation (router top_k, renormalize = true)");
            want(m.shared_experts.is_empty(), "Mixtral has no shared experts");
            want(dense.is_empty(), "every Mixtral layer is MoE");
        }
        HfArch::Qwen2Moe => {
            want(topk, "Qwen2-MoE routes softmax top-k (router top_k)");
            want(
                m.shared_experts.len() == 1 && m.shared_gate,
                "Qwen2-MoE has exactly one shared expert with a sigmoid gate",
            );
        }
        HfArch::Qwen3Moe | HfArch::Olmoe => {
            want(topk, "softmax top-k routing (router top_k)");
            want(m.shared_experts.is_empty(), "no shared experts");
            if arch == HfArch::Olmoe {
                want(dense.is_empty(), "every OLMoE layer is MoE");
            }
        }
        HfArch::DeepseekV2 => {
            let ok = matches!(
                m.router,
                RouterConfig::GroupLimited(GroupLimitedConfig {
                    score: ScoreFn::Softmax,
                    group_score: GroupScore::Max,
                    ..
                })
            );
            want(ok && !m.renormalize, "DeepSeek-V2 routes group-limited softmax (group_score max) without renormalisation");
        }
        HfArch::DeepseekV3 => {
            let ok = matches!(
                m.router,
                RouterConfig::GroupLimited(GroupLimitedConfig {
                    score: ScoreFn::Sigmoid,
                    group_score: GroupScore::Top2Sum,
                    ..
                })
            );
            want(
                ok,
                "DeepSeek-V3 routes group-limited sigmoid (group_score top2_sum)",
            );
        }
    }
    if !matches!(arch, HfArch::Qwen2Moe) {
        want(!m.shared_gate, "a gated shared expert is Qwen2-MoE-only");
    }
    if deepseek {
        want(
            m.shared_experts.len() <= 1,
            "DeepSeek's shared experts are stored as one MLP",
        );
        if let Some(s) = m.shared_experts.first() {
            want(
                s.hidden % widths[0] == 0,
                "the shared width must be a multiple of the routed width",
            );
        }
        let first = dense.len();
        want(
            dense == (0..first).collect::<Vec<_>>(),
            "DeepSeek's dense layers must be the first ones (first_k_dense_replace)",
        );
    }
    // Qwen's dense layers are exported as `mlp_only_layers` with `decoder_sparse_step = 1`
    want(
        !cfg.qkv_bias || arch == HfArch::Qwen2Moe,
        "q/k/v biases are Qwen2-MoE-only",
    );
    want(
        !cfg.qk_norm || arch == HfArch::Olmoe,
        "full-width q/k norm is OLMoE-only",
    );
    want(
        cfg.qk_norm || arch != HfArch::Olmoe,
        "OLMoE needs the full-width q/k norm (qk_norm)",
    );
    want(
        !cfg.qk_norm_per_head || arch == HfArch::Qwen3Moe,
        "per-head q/k norm is Qwen3-MoE-only",
    );
    want(
        cfg.qk_norm_per_head || arch != HfArch::Qwen3Moe,
        "Qwen3-MoE needs the per-head q/k norm (qk_norm_per_head)",
    );
    want(
        cfg.clip_qkv.is_none() || arch == HfArch::Olmoe,
        "clip_qkv is OLMoE-only",
    );
    if let Some(mla) = &cfg.mla {
        want(
            mla.rope_interleave || arch == HfArch::DeepseekV3,
            "DeepSeek-V2 always interleaves RoPE",
        );
        want(
            mla.lora_norm_eps == MLA_NORM_EPS,
            "the MLA norms use eps 1e-6 in transformers",
        );
    }
    if p.is_empty() {
        Ok(())
    } else {
        Err(p)
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

/// A Hub-layout `config.json` for `cfg` as `arch` (call [`check_representable`] first).
pub fn hf_config_from_lm(arch: HfArch, cfg: &LmConfig, ids: SpecialIds) -> Result<Value> {
    check_representable(arch, cfg).map_err(|problems| InteropError::NotRepresentable {
        arch: arch.to_string(),
        problems,
    })?;
    let m = first_moe(cfg).expect("checked: has an MoE layer");
    let e = m.experts.len();
    let hidden = m.experts[0].hidden;
    let mut c = json!({
        "architectures": [arch.class_name()],
        "model_type": arch.model_type(),
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
    let o = c.as_object_mut().expect("object");
    let mut set = |k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    let dense_layers: Vec<usize> = (0..cfg.n_layers)
        .filter(|i| !cfg.moe_layers().contains(i))
        .collect();
    match arch {
        HfArch::Mixtral => {
            set("intermediate_size", json!(hidden));
            set("num_local_experts", json!(e));
            set("router_jitter_noise", json!(0.0));
            set("sliding_window", Value::Null);
            set("router_aux_loss_coef", json!(m.losses.switch_balance));
            set("head_dim", json!(cfg.head_dim()));
        }
        HfArch::Qwen2Moe | HfArch::Qwen3Moe => {
            set("intermediate_size", json!(cfg.ffn.dense_hidden));
            set("moe_intermediate_size", json!(hidden));
            set("num_experts", json!(e));
            set("norm_topk_prob", json!(m.renormalize));
            set("decoder_sparse_step", json!(1));
            set("mlp_only_layers", json!(dense_layers));
            set("use_sliding_window", json!(false));
            set("sliding_window", Value::Null);
            set("router_aux_loss_coef", json!(m.losses.switch_balance));
            if arch == HfArch::Qwen2Moe {
                set(
                    "shared_expert_intermediate_size",
                    json!(m.shared_experts[0].hidden),
                );
                set("qkv_bias", json!(cfg.qkv_bias));
            } else {
                set("head_dim", json!(cfg.head_dim()));
                set("attention_bias", json!(false));
            }
        }
        HfArch::Olmoe => {
            set("intermediate_size", json!(hidden));
            set("num_experts", json!(e));
            set("norm_topk_prob", json!(m.renormalize));
            set("clip_qkv", json!(cfg.clip_qkv));
            set("attention_bias", json!(false));
            set("router_aux_loss_coef", json!(m.losses.switch_balance));
        }
        HfArch::DeepseekV2 | HfArch::DeepseekV3 => {
            let mla = cfg.mla.as_ref().expect("checked: MLA");
            let RouterConfig::GroupLimited(GroupLimitedConfig {
                groups,
                topk_groups,
                scaling,
                ..
            }) = m.router
            else {
                unreachable!("checked: group-limited router")
            };
            set("intermediate_size", json!(cfg.ffn.dense_hidden));
            set("moe_intermediate_size", json!(hidden));
            set("n_routed_experts", json!(e));
            set(
                "n_shared_experts",
                json!(m.shared_experts.first().map_or(0, |s| s.hidden / hidden)),
            );
            set("n_group", json!(groups));
            set("topk_group", json!(topk_groups));
            set("routed_scaling_factor", json!(scaling));
            set("first_k_dense_replace", json!(dense_layers.len()));
            set("moe_layer_freq", json!(1));
            set("q_lora_rank", json!(mla.q_lora_rank));
            set("kv_lora_rank", json!(mla.kv_lora_rank));
            set("qk_nope_head_dim", json!(mla.qk_nope_head_dim));
            set("qk_rope_head_dim", json!(mla.qk_rope_head_dim));
            set("v_head_dim", json!(mla.v_head_dim));
            set("head_dim", json!(mla.qk_rope_head_dim));
            set("attention_bias", json!(false));
            if arch == HfArch::DeepseekV2 {
                set(
                    "topk_method",
                    json!(if groups == 1 && topk_groups == 1 {
                        "greedy"
                    } else {
                        "group_limited_greedy"
                    }),
                );
                set("scoring_func", json!("softmax"));
                set("norm_topk_prob", json!(false));
            } else {
                set("topk_method", json!("noaux_tc"));
                set("scoring_func", json!("sigmoid"));
                set("norm_topk_prob", json!(m.renormalize));
                set("rope_interleave", json!(mla.rope_interleave));
                set("num_nextn_predict_layers", json!(0));
            }
        }
    }
    Ok(c)
}
