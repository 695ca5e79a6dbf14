//! Rotary position embeddings (Su et al. 2021) with precomputed cos/sin tables: the
//! rotate-half (NeoX) convention of HF Llama and Mixtral, which rotates the pairs
//! `(i, i + d/2)`, or DeepSeek's interleaved pairs `(2i, 2i+1)`; optionally with linear or
//! YaRN scaling ([`RopeScaling`]) as transformers computes them.

use candle_core::{DType, Device, Tensor, D};

use crate::config::{RopeScaling, YarnScaling};
use crate::{ModelError, Result};

pub struct Rope {
    /// `[max_seq_len, head_dim]`: `cos(p · θ_i)` with the frequencies repeated twice.
    pub cos: Tensor,
    pub sin: Tensor,
    pub head_dim: usize,
    pub max_seq_len: usize,
    /// Rotate `(2i, 2i+1)` instead of `(i, i + d/2)`; the output stays interleaved.
    pub interleaved: bool,
    /// Factor already multiplied into `cos` and `sin` (YaRN's attention factor; 1 otherwise).
    pub attention_factor: f64,
}

/// YaRN's `m(s, a) = 0.1 · a · ln s + 1` (1 for `s <= 1`); transformers' `yarn_get_mscale`.
pub fn yarn_mscale(scale: f64, a: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * a * scale.ln() + 1.0
    }
}

/// The per-pair inverse frequencies `θ_i` (`i < head_dim / 2`) and the factor on cos/sin.
///
/// Unscaled: `θ_i = theta^(−2i / head_dim)`, factor 1. Linear: `θ_i / factor`. YaRN, as
/// transformers' `_compute_yarn_parameters`: `θ_i · e_i + θ_i / factor · (1 − e_i)` where
/// `e_i = 1 − clamp((i − low) / (high − low), 0, 1)` and `low`, `high` are the dimensions
/// whose frequencies turn `beta_fast` and `beta_slow` times over `original_max_seq_len`
/// positions. In f64; transformers works in f32 (relative differences ~1e-7).
pub fn rope_frequencies(
    head_dim: usize,
    theta: f64,
    scaling: Option<&RopeScaling>,
) -> (Vec<f64>, f64) {
    let dim = head_dim as f64;
    // torch: inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| theta.powf(-((2 * i) as f64) / dim))
        .collect();
    match scaling {
        None => (base, 1.0),
        Some(RopeScaling::Linear { factor }) => (base.iter().map(|f| f / factor).collect(), 1.0),
        Some(RopeScaling::Yarn(y)) => yarn_frequencies(&base, dim, theta, y),
    }
}

fn yarn_frequencies(base: &[f64], dim: f64, theta: f64, y: &YarnScaling) -> (Vec<f64>, f64) {
    let factor = y.factor;
    let nonzero = |m: Option<f64>| m.filter(|&m| m != 0.0);
    // torch: if mscale and mscale_all_dim: get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
    let attention_factor = y.attention_factor.unwrap_or_else(|| {
        match (nonzero(y.mscale), nonzero(y.mscale_all_dim)) {
            (Some(m), Some(a)) => yarn_mscale(factor, m) / yarn_mscale(factor, a),
            _ => yarn_mscale(factor, 1.0),
        }
    });
    // torch: find_correction_dim(num_rotations, dim, base, max_position_embeddings)
    let correction_dim = |rotations: f64| {
        dim * (y.original_max_seq_len as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction_dim(y.beta_fast), correction_dim(y.beta_slow));
    if y.truncate {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0);
    let mut high = high.min(dim - 1.0);
    if low == high {
        high += 0.001; // torch: "Prevent singularity"
    }
    let inv_freq = base
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation = 1.0 - ramp;
            f / factor * (1.0 - extrapolation) + f * extrapolation
        })
        .collect();
    (inv_freq, attention_factor)
}

/// The factor DeepSeek's attention (MLA) puts on its softmax scale: `m(factor,
/// mscale_all_dim)²` under YaRN with a non-zero `mscale_all_dim`, else 1 (transformers'
/// `yarn_apply_mscale`). Linear scaling carries no `mscale_all_dim` here and gets 1 (the
/// importer refuses DeepSeek configs that pair the two).
pub fn mla_softmax_mscale(scaling: Option<&RopeScaling>) -> f64 {
    match scaling {
        Some(RopeScaling::Yarn(y)) => match y.mscale_all_dim.filter(|&a| a != 0.0) {
            Some(a) => yarn_mscale(y.factor, a).powi(2),
            None => 1.0,
        },
        _ => 1.0,
    }
}

impl Rope {
    /// `θ_i = theta^(−2i / head_dim)` for `i < head_dim / 2`. Tables are computed in f64 and
    /// cast to `dtype`. HF computes the angles `p · θ_i` in f32, so its angle at position `p`
    /// is off by up to about `p · 6e-8` rad; parity checks against HF at long positions need
    /// a tolerance for that.
    pub fn new(
        head_dim: usize,
        max_seq_len: usize,
        theta: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::scaled(head_dim, max_seq_len, theta, None, dtype, device)
    }

    /// [`Rope::new`] with the frequencies and cos/sin factor of [`rope_frequencies`]: as HF,
    /// `cos(p · θ_i) · attention_factor` and likewise `sin`.
    pub fn scaled(
        head_dim: usize,
        max_seq_len: usize,
        theta: f64,
        scaling: Option<&RopeScaling>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(ModelError::config(
                "head_dim",
                format!("RoPE needs an even head dimension, got {head_dim}"),
            ));
        }
        let (inv_freq, attention_factor) = rope_frequencies(head_dim, theta, scaling);
        let (mut cos, mut sin) = (
            Vec::with_capacity(max_seq_len * head_dim),
            Vec::with_capacity(max_seq_len * head_dim),
        );
        for p in 0..max_seq_len {
            // torch: emb = torch.cat((freqs, freqs), dim=-1)
            for _ in 0..2 {
                for f in &inv_freq {
                    let a = p as f64 * f;
                    // torch: cos = emb.cos() * self.attention_scaling
                    cos.push(a.cos() * attention_factor);
                    sin.push(a.sin() * attention_factor);
                }
            }
        }
        let table = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (max_seq_len, head_dim), device)?.to_dtype(dtype)?)
        };
        Ok(Self {
            cos: table(cos)?,
            sin: table(sin)?,
            head_dim,
            max_seq_len,
            interleaved: false,
            attention_factor,
        })
    }

    /// The same tables, applied to interleaved pairs `(2i, 2i+1)` when `yes` (DeepSeek).
    pub fn with_interleave(mut self, yes: bool) -> Self {
        self.interleaved = yes;
        self
    }

    /// Rotates `x` as if its rows sat at positions `offset, offset + 1, …`.
    ///
    /// # Shapes
    /// `x [B, H, L, head_dim]` → same.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, _, l, hd) = x.dims4()?;
        if hd != self.head_dim {
            return Err(ModelError::input(
                "Rope::apply",
                format!("head dim {hd}, tables built for {}", self.head_dim),
            ));
        }
        if offset + l > self.max_seq_len {
            return Err(ModelError::input(
                "Rope::apply",
                format!(
                    "positions up to {} exceed max_seq_len = {}",
                    offset + l,
                    self.max_seq_len
                ),
            ));
        }
        let cos = self.cos.narrow(0, offset, l)?;
        let sin = self.sin.narrow(0, offset, l)?;
        if self.interleaved {
            return rotate_interleaved(x, &cos, &sin);
        }
        // torch: (q * cos) + (rotate_half(q) * sin), rotate_half(x) = cat((-x2, x1), dim=-1)
        let half = hd / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }
}

/// `x [B, H, L, d]` with pairs `(2i, 2i+1)` rotated by angle `i`; `cos`/`sin` are the
/// `[L, d]` tables whose first half holds one value per pair.
fn rotate_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, l, d) = x.dims4()?;
    let half = d / 2;
    let cos = cos.narrow(1, 0, half)?.unsqueeze(2)?; // [L, d/2, 1]
    let sin = sin.narrow(1, 0, half)?.unsqueeze(2)?;
    let pairs = x.reshape((b, h, l, half, 2))?;
    // torch: x1, x2 = x[..., 0::2], x[..., 1::2]
    let x1 = pairs.narrow(4, 0, 1)?;
    let x2 = pairs.narrow(4, 1, 1)?;
    // torch: stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).flatten(-2)
    let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Ok(Tensor::cat(&[&r1, &r2], 4)?.reshape((b, h, l, d))?)
}
