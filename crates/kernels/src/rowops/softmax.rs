//! Row-wise softmax over the last dimension of `x [T, E]`, with its backward. candle composes
//! it from five ops (max, subtract, exp, sum, divide) and its backward from as many again.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{data, dims2, RowFloat, ROWS_PER_JOB};
use crate::{act, Result};

/// `softmax(x)` over the last dimension of `x [T, E]`, fused (see [`super::fusable`]).
pub fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(SoftmaxRows)?)
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
