//! Gradient utilities over a [`ParamStore`]: global-norm clipping, accumulation over
//! micro-batches, scaling.
//!
//! A candle `GradStore` also holds gradients of every intermediate tensor of the graph; these
//! functions only look at (and [`accumulate_grads`] only keeps) the store's parameters, in
//! name order, so the results are deterministic.

use candle_core::{backprop::GradStore, DType};
use switchyard_core::ParamStore;

use crate::{Result, TrainError};

/// Added to the norm before dividing, exactly as `torch.nn.utils.clip_grad_norm_` does:
/// `clip_coef = max_norm / (total_norm + 1e-6)`.
pub const CLIP_NORM_EPS: f64 = 1e-6;

/// The global L2 norm of the parameters' gradients, `sqrt(Σ_params Σ_i g_i²)`, accumulated in
/// f64 in name order then element order. Parameters without a gradient count as zero.
pub fn grad_norm(store: &ParamStore, grads: &GradStore) -> Result<f64> {
    let mut sum_sq = 0.0f64;
    for (_, var) in store.all() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let g = g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            sum_sq += g.iter().map(|x| x * x).sum::<f64>();
        }
    }
    Ok(sum_sq.sqrt())
}

/// Scales all parameter gradients so their global norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does, and returns the norm before clipping.
///
/// If the norm is not finite (NaN or inf gradients) the gradients are left untouched and the
/// non-finite norm is returned: the caller should skip the optimiser step.
pub fn clip_grad_norm(store: &ParamStore, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(TrainError::config(
            "max_grad_norm",
            format!("{max_norm} must be finite and > 0"),
        ));
    }
    let total_norm = grad_norm(store, grads)?;
    if !total_norm.is_finite() {
        return Ok(total_norm);
    }
    // clip_coef = max_norm / (total_norm + 1e-6); clip_coef_clamped = clamp(clip_coef, max=1.0)
    let clip_coef = max_norm / (total_norm + CLIP_NORM_EPS);
    if clip_coef < 1.0 {
        scale_grads(store, grads, clip_coef)?;
    }
    Ok(total_norm)
}

/// Multiplies every parameter gradient by `factor` (e.g. `1 / micro_batches` after
/// accumulating a sum).
pub fn scale_grads(store: &ParamStore, grads: &mut GradStore, factor: f64) -> Result<()> {
    for (_, var) in store.all() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let scaled = g.affine(factor, 0.0)?;
            grads.insert(var.as_tensor(), scaled);
        }
    }
    Ok(())
}

/// Adds the parameter gradients of `grads` into `acc` (`acc[p] += grads[p]`, or a copy when
/// `acc` has none yet). Start from `GradStore::default()`; intermediate-tensor gradients are
/// not copied, so `acc` stays as small as the model. Summing micro-batches in a fixed order
/// keeps the result deterministic.
pub fn accumulate_grads(store: &ParamStore, acc: &mut GradStore, grads: &GradStore) -> Result<()> {
    for (name, var) in store.all() {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        let sum = match acc.get(var.as_tensor()) {
            Some(a) => {
                if a.dims() != g.dims() {
                    return Err(TrainError::Param {
                        name,
                        reason: format!(
                            "cannot add a gradient of shape {:?} to one of {:?}",
                            g.dims(),
                            a.dims()
                        ),
                    });
                }
                a.add(g)?
            }
            None => g.detach(),
        };
        acc.insert(var.as_tensor(), sum);
    }
    Ok(())
}
