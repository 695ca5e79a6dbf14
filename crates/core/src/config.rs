//! Configuration of an MoE layer. Defaults live here, in one place; `validate()` runs once at
//! the boundary and every later step may assume checked values. Each router's config lives in
//! that router's file under `router/`; [`RouterConfig`], the enum of them, is re-exported here.

use serde::{Deserialize, Serialize};

pub use crate::router::{DropPolicy, GroupScore, RouterConfig, ScoreFn};
use crate::{MoeError, Result};

pub use switchyard_kernels::layout::{Activation, ExpertKind, ExpertSpec};

/// The gating network that scores experts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GateConfig {
    Linear {
        context: bool,
    },
    Mlp {
        hidden: usize,
        activation: Activation,
        context: bool,
    },
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig::Linear { context: false }
    }
}

impl GateConfig {
    pub fn uses_context(&self) -> bool {
        match self {
            GateConfig::Linear { context } | GateConfig::Mlp { context, .. } => *context,
        }
    }
}

/// Weights of the auxiliary losses (0 turns one off; every loss is still reported).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossWeights {
    pub switch_balance: f64,
    pub importance: f64,
    pub load: f64,
    pub z: f64,
    /// Domain → expert mapping loss ([`crate::domain_map::domain_map_loss`]); needs domain
    /// labels in [`crate::ForwardCtx::domains`] and a router with a learned gate.
    pub domain_map: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            switch_balance: 0.01,
            importance: 0.0,
            load: 0.0,
            z: 0.001,
            domain_map: 0.0,
        }
    }
}

/// Default of [`MoeConfig::gate_in_steps`].
pub const DEFAULT_GATE_IN_STEPS: usize = 100;

/// A routed MoE layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MoeConfig {
    pub d_model: usize,
    pub experts: Vec<ExpertSpec>,
    pub shared_experts: Vec<ExpertSpec>,
    /// Scale the shared experts' summed output per token by `sigmoid(x · w)`, a learned
    /// `[1, d]` gate (Qwen2-MoE's `shared_expert_gate`). Needs at least one shared expert.
    pub shared_gate: bool,
    pub router: RouterConfig,
    pub gate: GateConfig,
    /// Renormalise each token's kept weights to sum to 1.
    pub renormalize: bool,
    pub losses: LossWeights,
    /// Multiplicative router jitter ε: gate input × U(1-ε, 1+ε) in training (Switch Transformer).
    pub jitter: f64,
    /// Probability that a whole expert is unavailable for a training batch.
    pub expert_dropout: f64,
    /// Optimiser steps over which an expert added by surgery is let into routing: its gate
    /// logit is offset by `ln α` with `α` rising by `1 / gate_in_steps` per step from 0
    /// (never chosen, outputs unchanged) to 1 (see [`crate::MoeLayer::set_gate_in`]).
    pub gate_in_steps: usize,
}

impl Default for MoeConfig {
    fn default() -> Self {
        Self {
            d_model: 64,
            experts: vec![ExpertSpec::swiglu(128); 8],
            shared_experts: vec![],
            shared_gate: false,
            router: RouterConfig::default(),
            gate: GateConfig::default(),
            renormalize: true,
            losses: LossWeights::default(),
            jitter: 0.0,
            expert_dropout: 0.0,
            gate_in_steps: DEFAULT_GATE_IN_STEPS,
        }
    }
}

impl MoeConfig {
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    pub fn validate(&self) -> Result<()> {
        if self.d_model == 0 {
            return Err(MoeError::config("d_model", "must be at least 1"));
        }
        if self.experts.is_empty() {
            return Err(MoeError::config(
                "experts",
                "a layer needs at least one routed expert",
            ));
        }
        for (i, e) in self.experts.iter().chain(&self.shared_experts).enumerate() {
            if e.hidden == 0 {
                let which = if i < self.experts.len() {
                    format!("experts[{i}].hidden")
                } else {
                    format!("shared_experts[{}].hidden", i - self.experts.len())
                };
                return Err(MoeError::config(
                    which,
                    "an expert's hidden width must be at least 1",
                ));
            }
        }
        if self.shared_gate && self.shared_experts.is_empty() {
            return Err(MoeError::config(
                "shared_gate",
                "a shared-expert gate needs at least one shared expert",
            ));
        }
        self.router.validate(self.experts.len())?;
        if let GateConfig::Mlp { hidden: 0, .. } = self.gate {
            return Err(MoeError::config(
                "gate.hidden",
                "an MLP gate needs a hidden width of at least 1",
            ));
        }
        for (name, w) in [
            ("losses.switch_balance", self.losses.switch_balance),
            ("losses.importance", self.losses.importance),
            ("losses.load", self.losses.load),
            ("losses.z", self.losses.z),
            ("losses.domain_map", self.losses.domain_map),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(MoeError::config(
                    name,
                    format!("loss weights must be finite and >= 0, got {w}"),
                ));
            }
        }
        if self.losses.load > 0.0 && !matches!(self.router, RouterConfig::NoisyTopK(_)) {
            return Err(MoeError::config(
                "losses.load",
                "the smooth load loss needs the noisy top-k router's noise; use router.type = \"noisy_top_k\" or set losses.load = 0",
            ));
        }
        if self.losses.domain_map > 0.0 && matches!(self.router, RouterConfig::Hash(_)) {
            return Err(MoeError::config(
                "losses.domain_map",
                "the domain-map loss trains the router's gate, and the hash router has none; use a gated router (e.g. router.type = \"top_k\") or set losses.domain_map = 0",
            ));
        }
        if !(self.jitter.is_finite() && (0.0..1.0).contains(&self.jitter)) {
            return Err(MoeError::config(
                "jitter",
                format!("must be in [0, 1), got {}", self.jitter),
            ));
        }
        if !(self.expert_dropout.is_finite() && (0.0..1.0).contains(&self.expert_dropout)) {
            return Err(MoeError::config(
                "expert_dropout",
                format!("must be in [0, 1), got {}", self.expert_dropout),
            ));
        }
        if self.gate_in_steps == 0 {
            return Err(MoeError::config(
                "gate_in_steps",
                "must be at least 1 (the steps over which an added expert enters routing)",
            ));
        }
        Ok(())
    }
}
