//! OLMoE (`OlmoeForCausalLM`): softmax top-k, every layer MoE, no shared experts, a
//! full-width RMSNorm on queries and keys, optional `clip_qkv`.

use serde_json::json;
use switchyard_core::{MoeConfig, RouterConfig};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig};

use super::{Features, HfFamily, HfJson, MoeBase, Problems, QkNorm};
use crate::error::Result;
use crate::hf_config::Raw;

pub struct Olmoe;

impl HfFamily for Olmoe {
    fn model_type(&self) -> &'static str {
        "olmoe"
    }
    fn class_name(&self) -> &'static str {
        "OlmoeForCausalLM"
    }
    fn display_name(&self) -> &'static str {
        "OLMoE"
    }
    fn features(&self) -> Features {
        Features {
            qk_norm: QkNorm::Full,
            clip_qkv: true,
            ..Default::default()
        }
    }

    fn read(&self, c: &Raw<'_>, moe: &MoeBase, cfg: &mut LmConfig) -> Result<()> {
        let e = c.expert_count(&["num_experts", "num_local_experts"])?;
        let hidden = c.usize("intermediate_size")?;
        let m = moe.moe(e, hidden, moe.topk(), moe.norm_topk);
        cfg.ffn = FfnConfig {
            sparse: LayerFfn::Moe(m),
            moe_every: 1,
            first_dense: 0,
            dense_hidden: hidden,
        };
        cfg.qk_norm = true;
        cfg.clip_qkv = c.opt_f64("clip_qkv")?;
        Ok(())
    }

    fn check_moe(&self, m: &MoeConfig, dense: &[usize], p: &mut Problems) {
        let topk = matches!(m.router, RouterConfig::TopK(_));
        p.want(topk, "softmax top-k routing (router top_k)");
        p.want(m.shared_experts.is_empty(), "no shared experts");
        p.want(dense.is_empty(), "every OLMoE layer is MoE");
    }

    fn write(&self, cfg: &LmConfig, m: &MoeConfig, _dense: &[usize], out: &mut HfJson<'_>) {
        out.set("intermediate_size", json!(m.experts[0].hidden));
        out.set("num_experts", json!(m.experts.len()));
        out.set("norm_topk_prob", json!(m.renormalize));
        out.set("clip_qkv", json!(cfg.clip_qkv));
        out.set("attention_bias", json!(false));
        out.set("router_aux_loss_coef", json!(m.losses.switch_balance));
    }
}
