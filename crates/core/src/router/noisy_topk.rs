//! Noisy top-k gating (Shazeer et al. 2017, "Outrageously Large Neural Networks", §2.1):
//! `H = x·W_g + ε · softplus(x·W_noise)`, `ε ~ N(0, 1)` in training; keep the top-k of `H`
//! and softmax over just those. The gate produces `2E` columns: clean logits, then the raw
//! noise scales. Its smooth load loss is in `losses::load`.

use rand::Rng;

use super::{
    expect_cols, mask_unavailable, softmax, top_k_pairs, Dense, Router, RouterInput, RouterOutput,
};
use crate::config::RouterConfig;
use crate::plan::DispatchPlan;
use crate::{losses, rowops, Result};
use switchyard_kernels::noise::{self, Dist};

/// Shazeer's `noise_epsilon`: a floor on the noise scale, so Φ never divides by ~0.
const NOISE_FLOOR: f64 = 1e-2;

pub struct NoisyTopKRouter {
    cfg: RouterConfig,
    experts: usize,
    k: usize,
}

impl NoisyTopKRouter {
    pub fn new(cfg: RouterConfig, experts: usize) -> Self {
        let k = cfg.k();
        Self { cfg, experts, k }
    }
}

impl Router for NoisyTopKRouter {
    fn config(&self) -> &RouterConfig {
        &self.cfg
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
        let pairs = top_k_pairs(&noisy, self.k, input.available)?;
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        let load_loss = match &std {
            Some(std) => Some(losses::load(&clean, &noisy, std, self.k)?),
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
