//! Causal multi-head self-attention with RoPE, optional grouped-query heads, optional q/k
//! RMSNorm (over the whole projection as OLMoE, or per head as Qwen3), optional q/k/v biases
//! (Qwen2) and a KV cache for incremental decoding. Multi-head latent attention lives in
//! `mla.rs` and shares `attend`.

use candle_core::{Tensor, Var, D};
use switchyard_core::{Init, ParamBuilder};

use crate::config::LmConfig;
use crate::linear::{linear, linear_weight};
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::{ModelError, Result};

/// Keys and values of one layer for the positions seen so far, after RoPE.
#[derive(Clone)]
pub struct LayerKv {
    /// `[B, n_kv_heads, len, head_dim]`
    pub k: Tensor,
    pub v: Tensor,
}

impl LayerKv {
    pub fn len(&self) -> usize {
        self.k.dims()[2]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The KV cache of a whole model for one generation (one batch of sequences).
///
/// Appending concatenates along the sequence axis, O(len) per step: fine for the model sizes
/// this crate targets; a paged cache would belong to the serving crate.
#[derive(Clone, Default)]
pub struct KvCache {
    pub layers: Vec<Option<LayerKv>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, LayerKv::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }
}

pub struct Attention {
    /// `[n_heads · head_dim, d]`
    pub q_proj: Var,
    /// `[n_kv_heads · head_dim, d]`
    pub k_proj: Var,
    pub v_proj: Var,
    /// `[d, n_heads · head_dim]`
    pub o_proj: Var,
    /// `q_proj.bias`, `k_proj.bias`, `v_proj.bias` with `qkv_bias` (Qwen2-MoE).
    pub q_bias: Option<Var>,
    pub k_bias: Option<Var>,
    pub v_bias: Option<Var>,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    /// The norms act on each head (`[head_dim]` weights, Qwen3) rather than on the whole
    /// projection (OLMoE).
    pub norm_per_head: bool,
    pub clip_qkv: Option<f64>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    /// Creates `{q,k,v,o}_proj.weight` (`{q,k,v}_proj.bias` with `qkv_bias`,
    /// `{q,k}_norm.weight` with `qk_norm` or `qk_norm_per_head`) under `pb`.
    pub fn new(pb: &ParamBuilder, cfg: &LmConfig) -> Result<Self> {
        let (d, hd, h, kv) = (cfg.d_model, cfg.head_dim(), cfg.n_heads, cfg.kv_heads());
        let (q_norm, k_norm) = if cfg.qk_norm {
            // OLMoE normalises the whole projection, not each head
            (
                Some(RmsNorm::new(&pb.pp("q_norm"), h * hd, cfg.norm_eps)?),
                Some(RmsNorm::new(&pb.pp("k_norm"), kv * hd, cfg.norm_eps)?),
            )
        } else if cfg.qk_norm_per_head {
            (
                Some(RmsNorm::new(&pb.pp("q_norm"), hd, cfg.norm_eps)?),
                Some(RmsNorm::new(&pb.pp("k_norm"), hd, cfg.norm_eps)?),
            )
        } else {
            (None, None)
        };
        let bias = |name: &str, n: usize| -> Result<Option<Var>> {
            if cfg.qkv_bias {
                Ok(Some(pb.pp(name).var("bias", &[n], Init::Zeros)?))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            q_proj: linear_weight(&pb.pp("q_proj"), h * hd, d)?,
            k_proj: linear_weight(&pb.pp("k_proj"), kv * hd, d)?,
            v_proj: linear_weight(&pb.pp("v_proj"), kv * hd, d)?,
            o_proj: linear_weight(&pb.pp("o_proj"), d, h * hd)?,
            q_bias: bias("q_proj", h * hd)?,
            k_bias: bias("k_proj", kv * hd)?,
            v_bias: bias("v_proj", kv * hd)?,
            q_norm,
            k_norm,
            norm_per_head: cfg.qk_norm_per_head,
            clip_qkv: cfg.clip_qkv,
            n_heads: h,
            n_kv_heads: kv,
            head_dim: hd,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        let mut v = vec![
            self.q_proj.clone(),
            self.k_proj.clone(),
            self.v_proj.clone(),
            self.o_proj.clone(),
        ];
        v.extend(
            self.q_bias
                .iter()
                .chain(&self.k_bias)
                .chain(&self.v_bias)
                .cloned(),
        );
        v.extend(
            self.q_norm
                .iter()
                .chain(&self.k_norm)
                .map(|n| n.weight.clone()),
        );
        v
    }

    /// Attends each new position to every earlier one (cached or new) and itself.
    /// With a cache, the new keys/values are appended to it and positions continue from its
    /// length.
    ///
    /// # Shapes
    /// `x [B, L, d]` → `[B, L, d]`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: Option<&mut Option<LayerKv>>,
    ) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let proj = |w: &Var, bias: &Option<Var>| -> Result<Tensor> {
            let y = linear(x, w)?;
            Ok(match bias {
                Some(bias) => y.broadcast_add(bias.as_tensor())?,
                None => y,
            })
        };
        let mut q = proj(&self.q_proj, &self.q_bias)?;
        let mut k = proj(&self.k_proj, &self.k_bias)?;
        let mut v = proj(&self.v_proj, &self.v_bias)?;
        if let (Some(qn), Some(kn), false) = (&self.q_norm, &self.k_norm, self.norm_per_head) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        if let Some(c) = self.clip_qkv {
            // torch (OLMoE): query_states.clamp_(min=-clip_qkv, max=clip_qkv), same for k, v
            q = q.clamp(-c, c)?;
            k = k.clamp(-c, c)?;
            v = v.clamp(-c, c)?;
        }
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, l, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let (mut q, mut k, v) = (heads(q, h)?, heads(k, kv)?, heads(v, kv)?);
        if let (Some(qn), Some(kn), true) = (&self.q_norm, &self.k_norm, self.norm_per_head) {
            // torch (Qwen3): self.q_norm(self.q_proj(x).view(hidden_shape)), over head_dim
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }

        let offset = cache
            .as_ref()
            .and_then(|c| c.as_ref())
            .map_or(0, LayerKv::len);
        let q = rope.apply(&q, offset)?;
        let k = rope.apply(&k, offset)?;
        let out = attend(&q, k, v, 1.0 / (hd as f64).sqrt(), cache)?;
        linear(&out, &self.o_proj)
    }
}

/// Causal attention of new queries over the cached and new keys/values; appends the new
/// ones to `cache`. Returns the heads concatenated.
///
/// # Shapes
/// `q [B, H, L, dk]`, `k [B, KV, L, dk]`, `v [B, KV, L, dv]` (after RoPE; `KV` divides `H`)
/// → `[B, L, H · dv]`.
pub(crate) fn attend(
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    scale: f64,
    cache: Option<&mut Option<LayerKv>>,
) -> Result<Tensor> {
    let (b, h, l, _) = q.dims4()?;
    let kv = k.dims()[1];
    let (k, v) = match cache {
        None => (k, v),
        Some(slot) => {
            let (k, v) = match slot.take() {
                None => (k, v),
                Some(prev) => {
                    if prev.k.dims()[0] != b {
                        return Err(ModelError::input(
                            "Attention::forward",
                            format!(
                                "batch of {b} sequences, but the KV cache holds {}",
                                prev.k.dims()[0]
                            ),
                        ));
                    }
                    (
                        Tensor::cat(&[&prev.k, &k], 2)?,
                        Tensor::cat(&[&prev.v, &v], 2)?,
                    )
                }
            };
            // detached: the cache must not keep every earlier step's graph alive
            *slot = Some(LayerKv {
                k: k.detach(),
                v: v.detach(),
            });
            (k, v)
        }
    };
    let (k, v) = (repeat_kv(&k, h / kv)?, repeat_kv(&v, h / kv)?);
    let lk = k.dims()[2];
    let dv = v.dims()[3];

    // torch: attn = softmax(q @ k.transpose(2, 3) * scaling + causal_mask, dim=-1)
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = if l > 1 {
        scores.broadcast_add(&causal_mask(l, lk, &scores)?)?
    } else {
        scores
    };
    let att = candle_nn::ops::softmax(&scores, D::Minus1)?;
    let out = att.matmul(&v)?; // [B, H, L, dv]
    Ok(out.transpose(1, 2)?.reshape((b, l, h * dv))?)
}

/// `[L, Lk]` additive mask: query `i` sits at position `Lk − L + i` and sees keys `j` up to it.
fn causal_mask(l: usize, lk: usize, like: &Tensor) -> Result<Tensor> {
    let offset = lk - l;
    let m: Vec<f64> = (0..l)
        .flat_map(|i| {
            (0..lk).map(move |j| {
                if j > offset + i {
                    f64::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(m, (l, lk), like.device())?.to_dtype(like.dtype())?)
}

/// Each of the `n_kv` key/value heads serves `rep` consecutive query heads.
/// torch: `x[:, :, None].expand(b, n_kv, rep, len, hd).reshape(b, n_kv * rep, len, hd)`
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, n_kv, len, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, n_kv, rep, len, hd))?
        .reshape((b, n_kv * rep, len, hd))?)
}
