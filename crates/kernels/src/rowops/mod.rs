//! The routers' and losses' `[T, E]` row ops, fused on the CPU, each with its backward:
//! softmax and log-sum-exp over rows (`softmax.rs`, `logsumexp.rs`), column means
//! (`col_means.rs`), the combine weights of a plan (`plan_weights.rs`), the noisy top-k
//! router's logits (`noisy.rs`) and Shazeer's smooth load sums (`load.rs`).
//!
//! candle composes each of these from several ops, each with its own `[T, E]` temporary and,
//! in the backward, its own gradient added into fresh zeros. Here each direction is one pass
//! over the rows, split over the rayon pool by rows, so results do not depend on the thread
//! count.
//!
//! The readable definitions are the composed ones in `switchyard_core::rowops`, which also
//! chooses between the two ([`fusable`]); its tests compare both and check the gradients
//! against central differences.

use candle_core::{CpuStorage, DType, Layout, Tensor};

use crate::dispatch::KFloat;

/// Rows per rayon job.
pub(crate) const ROWS_PER_JOB: usize = 64;

/// Whether the fused ops take `x`: a CPU tensor of f32 or f64 with two dimensions and at
/// least one column (the callers fall back to candle's composed ops otherwise).
pub fn fusable(x: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.rank() == 2
        && x.dims()[1] > 0
}

/// Float types of the fused ops: the dispatch kernels' (f32, f64), whose row loops
/// (`crate::act`) are compiled for AVX-512, AVX2 and the baseline.
pub(crate) trait RowFloat: KFloat + candle_core::WithDType {
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
pub(crate) fn data<'a, T: RowFloat>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    let v = T::slice(s).ok_or_else(|| candle_core::Error::Msg(format!("{op}: dtype mismatch")))?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(candle_core::Error::Msg(format!(
            "{op}: input must be contiguous"
        ))),
    }
}

/// `(rows, cols)` of a 2-D layout.
pub(crate) fn dims2(l: &Layout, op: &str) -> candle_core::Result<(usize, usize)> {
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

mod col_means;
mod load;
mod logsumexp;
mod noisy;
mod plan_weights;
mod softmax;
pub use col_means::col_means;
pub use load::{check_load_sums, load_sums};
pub use logsumexp::logsumexp_rows;
pub use noisy::{check_noisy_logits, noisy_logits};
pub use plan_weights::plan_weights;
pub use softmax::softmax_rows;
