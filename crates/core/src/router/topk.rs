//! Softmax top-k token-choice routing (Shazeer et al. 2017 without noise; GShard, Mixtral).
//! torch: `probs = softmax(logits); w, idx = torch.topk(probs, k)`.

use super::{
    expect_cols, host, mask_unavailable, plan_mask, softmax, top_k_into, Router, RouterInput,
    RouterOutput,
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
        let (vals, e) = host(&logits)?;
        let t = input.num_tokens();
        let mut pairs = Vec::with_capacity(t * self.k);
        let mut chosen = Vec::with_capacity(self.k);
        for tok in 0..t {
            let row = &vals[tok * e..(tok + 1) * e];
            top_k_into(
                row,
                self.k,
                (0..e).filter(|&x| input.is_available(x)),
                &mut chosen,
            );
            pairs.extend(chosen.iter().map(|&x| (tok as u32, x as u32)));
        }
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        let probs = softmax(&logits)?;
        let dense = (&probs * plan_mask(&plan, &probs)?)?;
        Ok(RouterOutput {
            plan,
            dense,
            probs,
            logits: Some(input.gate_out.clone()),
            load_loss: None,
        })
    }
}
