//! Configuration of an MoE layer. Defaults live here, in one place; `validate()` runs once at
//! the boundary and every later step may assume checked values.

use serde::{Deserialize, Serialize};

use crate::{MoeError, Result};

pub use switchyard_kernels::layout::{Activation, ExpertKind, ExpertSpec};

/// Which tokens a switch router keeps when an expert is over capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Earlier tokens win (Switch Transformer, GShard).
    Position,
    /// Tokens with the higher router probability win (BPR, Riquelme et al. 2021).
    Probability,
}

/// How a group is scored in group-limited routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupScore {
    /// Best expert score in the group (DeepSeek-V2 `group_limited_greedy`).
    Max,
    /// Sum of the two best scores in the group (DeepSeek-V3 `noaux_tc`).
    Top2Sum,
}

/// Score function applied to the gate logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreFn {
    Softmax,
    Sigmoid,
}

/// The router zoo. Each variant has its own file under `router/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouterConfig {
    TopK {
        k: usize,
    },
    NoisyTopK {
        k: usize,
    },
    Switch {
        k: usize,
        capacity_factor: f64,
        eval_capacity_factor: Option<f64>,
        drop_policy: DropPolicy,
    },
    ExpertChoice {
        capacity_factor: f64,
    },
    Hash {
        seed: u64,
    },
    SigmoidBias {
        k: usize,
        bias_update_rate: f64,
        scaling: f64,
    },
    GroupLimited {
        k: usize,
        groups: usize,
        topk_groups: usize,
        score: ScoreFn,
        group_score: GroupScore,
        bias_update_rate: f64,
        scaling: f64,
    },
    Hierarchical {
        groups: usize,
        k_groups: usize,
        k_inner: usize,
    },
    Sinkhorn {
        k: usize,
        iterations: usize,
    },
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig::TopK { k: 2 }
    }
}

impl RouterConfig {
    pub fn name(&self) -> &'static str {
        match self {
            RouterConfig::TopK { .. } => "top_k",
            RouterConfig::NoisyTopK { .. } => "noisy_top_k",
            RouterConfig::Switch { .. } => "switch",
            RouterConfig::ExpertChoice { .. } => "expert_choice",
            RouterConfig::Hash { .. } => "hash",
            RouterConfig::SigmoidBias { .. } => "sigmoid_bias",
            RouterConfig::GroupLimited { .. } => "group_limited",
            RouterConfig::Hierarchical { .. } => "hierarchical",
            RouterConfig::Sinkhorn { .. } => "sinkhorn",
        }
    }

    /// Experts chosen per token (expert-choice: the average, given by its capacity factor).
    pub fn k(&self) -> usize {
        match *self {
            RouterConfig::TopK { k }
            | RouterConfig::NoisyTopK { k }
            | RouterConfig::Switch { k, .. }
            | RouterConfig::SigmoidBias { k, .. }
            | RouterConfig::GroupLimited { k, .. }
            | RouterConfig::Sinkhorn { k, .. } => k,
            RouterConfig::ExpertChoice { capacity_factor } => {
                capacity_factor.ceil().max(1.0) as usize
            }
            RouterConfig::Hash { .. } => 1,
            RouterConfig::Hierarchical {
                k_groups, k_inner, ..
            } => k_groups * k_inner,
        }
    }

    pub fn validate(&self, experts: usize) -> Result<()> {
        let field = |f: &str| format!("router.{f}");
        let check_k = |k: usize| -> Result<()> {
            if k == 0 {
                return Err(MoeError::config(field("k"), "k must be at least 1"));
            }
            if k > experts {
                return Err(MoeError::config(
                    field("k"),
                    format!(
                        "k = {k} exceeds the number of experts ({experts}); lower k or add experts"
                    ),
                ));
            }
            Ok(())
        };
        let check_cf = |cf: f64, name: &str| -> Result<()> {
            if !(cf.is_finite() && cf > 0.0) {
                return Err(MoeError::config(
                    field(name),
                    format!("capacity factor must be a finite number > 0, got {cf}; 1.25 is a common choice"),
                ));
            }
            Ok(())
        };
        let check_rate = |r: f64| -> Result<()> {
            if !(r.is_finite() && r >= 0.0) {
                return Err(MoeError::config(
                    field("bias_update_rate"),
                    format!("must be finite and >= 0, got {r}"),
                ));
            }
            Ok(())
        };
        match *self {
            RouterConfig::TopK { k } | RouterConfig::NoisyTopK { k } => check_k(k),
            RouterConfig::Switch {
                k,
                capacity_factor,
                eval_capacity_factor,
                ..
            } => {
                check_k(k)?;
                check_cf(capacity_factor, "capacity_factor")?;
                if let Some(cf) = eval_capacity_factor {
                    check_cf(cf, "eval_capacity_factor")?;
                }
                Ok(())
            }
            RouterConfig::ExpertChoice { capacity_factor } => {
                check_cf(capacity_factor, "capacity_factor")
            }
            RouterConfig::Hash { .. } => Ok(()),
            RouterConfig::SigmoidBias {
                k,
                bias_update_rate,
                ..
            } => {
                check_k(k)?;
                check_rate(bias_update_rate)
            }
            RouterConfig::GroupLimited {
                k,
                groups,
                topk_groups,
                bias_update_rate,
                ..
            } => {
                check_k(k)?;
                check_rate(bias_update_rate)?;
                check_groups(groups, experts)?;
                if topk_groups == 0 || topk_groups > groups {
                    return Err(MoeError::config(
                        field("topk_groups"),
                        format!(
                            "must be in 1..={groups} (the number of groups), got {topk_groups}"
                        ),
                    ));
                }
                let reachable = topk_groups * (experts / groups);
                if k > reachable {
                    return Err(MoeError::config(
                        field("k"),
                        format!("k = {k} exceeds the {reachable} experts inside {topk_groups} chosen groups; raise topk_groups or lower k"),
                    ));
                }
                Ok(())
            }
            RouterConfig::Hierarchical {
                groups,
                k_groups,
                k_inner,
            } => {
                check_groups(groups, experts)?;
                if k_groups == 0 || k_groups > groups {
                    return Err(MoeError::config(
                        field("k_groups"),
                        format!("must be in 1..={groups}, got {k_groups}"),
                    ));
                }
                let per = experts / groups;
                if k_inner == 0 || k_inner > per {
                    return Err(MoeError::config(
                        field("k_inner"),
                        format!("must be in 1..={per} (experts per group), got {k_inner}"),
                    ));
                }
                Ok(())
            }
            RouterConfig::Sinkhorn { k, iterations } => {
                check_k(k)?;
                if iterations == 0 {
                    return Err(MoeError::config(
                        field("iterations"),
                        "Sinkhorn needs at least 1 iteration",
                    ));
                }
                Ok(())
            }
        }
    }
}

fn check_groups(groups: usize, experts: usize) -> Result<()> {
    if groups == 0 || experts % groups != 0 {
        return Err(MoeError::config(
            "router.groups",
            format!("the group count ({groups}) must be >= 1 and divide the number of experts ({experts})"),
        ));
    }
    Ok(())
}

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
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            switch_balance: 0.01,
            importance: 0.0,
            load: 0.0,
            z: 0.001,
        }
    }
}

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
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(MoeError::config(
                    name,
                    format!("loss weights must be finite and >= 0, got {w}"),
                ));
            }
        }
        if self.losses.load > 0.0 && !matches!(self.router, RouterConfig::NoisyTopK { .. }) {
            return Err(MoeError::config(
                "losses.load",
                "the smooth load loss needs the noisy top-k router's noise; use router.type = \"noisy_top_k\" or set losses.load = 0",
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
        Ok(())
    }
}
