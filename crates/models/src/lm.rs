//! The decoder-only MoE transformer LM (Mixtral layout), its forward, losses and parameter
//! accounting. Generation lives in `generate.rs`.

use std::collections::HashSet;

use candle_core::{DType, Tensor, Var, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

use switchyard_core::{
    DispatchImpl, DomainTargets, ForcedRouting, ForwardCtx, Init, KernelOptions, MoeLayer,
    ParamBuilder, ParamStore,
};

use crate::attention::KvCache;
use crate::block::{DecoderBlock, LayerReport};
use crate::config::{LmConfig, ParamCount};
use crate::ffn::{moe_active_params, moe_vars, Ffn};
use crate::linear::{linear, linear_weight};
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::{ModelError, Result};

/// Std of the token embedding at initialisation (HF's `initializer_range`).
pub const EMBED_INIT_STD: f64 = 0.02;

/// Per-call settings of the models in this crate.
pub struct LmCtx {
    /// Training mode: router noise, jitter and expert dropout are on.
    pub train: bool,
    /// Source of all routing noise; seeded, so runs repeat exactly.
    pub rng: ChaCha8Rng,
    pub dispatch: DispatchImpl,
    /// How the CPU dispatch kernels cut and run their work.
    pub kernel: KernelOptions,
    /// Per-layer routing overrides, keyed by layer index: forced routing (trace replay) and
    /// fixed expert availability (causal ablation).
    pub overrides: BTreeMap<usize, LayerOverride>,
    /// Domain id of each input token, `[B·L]` row-major, for the MoE layers' domain-map loss
    /// (`losses.domain_map`); `None`: the loss is 0.
    pub domains: Option<Vec<u32>>,
    /// `domain_experts[d]`: the experts domain id `d` maps to; `None`: domain `d` → expert
    /// `d mod E` (see [`switchyard_core::DomainTargets`]).
    pub domain_experts: Option<Vec<Vec<usize>>>,
}

/// What to change in one MoE layer's routing for a forward.
#[derive(Clone, Default)]
pub struct LayerOverride {
    pub forced: Option<ForcedRouting>,
    pub available: Option<Vec<bool>>,
}

impl LmCtx {
    pub fn new(train: bool, seed: u64) -> Self {
        Self {
            train,
            rng: ChaCha8Rng::seed_from_u64(seed),
            dispatch: DispatchImpl::default(),
            kernel: KernelOptions::default(),
            overrides: BTreeMap::new(),
            domains: None,
            domain_experts: None,
        }
    }
}

/// What a forward returns.
pub struct LmOutput {
    /// `[B, L, V]`
    pub logits: Tensor,
    /// Sum of the MoE layers' weighted auxiliary losses (scalar; zero for a dense model).
    /// Add it to the task loss.
    pub aux_loss: Tensor,
    /// One report per layer, in order.
    pub layers: Vec<LayerReport>,
}

pub struct MoeLm {
    pub cfg: LmConfig,
    /// `[V, d]`, `model.embed_tokens.weight`.
    pub embed_tokens: Var,
    pub layers: Vec<DecoderBlock>,
    pub norm: RmsNorm,
    /// `[V, d]`; `None` when tied to the embedding.
    pub lm_head: Option<Var>,
    pub rope: Rope,
    store: ParamStore,
}

impl MoeLm {
    /// Validates `cfg` and creates every parameter under `pb` with HF Mixtral names:
    /// `model.embed_tokens.weight`, `model.layers.{i}.…`, `model.norm.weight`, `lm_head.weight`.
    pub fn new(pb: &ParamBuilder, cfg: &LmConfig) -> Result<Self> {
        cfg.validate()?;
        let (v, d) = (cfg.vocab_size, cfg.d_model);
        let model = pb.pp("model");
        let embed_tokens =
            model
                .pp("embed_tokens")
                .var("weight", &[v, d], Init::Normal(EMBED_INIT_STD))?;
        let layers = (0..cfg.n_layers)
            .map(|i| DecoderBlock::new(&model.pp("layers").pp(i), cfg, i))
            .collect::<Result<_>>()?;
        let norm = RmsNorm::new(&model.pp("norm"), d, cfg.norm_eps)?;
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(linear_weight(&pb.pp("lm_head"), v, d)?)
        };
        let interleave = cfg.mla.as_ref().is_some_and(|m| m.rope_interleave);
        let rope = Rope::scaled(
            cfg.rope_dim(),
            cfg.max_seq_len,
            cfg.rope_theta,
            cfg.rope_scaling.as_ref(),
            pb.dtype,
            &pb.device,
        )?
        .with_interleave(interleave);
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            store: pb.store().clone(),
        })
    }

    /// # Shapes
    /// `ids [B, L]` (u32) → logits `[B, L, V]`.
    pub fn forward(&self, ids: &Tensor, ctx: &mut LmCtx) -> Result<LmOutput> {
        self.forward_impl(ids, None, ctx)
    }

    /// Forward of the next `L` positions of each sequence, continuing from (and appending to)
    /// `cache`. An empty cache makes this a plain forward that also fills the cache.
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        ctx: &mut LmCtx,
    ) -> Result<LmOutput> {
        if cache.layers.len() != self.layers.len() {
            return Err(ModelError::input(
                "MoeLm::forward_cached",
                format!(
                    "cache has {} layers, model has {}",
                    cache.layers.len(),
                    self.layers.len()
                ),
            ));
        }
        self.forward_impl(ids, Some(cache), ctx)
    }

    fn forward_impl(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        ctx: &mut LmCtx,
    ) -> Result<LmOutput> {
        let (b, l) = ids.dims2().map_err(|_| {
            ModelError::input(
                "MoeLm::forward",
                format!("ids must be [batch, seq_len], got shape {:?}", ids.dims()),
            )
        })?;
        let start = cache.as_ref().map_or(0, |c| c.len());
        if l == 0 || start + l > self.cfg.max_seq_len {
            return Err(ModelError::input(
                "MoeLm::forward",
                format!(
                    "{l} new positions after {start} cached must be in 1..={} (max_seq_len)",
                    self.cfg.max_seq_len
                ),
            ));
        }
        let flat = checked_ids(ids, self.cfg.vocab_size, "MoeLm::forward")?;
        let idx = Tensor::from_slice(&flat, b * l, ids.device())?;
        let mut x = self
            .embed_tokens
            .as_tensor()
            .index_select(&idx, 0)?
            .reshape((b, l, self.cfg.d_model))?;

        let mut fctx = ForwardCtx {
            train: ctx.train,
            rng: &mut ctx.rng,
            token_ids: Some(&flat),
            seq_len: Some(l),
            dispatch: ctx.dispatch,
            kernel: ctx.kernel,
            forced: None,
            available: None,
            domains: ctx.domains.as_deref().map(|domains| DomainTargets {
                domains,
                experts: ctx.domain_experts.as_deref(),
            }),
        };
        let mut aux = Tensor::zeros((), x.dtype(), x.device())?;
        let mut reports = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let o = ctx.overrides.get(&i);
            fctx.forced = o.and_then(|o| o.forced.clone());
            fctx.available = o.and_then(|o| o.available.clone());
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let (y, a, report) = layer.forward(&x, &self.rope, slot, &mut fctx, i)?;
            x = y;
            if let Some(a) = a {
                aux = (aux + a)?;
            }
            reports.push(report);
        }
        let h = self.norm.forward(&x)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        Ok(LmOutput {
            logits: linear(&h, head)?,
            aux_loss: aux,
            layers: reports,
        })
    }

    /// Mean next-token cross-entropy over all `B·L` positions (scalar), and the forward.
    /// The training objective is `ce + out.aux_loss`.
    ///
    /// # Shapes
    /// `ids [B, L]`, `targets [B, L]` (u32).
    pub fn loss(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        ctx: &mut LmCtx,
    ) -> Result<(Tensor, LmOutput)> {
        if ids.dims() != targets.dims() {
            return Err(ModelError::input(
                "MoeLm::loss",
                format!(
                    "ids {:?} and targets {:?} must have the same shape",
                    ids.dims(),
                    targets.dims()
                ),
            ));
        }
        checked_ids(targets, self.cfg.vocab_size, "MoeLm::loss")?;
        let out = self.forward(ids, ctx)?;
        let v = self.cfg.vocab_size;
        let ce =
            candle_nn::loss::cross_entropy(&out.logits.reshape(((), v))?, &targets.flatten_all()?)?;
        Ok((ce, out))
    }

    /// The layers whose FFN is an MoE layer, for `after_step` and router buffers.
    pub fn moe_layers_mut(&mut self) -> impl Iterator<Item = &mut MoeLayer> {
        self.layers.iter_mut().filter_map(|b| match &mut b.ffn {
            Ffn::Moe(m) => Some(&mut **m),
            Ffn::Dense(_) => None,
        })
    }

    pub fn moe_layers(&self) -> impl Iterator<Item = &MoeLayer> {
        self.layers.iter().filter_map(|b| match &b.ffn {
            Ffn::Moe(m) => Some(&**m),
            Ffn::Dense(_) => None,
        })
    }

    /// Applies every MoE layer's non-gradient update (aux-loss-free bias balancing).
    /// Call once after each optimiser step.
    pub fn after_step(&mut self) {
        self.moe_layers_mut().for_each(MoeLayer::after_step);
    }

    /// Every parameter of the model (a tied head is listed once).
    pub fn vars(&self) -> Vec<Var> {
        let mut v = vec![self.embed_tokens.clone()];
        v.extend(self.layers.iter().flat_map(DecoderBlock::vars));
        v.push(self.norm.weight.clone());
        v.extend(self.lm_head.iter().cloned());
        v
    }

    /// The model's parameters with their names in the store, in name order.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let ids: HashSet<_> = self.vars().iter().map(|v| v.as_tensor().id()).collect();
        self.store
            .all()
            .into_iter()
            .filter(|(_, v)| ids.contains(&v.as_tensor().id()))
            .collect()
    }

    pub fn num_params_total(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Parameters one token touches: everything except the routed experts it is not sent
    /// to, counted as `k` experts of the layer's mean routed-expert size.
    pub fn num_params_active_per_token(&self) -> usize {
        let inactive: f64 = self
            .moe_layers()
            .map(|m| {
                moe_vars(m).iter().map(|v| v.elem_count()).sum::<usize>() as f64
                    - moe_active_params(m)
            })
            .sum();
        (self.num_params_total() as f64 - inactive).round() as usize
    }

    pub fn param_count(&self) -> ParamCount {
        ParamCount {
            total: self.num_params_total(),
            active_per_token: self.num_params_active_per_token(),
        }
    }
}

/// Host copy of token ids, each checked to be below `vocab_size`.
fn checked_ids(ids: &Tensor, vocab_size: usize, op: &'static str) -> Result<Vec<u32>> {
    let flat = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
    if let Some(&bad) = flat.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(ModelError::input(
            op,
            format!("token id {bad} is outside the vocabulary (vocab_size = {vocab_size})"),
        ));
    }
    Ok(flat)
}

/// Cross-entropy of every position, for per-domain losses.
///
/// # Shapes
/// `logits [B, L, V]`, `targets [B, L]` (u32) → `[B, L]`.
pub fn per_token_ce(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    // torch: -log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let idx = targets
        .to_dtype(DType::U32)?
        .unsqueeze(D::Minus1)?
        .contiguous()?;
    Ok(logp.gather(&idx, D::Minus1)?.squeeze(D::Minus1)?.neg()?)
}
