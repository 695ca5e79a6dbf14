//! Bias-free linear projections over tensors with any number of leading dimensions.

use candle_core::{Tensor, Var};
use switchyard_core::{Init, ParamBuilder};

use crate::Result;

/// A `[out, in]` weight named `{pb}.weight`, initialised U(±1/√in) like PyTorch's
/// `nn.Linear` (and like the core's experts, so dense and MoE FFNs start alike).
pub fn linear_weight(pb: &ParamBuilder, out_dim: usize, in_dim: usize) -> Result<Var> {
    Ok(pb.var(
        "weight",
        &[out_dim, in_dim],
        Init::Uniform(1.0 / (in_dim as f64).sqrt()),
    )?)
}

/// `x · Wᵀ`.
///
/// # Shapes
/// `x [..., in]`, `w [out, in]` → `[..., out]`.
pub fn linear(x: &Tensor, w: &Var) -> Result<Tensor> {
    let dims = x.dims();
    let in_dim = dims[dims.len() - 1];
    let out_dim = w.dims()[0];
    let lead = &dims[..dims.len() - 1];
    let y = x.reshape(((), in_dim))?.matmul(&w.as_tensor().t()?)?;
    let mut shape = lead.to_vec();
    shape.push(out_dim);
    Ok(y.reshape(shape)?)
}
