//! Fused row-wise softmax and log-sum-exp over the last dimension of a 2-D tensor, each with
//! its backward: the routers' and the z-loss's `[T, E]` ops in one pass each.
//!
//! candle composes softmax from five ops (max, subtract, exp, sum, divide), each with its own
//! `[T, E]` temporary, and its backward from as many again, every gradient added into a fresh
//! zeros tensor; at T=4096, E=64 that was ~3.4 ms of the routing's ~31 ms per training step
//! (`route_cost` example). Here each direction is one pass over the rows, split over the
//! rayon pool by rows (so results do not depend on the thread count).
//!
//! The readable definitions are the composed ones ([`softmax_composed`],
//! [`logsumexp_composed`]); other devices and dtypes use them, and the tests compare both and
//! check the gradients against central differences.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use std::sync::Arc;

use crate::dispatch;
use crate::dispatch::kernel::KFloat;
use crate::plan::DispatchPlan;
use crate::Result;

/// Rows per rayon job.
const ROWS_PER_JOB: usize = 64;

/// `softmax(x)` over the last dimension of `x [T, E]`.
pub fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return softmax_composed(x);
    }
    Ok(x.contiguous()?.apply_op1(SoftmaxRows)?)
}

/// `log Σ_e exp(x[t, e])` of `x [T, E]` → `[T]`.
pub fn logsumexp_rows(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return logsumexp_composed(x);
    }
    Ok(x.contiguous()?.apply_op1(LogSumExpRows)?)
}

/// candle's composed softmax (the reference).
pub fn softmax_composed(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(x, D::Minus1)?)
}

/// Log-sum-exp from candle ops, shifted by the (constant) row max (the reference).
pub fn logsumexp_composed(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    Ok((x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?.squeeze(D::Minus1)?)
}

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.rank() == 2
        && x.dims()[1] > 0
}

/// Float types of the fused ops: the dispatch kernels' (f32, f64), whose row loops
/// (`dispatch::act`) are compiled for AVX-512, AVX2 and the baseline.
trait RowFloat: KFloat + candle_core::WithDType {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
}

impl RowFloat for f32 {
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl RowFloat for f64 {
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// The contiguous data of a storage, or an error naming the op.
fn data<'a, T: RowFloat>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    let v = T::slice(s).ok_or_else(|| candle_core::Error::Msg(format!("{op}: dtype mismatch")))?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(candle_core::Error::Msg(format!(
            "{op}: input must be contiguous"
        ))),
    }
}

/// `(rows, cols)` of a 2-D layout.
fn dims2(l: &Layout, op: &str) -> candle_core::Result<(usize, usize)> {
    match l.shape().dims() {
        &[r, c] => Ok((r, c)),
        d => Err(candle_core::Error::Msg(format!(
            "{op}: expected a 2-D tensor, got {d:?}"
        ))),
    }
}

/// `$body` with `$t` bound to the storage's float type (f32 or f64), wrapped back into a
/// storage of that type; other dtypes are an error naming the op.
macro_rules! per_float {
    ($s:expr, $op:expr, $t:ident => $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                CpuStorage::F64($body)
            }
            _ => candle_core::bail!("{}: f32 or f64 only", $op),
        }
    };
}

mod load;
mod noisy;
pub use load::{load_sums, load_sums_composed};
pub use noisy::{noisy_logits, noisy_logits_composed};

struct SoftmaxRows;

impl CustomOp1 for SoftmaxRows {
    fn name(&self) -> &'static str {
        "softmax-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: RowFloat>(x: &[T], cols: usize) -> Vec<T> {
            let mut p = vec![T::zero(); x.len()];
            p.par_chunks_mut(cols * ROWS_PER_JOB)
                .zip(x.par_chunks(cols * ROWS_PER_JOB))
                .for_each(|(p, x)| dispatch::softmax_tile(x, p, cols));
            p
        }
        let (_, cols) = dims2(l, self.name())?;
        let out = per_float!(s, self.name(), F => run(data::<F>(s, l, self.name())?, cols));
        Ok((out, l.shape().clone()))
    }

    /// `dx = p ⊙ (g − ⟨g, p⟩)` per row.
    fn bwd(&self, _x: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(p.apply_op2(&g.contiguous()?, SoftmaxBwd)?))
    }
}

/// `(p, g) ↦ p ⊙ (g − ⟨g, p⟩)` per row (no second derivative).
struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "softmax-rows-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: RowFloat>(p: &[T], g: &[T], cols: usize) -> Vec<T> {
            let mut dx = vec![T::zero(); p.len()];
            let n = cols * ROWS_PER_JOB;
            dx.par_chunks_mut(n)
                .zip(p.par_chunks(n).zip(g.par_chunks(n)))
                .for_each(|(dx, (p, g))| dispatch::softmax_bwd_tile(p, g, dx, cols));
            dx
        }
        let (_, cols) = dims2(l1, self.name())?;
        if l2.shape() != l1.shape() {
            candle_core::bail!("softmax-rows-bwd: gradient shape differs");
        }
        let out = per_float!(s1, self.name(), F => run(
            data::<F>(s1, l1, self.name())?,
            data::<F>(s2, l2, self.name())?,
            cols,
        ));
        Ok((out, l1.shape().clone()))
    }
}

struct LogSumExpRows;

impl CustomOp1 for LogSumExpRows {
    fn name(&self) -> &'static str {
        "logsumexp-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: RowFloat>(x: &[T], cols: usize) -> Vec<T> {
            let mut out = vec![T::zero(); x.len() / cols];
            out.par_chunks_mut(ROWS_PER_JOB)
                .zip(x.par_chunks(cols * ROWS_PER_JOB))
                .for_each_init(
                    || vec![T::zero(); cols],
                    |scratch, (out, x)| dispatch::logsumexp_tile(x, out, cols, scratch),
                );
            out
        }
        let (rows, cols) = dims2(l, self.name())?;
        let out = per_float!(s, self.name(), F => run(data::<F>(s, l, self.name())?, cols));
        Ok((out, Shape::from(rows)))
    }

    /// `dx[t, e] = g[t] · exp(x[t, e] − lse[t])`.
    fn bwd(&self, x: &Tensor, lse: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op3(lse, &g.contiguous()?, LogSumExpBwd)?))
    }
}

/// `(x, lse, g) ↦ g[t] · exp(x[t, e] − lse[t])` (no second derivative).
struct LogSumExpBwd;

impl CustomOp3 for LogSumExpBwd {
    fn name(&self) -> &'static str {
        "logsumexp-rows-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: RowFloat>(x: &[T], lse: &[T], g: &[T], cols: usize) -> Vec<T> {
            let mut dx = vec![T::zero(); x.len()];
            let n = cols * ROWS_PER_JOB;
            dx.par_chunks_mut(n)
                .zip(x.par_chunks(n))
                .zip(lse.par_chunks(ROWS_PER_JOB).zip(g.par_chunks(ROWS_PER_JOB)))
                .for_each(|((dx, x), (lse, g))| dispatch::logsumexp_bwd_tile(x, lse, g, dx, cols));
            dx
        }
        let (rows, cols) = dims2(l1, self.name())?;
        if l2.shape().elem_count() != rows || l3.shape().elem_count() != rows {
            candle_core::bail!("logsumexp-rows-bwd: expected {rows} row values");
        }
        let out = per_float!(s1, self.name(), F => run(
            data::<F>(s1, l1, self.name())?,
            data::<F>(s2, l2, self.name())?,
            data::<F>(s3, l3, self.name())?,
            cols,
        ));
        Ok((out, l1.shape().clone()))
    }
}

/// The mean of every column of `x [T, E]` → `[E]` (the Switch balance loss's mean router
/// probability per expert).
///
/// candle reduces over the first dimension element by element with a stride (0.9 ms for
/// `[4096, 64]`, 15 ms for `[4096, 1024]` at 1 thread: ~1 GB/s), and its backward
/// materialises the broadcast `[T, E]` gradient. Here the forward adds rows in blocks of
/// 64 rows over the pool (f64 partial sums, blocks merged in order: the same result at
/// any thread count) and the backward hands candle the `[E]` gradient over `T` as a broadcast
/// view, which its accumulation reads without a `[T, E]` copy.
pub fn col_means(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return col_means_composed(x);
    }
    Ok(x.contiguous()?.apply_op1(ColMeans)?)
}

/// candle's `mean(0)` (the reference).
pub fn col_means_composed(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean(0)?)
}

struct ColMeans;

impl CustomOp1 for ColMeans {
    fn name(&self) -> &'static str {
        "col-means"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: RowFloat>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
            let parts: Vec<Vec<f64>> = x
                .par_chunks(ROWS_PER_JOB * cols)
                .map(|block| {
                    let mut acc = vec![0f64; cols];
                    for row in block.chunks_exact(cols) {
                        for (a, &v) in acc.iter_mut().zip(row) {
                            *a += candle_core::WithDType::to_f64(v);
                        }
                    }
                    acc
                })
                .collect();
            let mut sum = vec![0f64; cols];
            for p in parts {
                sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
            }
            let n = rows.max(1) as f64;
            sum.into_iter()
                .map(|v| <T as candle_core::WithDType>::from_f64(v / n))
                .collect()
        }
        let (rows, cols) = dims2(l, self.name())?;
        let out = per_float!(s, self.name(), F => run(data::<F>(s, l, self.name())?, rows, cols));
        Ok((out, Shape::from(cols)))
    }

    fn bwd(&self, x: &Tensor, _m: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let rows = x.dims()[0].max(1) as f64;
        Ok(Some((g / rows)?.unsqueeze(0)?.broadcast_as(x.shape())?))
    }
}

/// One combine weight per plan assignment from a router's dense `[T, E]` weights:
/// `w[a] = dense[t_a, e_a] / D_t · scale`, with `D_t` the row sum when `renormalize` (a row
/// summing to 0 divides by 1, as [`crate::router::safe_row_normalize`]) and 1 otherwise.
///
/// The composed form ([`plan_weights_composed`]: row sum, zero test, add, divide, scale,
/// flatten, index select) builds seven `[T, E]` graph nodes, each with its own gradient
/// tensor in the backward; this is one pass each way, the backward writing the single
/// `[T, E]` gradient `∂L/∂dense[t, c] = scale · (g_c·[c ∈ plan_t] / D_t − Σ_a g_a·dense[t, e_a] / D_t²)`
/// (the second term for every column of a renormalised row, as the composed ops give).
pub fn plan_weights(
    dense: &Tensor,
    plan: &Arc<DispatchPlan>,
    renormalize: bool,
    scale: f64,
) -> Result<Tensor> {
    if !fused(dense) {
        return plan_weights_composed(dense, plan, renormalize, scale);
    }
    Ok(dense.contiguous()?.apply_op1(PlanWeights {
        plan: plan.clone(),
        renormalize,
        scale,
        masked: false,
    })?)
}

/// [`plan_weights`] of `scores ⊙ mask(plan)` (the scores kept at the plan's assignments, zero
/// elsewhere) without building the mask or the product: `D_t` sums the token's assigned
/// scores (plus `Σ_e x·0`, so that a NaN or infinite score anywhere in the row makes it NaN,
/// as it does the product's), and the backward writes `-k·0` outside the plan — what the
/// product's backward leaves of [`plan_weights`]' gradient. The same bits as [`plan_weights`]
/// on the product, signs of zeros and NaN rows included (the plan holds each
/// `(token, expert)` once, and the row sum only skips zeros).
///
/// The top-k family of routers (softmax top-k, Switch, expert choice, …) combines by masked
/// scores; at E=1024 the mask (built on the host in f64), the product and their gradients were
/// four `[T, E]` tensors of each step's routing.
pub fn plan_weights_masked(
    scores: &Tensor,
    plan: &Arc<DispatchPlan>,
    renormalize: bool,
    scale: f64,
) -> Result<Tensor> {
    if !fused(scores) {
        let mask = crate::router::plan_mask(plan, scores)?;
        return plan_weights_composed(&(scores * mask)?, plan, renormalize, scale);
    }
    Ok(scores.contiguous()?.apply_op1(PlanWeights {
        plan: plan.clone(),
        renormalize,
        scale,
        masked: true,
    })?)
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

struct PlanWeights {
    plan: Arc<DispatchPlan>,
    renormalize: bool,
    scale: f64,
    /// The input holds scores to be masked by the plan (see [`plan_weights_masked`]).
    masked: bool,
}

impl PlanWeights {
    /// `D_t` of every row (1 without renormalisation): the row's sum, or with `masked` the
    /// sum of its assigned entries (`by_token`: the plan's CSR by token). Both sum in
    /// ascending expert order.
    fn denominators<T: RowFloat>(&self, x: &[T], by_token: &(Vec<u32>, Vec<u32>)) -> Vec<T> {
        let e = self.plan.num_experts;
        let (off, idx) = by_token;
        (0..self.plan.num_tokens)
            .map(|t| {
                if !self.renormalize {
                    return T::one();
                }
                let s = if self.masked {
                    let assigned = idx[off[t] as usize..off[t + 1] as usize]
                        .iter()
                        .fold(T::zero(), |a, &i| {
                            a + x[t * e + self.plan.expert[i as usize] as usize]
                        });
                    // plus `Σ_e x·0`, as the product's row sum has it: ±0 for finite rows, NaN
                    // when any score (assigned or not) is NaN or infinite
                    let zeros = x[t * e..(t + 1) * e]
                        .iter()
                        .fold(T::zero(), |a, &v| a + v * T::zero());
                    assigned + zeros
                } else {
                    x[t * e..(t + 1) * e].iter().fold(T::zero(), |a, &v| a + v)
                };
                if s == T::zero() {
                    T::one()
                } else {
                    s
                }
            })
            .collect()
    }

    fn fwd<T: RowFloat>(&self, x: &[T]) -> Vec<T> {
        let (e, scale) = (
            self.plan.num_experts,
            T::from(self.scale).unwrap_or_else(T::one),
        );
        let den = self.denominators(x, &self.plan.by_token());
        self.plan
            .token
            .iter()
            .zip(&self.plan.expert)
            .map(|(&t, &ex)| x[t as usize * e + ex as usize] / den[t as usize] * scale)
            .collect()
    }

    fn bwd<T: RowFloat>(&self, x: &[T], g: &[T]) -> Vec<T> {
        let (e, scale) = (
            self.plan.num_experts,
            T::from(self.scale).unwrap_or_else(T::one),
        );
        let by_token = self.plan.by_token();
        let den = self.denominators(x, &by_token);
        let mut dx = vec![T::zero(); x.len()];
        let (off, idx) = by_token;
        for t in 0..self.plan.num_tokens {
            let row = &mut dx[t * e..(t + 1) * e];
            let assigned = &idx[off[t] as usize..off[t + 1] as usize];
            if self.renormalize && !assigned.is_empty() {
                let k = assigned.iter().fold(T::zero(), |acc, &a| {
                    let a = a as usize;
                    acc + g[a] * x[t * e + self.plan.expert[a] as usize]
                }) * scale
                    / (den[t] * den[t]);
                if self.masked {
                    // what the mask's backward leaves of it: `-k·0` outside the plan (±0, or
                    // NaN with the row's denominator), `-k` at the assignments
                    row.iter_mut().for_each(|v| *v = -k * T::zero());
                    for &a in assigned {
                        row[self.plan.expert[a as usize] as usize] = -k;
                    }
                } else {
                    row.iter_mut().for_each(|v| *v = -k);
                }
            }
            for &a in assigned {
                let c = self.plan.expert[a as usize] as usize;
                row[c] = row[c] + g[a as usize] * scale / den[t];
            }
        }
        dx
    }
}

impl CustomOp1 for PlanWeights {
    fn name(&self) -> &'static str {
        "plan-weights"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols) = dims2(l, self.name())?;
        if (rows, cols) != (self.plan.num_tokens, self.plan.num_experts) {
            candle_core::bail!(
                "plan-weights: dense is [{rows}, {cols}], the plan is [{}, {}]",
                self.plan.num_tokens,
                self.plan.num_experts
            );
        }
        let out = per_float!(s, self.name(), F => self.fwd(data::<F>(s, l, self.name())?));
        Ok((out, Shape::from(self.plan.len())))
    }

    fn bwd(&self, x: &Tensor, _w: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = match x.dtype() {
            DType::F32 => Tensor::from_vec(
                self.bwd(&x.flatten_all()?.to_vec1::<f32>()?, &g.to_vec1::<f32>()?),
                x.shape(),
                x.device(),
            )?,
            DType::F64 => Tensor::from_vec(
                self.bwd(&x.flatten_all()?.to_vec1::<f64>()?, &g.to_vec1::<f64>()?),
                x.shape(),
                x.device(),
            )?,
            dt => candle_core::bail!("plan-weights: f32 or f64 only, got {dt:?}"),
        };
        Ok(Some(dx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gradcheck;
    use candle_core::{Device, Var};

    fn x(dtype: DType) -> Tensor {
        // rows of different scales, one with a large offset and one with ties
        let mut v: Vec<f64> = (0..7 * 13)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.3)
            .collect();
        v[13..26].iter_mut().for_each(|a| *a += 300.0);
        v[26..39].iter_mut().for_each(|a| *a = 0.5);
        Tensor::from_vec(v, (7, 13), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn fused_ops_match_the_composed_ones_with_their_gradients() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            let v = Var::from_tensor(&x(dtype)).unwrap();
            // a weighting so the gradients are not trivial
            let c = (x(dtype) * 0.1).unwrap().cos().unwrap();
            let grads = |f: &dyn Fn(&Tensor) -> Result<Tensor>, out_c: bool| {
                let y = f(v.as_tensor()).unwrap();
                let loss = if out_c {
                    (&y * &c).unwrap().sum_all().unwrap()
                } else {
                    // one weight per row
                    (&y * c.narrow(1, 0, 1).unwrap().squeeze(1).unwrap())
                        .unwrap()
                        .sum_all()
                        .unwrap()
                };
                let g = loss.backward().unwrap();
                (y.clone(), g.get(v.as_tensor()).unwrap().clone())
            };
            let (a, ga) = grads(&softmax_rows, true);
            let (b, gb) = grads(&softmax_composed, true);
            assert!(max_diff(&a, &b) < tol, "softmax {dtype:?}");
            assert!(max_diff(&ga, &gb) < tol, "softmax grad {dtype:?}");
            let (a, ga) = grads(&logsumexp_rows, false);
            let (b, gb) = grads(&logsumexp_composed, false);
            // values up to ~300: relative tolerance
            assert!(max_diff(&a, &b) < tol * 300.0, "lse {dtype:?}");
            assert!(max_diff(&ga, &gb) < tol, "lse grad {dtype:?}");
        }
    }

    #[test]
    fn fused_ops_pass_gradcheck() {
        let v = Var::from_tensor(&x(DType::F64)).unwrap();
        let c = (x(DType::F64) * 0.1).unwrap().sin().unwrap();
        assert_gradcheck(
            &v,
            || Ok((softmax_rows(v.as_tensor())? * &c)?.sum_all()?),
            "softmax",
        );
        let rep = gradcheck(
            std::slice::from_ref(&v),
            || Ok((logsumexp_rows(v.as_tensor())? * c.narrow(1, 0, 1)?.squeeze(1)?)?.sum_all()?),
            1e-6,
            2e-7, // the +300 row makes the loss ~1e3: central differences resolve ~1e-7
            1e-6,
        )
        .unwrap();
        assert!(rep.ok(), "logsumexp: {rep:?}");
    }

    /// A plan over 7 tokens × 13 experts with a dropped token (row 3 has no assignment) and
    /// a row whose kept weights are zero (row 5).
    fn plan() -> Arc<DispatchPlan> {
        let mut pairs = Vec::new();
        for t in 0..7u32 {
            if t == 3 {
                continue;
            }
            for e in [(t * 5) % 13, (t * 5 + 3) % 13, (t * 7 + 1) % 13] {
                if !pairs.contains(&(t, e)) {
                    pairs.push((t, e));
                }
            }
        }
        Arc::new(DispatchPlan::from_assignments(7, 13, &pairs).unwrap())
    }

    /// Dense weights as a router makes them: nonnegative, zero outside the plan, but here
    /// also nonzero outside it in row 6 (the op must treat every column of a row alike).
    fn dense(plan: &DispatchPlan, dtype: DType) -> Tensor {
        let mut v = vec![0f64; 7 * 13];
        for (i, (&t, &e)) in plan.token.iter().zip(&plan.expert).enumerate() {
            if t != 5 {
                v[t as usize * 13 + e as usize] = 0.1 + 0.07 * i as f64;
            }
        }
        v[6 * 13 + 12] += 0.3;
        Tensor::from_vec(v, (7, 13), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn plan_weights_match_the_composed_ops_with_their_gradients() {
        let p = plan();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-6)] {
            for renorm in [true, false] {
                for scale in [1.0, 2.5] {
                    let v = Var::from_tensor(&dense(&p, dtype)).unwrap();
                    let c = weighting(p.len(), |i| (i * 0.37).sin())
                        .to_dtype(dtype)
                        .unwrap();
                    let run = |fused: bool| {
                        let w = if fused {
                            plan_weights(v.as_tensor(), &p, renorm, scale).unwrap()
                        } else {
                            plan_weights_composed(v.as_tensor(), &p, renorm, scale).unwrap()
                        };
                        let g = (&w * &c).unwrap().sum_all().unwrap().backward().unwrap();
                        (w, g.get(v.as_tensor()).unwrap().clone())
                    };
                    let ((a, ga), (b, gb)) = (run(true), run(false));
                    let what = format!("{dtype:?} renorm={renorm} scale={scale}");
                    assert!(max_diff(&a, &b) < tol, "weights {what}");
                    assert!(max_diff(&ga, &gb) < tol, "gradient {what}");
                }
            }
        }
    }

    #[test]
    fn plan_weights_pass_gradcheck() {
        let p = plan();
        // row 5's zero sum is a kink (the divisor jumps from 1 to the sum): fill it here
        let mut fill = vec![0f64; 7 * 13];
        for (&t, &e) in p.token.iter().zip(&p.expert) {
            if t == 5 {
                fill[t as usize * 13 + e as usize] = 0.2;
            }
        }
        let fill = Tensor::from_vec(fill, (7, 13), &Device::Cpu).unwrap();
        let v = Var::from_tensor(&(dense(&p, DType::F64) + fill).unwrap()).unwrap();
        gradcheck_weights(&p, &v, &|x, renorm| plan_weights(x, &p, renorm, 1.7));
    }

    /// `[n]` values `f(0), f(1), …`: a weighting of the per-assignment outputs, so that the
    /// gradients are not trivial.
    fn weighting(n: usize, f: impl Fn(f64) -> f64) -> Tensor {
        Tensor::from_vec(
            (0..n).map(|i| f(i as f64)).collect::<Vec<_>>(),
            n,
            &Device::Cpu,
        )
        .unwrap()
    }

    /// Central differences of `Σ_a c_a · w_a` for the weights `op(x, renormalize)`.
    fn gradcheck_weights(p: &DispatchPlan, v: &Var, op: &dyn Fn(&Tensor, bool) -> Result<Tensor>) {
        let c = weighting(p.len(), |i| (i * 0.61).cos());
        for renorm in [true, false] {
            assert_gradcheck(
                v,
                || Ok((op(v.as_tensor(), renorm)? * &c)?.sum_all()?),
                &format!("renorm={renorm}"),
            );
        }
    }

    /// Central differences in f64 of `loss` with respect to `v` (eps 1e-6, atol 1e-8, rtol 1e-6).
    fn assert_gradcheck(v: &Var, loss: impl Fn() -> Result<Tensor>, what: &str) {
        let rep = gradcheck(std::slice::from_ref(v), loss, 1e-6, 1e-8, 1e-6).unwrap();
        assert!(rep.ok(), "{what}: {rep:?}");
    }

    /// Scores as a router has them before masking: nonzero everywhere (row 5's assigned
    /// entries sum to zero: the divisor-1 case; row 3 has no assignment).
    fn scores(plan: &DispatchPlan, dtype: DType) -> Tensor {
        let mut v: Vec<f64> = (0..7 * 13)
            .map(|i| 0.05 + (i * 29 % 17) as f64 * 0.03)
            .collect();
        for (&t, &e) in plan.token.iter().zip(&plan.expert) {
            if t == 5 {
                v[t as usize * 13 + e as usize] = 0.0;
            }
        }
        Tensor::from_vec(v, (7, 13), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn masked_plan_weights_equal_plan_weights_of_the_masked_scores_with_their_gradients() {
        let p = plan();
        // unassigned entries of rows 2 and 4 NaN and +inf in the second pass: the product
        // turns those rows' weights and gradients into NaN, and so must the masked op
        let unassigned = |t: usize| {
            (0..13)
                .find(|&e| {
                    !p.token
                        .iter()
                        .zip(&p.expert)
                        .any(|(&a, &b)| (a as usize, b as usize) == (t, e))
                })
                .unwrap()
        };
        let (n2, n4) = (unassigned(2), unassigned(4));
        let c = weighting(p.len(), |i| (i * 0.37).sin());
        for (dtype, nonfinite) in [(DType::F64, false), (DType::F32, false), (DType::F32, true)] {
            let c = c.to_dtype(dtype).unwrap();
            for renorm in [true, false] {
                for scale in [1.0, 2.5] {
                    let mut sv = scores(&p, DType::F64)
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap();
                    if nonfinite {
                        sv[2 * 13 + n2] = f64::NAN;
                        sv[4 * 13 + n4] = f64::INFINITY;
                    }
                    let sv = Tensor::from_vec(sv, (7, 13), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let v = Var::from_tensor(&sv).unwrap();
                    let run = |masked: bool| {
                        let w = if masked {
                            plan_weights_masked(v.as_tensor(), &p, renorm, scale).unwrap()
                        } else {
                            let mask = crate::router::plan_mask(&p, v.as_tensor()).unwrap();
                            let dense = (v.as_tensor() * mask).unwrap();
                            plan_weights(&dense, &p, renorm, scale).unwrap()
                        };
                        let g = (&w * &c).unwrap().sum_all().unwrap().backward().unwrap();
                        let g = g.get(v.as_tensor()).unwrap().clone();
                        let bits = |t: &Tensor| -> Vec<u64> {
                            t.flatten_all()
                                .unwrap()
                                .to_dtype(DType::F64)
                                .unwrap()
                                .to_vec1::<f64>()
                                .unwrap()
                                .iter()
                                // one NaN for all NaNs (their payloads are not compared)
                                .map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() })
                                .collect()
                        };
                        (bits(&w), bits(&g))
                    };
                    let what =
                        format!("{dtype:?} renorm={renorm} scale={scale} nonfinite={nonfinite}");
                    let ((a, ga), (b, gb)) = (run(true), run(false));
                    if nonfinite && renorm {
                        assert!(a.contains(&u64::MAX), "NaN weights expected: {what}");
                    }
                    assert_eq!(a, b, "weights {what}");
                    assert_eq!(ga, gb, "gradient {what}");
                }
            }
        }
    }

    #[test]
    fn masked_plan_weights_pass_gradcheck() {
        let p = plan();
        let v = Var::from_tensor(&(scores(&p, DType::F64) + 0.01).unwrap()).unwrap();
        gradcheck_weights(&p, &v, &|x, renorm| plan_weights_masked(x, &p, renorm, 0.8));
    }

    #[test]
    fn col_means_match_mean_over_rows_with_gradients_and_pass_gradcheck() {
        // 200 rows: several row blocks; one row of large values
        let base: Vec<f64> = (0..200 * 9)
            .map(|i| ((i * 53 % 41) as f64 - 20.0) * 0.07 + if i / 9 == 17 { 300.0 } else { 0.0 })
            .collect();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
            let v = Var::from_tensor(
                &Tensor::from_vec(base.clone(), (200, 9), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let c = Tensor::from_vec(
                (0..9).map(|i| (i as f64).sin()).collect::<Vec<_>>(),
                9,
                &Device::Cpu,
            )
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
            let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
                let m = f(v.as_tensor()).unwrap();
                let g = (&m * &c).unwrap().sum_all().unwrap().backward().unwrap();
                (m, g.get(v.as_tensor()).unwrap().clone())
            };
            let ((a, ga), (b, gb)) = (run(&col_means), run(&col_means_composed));
            assert!(max_diff(&a, &b) < tol, "means {dtype:?}");
            assert!(max_diff(&ga, &gb) < 1e-12, "gradient {dtype:?}");
        }
        let v = Var::from_tensor(&x(DType::F64)).unwrap();
        let c = Tensor::from_vec(
            (0..13).map(|i| (i as f64 * 0.3).cos()).collect::<Vec<_>>(),
            13,
            &Device::Cpu,
        )
        .unwrap();
        assert_gradcheck(
            &v,
            || Ok((col_means(v.as_tensor())? * &c)?.sum_all()?),
            "col_means",
        );
        // the same bits at any thread count
        let big = Tensor::from_vec(
            base.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (200, 9),
            &Device::Cpu,
        )
        .unwrap();
        let at = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| col_means(&big).unwrap().to_vec1::<f32>().unwrap())
        };
        assert_eq!(at(1), at(3));
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let big: Vec<f32> = (0..1000 * 64)
            .map(|i| ((i * 7919 % 1000) as f32) * 0.01)
            .collect();
        let t = Tensor::from_vec(big, (1000, 64), &Device::Cpu).unwrap();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    (
                        softmax_rows(&t).unwrap().to_vec2::<f32>().unwrap(),
                        logsumexp_rows(&t).unwrap().to_vec1::<f32>().unwrap(),
                    )
                })
        };
        assert_eq!(run(1), run(3));
    }
}
