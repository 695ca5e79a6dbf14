//! The routed MoE layer: `gate → router → plan → experts → combine`, plus shared experts,
//! auxiliary losses, regularisation (router jitter, expert dropout) and routing statistics.

use std::sync::{Arc, Mutex};

use candle_core::{Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::MoeConfig;
use crate::dispatch::{self, DispatchImpl, KernelOptions};
use crate::domain_map::{self, DomainTargets};
use crate::expert::ExpertBank;
use crate::gate::Gate;
use crate::losses::{self, LossValues};
use crate::params::{Init, ParamBuilder};
use crate::plan::DispatchPlan;
use crate::router::{self, Dense, Router, RouterInput};
use crate::rowops;
use crate::stats::RoutingStats;
use crate::{MoeError, Result};
use switchyard_kernels::noise;

/// Per-call inputs besides the hidden states.
pub struct ForwardCtx<'a> {
    pub train: bool,
    /// Noise for jitter, noisy gating and expert dropout.
    pub rng: &'a mut ChaCha8Rng,
    /// Token ids, `[T]` (hash routing, traces).
    pub token_ids: Option<&'a [u32]>,
    /// Sequence length when `T = B·L` (context gates, Soft MoE).
    pub seq_len: Option<usize>,
    pub dispatch: DispatchImpl,
    /// How the CPU dispatch kernels cut and run their work (with [`DispatchImpl::Kernel`]).
    pub kernel: KernelOptions,
    /// Replaces the router's plan and weights (recorded-routing replay).
    pub forced: Option<ForcedRouting>,
    /// Fixed expert availability for this call (causal ablation: an expert removed, routing
    /// renormalised over the rest). Overrides expert dropout.
    pub available: Option<Vec<bool>>,
    /// Domain labels of the tokens and the experts each domain maps to, for the domain-map
    /// loss (`losses.domain_map`; without labels it is 0).
    pub domains: Option<DomainTargets<'a>>,
}

impl<'a> ForwardCtx<'a> {
    pub fn new(train: bool, rng: &'a mut ChaCha8Rng) -> Self {
        Self {
            train,
            rng,
            token_ids: None,
            seq_len: None,
            dispatch: DispatchImpl::Kernel,
            kernel: KernelOptions::default(),
            forced: None,
            available: None,
            domains: None,
        }
    }
}

/// A routing to force instead of the router's: a plan and one weight per assignment.
#[derive(Clone)]
pub struct ForcedRouting {
    pub plan: Arc<DispatchPlan>,
    pub weights: Tensor,
}

/// The routing a forward used.
#[derive(Clone)]
pub struct Routing {
    pub plan: Arc<DispatchPlan>,
    /// `[n]`, one per plan assignment (after renormalisation and scaling).
    pub weights: Tensor,
    /// `[T, E]` router logits, when the router has them.
    pub logits: Option<Tensor>,
    /// `[T, E]` router distribution.
    pub probs: Tensor,
}

/// What an MoE block returns.
pub struct MoeOutput {
    /// Same shape as the input.
    pub y: Tensor,
    /// Weighted sum of the enabled auxiliary losses (a scalar to add to the task loss).
    pub aux_loss: Tensor,
    /// Every auxiliary loss's value, weighted or not.
    pub losses: LossValues,
    pub stats: Option<RoutingStats>,
    pub routing: Option<Routing>,
}

/// Any MoE block (routed or soft) behind one forward.
pub trait MoeBlock: Send + Sync {
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx<'_>) -> Result<MoeOutput>;
}

pub struct MoeLayer {
    pub cfg: MoeConfig,
    pub gate: Option<Gate>,
    pub router: Box<dyn Router>,
    pub experts: ExpertBank,
    pub shared: Option<ExpertBank>,
    /// `[1, d]` with `cfg.shared_gate`: the shared experts' output is scaled by
    /// `sigmoid(x · wᵀ)` per token.
    pub shared_gate: Option<Var>,
    layout: Arc<crate::expert::ExpertLayout>,
    shared_layout: Option<Arc<crate::expert::ExpertLayout>>,
    /// Tokens per expert since the last `after_step` (for bias balancing across accumulation).
    pending_load: Mutex<Vec<usize>>,
    /// Per expert, how far it is let into routing (`None`: every expert fully); see
    /// [`MoeLayer::set_gate_in`].
    gate_in: Option<Vec<f32>>,
}

/// The offset a gate-in value of 0 gives an expert's logit: far enough below any real logit
/// that `exp` of the difference is exactly 0 in f32 and a sigmoid of it is exactly 0.
pub const GATE_IN_FLOOR: f32 = -1.0e4;

impl MoeLayer {
    /// Validates `cfg` and creates the layer's parameters under `pb`
    /// (`gate.*`, `experts.packed`, `shared_experts.packed`).
    pub fn new(pb: &ParamBuilder, cfg: &MoeConfig) -> Result<Self> {
        cfg.validate()?;
        let router = router::build(&cfg.router, cfg.num_experts())?;
        let gate = match router.gate_outputs() {
            0 => None,
            n => Some(Gate::new(&pb.pp("gate"), &cfg.gate, cfg.d_model, n)?),
        };
        let experts = ExpertBank::new(&pb.pp("experts"), cfg.d_model, &cfg.experts)?;
        let shared = if cfg.shared_experts.is_empty() {
            None
        } else {
            Some(ExpertBank::new(
                &pb.pp("shared_experts"),
                cfg.d_model,
                &cfg.shared_experts,
            )?)
        };
        let shared_gate = if cfg.shared_gate {
            let bound = Init::Uniform(1.0 / (cfg.d_model as f64).sqrt());
            Some(
                pb.pp("shared_expert_gate")
                    .var("weight", &[1, cfg.d_model], bound)?,
            )
        } else {
            None
        };
        Ok(Self {
            layout: Arc::new(experts.layout.clone()),
            shared_layout: shared.as_ref().map(|s| Arc::new(s.layout.clone())),
            cfg: cfg.clone(),
            gate,
            router,
            experts,
            shared,
            shared_gate,
            pending_load: Mutex::new(vec![0; cfg.num_experts()]),
            gate_in: None,
        })
    }

    /// Lets experts into routing gradually (an expert added by surgery): expert `e`'s gate
    /// logit is offset by `ln α[e]` (at least [`GATE_IN_FLOOR`]), and each
    /// [`MoeLayer::after_step`] raises every `α` by `1 / cfg.gate_in_steps` up to 1. An expert
    /// at `α = 0` gets exactly zero probability: top-k never picks it (while `k` others are
    /// available) and the softmax of the others is bitwise what it was without it, so the
    /// layer's output is unchanged until training opens the gate. `None` (or all ones):
    /// every expert fully in. A router without a learned gate has nothing to offset.
    pub fn set_gate_in(&mut self, alpha: Option<Vec<f32>>) -> Result<()> {
        if let Some(a) = &alpha {
            if a.len() != self.num_experts() {
                return Err(MoeError::input(
                    "MoeLayer::set_gate_in",
                    format!("{} values for {} experts", a.len(), self.num_experts()),
                ));
            }
            if let Some(bad) = a.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                return Err(MoeError::input(
                    "MoeLayer::set_gate_in",
                    format!("gate-in values must be in [0, 1], got {bad}"),
                ));
            }
        }
        self.gate_in = alpha.filter(|a| a.iter().any(|&x| x < 1.0));
        Ok(())
    }

    /// The gate-in values, while some expert is not fully in ([`MoeLayer::set_gate_in`]).
    pub fn gate_in(&self) -> Option<&[f32]> {
        self.gate_in.as_deref()
    }

    /// `gate_out` with the gate-in offsets added to the expert columns.
    fn offset_gate(&self, gate_out: Tensor) -> Result<Tensor> {
        let (Some(alpha), Some(cols)) = (&self.gate_in, self.router.expert_columns()) else {
            return Ok(gate_out);
        };
        let width = gate_out.dims2()?.1;
        let mut row = vec![0f32; width];
        for (e, &a) in alpha.iter().enumerate() {
            row[cols.start + e] = if a > 0.0 {
                a.ln().max(GATE_IN_FLOOR)
            } else {
                GATE_IN_FLOOR
            };
        }
        let row =
            Tensor::from_vec(row, (1, width), gate_out.device())?.to_dtype(gate_out.dtype())?;
        Ok(gate_out.broadcast_add(&row)?)
    }

    pub fn num_experts(&self) -> usize {
        self.cfg.num_experts()
    }

    /// Applies the router's non-gradient update (aux-loss-free bias) with the load seen since
    /// the previous call. Call once per optimiser step.
    pub fn after_step(&mut self) {
        let load = std::mem::replace(
            &mut *self.pending_load.lock().expect("load poisoned"),
            vec![0; self.num_experts()],
        );
        self.router.after_step(&load);
        if let Some(a) = &mut self.gate_in {
            let step = 1.0 / self.cfg.gate_in_steps as f32;
            a.iter_mut().for_each(|x| *x = (*x + step).min(1.0));
            if a.iter().all(|&x| x >= 1.0) {
                self.gate_in = None;
            }
        }
    }

    /// Forgets the load counted since the last [`MoeLayer::after_step`] without applying it:
    /// for forwards that must not steer the balancing rule (evaluation between steps, a
    /// training step that was skipped).
    pub fn discard_pending_load(&self) {
        self.pending_load
            .lock()
            .expect("load poisoned")
            .iter_mut()
            .for_each(|c| *c = 0);
    }

    /// Experts unavailable for this batch (expert dropout). At least `k` stay available; when
    /// the draw leaves fewer, the lowest-index dropped experts come back.
    fn sample_available(&self, ctx: &mut ForwardCtx<'_>) -> Option<Vec<bool>> {
        if let Some(a) = &ctx.available {
            return Some(a.clone());
        }
        let p = self.cfg.expert_dropout;
        if !ctx.train || p == 0.0 {
            return None;
        }
        let mut a: Vec<bool> = (0..self.num_experts())
            .map(|_| ctx.rng.random::<f64>() >= p)
            .collect();
        let need = self.cfg.router.k().min(self.num_experts());
        let mut have = a.iter().filter(|&&x| x).count();
        for x in a.iter_mut() {
            if have >= need {
                break;
            }
            if !*x {
                *x = true;
                have += 1;
            }
        }
        Some(a)
    }

    /// Gate input with multiplicative jitter `x · U(1−ε, 1+ε)` in training (noise from
    /// [`noise::uniform`], seeded by one draw from `ctx.rng`).
    fn jitter(&self, x: &Tensor, ctx: &mut ForwardCtx<'_>) -> Result<Tensor> {
        let eps = self.cfg.jitter;
        if !ctx.train || eps == 0.0 {
            return Ok(x.clone());
        }
        let noise = noise::tensor_like(
            x,
            ctx.rng.random(),
            noise::Dist::Uniform(1.0 - eps, 1.0 + eps),
        )?;
        Ok((x * noise)?)
    }

    /// Router logits `[T, gate_outputs]` for flattened `x [T, d]` (no noise, no dropout):
    /// the deterministic part of routing, for analysis.
    pub fn gate_logits(&self, x: &Tensor, seq_len: Option<usize>) -> Result<Option<Tensor>> {
        self.gate
            .as_ref()
            .map(|g| self.offset_gate(g.forward(x, seq_len)?))
            .transpose()
    }

    /// One weight per assignment of the shared experts' dense plan: every shared expert of
    /// token `t` gets `sigmoid(x_t · wᵀ)`.
    /// torch (Qwen2-MoE): `F.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)`
    fn shared_gate_weights(&self, x2: &Tensor, gate: &Var, plan: &DispatchPlan) -> Result<Tensor> {
        let g = candle_nn::ops::sigmoid(&x2.matmul(&gate.as_tensor().t()?)?)?; // [T, 1]
        let dense = g
            .broadcast_as((plan.num_tokens, plan.num_experts))?
            .flatten_all()?;
        let idx = Tensor::from_vec(plan.flat_indices(), plan.len(), x2.device())?;
        Ok(dense.index_select(&idx, 0)?)
    }

    /// Gate, router and combine weights: the routing, each expert's total weight `[E]`, the
    /// router's load loss, if any, and the domain-map loss, if it is on and the batch has
    /// labels.
    fn route(
        &self,
        x2: &Tensor,
        ctx: &mut ForwardCtx<'_>,
    ) -> Result<(Routing, Tensor, Option<Tensor>, Option<Tensor>)> {
        let t = x2.dims()[0];
        let gate_in = self.jitter(x2, ctx)?;
        let gate_out = match &self.gate {
            Some(g) => self.offset_gate(g.forward(&gate_in, ctx.seq_len)?)?,
            None => Tensor::zeros((t, 0), x2.dtype(), x2.device())?,
        };
        let available = self.sample_available(ctx);
        if let Some(a) = &available {
            if a.len() != self.num_experts() || !a.iter().any(|&x| x) {
                return Err(MoeError::input(
                    "MoeLayer::forward",
                    format!("availability mask has {} entries ({} available) for {} experts; at least one must be available", a.len(), a.iter().filter(|&&x| x).count(), self.num_experts()),
                ));
            }
        }
        let out = self.router.route(RouterInput {
            gate_out: &gate_out,
            token_ids: ctx.token_ids,
            available: available.as_deref(),
            train: ctx.train,
            rng: ctx.rng,
        })?;
        let domain_loss = match &ctx.domains {
            Some(targets) if self.cfg.losses.domain_map != 0.0 => {
                domain_map::domain_map_loss(&out.probs, targets, available.as_deref())?
            }
            _ => None,
        };
        let plan = Arc::new(out.plan);
        // one weight per assignment: renormalised, scaled and gathered in one fused op
        let (renorm, scale) = (self.cfg.renormalize, self.router.weight_scale());
        let weights = match &out.dense {
            Dense::Tensor(dense) => rowops::plan_weights(dense, &plan, renorm, scale)?,
            Dense::Masked(scores) => rowops::plan_weights_masked(scores, &plan, renorm, scale)?,
            // rows sum to 1 over the plan by definition: renormalised whatever `renorm` says
            Dense::MaskedSoftmax(logits) => {
                rowops::plan_weights_masked(&rowops::softmax_rows(logits)?, &plan, true, scale)?
            }
        };
        // each expert's total weight, `Σ_t dense[t, e]` of the final dense weights (the
        // importance loss's input): the plan is sorted by expert, so a sum per segment
        let expert_sums = if plan.is_empty() {
            Tensor::zeros(plan.num_experts, weights.dtype(), weights.device())?
        } else {
            let ids = Tensor::from_vec(plan.expert.clone(), plan.len(), weights.device())?;
            Tensor::zeros(plan.num_experts, weights.dtype(), weights.device())?
                .index_add(&ids, &weights, 0)?
        };
        let routing = Routing {
            plan,
            weights,
            logits: out.logits,
            probs: out.probs,
        };
        Ok((routing, expert_sums, out.load_loss, domain_loss))
    }
}

impl MoeLayer {
    /// The auxiliary losses (all computed and reported, the enabled ones summed into the
    /// first result), the routing statistics and the tokens per expert of a routing.
    /// `expert_sums [E]`: each expert's total combine weight (the importance loss's input).
    fn aux_losses(
        &self,
        routing: &Routing,
        expert_sums: &Tensor,
        load_loss: Option<&Tensor>,
        domain_loss: Option<&Tensor>,
        x2: &Tensor,
    ) -> Result<(Tensor, LossValues, RoutingStats, Vec<usize>)> {
        let plan = &routing.plan;
        let counts = plan.tokens_per_expert();
        let w = &self.cfg.losses;
        // a loss with weight 0 is still computed and reported, but from detached inputs and
        // kept out of `aux`: its backward would only add zeros into the [T, E] gradients
        let input = |t: &Tensor, weight: f64| if weight != 0.0 { t.clone() } else { t.detach() };
        let lb = losses::switch_balance(
            &input(&routing.probs, w.switch_balance),
            &counts,
            self.cfg.router.k(),
        )?;
        let imp = losses::cv_squared(&input(expert_sums, w.importance))?;
        let z = match &routing.logits {
            Some(l) => losses::z_loss(&input(l, w.z))?,
            None => Tensor::zeros((), x2.dtype(), x2.device())?,
        };
        let mut aux = Tensor::zeros((), x2.dtype(), x2.device())?;
        for (loss, weight) in [(&lb, w.switch_balance), (&imp, w.importance), (&z, w.z)] {
            if weight != 0.0 {
                aux = (aux + (loss * weight)?)?;
            }
        }
        let mut values = LossValues {
            switch_balance: scalar(&lb)?,
            importance: scalar(&imp)?,
            load: 0.0,
            z: scalar(&z)?,
            domain_map: 0.0,
        };
        if let Some(l) = load_loss {
            values.load = scalar(l)?;
            if w.load != 0.0 {
                aux = (aux + (l * w.load)?)?;
            }
        }
        // only computed when its weight is on (`route`)
        if let Some(l) = domain_loss {
            values.domain_map = scalar(l)?;
            aux = (aux + (l * w.domain_map)?)?;
        }
        let stats = RoutingStats::compute(plan, &routing.probs, routing.logits.as_ref())?;
        Ok((aux, values, stats, counts))
    }

    /// Everything [`MoeBlock::forward`] does for `x [..., d]` except running the experts:
    /// gate, router, plan, routing weights (with their autodiff graph), auxiliary losses and
    /// statistics. Returns the routing and the weighted auxiliary loss. For measuring what
    /// routing costs (`switchyard bench`); it does not count load for
    /// [`MoeLayer::after_step`] and ignores `ctx.forced`.
    pub fn route_only(&self, x: &Tensor, ctx: &mut ForwardCtx<'_>) -> Result<(Routing, Tensor)> {
        let x2 = x.reshape(((), self.cfg.d_model))?;
        let (routing, expert_sums, load_loss, domain_loss) = self.route(&x2, ctx)?;
        let (aux, ..) = self.aux_losses(
            &routing,
            &expert_sums,
            load_loss.as_ref(),
            domain_loss.as_ref(),
            &x2,
        )?;
        Ok((routing, aux))
    }
}

impl MoeBlock for MoeLayer {
    /// # Shapes
    /// `x [..., d]` → `[..., d]`; leading dimensions are flattened into `T` tokens.
    fn forward(&self, x: &Tensor, ctx: &mut ForwardCtx<'_>) -> Result<MoeOutput> {
        let d = self.cfg.d_model;
        let shape = x.shape().clone();
        if x.dims().last() != Some(&d) {
            return Err(MoeError::input(
                "MoeLayer::forward",
                format!(
                    "input has shape {:?}, last dim must be d_model = {d}",
                    x.dims()
                ),
            ));
        }
        let x2 = x.reshape(((), d))?;
        let t = x2.dims()[0];
        let (routing, expert_sums, load_loss, domain_loss) = self.route(&x2, ctx)?;
        let routing = match ctx.forced.take() {
            Some(f) => {
                f.plan.check()?;
                if f.plan.num_tokens != t || f.plan.num_experts != self.num_experts() {
                    return Err(MoeError::input(
                        "MoeLayer::forward",
                        "forced plan does not match this batch or layer",
                    ));
                }
                Routing {
                    plan: f.plan,
                    weights: f.weights,
                    ..routing
                }
            }
            None => routing,
        };
        let plan = &routing.plan;
        let mut y = dispatch::run(
            ctx.dispatch,
            &ctx.kernel,
            &x2,
            &routing.weights,
            self.experts.packed.as_tensor(),
            &self.layout,
            plan,
        )?;
        if let (Some(shared), Some(layout)) = (&self.shared, &self.shared_layout) {
            let dense_plan = Arc::new(DispatchPlan::dense(t, shared.num_experts()));
            let w = match &self.shared_gate {
                Some(g) => self.shared_gate_weights(&x2, g, &dense_plan)?,
                None => Tensor::ones(dense_plan.len(), x2.dtype(), x2.device())?,
            };
            y = (y + dispatch::run(
                ctx.dispatch,
                &ctx.kernel,
                &x2,
                &w,
                shared.packed.as_tensor(),
                layout,
                &dense_plan,
            )?)?;
        }

        let (aux, values, stats, counts) = self.aux_losses(
            &routing,
            &expert_sums,
            load_loss.as_ref(),
            domain_loss.as_ref(),
            &x2,
        )?;
        {
            let mut pending = self.pending_load.lock().expect("load poisoned");
            pending.iter_mut().zip(&counts).for_each(|(p, c)| *p += c);
        }
        Ok(MoeOutput {
            y: y.reshape(shape)?,
            aux_loss: aux,
            losses: values,
            stats: Some(stats),
            routing: Some(routing),
        })
    }
}

pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}
