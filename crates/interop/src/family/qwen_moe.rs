//! Qwen2-MoE and Qwen3-MoE (`Qwen2MoeForCausalLM`, `Qwen3MoeForCausalLM`): softmax top-k,
//! MoE every `decoder_sparse_step` layers except `mlp_only_layers`. Qwen2-MoE adds one shared
//! expert behind a sigmoid gate and q/k/v biases; Qwen3-MoE a per-head q/k RMSNorm and an
//! explicit `head_dim`. The two share how they read and write everything else.

use serde_json::{json, Value};
use switchyard_core::{ExpertSpec, MoeConfig, RouterConfig};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig};

use super::{unsupported, Features, HfFamily, HfJson, MoeBase, Problems, QkNorm};
use crate::error::Result;
use crate::hf_config::Raw;

pub struct Qwen2Moe;
pub struct Qwen3Moe;

impl HfFamily for Qwen2Moe {
    fn model_type(&self) -> &'static str {
        "qwen2_moe"
    }
    fn class_name(&self) -> &'static str {
        "Qwen2MoeForCausalLM"
    }
    fn display_name(&self) -> &'static str {
        "Qwen2-MoE"
    }
    fn features(&self) -> Features {
        Features {
            gated_shared_expert: true,
            qkv_bias: true,
            ..Default::default()
        }
    }

    fn sliding_window(&self, c: &Raw<'_>) -> Result<Option<usize>> {
        qwen_sliding_window(c)
    }

    fn read(&self, c: &Raw<'_>, moe: &MoeBase, cfg: &mut LmConfig) -> Result<()> {
        read_qwen(self, c, moe, cfg, |c, m, cfg| {
            let shared = c.usize("shared_expert_intermediate_size")?;
            if shared > 0 {
                m.shared_experts = vec![ExpertSpec::swiglu(shared)];
                m.shared_gate = true;
            }
            cfg.qkv_bias = c.bool_or("qkv_bias", true)?;
            Ok(())
        })
    }

    fn check_moe(&self, m: &MoeConfig, _dense: &[usize], p: &mut Problems) {
        let topk = matches!(m.router, RouterConfig::TopK(_));
        p.want(topk, "Qwen2-MoE routes softmax top-k (router top_k)");
        p.want(
            m.shared_experts.len() == 1 && m.shared_gate,
            "Qwen2-MoE has exactly one shared expert with a sigmoid gate",
        );
    }

    fn write(&self, cfg: &LmConfig, m: &MoeConfig, dense: &[usize], out: &mut HfJson<'_>) {
        write_qwen(cfg, m, dense, out);
        out.set(
            "shared_expert_intermediate_size",
            json!(m.shared_experts[0].hidden),
        );
        out.set("qkv_bias", json!(cfg.qkv_bias));
    }

    fn shared_prefix(&self) -> Option<&'static str> {
        Some("shared_expert")
    }
}

impl HfFamily for Qwen3Moe {
    fn model_type(&self) -> &'static str {
        "qwen3_moe"
    }
    fn class_name(&self) -> &'static str {
        "Qwen3MoeForCausalLM"
    }
    fn display_name(&self) -> &'static str {
        "Qwen3-MoE"
    }
    fn features(&self) -> Features {
        Features {
            qk_norm: QkNorm::PerHead,
            ..Default::default()
        }
    }

    fn sliding_window(&self, c: &Raw<'_>) -> Result<Option<usize>> {
        qwen_sliding_window(c)
    }

    fn read(&self, c: &Raw<'_>, moe: &MoeBase, cfg: &mut LmConfig) -> Result<()> {
        read_qwen(self, c, moe, cfg, |_, _, cfg| {
            cfg.qk_norm_per_head = true;
            Ok(())
        })
    }

    fn check_moe(&self, m: &MoeConfig, _dense: &[usize], p: &mut Problems) {
        let topk = matches!(m.router, RouterConfig::TopK(_));
        p.want(topk, "softmax top-k routing (router top_k)");
        p.want(m.shared_experts.is_empty(), "no shared experts");
    }

    fn write(&self, cfg: &LmConfig, m: &MoeConfig, dense: &[usize], out: &mut HfJson<'_>) {
        write_qwen(cfg, m, dense, out);
        out.set("head_dim", json!(cfg.head_dim()));
        out.set("attention_bias", json!(false));
    }
}

/// The window applies only with `use_sliding_window`.
fn qwen_sliding_window(c: &Raw<'_>) -> Result<Option<usize>> {
    if c.bool_or("use_sliding_window", false)? {
        c.opt_usize("sliding_window")
    } else {
        Ok(None)
    }
}

/// The keys both Qwens share; `own` reads the generation's own, between the routed experts
/// and the layer pattern (the order in which a missing key is reported).
fn read_qwen(
    family: &dyn HfFamily,
    c: &Raw<'_>,
    moe: &MoeBase,
    cfg: &mut LmConfig,
    own: impl FnOnce(&Raw<'_>, &mut MoeConfig, &mut LmConfig) -> Result<()>,
) -> Result<()> {
    let e = c.expert_count(&["num_experts", "num_local_experts"])?;
    let mut m = moe.moe(
        e,
        c.usize("moe_intermediate_size")?,
        moe.topk(),
        moe.norm_topk,
    );
    own(c, &mut m, cfg)?;
    let step = c.usize_or("decoder_sparse_step", 1)?;
    if step == 0 || e == 0 {
        return Err(unsupported(
            family,
            "a model without MoE layers (num_experts or decoder_sparse_step = 0)",
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
    Ok(())
}

/// Dense layers are written as `mlp_only_layers` with `decoder_sparse_step = 1`.
fn write_qwen(cfg: &LmConfig, m: &MoeConfig, dense: &[usize], out: &mut HfJson<'_>) {
    out.set("intermediate_size", json!(cfg.ffn.dense_hidden));
    out.set("moe_intermediate_size", json!(m.experts[0].hidden));
    out.set("num_experts", json!(m.experts.len()));
    out.set("norm_topk_prob", json!(m.renormalize));
    out.set("decoder_sparse_step", json!(1));
    out.set("mlp_only_layers", json!(dense));
    out.set("use_sliding_window", json!(false));
    out.set("sliding_window", Value::Null);
    out.set("router_aux_loss_coef", json!(m.losses.switch_balance));
}
