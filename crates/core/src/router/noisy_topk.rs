//! Noisy top-k gating (Shazeer et al. 2017, "Outrageously Large Neural Networks", §2.1):
//! `H = x·W_g + ε · softplus(x·W_noise)`, `ε ~ N(0, 1)` in training; keep the top-k of `H`
//! and softmax over just those. The gate produces `2E` columns: clean logits, then the raw
//! noise scales. Its smooth load loss is in `losses::load`.

use rand::Rng;

use serde::{Deserialize, Serialize};

use super::{
    check_k, expect_cols, mask_unavailable, softmax, top_k_pairs, Dense, Router, RouterConfig,
    RouterInput, RouterKind, RouterOutput,
};
use crate::plan::DispatchPlan;
use crate::{losses, rowops, Result};
use switchyard_kernels::noise::{self, Dist};

/// Shazeer's `noise_epsilon`: a floor on the noise scale, so Φ never divides by ~0.
const NOISE_FLOOR: f64 = 1e-2;

/// `{ type = "noisy_top_k", k = 2 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoisyTopKConfig {
    /// Experts per token.
    pub k: usize,
}

impl Default for NoisyTopKConfig {
    fn default() -> Self {
        Self { k: 2 }
    }
}

impl RouterKind for NoisyTopKConfig {
    fn k(&self) -> usize {
        self.k
    }
    fn validate(&self, experts: usize) -> Result<()> {
        check_k(self.k, experts)
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(NoisyTopKRouter::new(self.clone(), experts))
    }
    fn examples(experts: usize) -> Vec<Self> {
        vec![Self { k: 2.min(experts) }]
    }
}

pub struct NoisyTopKRouter {
    cfg: NoisyTopKConfig,
    experts: usize,
}

impl NoisyTopKRouter {
    pub fn new(cfg: NoisyTopKConfig, experts: usize) -> Self {
        Self { cfg, experts }
    }
}

impl Router for NoisyTopKRouter {
    fn config(&self) -> RouterConfig {
        self.cfg.clone().into()
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn gate_outputs(&self) -> usize {
        2 * self.experts
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let e = self.experts;
        expect_cols(&input, 2 * e, "noisy_top_k router")?;
        let t = input.num_tokens();
        let raw = input.gate_out.narrow(1, 0, e)?;
        let clean = mask_unavailable(&raw, input.available)?;
        let (noisy, std) = if input.train {
            // ε ~ N(0, 1): drawn in the logits' dtype, in parallel, from one seed
            let eps = noise::tensor_like(&clean, input.rng.random(), Dist::Normal)?;
            // H = clean + ε · std, std = softplus(x · W_noise) + noise_epsilon (fused)
            let (noisy, std) =
                rowops::noisy_logits(input.gate_out, &eps, input.available, NOISE_FLOOR)?;
            (noisy, Some(std))
        } else {
            (clean.clone(), None)
        };
        let pairs = top_k_pairs(&noisy, self.cfg.k, input.available)?;
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        let load_loss = match &std {
            Some(std) => Some(losses::load(&clean, &noisy, std, self.cfg.k)?),
            None => None,
        };
        Ok(RouterOutput {
            plan,
            // G = softmax(KeepTopK(H, k))
            dense: Dense::MaskedSoftmax(noisy),
            probs: softmax(&clean)?,
            logits: Some(raw),
            load_loss,
        })
    }
}
