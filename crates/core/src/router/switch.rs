//! Capacity-limited token-choice routing: Switch Transformer top-1 (Fedus et al. 2021) and,
//! with `k > 1`, GShard's top-k (Lepikhin et al. 2020). Each expert takes at most
//! `C = ceil(capacity_factor · T · k / E)` tokens; the rest are dropped and get a zero MoE
//! output, so the residual connection carries them.
//!
//! Drop policies: `position` keeps earlier tokens (first choices of all tokens before any
//! second choice, as GShard); `probability` keeps, per choice rank, the tokens with the
//! higher router probability first (Batch Prioritized Routing, Riquelme et al. 2021).
//! Weights are the router probabilities of the kept experts, `p_i(x)` as in Switch.

use serde::{Deserialize, Serialize};

use super::{
    check_capacity_factor, check_k, expect_cols, host, mask_unavailable, softmax, top_k, Dense,
    Router, RouterConfig, RouterInput, RouterKind, RouterOutput,
};
use crate::plan::DispatchPlan;
use crate::Result;

/// Which tokens a switch router keeps when an expert is over capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Earlier tokens win (Switch Transformer, GShard).
    Position,
    /// Tokens with the higher router probability win (BPR, Riquelme et al. 2021).
    Probability,
}

/// `{ type = "switch", k = 1, capacity_factor = 1.25, drop_policy = "position" }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwitchConfig {
    /// Experts per token (1: Switch; more: GShard's top-k).
    pub k: usize,
    /// Capacity in training, as a multiple of the balanced share `T · k / E`.
    pub capacity_factor: f64,
    /// Capacity in evaluation (`None`: the training one).
    pub eval_capacity_factor: Option<f64>,
    pub drop_policy: DropPolicy,
}

impl Default for SwitchConfig {
    /// Switch Transformer's top-1 with capacity factor 1.25.
    fn default() -> Self {
        Self {
            k: 1,
            capacity_factor: 1.25,
            eval_capacity_factor: None,
            drop_policy: DropPolicy::Position,
        }
    }
}

impl RouterKind for SwitchConfig {
    fn k(&self) -> usize {
        self.k
    }
    fn validate(&self, experts: usize) -> Result<()> {
        check_k(self.k, experts)?;
        check_capacity_factor(self.capacity_factor, "capacity_factor")?;
        if let Some(cf) = self.eval_capacity_factor {
            check_capacity_factor(cf, "eval_capacity_factor")?;
        }
        Ok(())
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(SwitchRouter::new(self.clone(), experts))
    }
    fn examples(experts: usize) -> Vec<Self> {
        vec![
            Self {
                k: 1,
                capacity_factor: 1.0,
                eval_capacity_factor: None,
                drop_policy: DropPolicy::Position,
            },
            Self {
                k: 2.min(experts),
                capacity_factor: 0.5,
                eval_capacity_factor: None,
                drop_policy: DropPolicy::Probability,
            },
        ]
    }
}

pub struct SwitchRouter {
    cfg: SwitchConfig,
    experts: usize,
}

impl SwitchRouter {
    pub fn new(cfg: SwitchConfig, experts: usize) -> Self {
        Self { cfg, experts }
    }

    /// Tokens each expert may take for a batch of `tokens`.
    pub fn capacity(&self, tokens: usize, train: bool) -> usize {
        let cf = if train {
            self.cfg.capacity_factor
        } else {
            self.cfg
                .eval_capacity_factor
                .unwrap_or(self.cfg.capacity_factor)
        };
        ((cf * (tokens * self.cfg.k) as f64 / self.experts as f64).ceil() as usize).max(1)
    }
}

impl Router for SwitchRouter {
    fn config(&self) -> RouterConfig {
        self.cfg.clone().into()
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let SwitchConfig { k, drop_policy, .. } = self.cfg;
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
