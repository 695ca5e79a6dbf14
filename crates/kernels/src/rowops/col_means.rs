//! Column means of `x [T, E]` → `[E]` (the Switch balance loss's mean router probability per
//! expert), with its backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{data, dims2, RowFloat, ROWS_PER_JOB};
use crate::Result;

/// The mean of every column of `x [T, E]` → `[E]` (the Switch balance loss's mean router
/// probability per expert).
///
/// candle reduces over the first dimension element by element with a stride, and its backward
/// materialises the broadcast `[T, E]` gradient. Here the forward adds rows in blocks of
/// 64 rows over the pool (f64 partial sums, blocks merged in order: the same result at
/// any thread count) and the backward hands candle the `[E]` gradient over `T` as a broadcast
/// view, which its accumulation reads without a `[T, E]` copy.
pub fn col_means(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(ColMeans)?)
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
