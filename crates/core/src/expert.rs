//! Experts: FFN (ReLU/GELU/SiLU, with biases) and SwiGLU (no biases), each with its own
//! hidden width. All experts of a layer live in ONE flat parameter vector described by an
//! [`ExpertLayout`], so the dispatch kernel takes a single tensor whatever the mix of kinds
//! and sizes; [`ExpertBank::expert_tensor`] gives named views for export.
//!
//! Per expert `e` with width `h` the segment holds, in order:
//! `w1 [h, d]`, `w3 [h, d]` (SwiGLU only), `w2t [h, d]` (the down projection, transposed so
//! each expert's block is contiguous), `b1 [h]`, `b2 [d]` (FFN only).

use candle_core::{Tensor, Var};

use crate::config::{Activation, ExpertKind, ExpertSpec};
use crate::params::{Init, ParamBuilder};
use crate::Result;

pub use switchyard_kernels::layout::{ExpertLayout, ExpertSlot};

/// Initial values of a layout's parameters: projections ~ U(±1/√fan_in) as PyTorch's
/// `nn.Linear`, biases zero.
pub fn init_values(layout: &ExpertLayout, pb: &ParamBuilder) -> Vec<f64> {
    let mut v = vec![0.0; layout.total];
    let d = layout.d_model;
    for s in &layout.slots {
        let h = s.spec.hidden;
        let mut put =
            |at: usize, n: usize, init: Init| v[at..at + n].copy_from_slice(&pb.sample(n, init));
        put(s.w1, h * d, Init::Uniform(1.0 / (d as f64).sqrt()));
        if let Some(w3) = s.w3 {
            put(w3, h * d, Init::Uniform(1.0 / (d as f64).sqrt()));
        }
        put(s.w2t, h * d, Init::Uniform(1.0 / (h as f64).sqrt()));
    }
    v
}

/// The experts of one layer (routed or shared) and their flat parameter.
#[derive(Clone)]
pub struct ExpertBank {
    pub layout: ExpertLayout,
    pub packed: Var,
}

/// Names of an expert's tensors, for export and inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpertTensor {
    W1,
    W3,
    W2T,
    B1,
    B2,
}

impl ExpertBank {
    pub fn new(pb: &ParamBuilder, d_model: usize, specs: &[ExpertSpec]) -> Result<Self> {
        let layout = ExpertLayout::new(d_model, specs);
        if let Some(packed) = pb.existing("packed") {
            // pre-filled (an imported checkpoint): skip drawing values that would be dropped
            return Ok(Self { layout, packed });
        }
        let values = init_values(&layout, pb);
        let packed = pb.var_from("packed", &[layout.total], values)?;
        Ok(Self { layout, packed })
    }

    pub fn num_experts(&self) -> usize {
        self.layout.num_experts()
    }

    /// A view of one expert tensor (`[h, d]` for weights, `[h]`/`[d]` for biases), or `None`
    /// when this expert kind has no such tensor.
    pub fn expert_tensor(&self, e: usize, which: ExpertTensor) -> Result<Option<Tensor>> {
        let s = &self.layout.slots[e];
        let (h, d) = (s.spec.hidden, self.layout.d_model);
        let p = self.packed.as_tensor();
        Ok(match which {
            ExpertTensor::W1 => Some(p.narrow(0, s.w1, h * d)?.reshape((h, d))?),
            ExpertTensor::W3 => {
                s.w3.map(|o| p.narrow(0, o, h * d)?.reshape((h, d)))
                    .transpose()?
            }
            ExpertTensor::W2T => Some(p.narrow(0, s.w2t, h * d)?.reshape((h, d))?),
            ExpertTensor::B1 => s.b1.map(|o| p.narrow(0, o, h)).transpose()?,
            ExpertTensor::B2 => s.b2.map(|o| p.narrow(0, o, d)).transpose()?,
        })
    }

    /// Reference forward of expert `e` on a block of rows `x [n, d] -> [n, d]`, in plain
    /// candle ops (autodiff gives its backward). The kernels are tested against this.
    pub fn expert_forward(&self, e: usize, x: &Tensor) -> Result<Tensor> {
        expert_forward_with(&self.layout, self.packed.as_tensor(), e, x)
    }
}

/// Reference expert forward over any flat parameter tensor (used by the reference dispatch).
pub fn expert_forward_with(
    layout: &ExpertLayout,
    packed: &Tensor,
    e: usize,
    x: &Tensor,
) -> Result<Tensor> {
    let s = &layout.slots[e];
    let (h, d) = (s.spec.hidden, layout.d_model);
    let mat = |o: usize| -> Result<Tensor> { Ok(packed.narrow(0, o, h * d)?.reshape((h, d))?) };
    // torch: self.w2(act(self.w1(x)) * self.w3(x))  — w2t here is w2 transposed
    let u = x.matmul(&mat(s.w1)?.t()?)?;
    let a = match s.spec.kind {
        ExpertKind::SwiGlu => {
            let v = x.matmul(&mat(s.w3.expect("swiglu has w3"))?.t()?)?;
            (u.silu()? * v)?
        }
        ExpertKind::Ffn { activation } => {
            let u = u.broadcast_add(&packed.narrow(0, s.b1.expect("ffn has b1"), h)?)?;
            activate(&u, activation)?
        }
    };
    let mut out = a.matmul(&mat(s.w2t)?)?;
    if let Some(b2) = s.b2 {
        out = out.broadcast_add(&packed.narrow(0, b2, d)?)?;
    }
    Ok(out)
}

/// Elementwise activation in candle ops (with autodiff).
pub fn activate(u: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Relu => u.relu()?,
        Activation::Gelu => u.gelu_erf()?,
        Activation::Silu => u.silu()?,
    })
}

/// Softplus `log(1 + e^x)` composed from ops with a backward, stable for large |x|.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    // softplus(x) = relu(x) + log(1 + exp(-|x|))
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}
