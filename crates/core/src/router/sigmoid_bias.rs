//! Sigmoid scores with a per-expert selection bias: DeepSeek-V3's auxiliary-loss-free load
//! balancing (Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy for MoE").
//!
//! `s = sigmoid(logits)`; experts are **selected** by `s + b` but **weighted** by `s`
//! (normalised over the kept experts when the layer renormalises, then × `scaling`). After
//! each optimiser step `b_i += γ · sign(mean_load − load_i)`: overloaded experts become less
//! attractive. The bias is not a parameter and gets no gradient.

use serde::{Deserialize, Serialize};

use super::{
    check_bias_rate, check_k, expect_cols, host, mask_unavailable, safe_row_normalize, top_k,
    Dense, Router, RouterConfig, RouterInput, RouterKind, RouterOutput,
};
use crate::plan::DispatchPlan;
use crate::{MoeError, Result};

/// `{ type = "sigmoid_bias", k = 2, bias_update_rate = 0.001, scaling = 1.0 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SigmoidBiasConfig {
    /// Experts per token.
    pub k: usize,
    /// γ, the step of the bias update (0: the bias stays 0).
    pub bias_update_rate: f64,
    /// Multiplier of the kept weights (DeepSeek-V3's routed scaling factor).
    pub scaling: f64,
}

impl Default for SigmoidBiasConfig {
    /// DeepSeek-V3's γ = 0.001, with two experts per token and no extra scaling.
    fn default() -> Self {
        Self {
            k: 2,
            bias_update_rate: 0.001,
            scaling: 1.0,
        }
    }
}

impl RouterKind for SigmoidBiasConfig {
    fn k(&self) -> usize {
        self.k
    }
    fn validate(&self, experts: usize) -> Result<()> {
        check_k(self.k, experts)?;
        check_bias_rate(self.bias_update_rate)
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(SigmoidBiasRouter::new(self.clone(), experts))
    }
    fn examples(experts: usize) -> Vec<Self> {
        vec![Self {
            k: 2.min(experts),
            bias_update_rate: 0.1,
            scaling: 1.0,
        }]
    }
}

/// The bias and its sign-update rule, shared with the group-limited router.
#[derive(Clone, Debug, PartialEq)]
pub struct BiasBalancer {
    pub bias: Vec<f32>,
    pub rate: f64,
}

impl BiasBalancer {
    pub fn new(experts: usize, rate: f64) -> Self {
        Self {
            bias: vec![0.0; experts],
            rate,
        }
    }

    /// `b_i += γ · sign(mean − load_i)` (no change for an expert exactly at the mean).
    pub fn update(&mut self, load: &[usize]) {
        if self.rate == 0.0 || load.iter().sum::<usize>() == 0 {
            return;
        }
        let mean = load.iter().sum::<usize>() as f64 / load.len() as f64;
        for (b, &l) in self.bias.iter_mut().zip(load) {
            let err = mean - l as f64;
            if err != 0.0 {
                *b += (self.rate * err.signum()) as f32;
            }
        }
    }

    pub fn load(&mut self, name: &str, values: &[f32]) -> Result<()> {
        if name != "selection_bias" || values.len() != self.bias.len() {
            return Err(MoeError::input(
                "BiasBalancer::load",
                format!(
                    "expected `selection_bias` with {} values, got `{name}` with {}",
                    self.bias.len(),
                    values.len()
                ),
            ));
        }
        self.bias.copy_from_slice(values);
        Ok(())
    }
}

pub struct SigmoidBiasRouter {
    cfg: SigmoidBiasConfig,
    experts: usize,
    pub balancer: BiasBalancer,
}

impl SigmoidBiasRouter {
    pub fn new(cfg: SigmoidBiasConfig, experts: usize) -> Self {
        let balancer = BiasBalancer::new(experts, cfg.bias_update_rate);
        Self {
            cfg,
            experts,
            balancer,
        }
    }
}

impl Router for SigmoidBiasRouter {
    fn config(&self) -> RouterConfig {
        self.cfg.clone().into()
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn weight_scale(&self) -> f64 {
        self.cfg.scaling
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let e = self.experts;
        expect_cols(&input, e, "sigmoid_bias router")?;
        let t = input.num_tokens();
        let scores = candle_nn::ops::sigmoid(&mask_unavailable(input.gate_out, input.available)?)?;
        let (s, _) = host(&scores)?;
        let mut pairs = Vec::with_capacity(t * self.cfg.k);
        let mut biased = vec![0f64; e];
        for tok in 0..t {
            for (x, b) in biased.iter_mut().enumerate() {
                *b = s[tok * e + x] + self.balancer.bias[x] as f64;
            }
            for x in top_k(&biased, self.cfg.k, (0..e).filter(|&x| input.is_available(x))) {
                pairs.push((tok as u32, x as u32));
            }
        }
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        Ok(RouterOutput {
            plan,
            dense: Dense::Masked(scores.clone()),
            probs: safe_row_normalize(&scores)?,
            logits: Some(input.gate_out.clone()),
            load_loss: None,
        })
    }
    fn after_step(&mut self, tokens_per_expert: &[usize]) {
        self.balancer.update(tokens_per_expert);
    }
    fn buffers(&self) -> Vec<(String, Vec<f32>)> {
        vec![("selection_bias".into(), self.balancer.bias.clone())]
    }
    fn load_buffer(&mut self, name: &str, values: &[f32]) -> Result<()> {
        self.balancer.load(name, values)
    }
}
