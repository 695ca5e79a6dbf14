//! Capacity-limited token-choice routing: Switch Transformer top-1 (Fedus et al. 2021) and,
//! with `k > 1`, GShard's top-k (Lepikhin et al. 2020). Each expert takes at most
//! `C = ceil(capacity_factor · T · k / E)` tokens; the rest are dropped and get a zero MoE
//! output, so the residual connection carries them.
//!
//! Drop policies: `position` keeps earlier tokens (first choices of all tokens before any
//! second choice, as GShard); `probability` keeps, per choice rank, the tokens with the
//! higher router probability first (Batch Prioritized Routing, Riquelme et al. 2021).
//! Weights are the router probabilities of the kept experts, `p_i(x)` as in Switch.

use super::{
    expect_cols, host, mask_unavailable, softmax, top_k, Dense, Router, RouterInput, RouterOutput,
};
use crate::config::{DropPolicy, RouterConfig};
use crate::plan::DispatchPlan;
use crate::Result;

pub struct SwitchRouter {
    cfg: RouterConfig,
    experts: usize,
}

impl SwitchRouter {
    pub fn new(cfg: RouterConfig, experts: usize) -> Self {
        Self { cfg, experts }
    }

    /// Tokens each expert may take for a batch of `tokens`.
    pub fn capacity(&self, tokens: usize, train: bool) -> usize {
        let RouterConfig::Switch {
            k,
            capacity_factor,
            eval_capacity_factor,
            ..
        } = self.cfg
        else {
            unreachable!("SwitchRouter holds a switch config")
        };
        let cf = if train {
            capacity_factor
        } else {
            eval_capacity_factor.unwrap_or(capacity_factor)
        };
        ((cf * (tokens * k) as f64 / self.experts as f64).ceil() as usize).max(1)
    }
}

impl Router for SwitchRouter {
    fn config(&self) -> &RouterConfig {
        &self.cfg
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let RouterConfig::Switch { k, drop_policy, .. } = self.cfg else {
            unreachable!()
        };
        let e = self.experts;
        expect_cols(&input, e, "switch router")?;
        let t = input.num_tokens();
        let logits = mask_unavailable(input.gate_out, input.available)?;
        let probs = softmax(&logits)?;
        let (p, _) = host(&probs)?;
        let choices: Vec<Vec<usize>> = (0..t)
            .map(|tok| {
                top_k(
                    &p[tok * e..(tok + 1) * e],
                    k,
                    (0..e).filter(|&x| input.is_available(x)),
                )
            })
            .collect();
        let cap = self.capacity(t, input.train);
        let mut used = vec![0usize; e];
        let mut pairs = Vec::with_capacity(t * k);
        for rank in 0..k {
            let mut order: Vec<usize> = (0..t).filter(|&tok| choices[tok].len() > rank).collect();
            if drop_policy == DropPolicy::Probability {
                let pr = |tok: usize| p[tok * e + choices[tok][rank]];
                order.sort_by(|&a, &b| pr(b).total_cmp(&pr(a)).then(a.cmp(&b)));
            }
            for tok in order {
                let x = choices[tok][rank];
                if used[x] < cap {
                    used[x] += 1;
                    pairs.push((tok as u32, x as u32));
                }
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
