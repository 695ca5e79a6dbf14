//! Multi-head latent attention (DeepSeek-V2, Liu et al. 2024, §2.1), as HF
//! `DeepseekV2Attention` / `DeepseekV3Attention` compute it.
//!
//! ```text
//! q            = q_proj(x)                      or q_b_proj(rms(q_a_proj(x)))     [L, H·(dn+dr)]
//! [c_kv | k_r] = kv_a_proj_with_mqa(x)                                             [L, r + dr]
//! [k_n | v]    = kv_b_proj(rms(c_kv)) per head                                     [L, H·(dn+dv)]
//! q = [q_n | rope(q_r)],  k = [k_n | rope(k_r)]  (one rope key shared by every head)
//! out = o_proj(softmax(q·kᵀ · (dn+dr)^-½ · mscale² + causal) · v)
//! ```
//! `mscale² ≠ 1` only under YaRN with `mscale_all_dim` ([`crate::rope::mla_softmax_mscale`]).
//! The cache keeps the per-head keys and values after RoPE, like [`crate::Attention`] (not the
//! compressed latent: simpler, at the cost of the memory saving MLA is designed for).

use candle_core::{Tensor, Var, D};
use switchyard_core::ParamBuilder;

use crate::attention::{attend, LayerKv};
use crate::config::{LmConfig, MlaConfig};
use crate::linear::{linear, linear_weight};
use crate::norm::RmsNorm;
use crate::rope::{mla_softmax_mscale, Rope};
use crate::{ModelError, Result};

/// The query path: one projection, or a low-rank pair with an RMSNorm between.
pub enum MlaQuery {
    /// `q_proj.weight [H·(dn+dr), d]`
    Direct(Var),
    /// `q_a_proj.weight [r_q, d]`, `q_a_layernorm.weight [r_q]`, `q_b_proj.weight [H·(dn+dr), r_q]`
    LowRank {
        q_a_proj: Var,
        q_a_layernorm: RmsNorm,
        q_b_proj: Var,
    },
}

pub struct MlaAttention {
    pub q: MlaQuery,
    /// `[r + dr, d]`
    pub kv_a_proj_with_mqa: Var,
    /// `[r]`
    pub kv_a_layernorm: RmsNorm,
    /// `[H·(dn+dv), r]`
    pub kv_b_proj: Var,
    /// `[d, H·dv]`
    pub o_proj: Var,
    pub cfg: MlaConfig,
    pub n_heads: usize,
    /// Softmax scale: `(dn+dr)^-½`, times YaRN's `mscale²` when the model uses it.
    pub softmax_scale: f64,
}

impl MlaAttention {
    /// Creates the projections under `pb` with HF DeepSeek names.
    pub fn new(pb: &ParamBuilder, cfg: &LmConfig) -> Result<Self> {
        let m = cfg
            .mla
            .clone()
            .ok_or_else(|| ModelError::config("mla", "MlaAttention needs an MLA config"))?;
        let (d, h) = (cfg.d_model, cfg.n_heads);
        let q = match m.q_lora_rank {
            None => MlaQuery::Direct(linear_weight(&pb.pp("q_proj"), h * m.qk_head_dim(), d)?),
            Some(r) => MlaQuery::LowRank {
                q_a_proj: linear_weight(&pb.pp("q_a_proj"), r, d)?,
                q_a_layernorm: RmsNorm::new(&pb.pp("q_a_layernorm"), r, m.lora_norm_eps)?,
                q_b_proj: linear_weight(&pb.pp("q_b_proj"), h * m.qk_head_dim(), r)?,
            },
        };
        let r = m.kv_lora_rank;
        Ok(Self {
            q,
            kv_a_proj_with_mqa: linear_weight(
                &pb.pp("kv_a_proj_with_mqa"),
                r + m.qk_rope_head_dim,
                d,
            )?,
            kv_a_layernorm: RmsNorm::new(&pb.pp("kv_a_layernorm"), r, m.lora_norm_eps)?,
            kv_b_proj: linear_weight(
                &pb.pp("kv_b_proj"),
                h * (m.qk_nope_head_dim + m.v_head_dim),
                r,
            )?,
            o_proj: linear_weight(&pb.pp("o_proj"), d, h * m.v_head_dim)?,
            softmax_scale: mla_softmax_mscale(cfg.rope_scaling.as_ref())
                / (m.qk_head_dim() as f64).sqrt(),
            cfg: m,
            n_heads: h,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        let mut v = match &self.q {
            MlaQuery::Direct(w) => vec![w.clone()],
            MlaQuery::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => {
                vec![
                    q_a_proj.clone(),
                    q_a_layernorm.weight.clone(),
                    q_b_proj.clone(),
                ]
            }
        };
        v.extend([
            self.kv_a_proj_with_mqa.clone(),
            self.kv_a_layernorm.weight.clone(),
            self.kv_b_proj.clone(),
            self.o_proj.clone(),
        ]);
        v
    }

    /// `rope` must rotate `qk_rope_head_dim` dimensions (interleaved for DeepSeek).
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
        let h = self.n_heads;
        let m = &self.cfg;
        let (dn, dr, dv, r) = (
            m.qk_nope_head_dim,
            m.qk_rope_head_dim,
            m.v_head_dim,
            m.kv_lora_rank,
        );
        let q = match &self.q {
            MlaQuery::Direct(w) => linear(x, w)?,
            // torch: self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states)))
            MlaQuery::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => linear(&q_a_layernorm.forward(&linear(x, q_a_proj)?)?, q_b_proj)?,
        };
        let q = q.reshape((b, l, h, dn + dr))?.transpose(1, 2)?; // [B, H, L, dn+dr]
        let q_nope = q.narrow(D::Minus1, 0, dn)?;
        let q_rot = q.narrow(D::Minus1, dn, dr)?.contiguous()?;

        // torch: k_pass, k_rot = torch.split(self.kv_a_proj_with_mqa(x), [kv_lora_rank, rope_dim], -1)
        let ckv = linear(x, &self.kv_a_proj_with_mqa)?; // [B, L, r+dr]
        let latent = self
            .kv_a_layernorm
            .forward(&ckv.narrow(D::Minus1, 0, r)?.contiguous()?)?;
        let k_rot = ckv.narrow(D::Minus1, r, dr)?.reshape((b, 1, l, dr))?;
        let kv = linear(&latent, &self.kv_b_proj)?
            .reshape((b, l, h, dn + dv))?
            .transpose(1, 2)?;
        let k_nope = kv.narrow(D::Minus1, 0, dn)?;
        let v = kv.narrow(D::Minus1, dn, dv)?.contiguous()?;

        let offset = cache
            .as_ref()
            .and_then(|c| c.as_ref())
            .map_or(0, LayerKv::len);
        let q_rot = rope.apply(&q_rot, offset)?;
        // one rope key for all heads: torch `k_rot.expand(*k_pass.shape[:-1], -1)`
        let k_rot = rope
            .apply(&k_rot.contiguous()?, offset)?
            .broadcast_as((b, h, l, dr))?;
        // cat along the last axis can leave odd strides, which batched matmul rejects
        let q = Tensor::cat(&[&q_nope, &q_rot], D::Minus1)?.contiguous()?;
        let k = Tensor::cat(&[&k_nope, &k_rot], D::Minus1)?.contiguous()?;
        // torch: self.scaling = yarn_apply_mscale(config.rope_parameters, self.qk_head_dim ** (-0.5))
        let out = attend(&q, k, v, self.softmax_scale, cache)?;
        linear(&out, &self.o_proj)
    }
}
