//! Soft MoE (Puigcerver et al. 2023, "From Sparse to Soft Mixtures of Experts"): every expert
//! processes `S` slots, and every slot is a weighted mix of all tokens of a sequence, so the
//! layer is fully differentiable and drops nothing.
//!
//! ```text
//! logits = X · Φ                      [L, E·S]
//! D = softmax over tokens (dim 0)     slots = Dᵀ · X          [E·S, d]
//! C = softmax over slots  (dim 1)     Y = C · expert(slots)   [L, d]
//! ```
//! It runs per sequence (`ForwardCtx::seq_len`; the whole batch is one sequence if unset).

use candle_core::{Tensor, Var, D};

use crate::config::ExpertSpec;
use crate::expert::ExpertBank;
use crate::layer::{ForwardCtx, MoeBlock, MoeOutput};
use crate::losses::LossValues;
use crate::params::{Init, ParamBuilder};
use crate::{MoeError, Result};

pub struct SoftMoeLayer {
    pub d_model: usize,
    pub slots_per_expert: usize,
    /// `[d, E·S]` slot parameters Φ.
    pub phi: Var,
    pub experts: ExpertBank,
}

impl SoftMoeLayer {
    pub fn new(
        pb: &ParamBuilder,
        d_model: usize,
        experts: &[ExpertSpec],
        slots_per_expert: usize,
    ) -> Result<Self> {
        if d_model == 0 {
            return Err(MoeError::config("d_model", "must be at least 1"));
        }
        if experts.is_empty() {
            return Err(MoeError::config(
                "experts",
                "Soft MoE needs at least one expert",
            ));
        }
        if slots_per_expert == 0 {
            return Err(MoeError::config("slots_per_expert", "must be at least 1"));
        }
        if let Some(i) = experts.iter().position(|e| e.hidden == 0) {
            return Err(MoeError::config(
                format!("experts[{i}].hidden"),
                "an expert's hidden width must be at least 1",
            ));
        }
        let n = experts.len() * slots_per_expert;
        let phi = pb.var(
            "phi",
            &[d_model, n],
            Init::Normal(1.0 / (d_model as f64).sqrt()),
        )?;
        let experts = ExpertBank::new(&pb.pp("experts"), d_model, experts)?;
        Ok(Self {
            d_model,
            slots_per_expert,
            phi,
            experts,
        })
    }
}

impl MoeBlock for SoftMoeLayer {
    /// # Shapes
    /// `x [..., d]` → `[..., d]`.
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx<'_>) -> Result<MoeOutput> {
        let d = self.d_model;
        if x.dims().last() != Some(&d) {
            return Err(MoeError::input(
                "SoftMoeLayer::forward",
                format!("input has shape {:?}, last dim must be {d}", x.dims()),
            ));
        }
        let shape = x.shape().clone();
        let x2 = x.reshape(((), d))?;
        let t = x2.dims()[0];
        let l = ctx.seq_len.unwrap_or(t);
        if l == 0 || t % l != 0 {
            return Err(MoeError::input(
                "SoftMoeLayer::forward",
                format!("sequence length {l} does not divide {t} tokens"),
            ));
        }
        let b = t / l;
        let (e, s) = (self.experts.num_experts(), self.slots_per_expert);
        let xs = x2.reshape((b, l, d))?;
        let logits = xs.broadcast_matmul(self.phi.as_tensor())?; // [B, L, E·S]
        let dispatch = candle_nn::ops::softmax(&logits, 1)?; // over tokens
        let combine = candle_nn::ops::softmax(&logits, D::Minus1)?; // over slots
        let slots = dispatch.transpose(1, 2)?.contiguous()?.matmul(&xs)?; // [B, E·S, d]
        let mut outs = Vec::with_capacity(e);
        for x_e in 0..e {
            let si = slots.narrow(1, x_e * s, s)?.reshape((b * s, d))?;
            outs.push(self.experts.expert_forward(x_e, &si)?.reshape((b, s, d))?);
        }
        let ys = Tensor::cat(&outs, 1)?; // [B, E·S, d]
        let y = combine.matmul(&ys)?.reshape(shape)?;
        let aux_loss = Tensor::zeros((), x.dtype(), x.device())?;
        Ok(MoeOutput {
            y,
            aux_loss,
            losses: LossValues::default(),
            stats: None,
            routing: None,
        })
    }
}
