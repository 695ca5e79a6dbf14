//! The FFN of a layer: a dense SwiGLU or a routed MoE layer from the core.

use candle_core::{Tensor, Var};
use switchyard_core::{ForwardCtx, MoeBlock, MoeLayer, MoeOutput, ParamBuilder};

use crate::linear::{linear, linear_weight};
use crate::Result;

/// Llama's MLP: `down(silu(gate(x)) ⊙ up(x))`.
pub struct DenseFfn {
    /// `[hidden, d]`
    pub gate_proj: Var,
    /// `[hidden, d]`
    pub up_proj: Var,
    /// `[d, hidden]`
    pub down_proj: Var,
}

impl DenseFfn {
    /// Creates `{gate,up,down}_proj.weight` under `pb`.
    pub fn new(pb: &ParamBuilder, d_model: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            gate_proj: linear_weight(&pb.pp("gate_proj"), hidden, d_model)?,
            up_proj: linear_weight(&pb.pp("up_proj"), hidden, d_model)?,
            down_proj: linear_weight(&pb.pp("down_proj"), d_model, hidden)?,
        })
    }

    /// # Shapes
    /// `x [..., d]` → `[..., d]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // torch: self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        let a = (linear(x, &self.gate_proj)?.silu()? * linear(x, &self.up_proj)?)?;
        linear(&a, &self.down_proj)
    }

    pub fn vars(&self) -> Vec<Var> {
        vec![
            self.gate_proj.clone(),
            self.up_proj.clone(),
            self.down_proj.clone(),
        ]
    }
}

pub enum Ffn {
    Dense(DenseFfn),
    /// Boxed: an MoE layer is much larger than the three `Var`s of a dense FFN.
    Moe(Box<MoeLayer>),
}

impl Ffn {
    /// Dense layers return `None` for the MoE side outputs.
    pub fn forward(
        &self,
        x: &Tensor,
        ctx: &mut ForwardCtx<'_>,
    ) -> Result<(Tensor, Option<MoeOutput>)> {
        match self {
            Ffn::Dense(f) => Ok((f.forward(x)?, None)),
            Ffn::Moe(m) => {
                let out = m.forward(x, ctx)?;
                Ok((out.y.clone(), Some(out)))
            }
        }
    }

    pub fn vars(&self) -> Vec<Var> {
        match self {
            Ffn::Dense(f) => f.vars(),
            Ffn::Moe(m) => moe_vars(m),
        }
    }
}

/// Every parameter of an MoE layer: gate, routed experts, shared experts.
pub fn moe_vars(m: &MoeLayer) -> Vec<Var> {
    let mut v = Vec::new();
    if let Some(g) = &m.gate {
        v.push(g.w1.clone());
        v.extend(g.b1.iter().chain(&g.w2).cloned());
    }
    v.push(m.experts.packed.clone());
    v.extend(m.shared.iter().map(|s| s.packed.clone()));
    v.extend(m.shared_gate.iter().cloned());
    v
}

/// Parameters of `m` that one token touches: all but the routed experts it is not sent to
/// (`k` experts of the mean routed size).
pub fn moe_active_params(m: &MoeLayer) -> f64 {
    let all: usize = moe_vars(m).iter().map(|v| v.elem_count()).sum();
    let routed = m.experts.packed.elem_count();
    let e = m.num_experts().max(1);
    (all - routed) as f64 + m.cfg.router.k().min(e) as f64 * routed as f64 / e as f64
}
