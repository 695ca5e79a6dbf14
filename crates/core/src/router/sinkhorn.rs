//! Sinkhorn-balanced assignment (S-BASE: Clark et al. 2022, "Unified Scaling Laws for Routed
//! Language Models"; Megatron-LM's `sinkhorn` router). In training, tokens pick their top-k
//! experts from the Sinkhorn-normalised score matrix — an approximately balanced transport
//! plan — instead of the raw logits; in evaluation, from the raw logits. The combine weight is
//! `sigmoid(logit)` of each chosen expert, as in Megatron.
//!
//! torch (Megatron): `norm_logits = sinkhorn(logits); _, idx = torch.topk(norm_logits, k);
//! scores = torch.gather(torch.sigmoid(logits), 1, idx)`.

use serde::{Deserialize, Serialize};

use super::{
    check_k, expect_cols, host, mask_unavailable, softmax, top_k, Dense, Router, RouterConfig,
    RouterInput, RouterKind, RouterOutput,
};
use crate::plan::DispatchPlan;
use crate::{MoeError, Result};

/// Stop when the mean change of the column scalings falls below this.
const SINKHORN_TOL: f64 = 1e-4;

/// `{ type = "sinkhorn", k = 1, iterations = 30 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SinkhornConfig {
    /// Experts per token.
    pub k: usize,
    /// Most Sinkhorn-Knopp rounds per batch (fewer once the scalings settle).
    pub iterations: usize,
}

impl Default for SinkhornConfig {
    fn default() -> Self {
        Self {
            k: 1,
            iterations: 30,
        }
    }
}

impl RouterKind for SinkhornConfig {
    fn k(&self) -> usize {
        self.k
    }
    fn validate(&self, experts: usize) -> Result<()> {
        check_k(self.k, experts)?;
        if self.iterations == 0 {
            return Err(MoeError::config(
                "router.iterations",
                "Sinkhorn needs at least 1 iteration",
            ));
        }
        Ok(())
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(SinkhornRouter::new(self.clone(), experts))
    }
}

pub struct SinkhornRouter {
    cfg: SinkhornConfig,
    experts: usize,
}

/// Sinkhorn-Knopp scaling of `exp(logits)` (`t × e`, row-major) towards rows summing to 1/t
/// and columns to 1/e. Returns the scaled matrix.
pub fn sinkhorn(logits: &[f64], t: usize, e: usize, max_iter: usize) -> Vec<f64> {
    const EPS: f64 = 1e-8;
    // shift by the global max: a constant factor the scalings absorb
    let m = logits
        .iter()
        .cloned()
        .filter(|x| x.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let m = if m.is_finite() { m } else { 0.0 };
    let cost: Vec<f64> = logits.iter().map(|&x| (x - m).exp()).collect();
    let (mut d0, mut d1) = (vec![1.0; t], vec![1.0; e]);
    for _ in 0..max_iter {
        for (i, r) in d0.iter_mut().enumerate() {
            let s: f64 = (0..e).map(|j| d1[j] * cost[i * e + j]).sum();
            *r = 1.0 / (t as f64 * (s + EPS));
        }
        let old = d1.clone();
        for (j, c) in d1.iter_mut().enumerate() {
            let s: f64 = (0..t).map(|i| d0[i] * cost[i * e + j]).sum();
            *c = 1.0 / (e as f64 * (s + EPS));
        }
        let err = old.iter().zip(&d1).map(|(a, b)| (a - b).abs()).sum::<f64>() / e as f64;
        if err < SINKHORN_TOL {
            break;
        }
    }
    (0..t * e)
        .map(|i| d1[i % e] * cost[i] * d0[i / e])
        .collect()
}

impl SinkhornRouter {
    pub fn new(cfg: SinkhornConfig, experts: usize) -> Self {
        Self { cfg, experts }
    }
}

impl Router for SinkhornRouter {
    fn config(&self) -> RouterConfig {
        self.cfg.clone().into()
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let SinkhornConfig { k, iterations } = self.cfg;
        let e = self.experts;
        expect_cols(&input, e, "sinkhorn router")?;
        let t = input.num_tokens();
        let logits = mask_unavailable(input.gate_out, input.available)?;
        let (l, _) = host(&logits)?;
        let select = if input.train {
            sinkhorn(&l, t, e, iterations)
        } else {
            l
        };
        let mut pairs = Vec::with_capacity(t * k);
        for tok in 0..t {
            for x in top_k(
                &select[tok * e..(tok + 1) * e],
                k,
                (0..e).filter(|&x| input.is_available(x)),
            ) {
                pairs.push((tok as u32, x as u32));
            }
        }
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        let scores = candle_nn::ops::sigmoid(&logits)?;
        Ok(RouterOutput {
            plan,
            dense: Dense::Masked(scores.clone()),
            probs: softmax(&logits)?,
            logits: Some(input.gate_out.clone()),
            load_loss: None,
        })
    }
}
