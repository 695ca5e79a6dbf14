//! Gating networks: a learnable scorer giving logits `[T, outputs]` — linear, or a small MLP —
//! optionally fed a sequence-level context vector (the mean of the token's sequence) besides
//! the token itself.

use candle_core::{Tensor, Var};

use crate::config::GateConfig;
use crate::expert::activate;
use crate::params::{Init, ParamBuilder};
use crate::{MoeError, Result};

pub struct Gate {
    cfg: GateConfig,
    /// `[outputs, in]` (linear) or the MLP's `[hidden, in]`.
    pub w1: Var,
    /// MLP only: `b1 [hidden]`, `w2 [outputs, hidden]`.
    pub b1: Option<Var>,
    pub w2: Option<Var>,
}

impl Gate {
    pub fn new(
        pb: &ParamBuilder,
        cfg: &GateConfig,
        d_model: usize,
        outputs: usize,
    ) -> Result<Self> {
        let d_in = if cfg.uses_context() {
            2 * d_model
        } else {
            d_model
        };
        let bound = |fan_in: usize| Init::Uniform(1.0 / (fan_in as f64).sqrt());
        Ok(match *cfg {
            GateConfig::Linear { .. } => Self {
                cfg: cfg.clone(),
                w1: pb.var("weight", &[outputs, d_in], bound(d_in))?,
                b1: None,
                w2: None,
            },
            GateConfig::Mlp { hidden, .. } => Self {
                cfg: cfg.clone(),
                w1: pb.var("w1", &[hidden, d_in], bound(d_in))?,
                b1: Some(pb.var("b1", &[hidden], Init::Zeros)?),
                w2: Some(pb.var("w2", &[outputs, hidden], bound(hidden))?),
            },
        })
    }

    /// # Shapes
    /// `x [T, d]` → `[T, outputs]`. With a context gate, `seq_len` must divide `T`: tokens are
    /// `[B, L]` flattened, and each token also sees its sequence's mean.
    pub fn forward(&self, x: &Tensor, seq_len: Option<usize>) -> Result<Tensor> {
        let input = if self.cfg.uses_context() {
            with_context(x, seq_len)?
        } else {
            x.clone()
        };
        match (&self.cfg, &self.b1, &self.w2) {
            (GateConfig::Mlp { activation, .. }, Some(b1), Some(w2)) => {
                let h = input.matmul(&self.w1.as_tensor().t()?)?;
                let a = activate(&h.broadcast_add(b1.as_tensor())?, *activation)?;
                matmul_by_row_blocks(&a, w2.as_tensor())
            }
            _ => matmul_by_row_blocks(&input, self.w1.as_tensor()),
        }
    }
}

/// Output columns computed per matmul call in [`matmul_by_row_blocks`].
pub const GATE_COLUMN_BLOCK: usize = 16;

/// `x · wᵀ` for `w [outputs, in]`, computed in blocks of [`GATE_COLUMN_BLOCK`] rows of `w`
/// (the last one zero-padded), so that every call has the same shape whatever `outputs` is.
/// The matmul backend picks its kernel (and so its summation order) by shape; with a fixed
/// block width, expert `e`'s logit does not depend on how many experts the gate scores,
/// and adding an expert (expert surgery) leaves the others' logits bitwise equal.
pub fn matmul_by_row_blocks(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (outputs, d_in) = w.dims2()?;
    let mut blocks = Vec::with_capacity(outputs.div_ceil(GATE_COLUMN_BLOCK));
    for start in (0..outputs).step_by(GATE_COLUMN_BLOCK) {
        let n = GATE_COLUMN_BLOCK.min(outputs - start);
        let mut rows = w.narrow(0, start, n)?;
        if n < GATE_COLUMN_BLOCK {
            let pad = Tensor::zeros((GATE_COLUMN_BLOCK - n, d_in), w.dtype(), w.device())?;
            rows = Tensor::cat(&[&rows, &pad], 0)?;
        }
        blocks.push(x.matmul(&rows.t()?)?.narrow(1, 0, n)?);
    }
    Ok(match blocks.len() {
        1 => blocks.pop().expect("one block"),
        _ => Tensor::cat(&blocks, 1)?,
    })
}

/// `[T, d]` → `[T, 2d]`: each token next to the mean of its sequence.
fn with_context(x: &Tensor, seq_len: Option<usize>) -> Result<Tensor> {
    let (t, d) = x.dims2()?;
    let l = seq_len.ok_or_else(|| {
        MoeError::input(
            "gate",
            "a context gate needs the sequence length; set ForwardCtx::seq_len",
        )
    })?;
    if l == 0 || t % l != 0 {
        return Err(MoeError::input(
            "gate",
            format!("sequence length {l} does not divide the {t} tokens"),
        ));
    }
    let b = t / l;
    let ctx = x
        .reshape((b, l, d))?
        .mean_keepdim(1)?
        .broadcast_as((b, l, d))?
        .reshape((t, d))?;
    Ok(Tensor::cat(&[x, &ctx], 1)?)
}
