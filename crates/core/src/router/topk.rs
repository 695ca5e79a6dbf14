//! Softmax top-k token-choice routing (Shazeer et al. 2017 without noise; GShard, Mixtral).
//! torch: `probs = softmax(logits); w, idx = torch.topk(probs, k)`.

use super::{
    expect_cols, mask_unavailable, softmax, top_k_pairs, Dense, Router, RouterInput, RouterOutput,
};
use crate::config::RouterConfig;
use crate::plan::DispatchPlan;
use crate::Result;

pub struct TopKRouter {
    cfg: RouterConfig,
    experts: usize,
    k: usize,
}

impl TopKRouter {
    pub fn new(cfg: RouterConfig, experts: usize) -> Self {
        let k = cfg.k();
        Self { cfg, experts, k }
    }
}

impl Router for TopKRouter {
    fn config(&self) -> &RouterConfig {
        &self.cfg
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        expect_cols(&input, self.experts, "top_k router")?;
        let logits = mask_unavailable(input.gate_out, input.available)?;
        let (t, e) = (input.num_tokens(), self.experts);
        let pairs = top_k_pairs(&logits, self.k, input.available)?;
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        let probs = softmax(&logits)?;
        Ok(RouterOutput {
            plan,
            dense: Dense::Masked(probs.clone()),
            probs,
            logits: Some(input.gate_out.clone()),
            load_loss: None,
        })
    }
}
