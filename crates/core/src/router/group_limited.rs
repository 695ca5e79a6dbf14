//! Group-limited top-k (DeepSeek-V2 `group_limited_greedy`, DeepSeek-V3 `noaux_tc`): experts
//! form `groups` equal groups; first keep the `topk_groups` best groups, then the top-k
//! experts inside them. Scores are softmax (V2) or sigmoid (V3) of the logits; selection may
//! add V3's bias (see `sigmoid_bias.rs`, updated the same way); a group is scored by its best
//! expert (`max`) or the sum of its two best (`top2_sum`).
//! torch (V3): `group_scores = scores_for_choice.view(-1, G, E//G).topk(2)[0].sum(-1)`.

use super::{
    expect_cols, host, mask_unavailable, safe_row_normalize, softmax, top_k, BiasBalancer, Dense,
    Router, RouterInput, RouterOutput,
};
use crate::config::{GroupScore, RouterConfig, ScoreFn};
use crate::plan::DispatchPlan;
use crate::Result;

pub struct GroupLimitedRouter {
    cfg: RouterConfig,
    experts: usize,
    pub balancer: BiasBalancer,
}

impl GroupLimitedRouter {
    pub fn new(cfg: RouterConfig, experts: usize) -> Self {
        let RouterConfig::GroupLimited {
            bias_update_rate, ..
        } = cfg
        else {
            unreachable!()
        };
        Self {
            cfg,
            experts,
            balancer: BiasBalancer::new(experts, bias_update_rate),
        }
    }
}

impl Router for GroupLimitedRouter {
    fn config(&self) -> &RouterConfig {
        &self.cfg
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn weight_scale(&self) -> f64 {
        let RouterConfig::GroupLimited { scaling, .. } = self.cfg else {
            unreachable!()
        };
        scaling
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let RouterConfig::GroupLimited {
            k,
            groups,
            topk_groups,
            score,
            group_score,
            ..
        } = self.cfg
        else {
            unreachable!()
        };
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
