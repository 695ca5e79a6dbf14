//! Routing statistics of one forward, computed on the host from the router's output.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::plan::DispatchPlan;
use crate::Result;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingStats {
    pub tokens_per_expert: Vec<usize>,
    /// Fraction of tokens that no expert processed.
    pub dropped_fraction: f64,
    /// Mean over tokens of the entropy (nats) of the router's distribution over experts.
    pub entropy: f64,
    /// Largest router logit in the batch (watch it with the z-loss).
    pub max_logit: f64,
    /// Experts that received no token.
    pub dead_experts: Vec<usize>,
}

impl RoutingStats {
    pub fn compute(plan: &DispatchPlan, probs: &Tensor, logits: Option<&Tensor>) -> Result<Self> {
        let tokens_per_expert = plan.tokens_per_expert();
        let t = plan.num_tokens.max(1) as f64;
        let dropped_fraction = plan.dropped.iter().filter(|&&d| d).count() as f64 / t;
        let p = probs
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let entropy = -p
            .iter()
            .filter(|&&x| x > 0.0)
            .map(|&x| x * x.ln())
            .sum::<f64>()
            / t;
        let max_logit = match logits {
            Some(l) if l.elem_count() > 0 => l
                .to_dtype(DType::F64)?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f64>()?,
            _ => 0.0,
        };
        let dead_experts = tokens_per_expert
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == 0)
            .map(|(e, _)| e)
            .collect();
        Ok(Self {
            tokens_per_expert,
            dropped_fraction,
            entropy,
            max_logit,
            dead_experts,
        })
    }
}
