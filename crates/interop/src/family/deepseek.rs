//! DeepSeek-V2 and DeepSeek-V3 (`DeepseekV2ForCausalLM`, `DeepseekV3ForCausalLM`):
//! multi-head latent attention, group-limited routing × `routed_scaling_factor`, the shared
//! experts as one MLP, the first `first_k_dense_replace` layers dense. V2 scores with a
//! softmax and never renormalises; V3 scores with a sigmoid plus `e_score_correction_bias`
//! (the router's `selection_bias`), ranks groups by their top-2 sum, and may skip RoPE
//! interleaving. The two share everything else.

use serde_json::json;
use switchyard_core::router::GroupLimitedConfig;
use switchyard_core::{ExpertSpec, GroupScore, MoeConfig, RouterConfig, ScoreFn};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, MlaConfig};

use super::{unsupported, Features, HfFamily, HfJson, MoeBase, Problems};
use crate::error::Result;
use crate::hf_config::{Raw, MLA_NORM_EPS};

pub struct DeepseekV2;
pub struct DeepseekV3;

#[derive(Clone, Copy, PartialEq)]
enum Version {
    V2,
    V3,
}

impl HfFamily for DeepseekV2 {
    fn model_type(&self) -> &'static str {
        "deepseek_v2"
    }
    fn class_name(&self) -> &'static str {
        "DeepseekV2ForCausalLM"
    }
    fn display_name(&self) -> &'static str {
        "DeepSeek-V2"
    }
    fn features(&self) -> Features {
        Features {
            mla: true,
            ..Default::default()
        }
    }
    fn read(&self, c: &Raw<'_>, moe: &MoeBase, cfg: &mut LmConfig) -> Result<()> {
        read(self, Version::V2, c, moe, cfg)
    }
    fn check_moe(&self, m: &MoeConfig, _dense: &[usize], p: &mut Problems) {
        let ok = matches!(
            m.router,
            RouterConfig::GroupLimited(GroupLimitedConfig {
                score: ScoreFn::Softmax,
                group_score: GroupScore::Max,
                ..
            })
        );
        p.want(
            ok && !m.renormalize,
            "DeepSeek-V2 routes group-limited softmax (group_score max) without renormalisation",
        );
    }
    fn check_layout(&self, m: &MoeConfig, dense: &[usize], p: &mut Problems) {
        check_layout(m, dense, p)
    }
    fn write(&self, cfg: &LmConfig, m: &MoeConfig, dense: &[usize], out: &mut HfJson<'_>) {
        write(Version::V2, cfg, m, dense, out)
    }
    fn shared_prefix(&self) -> Option<&'static str> {
        Some("shared_experts")
    }
}

impl HfFamily for DeepseekV3 {
    fn model_type(&self) -> &'static str {
        "deepseek_v3"
    }
    fn class_name(&self) -> &'static str {
        "DeepseekV3ForCausalLM"
    }
    fn display_name(&self) -> &'static str {
        "DeepSeek-V3"
    }
    fn features(&self) -> Features {
        Features {
            mla: true,
            optional_rope_interleave: true,
            ..Default::default()
        }
    }
    fn read(&self, c: &Raw<'_>, moe: &MoeBase, cfg: &mut LmConfig) -> Result<()> {
        read(self, Version::V3, c, moe, cfg)
    }
    fn check_moe(&self, m: &MoeConfig, _dense: &[usize], p: &mut Problems) {
        let ok = matches!(
            m.router,
            RouterConfig::GroupLimited(GroupLimitedConfig {
                score: ScoreFn::Sigmoid,
                group_score: GroupScore::Top2Sum,
                ..
            })
        );
        p.want(
            ok,
            "DeepSeek-V3 routes group-limited sigmoid (group_score top2_sum)",
        );
    }
    fn check_layout(&self, m: &MoeConfig, dense: &[usize], p: &mut Problems) {
        check_layout(m, dense, p)
    }
    fn write(&self, cfg: &LmConfig, m: &MoeConfig, dense: &[usize], out: &mut HfJson<'_>) {
        write(Version::V3, cfg, m, dense, out)
    }
    fn shared_prefix(&self) -> Option<&'static str> {
        Some("shared_experts")
    }
    fn router_buffers(&self, moe_prefix: &str) -> Vec<(&'static str, String)> {
        vec![(
            "selection_bias",
            format!("{moe_prefix}gate.e_score_correction_bias"),
        )]
    }
}

fn read(
    family: &dyn HfFamily,
    v: Version,
    c: &Raw<'_>,
    moe: &MoeBase,
    cfg: &mut LmConfig,
) -> Result<()> {
    let k = moe.k;
    let e = c.expert_count(&["n_routed_experts"])?;
    let scaling = c.f64_or("routed_scaling_factor", 1.0)?;
    let (groups, topk_groups) = (c.usize_or("n_group", 1)?, c.usize_or("topk_group", 1)?);
    let (router, renormalize) = match v {
        Version::V2 => {
            // transformers' V2 never renormalises (it ignores norm_topk_prob)
            let method = c.str_or("topk_method", "greedy")?;
            let (g, tg) = match method {
                "greedy" => (1, 1),
                "group_limited_greedy" => (groups, topk_groups),
                other => {
                    return Err(unsupported(
                        family,
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
        }
        Version::V3 => {
            let method = c.str_or("topk_method", "noaux_tc")?;
            if method != "noaux_tc" {
                return Err(unsupported(
                    family,
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
        }
    };
    let hidden = c.usize("moe_intermediate_size")?;
    let mut m = moe.moe(e, hidden, router, renormalize);
    let shared = c.usize_or("n_shared_experts", 0)?;
    if shared > 0 {
        // HF builds the shared experts as one MLP of width n_shared · moe_intermediate_size
        m.shared_experts = vec![ExpertSpec::swiglu(shared.saturating_mul(hidden))];
    }
    let first = c.usize_or("first_k_dense_replace", 0)?;
    cfg.ffn = FfnConfig {
        sparse: LayerFfn::Moe(m),
        moe_every: 1,
        first_dense: first.min(cfg.n_layers),
        dense_hidden: c.usize("intermediate_size")?,
    };
    cfg.n_kv_heads = None;
    cfg.mla = Some(MlaConfig {
        q_lora_rank: c.opt_usize("q_lora_rank")?,
        kv_lora_rank: c.usize("kv_lora_rank")?,
        qk_nope_head_dim: c.usize("qk_nope_head_dim")?,
        qk_rope_head_dim: c.usize("qk_rope_head_dim")?,
        v_head_dim: c.usize("v_head_dim")?,
        rope_interleave: v == Version::V2 || c.bool_or("rope_interleave", true)?,
        lora_norm_eps: MLA_NORM_EPS,
    });
    Ok(())
}

fn check_layout(m: &MoeConfig, dense: &[usize], p: &mut Problems) {
    p.want(
        m.shared_experts.len() <= 1,
        "DeepSeek's shared experts are stored as one MLP",
    );
    if let Some(s) = m.shared_experts.first() {
        p.want(
            s.hidden % m.experts[0].hidden == 0,
            "the shared width must be a multiple of the routed width",
        );
    }
    p.want(
        dense.iter().copied().eq(0..dense.len()),
        "DeepSeek's dense layers must be the first ones (first_k_dense_replace)",
    );
}

fn write(v: Version, cfg: &LmConfig, m: &MoeConfig, dense: &[usize], out: &mut HfJson<'_>) {
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
    let hidden = m.experts[0].hidden;
    out.set("intermediate_size", json!(cfg.ffn.dense_hidden));
    out.set("moe_intermediate_size", json!(hidden));
    out.set("n_routed_experts", json!(m.experts.len()));
    out.set(
        "n_shared_experts",
        json!(m.shared_experts.first().map_or(0, |s| s.hidden / hidden)),
    );
    out.set("n_group", json!(groups));
    out.set("topk_group", json!(topk_groups));
    out.set("routed_scaling_factor", json!(scaling));
    out.set("first_k_dense_replace", json!(dense.len()));
    out.set("moe_layer_freq", json!(1));
    out.set("q_lora_rank", json!(mla.q_lora_rank));
    out.set("kv_lora_rank", json!(mla.kv_lora_rank));
    out.set("qk_nope_head_dim", json!(mla.qk_nope_head_dim));
    out.set("qk_rope_head_dim", json!(mla.qk_rope_head_dim));
    out.set("v_head_dim", json!(mla.v_head_dim));
    out.set("head_dim", json!(mla.qk_rope_head_dim));
    out.set("attention_bias", json!(false));
    match v {
        Version::V2 => {
            let greedy = groups == 1 && topk_groups == 1;
            let method = if greedy {
                "greedy"
            } else {
                "group_limited_greedy"
            };
            out.set("topk_method", json!(method));
            out.set("scoring_func", json!("softmax"));
            out.set("norm_topk_prob", json!(false));
        }
        Version::V3 => {
            out.set("topk_method", json!("noaux_tc"));
            out.set("scoring_func", json!("sigmoid"));
            out.set("norm_topk_prob", json!(m.renormalize));
            out.set("rope_interleave", json!(mla.rope_interleave));
            out.set("num_nextn_predict_layers", json!(0));
        }
    }
}
