//! Dispatch: run the experts on the rows a plan gives them and combine by the routing weights.
//!
//! Two implementations of one function, `y[t] = Σ_{a: token(a)=t} w[a] · expert(a)(x[t])`:
//! - [`dispatch_reference`]: readable candle ops (index_select → matmul → index_add); candle's
//!   autodiff supplies its backward. Any dtype.
//! - [`dispatch`]: the CPU fast path from `switchyard-kernels` (a candle custom op with an
//!   explicit backward for the input, the routing weights and the expert weights), tuned by a
//!   [`KernelOptions`] value.
//!
//! Tests hold the two to each other and to central differences (`tests/dispatch.rs`,
//! `tests/gradcheck.rs`).

use std::sync::Arc;

use candle_core::Tensor;
pub use switchyard_kernels::dispatch::{check_inputs, MoeDispatchOp};
pub use switchyard_kernels::{backward, KernelOptions};

use crate::expert::{expert_forward_with, ExpertLayout};
use crate::plan::DispatchPlan;
use crate::Result;

/// Reference dispatch in plain candle ops.
///
/// # Shapes
/// `x [T, d]`, `w [n]`, `packed [layout.total]` → `[T, d]`.
pub fn dispatch_reference(
    x: &Tensor,
    w: &Tensor,
    packed: &Tensor,
    layout: &ExpertLayout,
    plan: &DispatchPlan,
) -> Result<Tensor> {
    let mut y = x.zeros_like()?;
    for e in 0..plan.num_experts {
        let r = plan.range(e);
        if r.is_empty() {
            continue;
        }
        let idx = Tensor::from_slice(&plan.token[r.clone()], r.len(), x.device())?;
        let xe = x.index_select(&idx, 0)?;
        let oe = expert_forward_with(layout, packed, e, &xe)?;
        let we = w.narrow(0, r.start, r.len())?.unsqueeze(1)?;
        // torch: final.index_add_(0, idx, expert(x[idx]) * w[:, None])
        y = y.index_add(&idx, &oe.broadcast_mul(&we)?, 0)?;
    }
    Ok(y)
}

/// The CPU fast path (the kernels' custom op with its explicit backward) with the default
/// [`KernelOptions`]; same contract as [`dispatch_reference`].
///
/// # Shapes
/// `x [T, d]`, `w [n]`, `packed [layout.total]` → `[T, d]`.
pub fn dispatch(
    x: &Tensor,
    w: &Tensor,
    packed: &Tensor,
    layout: &Arc<ExpertLayout>,
    plan: &Arc<DispatchPlan>,
) -> Result<Tensor> {
    dispatch_with(x, w, packed, layout, plan, &KernelOptions::default())
}

/// [`dispatch`] with the kernels tuned by `opts`.
pub fn dispatch_with(
    x: &Tensor,
    w: &Tensor,
    packed: &Tensor,
    layout: &Arc<ExpertLayout>,
    plan: &Arc<DispatchPlan>,
    opts: &KernelOptions,
) -> Result<Tensor> {
    Ok(switchyard_kernels::dispatch::dispatch(
        x, w, packed, layout, plan, opts,
    )?)
}

/// Which dispatch implementation a forward uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DispatchImpl {
    /// The custom op with its explicit backward (default).
    #[default]
    Kernel,
    /// Plain candle ops; the readable reference.
    Reference,
}

/// Dispatch through the chosen implementation.
pub fn run(
    which: DispatchImpl,
    opts: &KernelOptions,
    x: &Tensor,
    w: &Tensor,
    packed: &Tensor,
    layout: &Arc<ExpertLayout>,
    plan: &Arc<DispatchPlan>,
) -> Result<Tensor> {
    match which {
        DispatchImpl::Kernel => dispatch_with(x, w, packed, layout, plan, opts),
        DispatchImpl::Reference => {
            check_inputs(x, w, packed, layout, plan)?;
            dispatch_reference(x, w, packed, layout, plan)
        }
    }
}
