//! Softmax top-k token-choice routing (Shazeer et al. 2017 without noise; GShard, Mixtral).
//! torch: `probs = softmax(logits); w, idx = torch.topk(probs, k)`.

use serde::{Deserialize, Serialize};

use super::{
    check_k, expect_cols, mask_unavailable, softmax, top_k_pairs, Dense, Router, RouterConfig,
    RouterInput, RouterKind, RouterOutput,
};
use crate::plan::DispatchPlan;
use crate::Result;

/// `{ type = "top_k", k = 2 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopKConfig {
    /// Experts per token.
    pub k: usize,
}

impl Default for TopKConfig {
    /// Mixtral's two experts per token.
    fn default() -> Self {
        Self { k: 2 }
    }
}

impl RouterKind for TopKConfig {
    fn k(&self) -> usize {
        self.k
    }
    fn validate(&self, experts: usize) -> Result<()> {
        check_k(self.k, experts)
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(TopKRouter::new(self.clone(), experts))
    }
    fn examples(experts: usize) -> Vec<Self> {
        vec![Self { k: 2.min(experts) }]
    }
}

pub struct TopKRouter {
    cfg: TopKConfig,
    experts: usize,
}

impl TopKRouter {
    pub fn new(cfg: TopKConfig, experts: usize) -> Self {
        Self { cfg, experts }
    }
}

impl Router for TopKRouter {
    fn config(&self) -> RouterConfig {
        self.cfg.clone().into()
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        expect_cols(&input, self.experts, "top_k router")?;
        let logits = mask_unavailable(input.gate_out, input.available)?;
        let (t, e) = (input.num_tokens(), self.experts);
        let pairs = top_k_pairs(&logits, self.cfg.k, input.available)?;
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
