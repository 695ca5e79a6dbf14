//! Rotary position embeddings (Su et al. 2021) with precomputed cos/sin tables: the
//! rotate-half (NeoX) convention of HF Llama and Mixtral, which rotates the pairs
//! `(i, i + d/2)`, or DeepSeek's interleaved pairs `(2i, 2i+1)`.

use candle_core::{DType, Device, Tensor, D};

use crate::{ModelError, Result};

pub struct Rope {
    /// `[max_seq_len, head_dim]`: `cos(p · θ_i)` with the frequencies repeated twice.
    pub cos: Tensor,
    pub sin: Tensor,
    pub head_dim: usize,
    pub max_seq_len: usize,
    /// Rotate `(2i, 2i+1)` instead of `(i, i + d/2)`; the output stays interleaved.
    pub interleaved: bool,
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
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::config(
                "head_dim",
                format!("RoPE needs an even head dimension, got {head_dim}"),
            ));
        }
        let half = head_dim / 2;
        // torch: inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        let (mut cos, mut sin) = (
            Vec::with_capacity(max_seq_len * head_dim),
            Vec::with_capacity(max_seq_len * head_dim),
        );
        for p in 0..max_seq_len {
            // torch: emb = torch.cat((freqs, freqs), dim=-1)
            for _ in 0..2 {
                for f in &inv_freq {
                    let a = p as f64 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
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
