//! Domain → expert mapping: the routing loss that sends each labelled domain's tokens to the
//! experts named for it (`losses.domain_map`), and *routing purity*, the share of a domain's
//! tokens whose top-1 expert is one of its experts.
//!
//! Labels come with the data (every corpus window is tagged with its domain); they reach the
//! layer through [`crate::ForwardCtx::domains`], the way token ids reach the hash router.

use candle_core::{DType, Tensor};

use crate::plan::DispatchPlan;
use crate::{MoeError, Result};

/// Added to `Σ_{e ∈ experts(d)} p_e` before the log, so a token whose mapped experts all have
/// probability 0 (f32 underflow) costs a large but finite loss (`−ln 1e-12 ≈ 27.6`).
pub const DOMAIN_MAP_EPS: f64 = 1e-12;

/// Per-token domain labels and which experts each domain maps to.
#[derive(Clone, Copy, Debug)]
pub struct DomainTargets<'a> {
    /// Domain id of each token, `[T]`.
    pub domains: &'a [u32],
    /// `experts[d]`: the experts domain id `d` maps to. A domain past the end or with an
    /// empty list is unmapped (its tokens add nothing). `None`: domain `d` → expert `d mod E`.
    pub experts: Option<&'a [Vec<usize>]>,
}

impl DomainTargets<'_> {
    /// The experts domain `d` maps to in a layer of `num_experts` experts (indices at or past
    /// `num_experts` are left out).
    pub fn experts_of(&self, d: u32, num_experts: usize) -> Vec<usize> {
        match self.experts {
            None if num_experts > 0 => vec![d as usize % num_experts],
            None => Vec::new(),
            Some(map) => map
                .get(d as usize)
                .map(|list| list.iter().copied().filter(|&e| e < num_experts).collect())
                .unwrap_or_default(),
        }
    }

    fn check_len(&self, t: usize, op: &'static str) -> Result<()> {
        if self.domains.len() != t {
            return Err(MoeError::input(
                op,
                format!("{} domain labels for {t} tokens", self.domains.len()),
            ));
        }
        Ok(())
    }
}

/// The domain-map loss: `−(1/N) Σ_t log(Σ_{e ∈ experts(d_t)} p[t, e] + ε)` over the `N`
/// tokens whose domain maps to at least one available expert (`available`: expert dropout or
/// ablation; `None` = all). `None` when no token counts.
///
/// # Shapes
/// `probs [T, E]` (the router's distribution), `targets.domains [T]` → scalar.
pub fn domain_map_loss(
    probs: &Tensor,
    targets: &DomainTargets<'_>,
    available: Option<&[bool]>,
) -> Result<Option<Tensor>> {
    let (t, e) = probs.dims2()?;
    targets.check_len(t, "domain_map_loss")?;
    let mut per_domain: Vec<Option<Vec<usize>>> = Vec::new();
    let (mut rows, mut mask) = (Vec::new(), Vec::new());
    for (tok, &d) in targets.domains.iter().enumerate() {
        let slot = d as usize;
        if per_domain.len() <= slot {
            per_domain.resize(slot + 1, None);
        }
        let experts = per_domain[slot].get_or_insert_with(|| {
            targets
                .experts_of(d, e)
                .into_iter()
                .filter(|&x| available.is_none_or(|a| a.get(x).copied().unwrap_or(false)))
                .collect()
        });
        if experts.is_empty() {
            continue;
        }
        rows.push(tok as u32);
        let mut row = vec![0f64; e];
        experts.iter().for_each(|&x| row[x] = 1.0);
        mask.extend(row);
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len();
    let dev = probs.device();
    let mask = Tensor::from_vec(mask, (n, e), dev)?.to_dtype(probs.dtype())?;
    let idx = Tensor::from_vec(rows, n, dev)?;
    // torch: -torch.log((probs[rows] * mask).sum(-1) + eps).mean()
    let mass = (probs.index_select(&idx, 0)? * mask)?.sum(1)?;
    Ok(Some(((mass + DOMAIN_MAP_EPS)?.log()?.mean_all()?.neg())?))
}

/// Each token's top-1 expert: the assignment with the largest combine weight (ties to the
/// lower expert); `None` for a dropped token.
///
/// # Shapes
/// `weights [n]`, one per plan assignment → `[T]`.
pub fn top1_experts(plan: &DispatchPlan, weights: &Tensor) -> Result<Vec<Option<usize>>> {
    let w = weights.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    if w.len() != plan.len() {
        return Err(MoeError::input(
            "top1_experts",
            format!("{} weights for {} assignments", w.len(), plan.len()),
        ));
    }
    let mut best: Vec<Option<(usize, f64)>> = vec![None; plan.num_tokens];
    // the plan is sorted by expert, so a strictly larger weight is needed to replace
    for (i, (&tok, &ex)) in plan.token.iter().zip(&plan.expert).enumerate() {
        let slot = &mut best[tok as usize];
        if slot.is_none_or(|(_, bw)| w[i] > bw) {
            *slot = Some((ex as usize, w[i]));
        }
    }
    Ok(best.into_iter().map(|b| b.map(|(e, _)| e)).collect())
}

/// Routing purity counts of one layer: `(pure, total)` per domain id, where `total` counts
/// the tokens of a mapped domain and `pure` those whose top-1 expert is one of its experts
/// (a dropped token is not pure). Unmapped domains get `(0, 0)`.
pub fn purity_counts(
    top1: &[Option<usize>],
    targets: &DomainTargets<'_>,
    num_experts: usize,
) -> Result<Vec<(usize, usize)>> {
    targets.check_len(top1.len(), "purity_counts")?;
    let n_domains = targets
        .domains
        .iter()
        .map(|&d| d as usize + 1)
        .max()
        .unwrap_or(0);
    let experts: Vec<Vec<usize>> = (0..n_domains as u32)
        .map(|d| targets.experts_of(d, num_experts))
        .collect();
    let mut out = vec![(0, 0); n_domains];
    for (choice, &d) in top1.iter().zip(targets.domains) {
        let mapped = &experts[d as usize];
        if mapped.is_empty() {
            continue;
        }
        let slot = &mut out[d as usize];
        slot.1 += 1;
        if choice.is_some_and(|c| mapped.contains(&c)) {
            slot.0 += 1;
        }
    }
    Ok(out)
}
