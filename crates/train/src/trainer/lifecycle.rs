//! Expert lifecycle during training (`[lifecycle]`): add experts at given steps or when a new
//! domain appears in the data, split an expert whose load share passes a threshold, prune
//! experts dead for several evaluations. Each is a `switchyard_lifecycle` surgery applied to
//! the live model: its state (parameters, AdamW moments, router buffers) is taken out, changed
//! and the model and optimiser rebuilt from it, so training continues as a resume would. Each
//! is logged as an `{"event": "surgery", …}` line in `metrics.jsonl`.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Var};
use serde::{Deserialize, Serialize};
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_lifecycle::{
    add_experts, prune_experts, split_expert, AddInit, LifecycleError, ModelState, SurgeryReport,
};
use switchyard_models::MoeLm;

use super::error::{ConfigError, RunError, RunResult};
use super::eval::EvalResult;
use super::Trainer;
use crate::AdamW;

/// Experts added at a given step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddAt {
    /// After this optimiser step.
    pub step: u64,
    /// Experts added to each layer.
    pub count: usize,
    /// The MoE layers; empty: all.
    #[serde(default)]
    pub layers: Vec<usize>,
}

/// `[lifecycle]`: what happens to experts while training. All off by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LifecycleConfig {
    /// Experts added at given steps (fresh, closed, entering over `gate_in_steps`).
    pub add: Vec<AddAt>,
    /// Experts added to every MoE layer when `data.new_domain` appears (0: none).
    pub add_on_new_domain: usize,
    /// At each evaluation, split the expert of each layer whose share of the layer's
    /// validation assignments exceeds this (0: never).
    pub split_load_share: f64,
    /// Prune an expert that received no validation token in this many consecutive
    /// evaluations (0: never).
    pub prune_dead_evals: u32,
    /// Relative noise of a split's copy.
    pub noise: f64,
    /// When the new domain's experts are added, freeze the experts there were before (their
    /// weights, gate rows and moments stay as they are for the rest of the run), so what
    /// they learned is kept; everything else trains on.
    pub freeze_old_experts: bool,
    /// Expert architecture search: at each evaluation, every MoE layer with more experts
    /// than this loses its weakest one (by `search_by`), until this many are left (0: off).
    /// Seed the layer with a pool of candidates of different kinds and widths.
    pub search_keep: usize,
    /// How the search ranks experts: `"usage"` (validation tokens routed to each) or
    /// `"ablation"` (the validation-loss increase when each is removed).
    pub search_by: SearchBy,
}

/// How architecture search ranks a layer's experts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchBy {
    #[default]
    Usage,
    Ablation,
}

impl LifecycleConfig {
    /// Whether any hook can change the model during the run.
    pub fn active(&self) -> bool {
        !self.add.is_empty()
            || self.add_on_new_domain > 0
            || self.split_load_share > 0.0
            || self.prune_dead_evals > 0
    }

    pub fn validate(&self, steps: u64) -> Result<(), ConfigError> {
        for (i, a) in self.add.iter().enumerate() {
            if a.count == 0 || a.step == 0 || a.step >= steps {
                return Err(ConfigError::invalid(
                    format!("lifecycle.add[{i}]"),
                    format!(
                        "needs count >= 1 and 1 <= step < train.steps ({steps}), got count = {} at step {}",
                        a.count, a.step
                    ),
                ));
            }
        }
        if !(self.split_load_share.is_finite() && (0.0..1.0).contains(&self.split_load_share)) {
            return Err(ConfigError::invalid(
                "lifecycle.split_load_share",
                format!("must be in [0, 1) (0: off), got {}", self.split_load_share),
            ));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(ConfigError::invalid(
                "lifecycle.noise",
                format!("must be finite and >= 0, got {}", self.noise),
            ));
        }
        Ok(())
    }
}

/// What the hooks remember between evaluations (saved with the trainer's state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleState {
    /// Per MoE layer (by layer index), per expert: consecutive evaluations without a token.
    pub dead_evals: BTreeMap<usize, Vec<u32>>,
    /// Per MoE layer: how many of its first experts are frozen
    /// (`lifecycle.freeze_old_experts`).
    #[serde(default)]
    pub frozen: BTreeMap<usize, usize>,
}

/// One `metrics.jsonl` line per surgery.
#[derive(Serialize)]
struct SurgeryRecord<'a> {
    event: &'static str,
    step: u64,
    operation: &'a str,
    reason: &'a str,
    #[serde(flatten)]
    report: &'a SurgeryReport,
}

fn lifecycle_err(e: LifecycleError) -> RunError {
    match e {
        LifecycleError::Input { what, reason } => {
            ConfigError::invalid(format!("lifecycle ({what})"), reason).into()
        }
        other => RunError::Lifecycle(other.to_string()),
    }
}

impl Trainer {
    /// The live model's state: parameters, AdamW moments, router buffers and config.
    pub fn model_state(&self) -> RunResult<ModelState> {
        Ok(ModelState {
            model: self.cfg.model.clone(),
            params: self
                .store
                .all()
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone()))
                .collect(),
            optimizer: self.opt.state_tensors()?.into_iter().collect(),
            buffers: switchyard_io::router_buffers(&self.model),
        })
    }

    /// Applies `surgery` to the live model and rebuilds the model and the optimiser from the
    /// result; logs it (`reason` says why) to `metrics` and the log.
    pub fn apply_surgery(
        &mut self,
        operation: &str,
        reason: &str,
        metrics: Option<&mut super::metrics::MetricsWriter>,
        surgery: impl FnOnce(&mut ModelState) -> Result<SurgeryReport, LifecycleError>,
    ) -> RunResult<SurgeryReport> {
        let mut state = self.model_state()?;
        let report = surgery(&mut state).map_err(lifecycle_err)?;
        let store = ParamStore::new();
        for (name, t) in &state.params {
            store.insert(name, Var::from_tensor(t)?);
        }
        let pb = ParamBuilder::new(&store, self.cfg.seed, DType::F32, &Device::Cpu);
        let mut model = MoeLm::new(&pb, &state.model)?;
        if store.num_params() != state.params.values().map(|t| t.elem_count()).sum::<usize>() {
            return Err(lifecycle_err(LifecycleError::Inconsistent(
                "the surgery's tensors do not match its model config".into(),
            )));
        }
        switchyard_io::load_router_buffers(&mut model, &state.buffers)
            .map_err(|e| lifecycle_err(LifecycleError::Inconsistent(e)))?;
        let mut opt = AdamW::new(&store, *self.opt.config())?;
        opt.load_state(&state.optimizer)?;
        self.store = store;
        self.model = model;
        self.opt = opt;
        self.cfg.model = state.model;
        self.collapse = super::guard::CollapseWatch::new(self.cfg.model.moe_layers().len());
        self.lifecycle.dead_evals.clear();
        // the expert replicas describe the old layers: they start again at the next step
        self.replicas = None;
        if operation != "add" {
            // indices moved: what was frozen is no longer where the masks say
            self.lifecycle.frozen.clear();
        }
        self.apply_freeze()?;
        self.progress.suspend(|| {
            tracing::info!(
                "step {}: {operation} ({reason}): experts per layer {:?} -> {:?}",
                self.step,
                report.experts_before,
                report.experts_after
            );
            for w in &report.warnings {
                tracing::warn!("{w}");
            }
        });
        if let Some(m) = metrics {
            m.write(&SurgeryRecord {
                event: "surgery",
                step: self.step,
                operation,
                reason,
                report: &report,
            })?;
        }
        Ok(report)
    }

    /// The hooks due after the step just made (scheduled adds, the new domain's experts).
    pub(super) fn step_hooks(
        &mut self,
        metrics: &mut super::metrics::MetricsWriter,
    ) -> RunResult<()> {
        let step = self.step;
        let due: Vec<_> = self
            .cfg
            .lifecycle
            .add
            .iter()
            .filter(|a| a.step == step)
            .cloned()
            .collect();
        for a in due {
            let seed = self.cfg.seed ^ step;
            self.apply_surgery(
                "add",
                &format!("lifecycle.add at step {step}"),
                Some(metrics),
                |s| {
                    add_experts(
                        s,
                        &a.layers,
                        a.count,
                        &AddInit::Fresh { like: 0 },
                        0.0,
                        seed,
                    )
                },
            )?;
        }
        if let Some(domain) = self.cfg.data.new_domain.clone() {
            if step == self.cfg.data.new_domain_step {
                // from the next step on the batches come from the whole data
                self.cursor = switchyard_data::Cursor::default();
                self.progress.suspend(|| {
                    tracing::info!("step {step}: domain `{domain}` enters the training data")
                });
                let count = self.cfg.lifecycle.add_on_new_domain;
                if count > 0 {
                    let seed = self.cfg.seed ^ step;
                    let report = self.apply_surgery(
                        "add",
                        &format!("new domain `{domain}`"),
                        Some(metrics),
                        |s| add_experts(s, &[], count, &AddInit::Fresh { like: 0 }, 0.0, seed),
                    )?;
                    if self.cfg.lifecycle.freeze_old_experts {
                        for (&l, &before) in report.layers.iter().zip(&report.experts_before) {
                            self.lifecycle.frozen.insert(l, before);
                        }
                        self.apply_freeze()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The hooks that act on an evaluation: split an overloaded expert, prune dead ones.
    pub(super) fn eval_hooks(
        &mut self,
        eval: &EvalResult,
        metrics: &mut super::metrics::MetricsWriter,
    ) -> RunResult<()> {
        let lc = self.cfg.lifecycle.clone();
        if lc.split_load_share > 0.0 {
            for r in &eval.routing {
                let usage = usage_of(r);
                let total: f64 = usage.iter().sum();
                let Some((e, &u)) = usage
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                else {
                    continue;
                };
                if total > 0.0 && u / total > lc.split_load_share {
                    let (layer, seed) = (r.layer, self.cfg.seed ^ self.step);
                    let reason = format!(
                        "expert {e} of layer {layer} has {:.0}% of the load",
                        100.0 * u / total
                    );
                    self.apply_surgery("split", &reason, Some(metrics), |s| {
                        split_expert(s, layer, e, lc.noise, seed)
                    })?;
                }
            }
        }
        if lc.search_keep > 0 {
            let mut remove = Vec::new();
            let mut why = Vec::new();
            for r in &eval.routing {
                let usage = usage_of(r);
                if usage.len() <= lc.search_keep {
                    continue;
                }
                let scores = match lc.search_by {
                    SearchBy::Usage => usage,
                    SearchBy::Ablation => self.ablation_scores(r.layer, usage.len())?,
                };
                // the weakest; ties go to the higher index (the later candidate)
                let loser = (0..scores.len())
                    .min_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
                    .expect("experts");
                let arch = self
                    .cfg
                    .model
                    .layer_moe_config(r.layer)
                    .map(|m| format!("{:?}", m.experts[loser]))
                    .unwrap_or_default();
                why.push(format!(
                    "layer {} expert {loser} ({arch}) scored lowest ({:?} {:.4})",
                    r.layer, lc.search_by, scores[loser]
                ));
                remove.push((r.layer, loser));
            }
            if !remove.is_empty() {
                let reason = format!("architecture search: {}", why.join("; "));
                self.apply_surgery("prune", &reason, Some(metrics), |s| {
                    prune_experts(s, &remove)
                })?;
                // the evaluation's routing no longer matches the experts
                return Ok(());
            }
        }
        if lc.prune_dead_evals > 0 {
            let mut remove = Vec::new();
            for r in &eval.routing {
                let usage = usage_of(r);
                let counts = self
                    .lifecycle
                    .dead_evals
                    .entry(r.layer)
                    .or_insert_with(|| vec![0; usage.len()]);
                counts.resize(usage.len(), 0);
                for (c, &u) in counts.iter_mut().zip(&usage) {
                    *c = if u == 0.0 { *c + 1 } else { 0 };
                }
                let dead: Vec<usize> = (0..usage.len())
                    .filter(|&e| counts[e] >= lc.prune_dead_evals)
                    .collect();
                // a layer keeps at least one expert
                if dead.len() < usage.len() {
                    remove.extend(dead.into_iter().map(|e| (r.layer, e)));
                }
            }
            if !remove.is_empty() {
                let reason = format!("no validation token in {} evaluations", lc.prune_dead_evals);
                self.apply_surgery("prune", &reason, Some(metrics), |s| {
                    prune_experts(s, &remove)
                })?;
            }
        }
        Ok(())
    }
}

impl Trainer {
    /// Per expert of MoE layer `layer`: the validation loss with it removed (routing
    /// renormalised over the others, the expert-dropout mechanism with a fixed mask) minus the
    /// loss of the intact model, over the first two validation windows of every domain.
    fn ablation_scores(&self, layer: usize, experts: usize) -> RunResult<Vec<f64>> {
        use switchyard_models::{per_token_ce, LayerOverride, LmCtx};
        let batches: Vec<switchyard_data::Batch> = self
            .data
            .valid
            .iter()
            .map(|v| {
                let w: Vec<usize> = (0..v.num_windows().min(2)).collect();
                switchyard_data::Batch::from_windows(v, &w)
            })
            .collect();
        let loss = |ctx: &mut LmCtx| -> RunResult<f64> {
            let (mut sum, mut n) = (0.0, 0usize);
            for b in &batches {
                let shape = (b.batch_size, b.seq_len);
                let ids = candle_core::Tensor::from_slice(&b.inputs, shape, &Device::Cpu)?;
                let tg = candle_core::Tensor::from_slice(&b.targets, shape, &Device::Cpu)?;
                let out = self.model.forward(&ids, ctx)?;
                let ce = per_token_ce(&out.logits, &tg)?
                    .flatten_all()?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?;
                sum += ce.iter().sum::<f64>();
                n += ce.len();
            }
            Ok(sum / n.max(1) as f64)
        };
        let base = loss(&mut LmCtx::new(false, 0))?;
        let mut out = Vec::with_capacity(experts);
        for e in 0..experts {
            let mut ctx = LmCtx::new(false, 0);
            let mut available = vec![true; experts];
            available[e] = false;
            ctx.overrides.insert(
                layer,
                LayerOverride {
                    forced: None,
                    available: Some(available),
                },
            );
            out.push(loss(&mut ctx)? - base);
        }
        self.model
            .moe_layers()
            .for_each(|m| m.discard_pending_load());
        Ok(out)
    }

    /// Sets the optimiser's frozen elements from `lifecycle.frozen`: for each listed layer,
    /// its first experts' segments of `experts.packed` and their gate rows (every block of
    /// per-expert rows). Called after each rebuild and on resume.
    pub(super) fn apply_freeze(&mut self) -> RunResult<()> {
        for (&layer, &n) in &self.lifecycle.frozen {
            let Some(moe) = self.cfg.model.layer_moe_config(layer) else {
                continue;
            };
            let p = switchyard_lifecycle::moe_prefix(layer);
            let layout = switchyard_core::expert::ExpertLayout::new(moe.d_model, &moe.experts);
            let end = layout.slots.get(n).map_or(layout.total, |s| s.w1);
            // the first `n` experts' segments: one range
            let experts = std::iter::once(0..end).collect::<Vec<_>>();
            self.opt.freeze(&format!("{p}.experts.packed"), &experts)?;
            let router = switchyard_core::router::build(&moe.router, moe.experts.len())?;
            let Some(cols) = router.expert_columns() else {
                continue;
            };
            let name = match moe.gate {
                switchyard_core::GateConfig::Linear { .. } => format!("{p}.gate.weight"),
                switchyard_core::GateConfig::Mlp { .. } => format!("{p}.gate.w2"),
            };
            let Some(width) = self.store.get(&name).map(|v| v.dims()[1]) else {
                continue;
            };
            let e = moe.experts.len();
            let blocks = (router.gate_outputs() - cols.start) / e.max(1);
            let ranges: Vec<_> = (0..blocks)
                .map(|b| {
                    let first = cols.start + b * e;
                    first * width..(first + n) * width
                })
                .collect();
            self.opt.freeze(&name, &ranges)?;
        }
        Ok(())
    }
}

/// Assignments per expert of one layer's validation routing, summed over domains.
fn usage_of(r: &super::eval::LayerRouting) -> Vec<f64> {
    let e = r.counts.first().map_or(0, Vec::len);
    (0..e)
        .map(|x| r.counts.iter().map(|row| row[x] as f64).sum())
        .collect()
}
