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

use crate::dispatch::kernel::KFloat;
use crate::dispatch::{self as act};
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
                .for_each(|(p, x)| act::softmax_tile(x, p, cols));
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
                .for_each(|(dx, (p, g))| act::softmax_bwd_tile(p, g, dx, cols));
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
                    |scratch, (out, x)| act::logsumexp_tile(x, out, cols, scratch),
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
                .for_each(|((dx, x), (lse, g))| act::logsumexp_bwd_tile(x, lse, g, dx, cols));
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
        let rep = gradcheck(
            std::slice::from_ref(&v),
            || Ok((softmax_rows(v.as_tensor())? * &c)?.sum_all()?),
            1e-6,
            1e-8,
            1e-6,
        )
        .unwrap();
        assert!(rep.ok(), "softmax: {rep:?}");
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
