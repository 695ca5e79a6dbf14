//! One decoder block: `h = x + attn(norm(x))`, `out = h + ffn(norm(h))` (pre-norm, Llama).

use candle_core::{Tensor, Var};
use switchyard_core::losses::LossValues;
use switchyard_core::{ForwardCtx, MoeLayer, ParamBuilder, Routing, RoutingStats};

use crate::attention::{Attention, LayerKv};
use crate::config::{LayerFfn, LmConfig};
use crate::ffn::{DenseFfn, Ffn};
use crate::mla::MlaAttention;
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::{ModelError, Result};

/// What one layer reports besides its hidden states (defaults for dense layers).
#[derive(Clone, Default)]
pub struct LayerReport {
    pub layer: usize,
    pub is_moe: bool,
    pub losses: LossValues,
    pub stats: Option<RoutingStats>,
    pub routing: Option<Routing>,
}

/// The attention of a block: (grouped-query) multi-head or multi-head latent.
pub enum SelfAttention {
    Mha(Attention),
    Mla(MlaAttention),
}

impl SelfAttention {
    pub fn new(pb: &ParamBuilder, cfg: &LmConfig) -> Result<Self> {
        Ok(match cfg.mla {
            None => SelfAttention::Mha(Attention::new(pb, cfg)?),
            Some(_) => SelfAttention::Mla(MlaAttention::new(pb, cfg)?),
        })
    }

    /// # Shapes
    /// `x [B, L, d]` → `[B, L, d]`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: Option<&mut Option<LayerKv>>,
    ) -> Result<Tensor> {
        match self {
            SelfAttention::Mha(a) => a.forward(x, rope, cache),
            SelfAttention::Mla(a) => a.forward(x, rope, cache),
        }
    }

    pub fn vars(&self) -> Vec<Var> {
        match self {
            SelfAttention::Mha(a) => a.vars(),
            SelfAttention::Mla(a) => a.vars(),
        }
    }
}

pub struct DecoderBlock {
    pub input_layernorm: RmsNorm,
    pub self_attn: SelfAttention,
    pub post_attention_layernorm: RmsNorm,
    pub ffn: Ffn,
}

impl DecoderBlock {
    /// Creates layer `i` under `pb` (= `model.layers.{i}`): the FFN is `mlp.*` when dense and
    /// `block_sparse_moe.*` when MoE.
    pub fn new(pb: &ParamBuilder, cfg: &LmConfig, i: usize) -> Result<Self> {
        let ffn = match cfg.layer_ffn(i) {
            LayerFfn::Dense { hidden } => {
                Ffn::Dense(DenseFfn::new(&pb.pp("mlp"), cfg.d_model, hidden)?)
            }
            LayerFfn::Moe(m) => Ffn::Moe(Box::new(
                MoeLayer::new(&pb.pp("block_sparse_moe"), &m)
                    .map_err(|e| ModelError::from_moe_config("ffn.sparse", e))?,
            )),
        };
        Ok(Self {
            input_layernorm: RmsNorm::new(&pb.pp("input_layernorm"), cfg.d_model, cfg.norm_eps)?,
            self_attn: SelfAttention::new(&pb.pp("self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::new(
                &pb.pp("post_attention_layernorm"),
                cfg.d_model,
                cfg.norm_eps,
            )?,
            ffn,
        })
    }

    /// Returns the new hidden states, the layer's auxiliary loss (MoE only) and its report.
    ///
    /// # Shapes
    /// `x [B, L, d]` → `[B, L, d]`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: Option<&mut Option<LayerKv>>,
        ctx: &mut ForwardCtx<'_>,
        layer: usize,
    ) -> Result<(Tensor, Option<Tensor>, LayerReport)> {
        let h = (x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, rope, cache)?)?;
        let (f, moe) = self
            .ffn
            .forward(&self.post_attention_layernorm.forward(&h)?, ctx)?;
        let out = (h + f)?;
        let mut report = LayerReport {
            layer,
            ..Default::default()
        };
        let aux = moe.map(|m| {
            report.is_moe = true;
            report.losses = m.losses;
            report.stats = m.stats;
            report.routing = m.routing;
            m.aux_loss
        });
        Ok((out, aux, report))
    }

    pub fn vars(&self) -> Vec<Var> {
        let mut v = vec![self.input_layernorm.weight.clone()];
        v.extend(self.self_attn.vars());
        v.push(self.post_attention_layernorm.weight.clone());
        v.extend(self.ffn.vars());
        v
    }
}
