//! Routers: turn gate outputs into a [`DispatchPlan`] plus differentiable combine weights.
//!
//! Every router follows the same recipe, so all of them share the kernels, losses and stats:
//! 1. read the logits on the host and **select** (top-k, capacity, Sinkhorn, …) — a
//!    non-differentiable decision; ties break to the lower expert (or token) index;
//! 2. build the plan from the selected `(token, expert)` pairs;
//! 3. compute the **dense weights** `[T, E]` with tensor ops (zero where not selected), so
//!    gradients flow to the gate through the kept weights only — or, for routers that keep
//!    their scores as they are at the selected entries, just name the scores
//!    ([`Dense::Masked`]) and let the layer read the plan's entries of them.
//!
//! The layer then optionally renormalises each row, applies the router's weight scale and
//! gathers one weight per plan assignment.
//!
//! # Adding a router
//! One file, `router/<name>.rs`, with the router's config struct (its fields, `Default`, and
//! a [`RouterKind`] impl: `k`, `validate`, `build`) and the router (a [`Router`] impl); then
//! one line in the `routers!` registry below. The registry adds the variant to
//! [`RouterConfig`] (serde tag included) and to [`RouterConfig::defaults`] and
//! [`RouterConfig::examples`], which the tests covering every router iterate.

use candle_core::{DType, Tensor, D};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::plan::DispatchPlan;
use crate::{MoeError, Result};

/// The router registry's macro: see its one invocation below.
macro_rules! routers {
    ($(
        $(#[$doc:meta])*
        $variant:ident($tag:literal) = $module:ident::{$config:ident, $router:ident},
    )*) => {
        $(
            mod $module;
            pub use $module::{$config, $router};
        )*

        /// The router zoo: one variant per router in the registry, holding that router's
        /// config. Written as the router's `type` tag beside its fields, e.g.
        /// `router = { type = "top_k", k = 2 }`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum RouterConfig {
            $(
                $(#[$doc])*
                #[serde(rename = $tag)]
                $variant($config),
            )*
        }

        $(
            impl From<$config> for RouterConfig {
                fn from(cfg: $config) -> Self {
                    RouterConfig::$variant(cfg)
                }
            }
        )*

        impl RouterConfig {
            /// Every router's `type` tag, in registry order.
            pub const NAMES: &'static [&'static str] = &[$($tag),*];

            /// The `type` tag.
            pub fn name(&self) -> &'static str {
                match self {
                    $(RouterConfig::$variant(_) => $tag,)*
                }
            }

            /// The config of the router this value holds.
            pub fn kind(&self) -> &dyn RouterKind {
                match self {
                    $(RouterConfig::$variant(cfg) => cfg,)*
                }
            }

            /// Every router's default config, in registry order.
            pub fn defaults() -> Vec<RouterConfig> {
                vec![$($config::default().into()),*]
            }

            /// Every router's [`RouterKind::examples`] for a layer of `experts` experts, in
            /// registry order: what the tests that cover every router iterate.
            pub fn examples(experts: usize) -> Vec<RouterConfig> {
                let mut all = Vec::new();
                $(all.extend($config::examples(experts).into_iter().map(RouterConfig::from));)*
                all
            }
        }
    };
}

// The registry: every router once, as `Variant("type tag") = module::{Config, Router}`. The
// line declares the module (`router/<module>.rs`, which holds the config, its `RouterKind`
// impl and the router), re-exports both types, and adds the variant to `RouterConfig`.
routers! {
    /// Softmax top-k ([`TopKRouter`]).
    TopK("top_k") = topk::{TopKConfig, TopKRouter},
    /// Shazeer's noisy top-k gating ([`NoisyTopKRouter`]).
    NoisyTopK("noisy_top_k") = noisy_topk::{NoisyTopKConfig, NoisyTopKRouter},
    /// Capacity-limited Switch / GShard routing ([`SwitchRouter`]).
    Switch("switch") = switch::{SwitchConfig, SwitchRouter},
    /// Experts choose their tokens ([`ExpertChoiceRouter`]).
    ExpertChoice("expert_choice") = expert_choice::{ExpertChoiceConfig, ExpertChoiceRouter},
    /// A fixed hash of the token id ([`HashRouter`]).
    Hash("hash") = hash::{HashConfig, HashRouter},
    /// Sigmoid scores, aux-loss-free bias balancing ([`SigmoidBiasRouter`]).
    SigmoidBias("sigmoid_bias") = sigmoid_bias::{SigmoidBiasConfig, SigmoidBiasRouter},
    /// DeepSeek's group-limited top-k ([`GroupLimitedRouter`]).
    GroupLimited("group_limited") = group_limited::{GroupLimitedConfig, GroupLimitedRouter},
    /// Two-level gating ([`HierarchicalRouter`]).
    Hierarchical("hierarchical") = hierarchical::{HierarchicalConfig, HierarchicalRouter},
    /// Sinkhorn-balanced assignment ([`SinkhornRouter`]).
    Sinkhorn("sinkhorn") = sinkhorn::{SinkhornConfig, SinkhornRouter},
}

pub use group_limited::{GroupScore, ScoreFn};
pub use sigmoid_bias::BiasBalancer;
pub use switch::DropPolicy;

impl Default for RouterConfig {
    fn default() -> Self {
        TopKConfig::default().into()
    }
}

impl RouterConfig {
    /// Experts chosen per token (expert-choice: the average, given by its capacity factor).
    pub fn k(&self) -> usize {
        self.kind().k()
    }

    /// Checks the fields against a layer of `experts` experts; errors name `router.<field>`.
    pub fn validate(&self, experts: usize) -> Result<()> {
        self.kind().validate(experts)
    }
}

/// What every router's config does: implemented by the config struct in each router's file.
pub trait RouterKind {
    /// Experts chosen per token.
    fn k(&self) -> usize;
    /// Checks the fields against a layer of `experts` experts; errors name `router.<field>`.
    fn validate(&self, experts: usize) -> Result<()>;
    /// The router, for a config that passed [`RouterKind::validate`].
    fn build(&self, experts: usize) -> Box<dyn Router>;
    /// Configs that exercise this router in a layer of `experts` experts, for the tests that
    /// cover every router; those invalid for `experts` are skipped there.
    fn examples(experts: usize) -> Vec<Self>
    where
        Self: Sized + Default,
    {
        let _ = experts;
        vec![Self::default()]
    }
}

fn field_error(name: &str, message: impl Into<String>) -> MoeError {
    MoeError::config(format!("router.{name}"), message)
}

/// `router.k` is in `1..=experts`.
pub(crate) fn check_k(k: usize, experts: usize) -> Result<()> {
    if k == 0 {
        return Err(field_error("k", "k must be at least 1"));
    }
    if k > experts {
        return Err(field_error(
            "k",
            format!("k = {k} exceeds the number of experts ({experts}); lower k or add experts"),
        ));
    }
    Ok(())
}

/// A capacity factor (field `name`) is finite and > 0.
pub(crate) fn check_capacity_factor(cf: f64, name: &str) -> Result<()> {
    if !(cf.is_finite() && cf > 0.0) {
        return Err(field_error(
            name,
            format!(
                "capacity factor must be a finite number > 0, got {cf}; 1.25 is a common choice"
            ),
        ));
    }
    Ok(())
}

/// `router.bias_update_rate` is finite and >= 0.
pub(crate) fn check_bias_rate(rate: f64) -> Result<()> {
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(field_error(
            "bias_update_rate",
            format!("must be finite and >= 0, got {rate}"),
        ));
    }
    Ok(())
}

/// `router.groups` is at least 1 and divides the expert count.
pub(crate) fn check_groups(groups: usize, experts: usize) -> Result<()> {
    if groups == 0 || !experts.is_multiple_of(groups) {
        return Err(field_error(
            "groups",
            format!("the group count ({groups}) must be >= 1 and divide the number of experts ({experts})"),
        ));
    }
    Ok(())
}

/// What a router sees for one batch of `T` tokens.
pub struct RouterInput<'a> {
    /// Gate outputs `[T, router.gate_outputs()]`.
    pub gate_out: &'a Tensor,
    /// Token ids `[T]` (needed by the hash router only).
    pub token_ids: Option<&'a [u32]>,
    /// Experts usable in this batch (`None`: all). Expert dropout sets some to `false`.
    pub available: Option<&'a [bool]>,
    pub train: bool,
    /// Source of routing noise; seeded by the caller, so runs are reproducible.
    pub rng: &'a mut ChaCha8Rng,
}

impl RouterInput<'_> {
    pub fn num_tokens(&self) -> usize {
        self.gate_out.dims().first().copied().unwrap_or(0)
    }
    pub fn is_available(&self, e: usize) -> bool {
        self.available.is_none_or(|a| a[e])
    }
}

/// A router's combine weights before renormalisation: `[T, E]`, zero outside the plan;
/// differentiable.
#[derive(Clone, Debug)]
pub enum Dense {
    /// The weights as a tensor.
    Tensor(Tensor),
    /// `scores ⊙ mask(plan)`: the scores at the plan's assignments, zero elsewhere — left
    /// implicit, so neither the mask nor the product is built (the layer reads only the
    /// plan's entries, [`crate::rowops::plan_weights_masked`]).
    Masked(Tensor),
    /// The softmax over each row's plan entries of these logits, zero elsewhere (Shazeer's
    /// `softmax(KeepTopK(H, k))`): rows already sum to 1 over the plan, whatever the layer's
    /// `renormalize` says. Computed as the full row softmax renormalised over the plan
    /// ([`crate::rowops::softmax_rows`], then [`crate::rowops::plan_weights_masked`]), not as
    /// a masked `[T, E]` graph.
    MaskedSoftmax(Tensor),
}

impl Dense {
    /// The weights as a `[T, E]` tensor (builds the product for [`Dense::Masked`]).
    pub fn tensor(&self, plan: &DispatchPlan) -> Result<Tensor> {
        match self {
            Dense::Tensor(t) => Ok(t.clone()),
            Dense::Masked(s) => Ok((s * plan_mask(plan, s)?)?),
            Dense::MaskedSoftmax(l) => masked_softmax(l, &plan_mask(plan, l)?),
        }
    }
}

/// A router's decision for one batch.
pub struct RouterOutput {
    pub plan: DispatchPlan,
    /// `[T, E]` combine weights, zero outside the plan; differentiable.
    pub dense: Dense,
    /// `[T, E]` the router's full distribution over experts (for the Switch balancing loss
    /// and the routing entropy).
    pub probs: Tensor,
    /// `[T, E]` raw router logits (for the z-loss, max-logit stats and traces), when there are any.
    pub logits: Option<Tensor>,
    /// Shazeer's smooth load loss (noisy top-k in training only).
    pub load_loss: Option<Tensor>,
}

/// One routing algorithm. Implementations live one per file in this module.
pub trait Router: Send + Sync {
    /// The config this router was built from.
    fn config(&self) -> RouterConfig;
    fn num_experts(&self) -> usize;
    /// Columns the gate must produce (0: the router needs no learned gate).
    fn gate_outputs(&self) -> usize {
        self.num_experts()
    }
    /// The gate columns holding one logit per expert, in expert order (`None`: the router
    /// has no learned gate). The layer's gate-in ramp offsets these
    /// ([`crate::MoeLayer::set_gate_in`]); expert surgery remaps the gate rows behind them.
    fn expert_columns(&self) -> Option<std::ops::Range<usize>> {
        (self.gate_outputs() > 0).then(|| 0..self.num_experts())
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput>;
    /// Multiplier applied to the weights after optional renormalisation (DeepSeek-V3's
    /// routed scaling factor).
    fn weight_scale(&self) -> f64 {
        1.0
    }
    /// Non-gradient update after an optimiser step, given the tokens each expert received
    /// since the last call (aux-loss-free bias balancing).
    fn after_step(&mut self, _tokens_per_expert: &[usize]) {}
    /// Non-parameter state to checkpoint (e.g. selection biases).
    fn buffers(&self) -> Vec<(String, Vec<f32>)> {
        Vec::new()
    }
    /// Restores a buffer written by [`Router::buffers`].
    fn load_buffer(&mut self, name: &str, _values: &[f32]) -> Result<()> {
        Err(MoeError::input(
            "Router::load_buffer",
            format!("router `{}` has no buffer `{name}`", self.config().name()),
        ))
    }
}

/// Builds the router a config describes.
pub fn build(cfg: &RouterConfig, experts: usize) -> Result<Box<dyn Router>> {
    cfg.validate(experts)?;
    Ok(cfg.kind().build(experts))
}

// ---- shared helpers ------------------------------------------------------------------------

/// Host copy of a 2-D tensor as row-major f64 plus its column count.
pub fn host(t: &Tensor) -> Result<(Vec<f64>, usize)> {
    let (_, cols) = t.dims2()?;
    Ok((
        t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
        cols,
    ))
}

/// Indices of the `k` largest values among `candidates`, descending; ties go to the lower
/// index and NaN ranks below everything.
pub fn top_k<V: Copy + Into<f64>>(
    values: &[V],
    k: usize,
    candidates: impl Iterator<Item = usize>,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(k);
    top_k_into(values, k, candidates, &mut out);
    out
}

/// Up to this `k`, [`top_k_into`] keeps a sorted insertion buffer (O(E·k) worst case, O(E)
/// typically); above it, a linear-time selection then a sort of the `k` kept.
const INSERTION_TOP_K: usize = 16;

/// [`top_k`] into a reused buffer (cleared first): no allocation once `out` has capacity,
/// and no full sort of the candidates. Values are compared as f64 (f32 converts exactly).
pub fn top_k_into<V: Copy + Into<f64>>(
    values: &[V],
    k: usize,
    candidates: impl Iterator<Item = usize>,
    out: &mut Vec<usize>,
) {
    let key = |i: usize| {
        let v: f64 = values[i].into();
        if v.is_nan() {
            f64::NEG_INFINITY
        } else {
            v
        }
    };
    // `a` ranks before `b`: larger value, then lower index
    let before = |a: usize, b: usize| key(b).total_cmp(&key(a)).then(a.cmp(&b));
    out.clear();
    if k == 0 {
        return;
    }
    if k <= INSERTION_TOP_K {
        // the kept entries and their keys in fixed arrays, best first: most candidates are
        // turned away by one compare with the last kept, and an insertion shifts in place
        let mut keys = [0f64; INSERTION_TOP_K];
        let mut idx = [0usize; INSERTION_TOP_K];
        let mut n = 0;
        for i in candidates {
            let ki = key(i);
            // `i` ranks before kept entry `j`: larger key, then lower index
            let ahead = |keys: &[f64], idx: &[usize], j: usize| {
                keys[j].total_cmp(&ki).then(i.cmp(&idx[j])).is_lt()
            };
            if n == k {
                if !ahead(&keys, &idx, k - 1) {
                    continue;
                }
                n -= 1;
            }
            let mut at = n;
            while at > 0 && ahead(&keys, &idx, at - 1) {
                keys[at] = keys[at - 1];
                idx[at] = idx[at - 1];
                at -= 1;
            }
            keys[at] = ki;
            idx[at] = i;
            n += 1;
        }
        out.extend_from_slice(&idx[..n]);
    } else {
        out.extend(candidates);
        if out.len() > k {
            out.select_nth_unstable_by(k - 1, |&a, &b| before(a, b));
            out.truncate(k);
        }
        out.sort_unstable_by(|&a, &b| before(a, b));
    }
}

/// Tokens per rayon job of [`top_k_pairs`].
const TOP_K_TOKENS: usize = 256;

/// Every token's [`top_k_into`] over the columns of `values [T, E]` that are `available`, as
/// `(token, expert)` pairs, token after token. An f32 / f64 CPU tensor is read in place (no
/// host copy in f64) and the tokens are split over the rayon pool in blocks; the pairs do not
/// depend on the thread count.
pub(crate) fn top_k_pairs(
    values: &Tensor,
    k: usize,
    available: Option<&[bool]>,
) -> Result<Vec<(u32, u32)>> {
    fn run<V: Copy + Into<f64> + Sync>(
        v: &[V],
        t: usize,
        e: usize,
        k: usize,
        available: Option<&[bool]>,
    ) -> Vec<(u32, u32)> {
        use rayon::prelude::*;
        let blocks: Vec<Vec<(u32, u32)>> = (0..t.div_ceil(TOP_K_TOKENS))
            .into_par_iter()
            .map(|b| {
                let mut chosen = Vec::with_capacity(k);
                let mut pairs = Vec::with_capacity(TOP_K_TOKENS * k);
                for tok in b * TOP_K_TOKENS..t.min((b + 1) * TOP_K_TOKENS) {
                    let row = &v[tok * e..(tok + 1) * e];
                    let ok = |x: &usize| available.is_none_or(|a| a[*x]);
                    top_k_into(row, k, (0..e).filter(ok), &mut chosen);
                    pairs.extend(chosen.iter().map(|&x| (tok as u32, x as u32)));
                }
                pairs
            })
            .collect();
        blocks.concat()
    }
    let (t, e) = values.dims2()?;
    let (storage, layout) = values.storage_and_layout();
    let offsets = layout.contiguous_offsets();
    match (&*storage, offsets) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
            Ok(run(&v[a..b], t, e, k, available))
        }
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F64(v)), Some((a, b))) => {
            Ok(run(&v[a..b], t, e, k, available))
        }
        _ => {
            drop(storage);
            let (v, _) = host(values)?;
            Ok(run(&v, t, e, k, available))
        }
    }
}

/// A `[T, E]` 0/1 tensor with ones at the plan's assignments, of `like`'s dtype and device.
pub fn plan_mask(plan: &DispatchPlan, like: &Tensor) -> Result<Tensor> {
    fn ones_at<F: candle_core::WithDType>(
        plan: &DispatchPlan,
        dev: &candle_core::Device,
    ) -> Result<Tensor> {
        let (t, e) = (plan.num_tokens, plan.num_experts);
        let mut m = vec![F::from_f64(0.0); t * e];
        for (&tok, &ex) in plan.token.iter().zip(&plan.expert) {
            m[tok as usize * e + ex as usize] = F::from_f64(1.0);
        }
        Ok(Tensor::from_vec(m, (t, e), dev)?)
    }
    match like.dtype() {
        DType::F32 => ones_at::<f32>(plan, like.device()),
        _ => Ok(ones_at::<f64>(plan, like.device())?.to_dtype(like.dtype())?),
    }
}

/// Row-wise softmax with a backward (fused on the CPU, see [`crate::rowops`]).
pub(crate) fn softmax(x: &Tensor) -> Result<Tensor> {
    crate::rowops::softmax_rows(x)
}

/// Softmax over the entries where `mask` is 1 (others get 0). Rows with no kept entry are 0.
pub(crate) fn masked_softmax(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    // the max is a constant shift: it cancels in the ratio, so it needs no gradient
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = (x.broadcast_sub(&m)?.exp()? * mask)?;
    safe_row_normalize(&e)
}

/// `x / rowsum(x)`, leaving all-zero rows at zero instead of NaN.
pub fn safe_row_normalize(x: &Tensor) -> Result<Tensor> {
    let s = x.sum_keepdim(D::Minus1)?;
    let zero_rows = s.eq(0.0)?.to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&(s + zero_rows)?)?)
}

/// What [`mask_unavailable`] adds to the logit of an expert that is not available.
pub(crate) const UNAVAILABLE_LOGIT: f64 = -1e9;

/// Adds a large negative constant to the logits of unavailable experts, so every score
/// function (softmax, sigmoid) gives them exactly zero.
pub(crate) fn mask_unavailable(logits: &Tensor, available: Option<&[bool]>) -> Result<Tensor> {
    match available {
        None => Ok(logits.clone()),
        Some(a) => {
            let row: Vec<f64> = a
                .iter()
                .map(|&ok| if ok { 0.0 } else { UNAVAILABLE_LOGIT })
                .collect();
            let row =
                Tensor::from_vec(row, (1, a.len()), logits.device())?.to_dtype(logits.dtype())?;
            Ok(logits.broadcast_add(&row)?)
        }
    }
}

/// Checks the gate output has the columns this router needs.
pub(crate) fn expect_cols(input: &RouterInput<'_>, cols: usize, who: &'static str) -> Result<()> {
    let dims = input.gate_out.dims();
    if dims.len() != 2 || dims[1] != cols {
        return Err(MoeError::input(
            who,
            format!("gate output has shape {dims:?}, expected [T, {cols}]"),
        ));
    }
    Ok(())
}
