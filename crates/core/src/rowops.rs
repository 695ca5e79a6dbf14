//! The routers' and losses' `[T, E]` row ops: softmax and log-sum-exp over rows, column
//! means, the combine weights of a plan, the noisy top-k router's logits and Shazeer's smooth
//! load sums.
//!
//! Each op is here twice: composed from candle ops (the `*_composed` functions: the readable
//! definitions, which any device and dtype can run), and fused on the CPU in
//! `switchyard_kernels::rowops` (one pass over the rows each way, each with its explicit
//! backward). The plain names choose: the fused op for CPU tensors of f32 or f64
//! ([`kr::fusable`]), the composed one otherwise. The tests below hold the two to each other
//! and the gradients to central differences.

use std::sync::Arc;

use candle_core::{Tensor, D};
use switchyard_kernels::rowops as kr;

use crate::plan::DispatchPlan;
use crate::router::UNAVAILABLE_LOGIT;
use crate::Result;

/// `softmax(x)` over the last dimension of `x [T, E]`.
pub fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    if !kr::fusable(x) {
        return softmax_composed(x);
    }
    Ok(kr::softmax_rows(x)?)
}

/// candle's composed softmax (the reference).
pub fn softmax_composed(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(x, D::Minus1)?)
}

/// `log Σ_e exp(x[t, e])` of `x [T, E]` → `[T]`.
pub fn logsumexp_rows(x: &Tensor) -> Result<Tensor> {
    if !kr::fusable(x) {
        return logsumexp_composed(x);
    }
    Ok(kr::logsumexp_rows(x)?)
}

/// Log-sum-exp from candle ops, shifted by the (constant) row max (the reference).
pub fn logsumexp_composed(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    Ok((x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?.squeeze(D::Minus1)?)
}

/// The mean of every column of `x [T, E]` → `[E]` (the Switch balance loss's mean router
/// probability per expert).
pub fn col_means(x: &Tensor) -> Result<Tensor> {
    if !kr::fusable(x) {
        return col_means_composed(x);
    }
    Ok(kr::col_means(x)?)
}

/// candle's `mean(0)` (the reference).
pub fn col_means_composed(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean(0)?)
}

/// One combine weight per plan assignment from a router's dense `[T, E]` weights:
/// `w[a] = dense[t_a, e_a] / D_t · scale`, with `D_t` the row sum when `renormalize` (a row
/// summing to 0 divides by 1, as [`crate::router::safe_row_normalize`]) and 1 otherwise.
pub fn plan_weights(
    dense: &Tensor,
    plan: &Arc<DispatchPlan>,
    renormalize: bool,
    scale: f64,
) -> Result<Tensor> {
    if !kr::fusable(dense) {
        return plan_weights_composed(dense, plan, renormalize, scale);
    }
    Ok(kr::plan_weights(dense, plan, renormalize, scale, false)?)
}

/// [`plan_weights`] of `scores ⊙ mask(plan)` (the scores kept at the plan's assignments, zero
/// elsewhere); fused, without building the mask or the product, and with the same bits as
/// the product (signs of zeros and NaN rows included).
pub fn plan_weights_masked(
    scores: &Tensor,
    plan: &Arc<DispatchPlan>,
    renormalize: bool,
    scale: f64,
) -> Result<Tensor> {
    if !kr::fusable(scores) {
        let mask = crate::router::plan_mask(plan, scores)?;
        return plan_weights_composed(&(scores * mask)?, plan, renormalize, scale);
    }
    Ok(kr::plan_weights(scores, plan, renormalize, scale, true)?)
}

/// [`plan_weights`] from candle ops (the reference).
pub fn plan_weights_composed(
    dense: &Tensor,
    plan: &DispatchPlan,
    renormalize: bool,
    scale: f64,
) -> Result<Tensor> {
    let d = if renormalize {
        crate::router::safe_row_normalize(dense)?
    } else {
        dense.clone()
    };
    let d = if scale != 1.0 { (d * scale)? } else { d };
    let idx = Tensor::from_vec(plan.flat_indices(), plan.len(), dense.device())?;
    Ok(d.flatten_all()?.index_select(&idx, 0)?)
}

/// `(noisy, std)`, each `[T, E]`, from the noisy router's gate output `[clean | raw] [T, 2E]`
/// and the noise `ε [T, E]`: `std = softplus(raw) + floor`, `noisy = clean + ε · std`;
/// experts marked unavailable get the router's `UNAVAILABLE_LOGIT` (−1e9) added to their
/// clean logit.
pub fn noisy_logits(
    gate_out: &Tensor,
    eps: &Tensor,
    available: Option<&[bool]>,
    floor: f64,
) -> Result<(Tensor, Tensor)> {
    // both paths check the shapes
    if !(kr::fusable(gate_out) && kr::fusable(eps) && gate_out.dtype() == eps.dtype()) {
        return noisy_logits_composed(gate_out, eps, available, floor);
    }
    Ok(kr::noisy_logits(
        gate_out,
        eps,
        available,
        floor,
        UNAVAILABLE_LOGIT,
    )?)
}

/// The same from candle ops (the reference; other devices and dtypes use it).
pub fn noisy_logits_composed(
    gate_out: &Tensor,
    eps: &Tensor,
    available: Option<&[bool]>,
    floor: f64,
) -> Result<(Tensor, Tensor)> {
    let e = kr::check_noisy_logits(gate_out, eps, available)?;
    let clean = crate::router::mask_unavailable(&gate_out.narrow(1, 0, e)?, available)?;
    let std = (crate::expert::softplus(&gate_out.narrow(1, e, e)?)? + floor)?;
    let noisy = (clean + (eps * &std)?)?;
    Ok((noisy, std))
}

/// `Σ_t P(t, e)` → `[E]` of Shazeer et al.'s (2017) smooth load estimator for `clean`,
/// `noisy`, `std` of shape `[T, E]` and `1 ≤ k < E`: `P(t, e) = Φ((clean − thr) / std)`,
/// where `thr[t, e]` is the (k+1)-th largest noisy logit of row `t` if `e` is among the
/// row's top-k noisy logits, else the k-th largest.
pub fn load_sums(clean: &Tensor, noisy: &Tensor, std: &Tensor, k: usize) -> Result<Tensor> {
    let (t, _) = kr::check_load_sums(clean, noisy, std, k)?;
    let same = |a: &Tensor| a.dtype() == noisy.dtype();
    if !(kr::fusable(clean) && kr::fusable(noisy) && kr::fusable(std) && same(clean) && same(std)) {
        return load_sums_composed(clean, noisy, std, k);
    }
    let top = top_rows(noisy, t, k)?;
    Ok(kr::load_sums(clean, noisy, std, k, top)?)
}

/// The same sums from candle ops (the reference; other devices and dtypes use it).
pub fn load_sums_composed(
    clean: &Tensor,
    noisy: &Tensor,
    std: &Tensor,
    k: usize,
) -> Result<Tensor> {
    let (t, e) = kr::check_load_sums(clean, noisy, std, k)?;
    let top = top_rows(noisy, t, k)?;
    let (mut idx_in, mut idx_out, mut is_in) = (
        Vec::with_capacity(t),
        Vec::with_capacity(t),
        vec![0f64; t * e],
    );
    for (tok, row) in top.chunks_exact(k + 1).enumerate() {
        idx_in.push(row[k]); // (k+1)-th largest
        idx_out.push(row[k - 1]); // k-th largest
        for &x in &row[..k] {
            is_in[tok * e + x as usize] = 1.0;
        }
    }
    let dev = noisy.device();
    let thr_in = noisy.gather(&Tensor::from_vec(idx_in, (t, 1), dev)?, 1)?;
    let thr_out = noisy.gather(&Tensor::from_vec(idx_out, (t, 1), dev)?, 1)?;
    let is_in = Tensor::from_vec(is_in, (t, e), dev)?.to_dtype(noisy.dtype())?;
    let p_in = crate::losses::normal_cdf(&clean.broadcast_sub(&thr_in)?.div(std)?)?;
    let p_out = crate::losses::normal_cdf(&clean.broadcast_sub(&thr_out)?.div(std)?)?;
    // torch: prob = torch.where(is_in, p_in, p_out)
    let prob = ((&is_in * p_in)? + ((1.0 - &is_in)? * p_out)?)?;
    Ok(prob.sum(0)?)
}

/// Each row's k+1 largest noisy logits' experts, best first (ties to the lower index, as
/// the router's selection).
fn top_rows(noisy: &Tensor, t: usize, k: usize) -> Result<Vec<u32>> {
    let pairs = crate::router::top_k_pairs(noisy, k + 1, None)?;
    debug_assert_eq!(pairs.len(), t * (k + 1));
    Ok(pairs.into_iter().map(|(_, x)| x).collect())
}
