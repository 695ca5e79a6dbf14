//! Row-wise log-sum-exp `log Σ_e exp(x[t, e])` of `x [T, E]` → `[T]` (the z-loss's), with its
//! backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{data, dims2, RowFloat, ROWS_PER_JOB};
use crate::{act, Result};

/// `log Σ_e exp(x[t, e])` of `x [T, E]` → `[T]`, fused (see [`super::fusable`]).
pub fn logsumexp_rows(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(LogSumExpRows)?)
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
