//! Mixtral (`MixtralForCausalLM`): softmax top-k with renormalisation, every layer MoE, no
//! shared experts, experts named `block_sparse_moe.experts.{j}.w1 | w3 | w2`.

use serde_json::{json, Value};
use switchyard_core::{MoeConfig, RouterConfig};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig};

use super::{Features, HfFamily, HfJson, MoeBase, Problems};
use crate::error::Result;
use crate::hf_config::Raw;

pub struct Mixtral;

impl HfFamily for Mixtral {
    fn model_type(&self) -> &'static str {
        "mixtral"
    }
    fn class_name(&self) -> &'static str {
        "MixtralForCausalLM"
    }
    fn display_name(&self) -> &'static str {
        "Mixtral"
    }
    fn features(&self) -> Features {
        Features::default()
    }

    fn sliding_window(&self, c: &Raw<'_>) -> Result<Option<usize>> {
        c.opt_usize("sliding_window")
    }

    fn read(&self, c: &Raw<'_>, moe: &MoeBase, cfg: &mut LmConfig) -> Result<()> {
        let e = c.expert_count(&["num_local_experts", "num_experts"])?;
        let hidden = c.usize("intermediate_size")?;
        let m = moe.moe(e, hidden, moe.topk(), true);
        // every layer is MoE: dense_hidden is unused
        cfg.ffn = FfnConfig {
            sparse: LayerFfn::Moe(m),
            moe_every: 1,
            first_dense: 0,
            dense_hidden: hidden,
        };
        Ok(())
    }

    fn check_moe(&self, m: &MoeConfig, dense: &[usize], p: &mut Problems) {
        let topk = matches!(m.router, RouterConfig::TopK(_));
        p.want(
            topk && m.renormalize,
            "Mixtral routes softmax top-k with renormalisation (router top_k, renormalize = true)",
        );
        p.want(m.shared_experts.is_empty(), "Mixtral has no shared experts");
        p.want(dense.is_empty(), "every Mixtral layer is MoE");
    }

    fn write(&self, cfg: &LmConfig, m: &MoeConfig, _dense: &[usize], out: &mut HfJson<'_>) {
        out.set("intermediate_size", json!(m.experts[0].hidden));
        out.set("num_local_experts", json!(m.experts.len()));
        out.set("router_jitter_noise", json!(0.0));
        out.set("sliding_window", Value::Null);
        out.set("router_aux_loss_coef", json!(m.losses.switch_balance));
        out.set("head_dim", json!(cfg.head_dim()));
    }

    fn moe_prefix(&self) -> &'static str {
        "block_sparse_moe"
    }
    fn expert_proj_names(&self) -> [&'static str; 3] {
        ["w1", "w3", "w2"]
    }
}
