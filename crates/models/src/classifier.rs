//! An MoE MLP classifier for vector data: input projection → residual MoE blocks
//! `x + moe(norm(x))` → RMSNorm → linear head.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use switchyard_core::{ForwardCtx, Init, MoeBlock, MoeConfig, MoeLayer, ParamBuilder};

use crate::block::LayerReport;
use crate::ffn::moe_vars;
use crate::linear::{linear, linear_weight};
use crate::lm::LmCtx;
use crate::norm::RmsNorm;
use crate::{ModelError, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MoeClassifierConfig {
    pub in_dim: usize,
    pub d_model: usize,
    pub n_classes: usize,
    /// The MoE layer of every block; its `d_model` must equal the classifier's.
    pub moe: MoeConfig,
    pub n_layers: usize,
    pub norm_eps: f64,
}

impl Default for MoeClassifierConfig {
    fn default() -> Self {
        Self {
            in_dim: 16,
            d_model: 64,
            n_classes: 4,
            moe: MoeConfig::default(),
            n_layers: 2,
            norm_eps: 1e-5,
        }
    }
}

impl MoeClassifierConfig {
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("in_dim", self.in_dim),
            ("d_model", self.d_model),
            ("n_classes", self.n_classes),
            ("n_layers", self.n_layers),
        ] {
            if v == 0 {
                return Err(ModelError::config(field, "must be at least 1"));
            }
        }
        if self.moe.d_model != self.d_model {
            return Err(ModelError::config(
                "moe.d_model",
                format!(
                    "the MoE layer's d_model = {} must equal the classifier's d_model = {}",
                    self.moe.d_model, self.d_model
                ),
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(ModelError::config(
                "norm_eps",
                format!("must be finite and > 0, got {}", self.norm_eps),
            ));
        }
        self.moe
            .validate()
            .map_err(|e| ModelError::from_moe_config("moe", e))
    }
}

/// What the classifier's forward returns.
pub struct ClassifierOutput {
    /// `[N, C]`
    pub logits: Tensor,
    /// Sum of the blocks' weighted auxiliary losses (scalar).
    pub aux_loss: Tensor,
    pub layers: Vec<LayerReport>,
}

pub struct MoeClassifier {
    pub cfg: MoeClassifierConfig,
    /// `input_proj.weight [d, in]`, `input_proj.bias [d]`
    pub input_proj: (Var, Var),
    /// `blocks.{i}.norm`, `blocks.{i}.moe`
    pub blocks: Vec<(RmsNorm, MoeLayer)>,
    pub norm: RmsNorm,
    /// `head.weight [C, d]`, `head.bias [C]`
    pub head: (Var, Var),
}

impl MoeClassifier {
    pub fn new(pb: &ParamBuilder, cfg: &MoeClassifierConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, eps) = (cfg.d_model, cfg.norm_eps);
        let input_proj = (
            linear_weight(&pb.pp("input_proj"), d, cfg.in_dim)?,
            pb.pp("input_proj").var("bias", &[d], Init::Zeros)?,
        );
        let blocks = (0..cfg.n_layers)
            .map(|i| {
                let b = pb.pp("blocks").pp(i);
                Ok((
                    RmsNorm::new(&b.pp("norm"), d, eps)?,
                    MoeLayer::new(&b.pp("moe"), &cfg.moe)?,
                ))
            })
            .collect::<Result<_>>()?;
        let norm = RmsNorm::new(&pb.pp("norm"), d, eps)?;
        let head = (
            linear_weight(&pb.pp("head"), cfg.n_classes, d)?,
            pb.pp("head").var("bias", &[cfg.n_classes], Init::Zeros)?,
        );
        Ok(Self {
            cfg: cfg.clone(),
            input_proj,
            blocks,
            norm,
            head,
        })
    }

    /// # Shapes
    /// `x [N, in_dim]` → logits `[N, n_classes]`.
    pub fn forward(&self, x: &Tensor, ctx: &mut LmCtx) -> Result<ClassifierOutput> {
        let (_, in_dim) = x.dims2()?;
        if in_dim != self.cfg.in_dim {
            return Err(ModelError::input(
                "MoeClassifier::forward",
                format!(
                    "input has {in_dim} features, the config says in_dim = {}",
                    self.cfg.in_dim
                ),
            ));
        }
        let mut fctx = ForwardCtx::new(ctx.train, &mut ctx.rng);
        fctx.dispatch = ctx.dispatch;
        let mut h = linear(x, &self.input_proj.0)?.broadcast_add(self.input_proj.1.as_tensor())?;
        let mut aux = Tensor::zeros((), h.dtype(), h.device())?;
        let mut layers = Vec::with_capacity(self.blocks.len());
        for (i, (norm, moe)) in self.blocks.iter().enumerate() {
            let out = moe.forward(&norm.forward(&h)?, &mut fctx)?;
            h = (h + &out.y)?;
            aux = (aux + &out.aux_loss)?;
            layers.push(LayerReport {
                layer: i,
                is_moe: true,
                losses: out.losses,
                stats: out.stats,
                routing: out.routing,
            });
        }
        let logits = linear(&self.norm.forward(&h)?, &self.head.0)?
            .broadcast_add(self.head.1.as_tensor())?;
        Ok(ClassifierOutput {
            logits,
            aux_loss: aux,
            layers,
        })
    }

    /// Mean cross-entropy against `labels [N]` (u32), and the forward.
    pub fn loss(
        &self,
        x: &Tensor,
        labels: &Tensor,
        ctx: &mut LmCtx,
    ) -> Result<(Tensor, ClassifierOutput)> {
        let n = self.cfg.n_classes;
        if let Some(&bad) = labels
            .flatten_all()?
            .to_dtype(candle_core::DType::U32)?
            .to_vec1::<u32>()?
            .iter()
            .find(|&&c| c as usize >= n)
        {
            return Err(ModelError::input(
                "MoeClassifier::loss",
                format!("label {bad} is not below n_classes = {n}"),
            ));
        }
        let out = self.forward(x, ctx)?;
        let ce = candle_nn::loss::cross_entropy(&out.logits, labels)?;
        Ok((ce, out))
    }

    pub fn moe_layers_mut(&mut self) -> impl Iterator<Item = &mut MoeLayer> {
        self.blocks.iter_mut().map(|(_, m)| m)
    }

    /// Applies every MoE layer's non-gradient update; call once after each optimiser step.
    pub fn after_step(&mut self) {
        self.moe_layers_mut().for_each(MoeLayer::after_step);
    }

    pub fn vars(&self) -> Vec<Var> {
        let mut v = vec![self.input_proj.0.clone(), self.input_proj.1.clone()];
        for (n, m) in &self.blocks {
            v.push(n.weight.clone());
            v.extend(moe_vars(m));
        }
        v.extend([
            self.norm.weight.clone(),
            self.head.0.clone(),
            self.head.1.clone(),
        ]);
        v
    }
}
