//! RMSNorm (Zhang & Sennrich 2019), as in Llama and Mixtral.

use candle_core::{Tensor, Var, D};
use switchyard_core::{Init, ParamBuilder};

use crate::Result;

pub struct RmsNorm {
    /// `[dim]`, initialised to ones.
    pub weight: Var,
    pub eps: f64,
}

impl RmsNorm {
    /// Creates `weight` under `pb`.
    pub fn new(pb: &ParamBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: pb.var("weight", &[dim], Init::Ones)?,
            eps,
        })
    }

    /// # Shapes
    /// `x [..., dim]` → `[..., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // torch: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        Ok(x.broadcast_mul(self.weight.as_tensor())?)
    }
}
