//! Two-level hierarchical gating (Shazeer et al. 2017, §B "Hierarchical Mixture of Experts"):
//! a primary gate picks `k_groups` groups, then each chosen group's own gate picks `k_inner`
//! experts inside it. The weight of expert `e` in group `g` is `G_primary[g] · G_g[e]`, each a
//! softmax over the kept entries, so a token's weights sum to 1.
//!
//! The gate produces `G + E` columns: the primary logits, then every group's secondary logits
//! (group `g` owns experts `g·E/G .. (g+1)·E/G`).

use candle_core::{Tensor, D};

use serde::{Deserialize, Serialize};

use super::{
    check_groups, expect_cols, host, masked_softmax, plan_mask, top_k, Router, RouterConfig,
    RouterInput, RouterKind, RouterOutput,
};
use crate::plan::DispatchPlan;
use crate::{MoeError, Result};

/// `{ type = "hierarchical", groups = 2, k_groups = 1, k_inner = 2 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HierarchicalConfig {
    /// Equal groups the experts form, in index order.
    pub groups: usize,
    /// Groups the primary gate keeps per token.
    pub k_groups: usize,
    /// Experts each kept group's gate keeps.
    pub k_inner: usize,
}

impl Default for HierarchicalConfig {
    fn default() -> Self {
        Self {
            groups: 2,
            k_groups: 1,
            k_inner: 2,
        }
    }
}

impl RouterKind for HierarchicalConfig {
    fn k(&self) -> usize {
        self.k_groups * self.k_inner
    }
    fn validate(&self, experts: usize) -> Result<()> {
        let Self {
            groups,
            k_groups,
            k_inner,
        } = *self;
        check_groups(groups, experts)?;
        if k_groups == 0 || k_groups > groups {
            return Err(MoeError::config(
                "router.k_groups",
                format!("must be in 1..={groups}, got {k_groups}"),
            ));
        }
        let per = experts / groups;
        if k_inner == 0 || k_inner > per {
            return Err(MoeError::config(
                "router.k_inner",
                format!("must be in 1..={per} (experts per group), got {k_inner}"),
            ));
        }
        Ok(())
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(HierarchicalRouter::new(self.clone(), experts))
    }
    fn examples(_experts: usize) -> Vec<Self> {
        vec![Self {
            groups: 2,
            k_groups: 1,
            k_inner: 1,
        }]
    }
}

pub struct HierarchicalRouter {
    cfg: HierarchicalConfig,
    experts: usize,
    groups: usize,
    k_groups: usize,
    k_inner: usize,
}

impl HierarchicalRouter {
    pub fn new(cfg: HierarchicalConfig, experts: usize) -> Self {
        let HierarchicalConfig {
            groups,
            k_groups,
            k_inner,
        } = cfg;
        Self {
            cfg,
            experts,
            groups,
            k_groups,
            k_inner,
        }
    }

    /// Softmax inside each group of `x [T, E]` over the entries where `mask` is 1.
    fn groupwise_softmax(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (t, e) = x.dims2()?;
        let per = e / self.groups;
        let x3 = x.reshape((t, self.groups, per))?;
        let m3 = mask.reshape((t, self.groups, per))?;
        let mx = x3.max_keepdim(D::Minus1)?.detach();
        let ex = (x3.broadcast_sub(&mx)?.exp()? * m3)?;
        let s = ex.sum_keepdim(D::Minus1)?;
        let s = (&s + s.eq(0.0)?.to_dtype(s.dtype())?)?;
        Ok(ex.broadcast_div(&s)?.reshape((t, e))?)
    }

    /// `[T, G]` → `[T, E]`, repeating each group's value over its experts.
    fn expand_groups(&self, g: &Tensor) -> Result<Tensor> {
        let t = g.dims2()?.0;
        let per = self.experts / self.groups;
        Ok(g.unsqueeze(2)?
            .broadcast_as((t, self.groups, per))?
            .reshape((t, self.experts))?)
    }
}

impl Router for HierarchicalRouter {
    fn config(&self) -> RouterConfig {
        self.cfg.clone().into()
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn gate_outputs(&self) -> usize {
        self.groups + self.experts
    }
    fn expert_columns(&self) -> Option<std::ops::Range<usize>> {
        Some(self.groups..self.groups + self.experts)
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let (e, gn) = (self.experts, self.groups);
        expect_cols(&input, gn + e, "hierarchical router")?;
        let t = input.num_tokens();
        let per = e / gn;
        let primary = input.gate_out.narrow(1, 0, gn)?;
        let secondary = input.gate_out.narrow(1, gn, e)?;
        let group_ok: Vec<bool> = (0..gn)
            .map(|g| (g * per..(g + 1) * per).any(|x| input.is_available(x)))
            .collect();
        let (pv, _) = host(&primary)?;
        let (sv, _) = host(&secondary)?;
        let mut pairs = Vec::with_capacity(t * self.k_groups * self.k_inner);
        let mut gmask = vec![0f64; t * gn];
        for tok in 0..t {
            for g in top_k(
                &pv[tok * gn..(tok + 1) * gn],
                self.k_groups,
                (0..gn).filter(|&g| group_ok[g]),
            ) {
                gmask[tok * gn + g] = 1.0;
                let inner = (g * per..(g + 1) * per).filter(|&x| input.is_available(x));
                for x in top_k(&sv[tok * e..(tok + 1) * e], self.k_inner, inner) {
                    pairs.push((tok as u32, x as u32));
                }
            }
        }
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        let gmask =
            Tensor::from_vec(gmask, (t, gn), primary.device())?.to_dtype(primary.dtype())?;
        let gp = masked_softmax(&primary, &gmask)?;
        let gs = self.groupwise_softmax(&secondary, &plan_mask(&plan, &secondary)?)?;
        let dense = (self.expand_groups(&gp)? * gs)?;
        // the full two-level distribution, for balancing losses and entropy
        let ones_p = primary.ones_like()?;
        let ones_s = secondary.ones_like()?;
        let probs = (self.expand_groups(&masked_softmax(&primary, &ones_p)?)?
            * self.groupwise_softmax(&secondary, &ones_s)?)?;
        // z-loss on the secondary logits, which score the experts themselves
        Ok(RouterOutput {
            plan,
            dense: super::Dense::Tensor(dense),
            probs,
            logits: Some(secondary),
            load_loss: None,
        })
    }
}
