//! Expert-choice routing (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing"):
//! each expert takes its top-`c` tokens by router probability, `c = ceil(cf · T / E)`, so load
//! is perfectly balanced by construction; a token may get several experts or none (dropped).
//! torch: `S = softmax(X·W_g); G, I = torch.topk(S.T, c)`.

use serde::{Deserialize, Serialize};

use super::{
    check_capacity_factor, expect_cols, host, mask_unavailable, softmax, top_k, Dense, Router,
    RouterConfig, RouterInput, RouterKind, RouterOutput,
};
use crate::plan::DispatchPlan;
use crate::Result;

/// `{ type = "expert_choice", capacity_factor = 2.0 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertChoiceConfig {
    /// Tokens per expert as a multiple of `T / E`: the average number of experts per token.
    pub capacity_factor: f64,
}

impl Default for ExpertChoiceConfig {
    /// Zhou et al.'s EC-CF2.
    fn default() -> Self {
        Self {
            capacity_factor: 2.0,
        }
    }
}

impl RouterKind for ExpertChoiceConfig {
    /// The average, given by the capacity factor.
    fn k(&self) -> usize {
        self.capacity_factor.ceil().max(1.0) as usize
    }
    fn validate(&self, _experts: usize) -> Result<()> {
        check_capacity_factor(self.capacity_factor, "capacity_factor")
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(ExpertChoiceRouter::new(self.clone(), experts))
    }
    fn examples(_experts: usize) -> Vec<Self> {
        vec![Self {
            capacity_factor: 1.5,
        }]
    }
}

pub struct ExpertChoiceRouter {
    cfg: ExpertChoiceConfig,
    experts: usize,
}

impl ExpertChoiceRouter {
    pub fn new(cfg: ExpertChoiceConfig, experts: usize) -> Self {
        Self { cfg, experts }
    }

    /// Tokens per expert for a batch of `tokens`.
    pub fn capacity(&self, tokens: usize) -> usize {
        ((self.cfg.capacity_factor * tokens as f64 / self.experts as f64).ceil() as usize)
            .clamp(1, tokens.max(1))
    }
}

impl Router for ExpertChoiceRouter {
    fn config(&self) -> RouterConfig {
        self.cfg.clone().into()
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let e = self.experts;
        expect_cols(&input, e, "expert_choice router")?;
        let t = input.num_tokens();
        let logits = mask_unavailable(input.gate_out, input.available)?;
        let probs = softmax(&logits)?;
        let (p, _) = host(&probs)?;
        let c = self.capacity(t);
        let mut pairs = Vec::with_capacity(c * e);
        let mut column = vec![0f64; t];
        for x in (0..e).filter(|&x| input.is_available(x)) {
            for (tok, v) in column.iter_mut().enumerate() {
                *v = p[tok * e + x];
            }
            for tok in top_k(&column, c, 0..t) {
                pairs.push((tok as u32, x as u32));
            }
        }
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        Ok(RouterOutput {
            plan,
            dense: Dense::Masked(probs.clone()),
            probs,
            logits: Some(input.gate_out.clone()),
            load_loss: None,
        })
    }
}
