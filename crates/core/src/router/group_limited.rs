//! Group-limited top-k (DeepSeek-V2 `group_limited_greedy`, DeepSeek-V3 `noaux_tc`): experts
//! form `groups` equal groups; first keep the `topk_groups` best groups, then the top-k
//! experts inside them. Scores are softmax (V2) or sigmoid (V3) of the logits; selection may
//! add V3's bias (see `sigmoid_bias.rs`, updated the same way); a group is scored by its best
//! expert (`max`) or the sum of its two best (`top2_sum`).
//! torch (V3): `group_scores = scores_for_choice.view(-1, G, E//G).topk(2)[0].sum(-1)`.

use serde::{Deserialize, Serialize};

use super::{
    check_bias_rate, check_groups, check_k, expect_cols, host, mask_unavailable,
    safe_row_normalize, softmax, top_k, BiasBalancer, Dense, Router, RouterConfig, RouterInput,
    RouterKind, RouterOutput,
};
use crate::plan::DispatchPlan;
use crate::{MoeError, Result};

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

/// `{ type = "group_limited", k = 2, groups = 2, topk_groups = 1, score = "sigmoid",
/// group_score = "top2_sum", bias_update_rate = 0.001, scaling = 1.0 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupLimitedConfig {
    /// Experts per token.
    pub k: usize,
    /// Equal groups the experts form, in index order.
    pub groups: usize,
    /// Groups kept per token before the top-k inside them.
    pub topk_groups: usize,
    pub score: ScoreFn,
    pub group_score: GroupScore,
    /// γ of the selection bias (see `sigmoid_bias.rs`; 0: no bias).
    pub bias_update_rate: f64,
    /// Multiplier of the kept weights (DeepSeek-V3's routed scaling factor).
    pub scaling: f64,
}

impl Default for GroupLimitedConfig {
    /// DeepSeek-V3's scoring (sigmoid, top-2 sum, γ = 0.001) at a small size.
    fn default() -> Self {
        Self {
            k: 2,
            groups: 2,
            topk_groups: 1,
            score: ScoreFn::Sigmoid,
            group_score: GroupScore::Top2Sum,
            bias_update_rate: 0.001,
            scaling: 1.0,
        }
    }
}

impl RouterKind for GroupLimitedConfig {
    fn k(&self) -> usize {
        self.k
    }
    fn validate(&self, experts: usize) -> Result<()> {
        let Self {
            k,
            groups,
            topk_groups,
            ..
        } = *self;
        check_k(k, experts)?;
        check_bias_rate(self.bias_update_rate)?;
        check_groups(groups, experts)?;
        if topk_groups == 0 || topk_groups > groups {
            return Err(MoeError::config(
                "router.topk_groups",
                format!("must be in 1..={groups} (the number of groups), got {topk_groups}"),
            ));
        }
        let reachable = topk_groups * (experts / groups);
        if k > reachable {
            return Err(MoeError::config(
                "router.k",
                format!("k = {k} exceeds the {reachable} experts inside {topk_groups} chosen groups; raise topk_groups or lower k"),
            ));
        }
        Ok(())
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(GroupLimitedRouter::new(self.clone(), experts))
    }
    fn examples(experts: usize) -> Vec<Self> {
        vec![Self {
            k: 2.min(experts / 2),
            groups: 2,
            topk_groups: 1,
            score: ScoreFn::Sigmoid,
            group_score: GroupScore::Top2Sum,
            bias_update_rate: 0.0,
            scaling: 1.0,
        }]
    }
}

pub struct GroupLimitedRouter {
    cfg: GroupLimitedConfig,
    experts: usize,
    pub balancer: BiasBalancer,
}

impl GroupLimitedRouter {
    pub fn new(cfg: GroupLimitedConfig, experts: usize) -> Self {
        let balancer = BiasBalancer::new(experts, cfg.bias_update_rate);
        Self {
            cfg,
            experts,
            balancer,
        }
    }
}

impl Router for GroupLimitedRouter {
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
        let GroupLimitedConfig {
            k,
            groups,
            topk_groups,
            score,
            group_score,
            ..
        } = self.cfg;
        let e = self.experts;
        expect_cols(&input, e, "group_limited router")?;
        let t = input.num_tokens();
        let per = e / groups;
        let logits = mask_unavailable(input.gate_out, input.available)?;
        let scores = match score {
            ScoreFn::Softmax => softmax(&logits)?,
            ScoreFn::Sigmoid => candle_nn::ops::sigmoid(&logits)?,
        };
        let (s, _) = host(&scores)?;
        let mut pairs = Vec::with_capacity(t * k);
        let mut choice = vec![0f64; e];
        let mut gscore = vec![0f64; groups];
        for tok in 0..t {
            for (x, c) in choice.iter_mut().enumerate() {
                *c = s[tok * e + x] + self.balancer.bias[x] as f64;
            }
            for (g, gs) in gscore.iter_mut().enumerate() {
                let members = (g * per..(g + 1) * per).filter(|&x| input.is_available(x));
                let best = top_k(&choice, 2, members);
                *gs = match group_score {
                    GroupScore::Max => best.first().map_or(f64::NEG_INFINITY, |&x| choice[x]),
                    GroupScore::Top2Sum if best.is_empty() => f64::NEG_INFINITY,
                    GroupScore::Top2Sum => best.iter().map(|&x| choice[x]).sum(),
                };
            }
            let kept = top_k(&gscore, topk_groups, 0..groups);
            let allowed = (0..e).filter(|&x| kept.contains(&(x / per)) && input.is_available(x));
            for x in top_k(&choice, k, allowed) {
                pairs.push((tok as u32, x as u32));
            }
        }
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        let probs = match score {
            ScoreFn::Softmax => scores.clone(),
            ScoreFn::Sigmoid => safe_row_normalize(&scores)?,
        };
        Ok(RouterOutput {
            plan,
            dense: Dense::Masked(scores),
            probs,
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
