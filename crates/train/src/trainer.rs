//! The training loop for [`MoeLm`] language models.
//!
//! One step: `grad_accum` micro-batches of `cross_entropy + aux_loss` (gradients averaged) →
//! non-finite guard → global-norm clipping → loss-spike check → AdamW at the scheduled LR →
//! `model.after_step()` (aux-loss-free bias update). Around it: evaluation every
//! `eval_every` steps (per domain and overall), `metrics.jsonl`, a progress bar, `tracing`
//! logs, an expert-collapse warning, and checkpoints every `checkpoint_every` steps.
//!
//! Everything that decides the next update is either a parameter, optimiser state or part of
//! `state.json` (routing RNG, data cursor, router buffers, spike window), so a resumed run is
//! bitwise identical to an uninterrupted one with the same thread count.
//!
//! ```no_run
//! use switchyard_train::trainer::{TrainConfig, Trainer};
//!
//! let cfg = TrainConfig::from_toml_file("configs/tiny.toml".as_ref(), &["train.steps=50".into()])?;
//! let summary = Trainer::new(cfg)?.run()?;
//! println!("val loss {:.3}, checkpoint {}", summary.eval.loss, summary.checkpoint.display());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod config_doc;
pub mod config_toml;
pub mod data;
pub mod domain_map;
pub mod error;
pub mod eval;
pub mod fault;
pub mod guard;
pub mod lifecycle;
pub mod metrics;
pub mod progress;
pub mod replica;
pub mod restore;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{backprop::GradStore, DType, Tensor};
use switchyard_core::ParamStore;
use switchyard_data::{Cursor, Dataset};
use switchyard_models::{check_memory, Job, LmCtx, MoeLm};

use crate::checkpoint::{
    load_checkpoint, restore_into, restore_optimizer, save_checkpoint_with, CheckpointContents,
    RngState, SaveOptions, TrainState,
};
use crate::{accumulate_grads, clip_grad_norm, grad_norm, AdamW, AdamWConfig, LrSchedule};
pub use config::{DataConfig, InitConfig, LogConfig, LoopConfig, OptimConfig, TrainConfig};
pub use error::{ConfigError, RunError, RunResult};
pub use eval::{evaluate, evaluate_with, DomainLoss, EvalResult, LayerRouting};
pub use fault::Faults;
use guard::{CollapseEvent, CollapseWatch, SpikeGuard, SpikeVerdict, COLLAPSE_CLEAR_STEPS};
pub use lifecycle::{AddAt, LifecycleConfig, LifecycleState, SearchBy};
pub use metrics::METRICS_FILE;
use metrics::{EvalRecord, LayerAccumulator, MetricsWriter, StepRecord};
use progress::Progress;
pub use restore::{build_model, load_model, LoadedModel};

/// Name of the routing-noise stream in `state.json`.
const ROUTING_RNG: &str = "routing";
/// Salts deriving the batch-order and routing-noise seeds from `TrainConfig::seed`.
const BATCH_SEED_SALT: u64 = 1;
const ROUTING_SEED_SALT: u64 = 2;

/// What a finished run returns.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// The step the run is at now (all steps, earlier invocations included).
    pub steps: u64,
    /// The step this invocation started from (0, or the resumed checkpoint's step).
    pub from_step: u64,
    /// The evaluation after the last step.
    pub eval: EvalResult,
    /// The checkpoint written after the last step.
    pub checkpoint: PathBuf,
    pub skipped_steps: u64,
    pub tokens_seen: u64,
    /// Wall time of this invocation (training, evaluation and checkpoints).
    pub wall_time_s: f64,
}

/// Extra state saved in `state.json`'s `user` field.
#[derive(serde::Serialize, serde::Deserialize)]
struct UserState {
    spike: SpikeGuard,
    tokens_seen: u64,
    /// Absent in checkpoints written before the lifecycle hooks.
    #[serde(default)]
    lifecycle: LifecycleState,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: MoeLm,
    pub store: ParamStore,
    pub data: Dataset,
    /// With `data.new_domain`: the data of the steps before it appears.
    data_early: Option<Dataset>,
    /// What the lifecycle hooks remember between evaluations.
    lifecycle: LifecycleState,
    opt: AdamW,
    schedule: LrSchedule,
    batch_seed: u64,
    cursor: Cursor,
    ctx: LmCtx,
    step: u64,
    spike: SpikeGuard,
    tokens_seen: u64,
    last_checkpoint: Option<PathBuf>,
    resumed: bool,
    /// The step directory this run resumed from: where the model files to carry into the run
    /// directory are found when their original sources are gone.
    resumed_from: Option<PathBuf>,
    /// Per MoE layer: the current expert-collapse episode, if any (warn on entering).
    collapse: CollapseWatch,
    /// The bar of the current `run` (hidden outside it); logs go through `suspend`.
    progress: Progress,
    /// Test-only faults ([`fault`]); never saved.
    faults: Faults,
    /// Expert replicas ([`replica`]); started at the first step when `replica.every > 0`.
    replicas: Option<replica::Replicas>,
    /// Expert restores not yet written to `metrics.jsonl`.
    restore_events: Vec<replica::RestoreEvent>,
    /// The domain → expert mapping, when the loss or `train.domain_experts` is on.
    domain_map: Option<domain_map::DomainMapping>,
}

impl Trainer {
    /// A fresh run: validates `cfg`, builds the data and the model (from `init.from`'s
    /// weights when set).
    pub fn new(cfg: TrainConfig) -> RunResult<Self> {
        Self::build(cfg, true, None)
    }

    /// `load_init`: start from `init.from`'s weights; `tokenizer_fallback`: see
    /// [`data::load_tokenizer`].
    fn build(
        cfg: TrainConfig,
        load_init: bool,
        tokenizer_fallback: Option<&Path>,
    ) -> RunResult<Self> {
        cfg.validate()?;
        let need = check_memory(&cfg.model, train_job(&cfg))?;
        tracing::debug!("memory: the run needs {need}");
        let tok = data::load_tokenizer(&cfg, tokenizer_fallback)?;
        let faults = Faults::from_env()?;
        if !faults.is_empty() {
            tracing::warn!("fault injection from the environment ({faults:?}); see switchyard_train::trainer::fault");
        }
        let (data, data_early) = data::build_datasets(&cfg, tok.as_ref())?;
        let domain_map = domain_map::resolve(&cfg, &data.domains)?;
        if domain_map.is_some() && !domain_map::loss_on(&cfg.model) {
            tracing::warn!("train.domain_experts is set but every MoE layer has losses.domain_map = 0: the mapping only feeds the routing-purity figures");
        }
        let (store, mut model) = build_model(&cfg)?;
        if let (true, Some(from)) = (load_init, &cfg.init.from) {
            restore::load_init_weights(&store, &mut model, from)?;
        }
        let o = &cfg.optim;
        let opt = AdamW::new(
            &store,
            AdamWConfig {
                lr: o.lr,
                beta1: o.beta1,
                beta2: o.beta2,
                eps: o.eps,
                weight_decay: o.weight_decay,
                ..Default::default()
            },
        )?;
        let schedule = LrSchedule {
            max_lr: o.lr,
            min_lr: o.min_lr,
            warmup_steps: o.warmup_steps,
            total_steps: cfg.train.steps,
        };
        schedule.validate()?;
        // fail now, not at the first step, when the batch does not fit the data
        data.train_batches(cfg.train.batch_size, 0)?;
        if let Some(early) = &data_early {
            early.train_batches(cfg.train.batch_size, 0)?;
        }
        let mut ctx = LmCtx::new(true, mix_seed(cfg.seed, ROUTING_SEED_SALT));
        ctx.domain_experts = domain_map.as_ref().and_then(|m| m.experts.clone());
        Ok(Self {
            batch_seed: mix_seed(cfg.seed, BATCH_SEED_SALT),
            collapse: CollapseWatch::new(cfg.model.moe_layers().len()),
            cfg,
            model,
            store,
            data,
            data_early,
            lifecycle: LifecycleState::default(),
            opt,
            schedule,
            cursor: Cursor::default(),
            ctx,
            step: 0,
            spike: SpikeGuard::default(),
            tokens_seen: 0,
            last_checkpoint: None,
            resumed: false,
            resumed_from: None,
            progress: Progress::new(0, 0, false),
            faults,
            replicas: None,
            restore_events: Vec::new(),
            domain_map,
        })
    }

    /// Continues the run saved at `from` (a step directory or a run directory). `cfg` may
    /// change the length of the run, evaluation, checkpointing and logging, but not the model,
    /// the data or the seed, which the saved state depends on.
    pub fn resume(cfg: TrainConfig, from: &Path) -> RunResult<Self> {
        // refuse before reading the checkpoint (build checks again with it in memory)
        cfg.validate()?;
        check_memory(&cfg.model, train_job(&cfg))?;
        let ckpt = load_checkpoint(from)?;
        let saved = restore::checkpoint_config(&ckpt)?;
        if ckpt.config.get("fault").is_some_and(|f| !f.is_null()) {
            tracing::warn!(
                "ignoring the `fault` table in {}: fault injection is no longer a config key \
                 (it is a test hook, see switchyard_train::trainer::fault), so a resumed run \
                 never repeats it",
                ckpt.dir.join(switchyard_io::CONFIG_FILE).display()
            );
        }
        let resume_err = |reason: String| RunError::Resume {
            path: ckpt.dir.clone(),
            reason,
        };
        // lifecycle hooks change the model during the run: the checkpoint's is the current one
        let mut cfg = cfg;
        if cfg.lifecycle.active() && saved.model != cfg.model {
            tracing::info!("the lifecycle hooks changed the model; resuming with the checkpoint's");
            cfg.model = saved.model.clone();
        }
        for (key, differs) in [
            ("model", saved.model != cfg.model),
            ("data", saved.data != cfg.data),
            ("seed", saved.seed != cfg.seed),
            (
                "train.batch_size",
                saved.train.batch_size != cfg.train.batch_size,
            ),
        ] {
            if differs {
                return Err(resume_err(format!(
                    "`{key}` differs from the checkpoint's config.json; resume with the same `{key}` \
                     (or start a new run in another run_dir)"
                )));
            }
        }
        if ckpt.step > cfg.train.steps {
            return Err(resume_err(format!(
                "the checkpoint is at step {}, past train.steps = {}; raise train.steps",
                ckpt.step, cfg.train.steps
            )));
        }
        let copy = restore::carried_tokenizer_file(from, &ckpt.dir);
        let mut t = Self::build(cfg, false, copy.as_deref())?;
        if ckpt.state.lr_schedule.is_some_and(|s| s != t.schedule) {
            tracing::warn!("the learning-rate schedule differs from the checkpoint's; continuing with the new one");
        }
        restore_into(&t.store, &ckpt)?;
        restore_optimizer(&mut t.opt, &ckpt)?;
        restore::load_router_buffers(&mut t.model, &ckpt.state.buffers, &ckpt.dir)?;
        let rng = ckpt
            .state
            .rngs
            .get(ROUTING_RNG)
            .ok_or_else(|| resume_err(format!("state.json has no `{ROUTING_RNG}` RNG")))?;
        t.ctx.rng = rng
            .to_rng()
            .map_err(|e| resume_err(format!("RNG `{ROUTING_RNG}`: {e}")))?;
        t.cursor = serde_json::from_value(ckpt.state.data_cursor.clone())
            .map_err(|e| resume_err(format!("data cursor: {e}")))?;
        let user: UserState = serde_json::from_value(ckpt.state.user.clone())
            .map_err(|e| resume_err(format!("trainer state: {e}")))?;
        t.spike = user.spike;
        t.tokens_seen = user.tokens_seen;
        t.lifecycle = user.lifecycle;
        t.apply_freeze()?;
        t.step = ckpt.step;
        t.last_checkpoint = Some(ckpt.dir.clone());
        t.resumed = true;
        t.resumed_from = Some(ckpt.dir.clone());
        Ok(t)
    }

    /// Injects `faults` into the coming steps, replacing those of the environment (see
    /// [`fault`]); for tests of the guards.
    pub fn inject_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Completed optimiser steps.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// Trains up to `train.steps`, then evaluates and saves a final checkpoint.
    pub fn run(&mut self) -> RunResult<TrainSummary> {
        let started = Instant::now();
        let total = self.cfg.train.steps;
        let from_step = self.step;
        // a kill during an earlier save or prune leaves `tmp-*` (or, from older versions,
        // `step-*` without state.json): gone before this run writes anything
        let removed = switchyard_io::run_dir::clean_leftovers(&self.cfg.run_dir)?;
        if !removed.is_empty() {
            tracing::info!(
                "removed {} leftover(s) of an interrupted save or prune in {}",
                removed.len(),
                self.cfg.run_dir.display()
            );
        }
        let mut metrics = MetricsWriter::open(
            &self.cfg.run_dir,
            self.cfg.log.metrics,
            // a run continued (resumed, or driven step by step before) keeps the lines so far
            (self.resumed || self.step > 0).then_some(self.step),
        )?;
        self.progress = Progress::new(total, self.step, self.cfg.log.progress);
        tracing::info!(
            run_dir = %self.cfg.run_dir.display(),
            params_total = self.model.num_params_total(),
            params_active = self.model.num_params_active_per_token(),
            train_windows = self.data.train.num_windows(),
            from_step = self.step,
            "training to step {total}"
        );
        let mut last_eval = None;
        while self.step < total {
            let record = match self.train_step() {
                Ok(r) => r,
                Err(e) => {
                    self.progress.abandon();
                    return Err(e);
                }
            };
            for event in self.restore_events.drain(..) {
                metrics.write(&event)?;
            }
            metrics.write(&record)?;
            self.progress
                .update(self.step, record.loss, record.tokens_per_s);
            self.log_step(&record);
            self.step_hooks(&mut metrics)?;
            let step = self.step;
            let at = |every: u64| (every > 0 && step.is_multiple_of(every)) || step == total;
            if at(self.cfg.train.eval_every) {
                let result = self.evaluate()?;
                metrics.write(&EvalRecord::new(self.step, &result))?;
                self.progress.suspend(|| log_eval(self.step, &result));
                self.eval_hooks(&result, &mut metrics)?;
                last_eval = Some(result);
            }
            if at(self.cfg.train.checkpoint_every) {
                let dir = self.save_checkpoint()?;
                self.progress
                    .suspend(|| tracing::info!("step {}: checkpoint {}", self.step, dir.display()));
            }
        }
        self.progress.finish();
        let eval = match last_eval {
            Some(e) => e,
            None => self.evaluate()?, // resumed at the end: nothing was trained
        };
        let checkpoint = match &self.last_checkpoint {
            Some(dir) => dir.clone(),
            None => self.save_checkpoint()?,
        };
        Ok(TrainSummary {
            steps: self.step,
            from_step,
            eval,
            checkpoint,
            skipped_steps: self.spike.total_skips,
            tokens_seen: self.tokens_seen,
            wall_time_s: started.elapsed().as_secs_f64(),
        })
    }

    /// One optimiser step (or a skipped one). On a non-finite loss or gradient norm nothing
    /// is updated and [`RunError::NonFinite`] is returned, unless expert replicas restore the
    /// damaged experts: then the step is redone once on the next batch (see [`replica`]).
    pub fn train_step(&mut self) -> RunResult<StepRecord> {
        self.ensure_replicas()?;
        self.inject_expert_fault(self.step + 1)?;
        match self.try_step() {
            Err(e @ RunError::NonFinite { .. }) => {
                if !self.restore_damaged_experts(self.step + 1)? {
                    return Err(e);
                }
                self.model
                    .moe_layers()
                    .for_each(|m| m.discard_pending_load());
                self.try_step()
            }
            r => r,
        }
    }

    fn try_step(&mut self) -> RunResult<StepRecord> {
        let started = Instant::now();
        let step = self.step + 1; // the step being made, 1-based
        let lr = self.schedule.lr_at(self.step);
        let accum = self.cfg.train.grad_accum;
        let mut acc: Option<GradStore> = None;
        let mut layers = LayerAccumulator::default();
        let (mut loss_sum, mut ce_sum, mut tokens) = (0.0, 0.0, 0u64);
        for micro in 0..accum {
            let batch = self.next_batch()?;
            self.ctx.domains = self.domain_map.as_ref().map(|_| batch.domains.clone());
            let shape = (batch.batch_size, batch.seq_len);
            let ids = Tensor::from_vec(batch.inputs, shape, &candle_core::Device::Cpu)?;
            let targets = Tensor::from_vec(batch.targets, shape, &candle_core::Device::Cpu)?;
            let (ce, out) = self.model.loss(&ids, &targets, &mut self.ctx)?;
            let mut objective = (&ce + &out.aux_loss)?;
            if micro == 0 && self.faults.nan_loss_at_step == Some(step) {
                objective = (objective + f64::NAN)?;
            }
            if micro == 0 && self.faults.spike_loss_at_step == Some(step) {
                objective = objective.affine(fault::SPIKE_FAULT_SCALE, 0.0)?;
            }
            let loss = scalar(&objective)?;
            if !loss.is_finite() {
                return Err(self.non_finite(step, "loss", loss));
            }
            loss_sum += loss;
            ce_sum += scalar(&ce)?;
            tokens += (batch.batch_size * batch.seq_len) as u64;
            layers.add(&out.layers, batch.batch_size * batch.seq_len);
            // mean over micro-batches: backward of objective / accum, summed
            let scaled = if accum > 1 {
                objective.affine(1.0 / accum as f64, 0.0)?
            } else {
                objective
            };
            // the packed expert gradients skip candle's zeros-then-add (see switchyard_core::backward)
            let grads = switchyard_core::backward(&scaled)?;
            match &mut acc {
                None if accum == 1 => acc = Some(grads),
                slot => accumulate_grads(
                    &self.store,
                    slot.get_or_insert_with(GradStore::default),
                    &grads,
                )?,
            }
        }
        let mut grads = acc.expect("grad_accum >= 1");
        let clip = self.cfg.optim.clip_grad_norm;
        let norm = if clip > 0.0 {
            clip_grad_norm(&self.store, &mut grads, clip)?
        } else {
            grad_norm(&self.store, &grads)?
        };
        if !norm.is_finite() {
            return Err(self.non_finite(step, "gradient norm", norm));
        }
        let loss = loss_sum / accum as f64;
        let after_warmup = self.step >= self.cfg.optim.warmup_steps;
        let verdict = self
            .spike
            .judge(loss, self.cfg.train.spike_factor, after_warmup);
        let skipped = matches!(verdict, SpikeVerdict::Skip { .. });
        let factor = self.cfg.train.spike_factor;
        self.progress.suspend(|| match verdict {
            SpikeVerdict::Skip { mean } => {
                tracing::warn!("step {step}: loss {loss:.4} > {factor} x running mean {mean:.4}; update skipped")
            }
            SpikeVerdict::Reset { mean } => tracing::warn!(
                "step {step}: loss {loss:.4} is still above {factor} x {mean:.4} after {} skipped steps; \
                 accepting it as the new level",
                guard::MAX_CONSECUTIVE_SKIPS
            ),
            SpikeVerdict::Accept => {}
        });
        if skipped {
            self.model
                .moe_layers()
                .for_each(|m| m.discard_pending_load());
        } else {
            self.update(&grads, lr, step)?;
            self.model.after_step();
        }
        drop(grads);
        self.step = step;
        self.tokens_seen += tokens;
        let layers = layers.finish();
        if after_warmup {
            // routing at initialisation is close to arbitrary; judge it once training settles
            self.check_collapse(&layers);
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        Ok(StepRecord {
            event: "step".into(),
            step,
            lr,
            loss,
            ce: ce_sum / accum as f64,
            aux: (loss_sum - ce_sum) / accum as f64,
            grad_norm: norm,
            tokens_per_s: tokens as f64 / secs,
            tokens_seen: self.tokens_seen,
            skipped,
            layers,
        })
    }

    /// Evaluates on the validation set (see [`evaluate`]).
    pub fn evaluate(&self) -> RunResult<EvalResult> {
        evaluate_with(
            &self.model,
            &self.data,
            self.cfg.data.max_valid_windows,
            self.domain_map.as_ref(),
        )
    }

    /// The domain → expert mapping this run trains with (see [`domain_map`]).
    pub fn domain_mapping(&self) -> Option<&domain_map::DomainMapping> {
        self.domain_map.as_ref()
    }

    /// Saves `run_dir/step-<step>/` and points `latest` at it.
    pub fn save_checkpoint(&mut self) -> RunResult<PathBuf> {
        let user = UserState {
            spike: self.spike.clone(),
            tokens_seen: self.tokens_seen,
            lifecycle: self.lifecycle.clone(),
        };
        let state = TrainState {
            rngs: [(ROUTING_RNG.to_string(), RngState::capture(&self.ctx.rng))]
                .into_iter()
                .collect(),
            data_cursor: serde_json::to_value(self.cursor).expect("cursor serialises"),
            lr_schedule: Some(self.schedule),
            buffers: restore::router_buffers(&self.model),
            user: serde_json::to_value(user).expect("trainer state serialises"),
        };
        let contents = CheckpointContents {
            params: &self.store,
            optimizer: Some(&self.opt),
            state,
            config: serde_json::to_value(&self.cfg).expect("config serialises"),
        };
        let keep = self.cfg.train.keep_last;
        let opts = SaveOptions {
            keep_last: (keep > 0).then_some(keep),
        };
        let dir = save_checkpoint_with(&self.cfg.run_dir, self.step, &contents, &opts)?;
        // copies only what the run directory lacks (a resume into another run directory
        // needs them too)
        restore::carry_model_files(&self.cfg, self.resumed_from.as_deref())?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    /// Runs the hooks [`Trainer::run`] calls after each step (the lifecycle's scheduled
    /// surgeries and the new domain's arrival), for callers that drive
    /// [`Trainer::train_step`] themselves.
    pub fn run_step_hooks(&mut self, metrics: &mut metrics::MetricsWriter) -> RunResult<()> {
        self.step_hooks(metrics)
    }

    /// The first batch the next step will train on, without consuming it.
    pub fn peek_batch(&self) -> RunResult<switchyard_data::Batch> {
        let data = match &self.data_early {
            Some(early) if self.step < self.cfg.data.new_domain_step => early,
            _ => &self.data,
        };
        let mut it =
            data.train_batches_from(self.cfg.train.batch_size, self.batch_seed, self.cursor)?;
        Ok(it.next_batch())
    }

    fn next_batch(&mut self) -> RunResult<switchyard_data::Batch> {
        let data = match &self.data_early {
            Some(early) if self.step < self.cfg.data.new_domain_step => early,
            _ => &self.data,
        };
        let mut it =
            data.train_batches_from(self.cfg.train.batch_size, self.batch_seed, self.cursor)?;
        let batch = it.next_batch();
        self.cursor = it.cursor();
        Ok(batch)
    }

    fn non_finite(&self, step: u64, what: &'static str, value: f64) -> RunError {
        RunError::NonFinite {
            step,
            what,
            value,
            last_checkpoint: self.last_checkpoint.clone(),
        }
    }

    /// Warns once per layer and collapse episode (see [`CollapseWatch`]), all layers that
    /// enter one at this step in one line.
    fn check_collapse(&mut self, layers: &[metrics::LayerMetrics]) {
        let limit = self.cfg.train.collapse_share;
        let step = self.step;
        let mut started = Vec::new();
        for (i, m) in layers.iter().enumerate() {
            let collapsed = m.max_expert_share > limit;
            match self.collapse.observe(i, step, collapsed) {
                Some(CollapseEvent::Started) => {
                    let expert = m
                        .tokens_per_expert
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, &c)| c)
                        .map_or(0, |(e, _)| e);
                    started.push(format!(
                        "layer {}: expert {expert} received {:.0}% of the tokens",
                        m.layer,
                        100.0 * m.max_expert_share
                    ));
                }
                Some(CollapseEvent::Ended {
                    started: from,
                    collapsed_steps,
                }) => self.progress.suspend(|| {
                    tracing::info!(
                        "step {step}: layer {} recovered from the expert collapse of step {from} \
                         ({collapsed_steps} steps above {:.0}%)",
                        m.layer,
                        100.0 * limit
                    )
                }),
                None => {}
            }
        }
        if !started.is_empty() {
            self.progress.suspend(|| {
                tracing::warn!(
                    "step {step}: expert collapse (one expert above {:.0}% of a layer's tokens) in {}; \
                     consider a larger balancing-loss weight or the sigmoid_bias router (warned once \
                     per layer until it stays below for {COLLAPSE_CLEAR_STEPS} steps)",
                    100.0 * limit,
                    started.join("; ")
                )
            });
        }
    }

    fn log_step(&self, r: &StepRecord) {
        let every = self.cfg.log.every;
        if every == 0
            || (!r.step.is_multiple_of(every) && r.step != 1)
            || self.progress.is_visible()
        {
            return;
        }
        tracing::info!(
            "step {}/{}: loss {:.4} (ce {:.4}) lr {:.2e} grad_norm {:.3} {:.0} tok/s",
            r.step,
            self.cfg.train.steps,
            r.loss,
            r.ce,
            r.lr,
            r.grad_norm,
            r.tokens_per_s
        );
    }
}

fn log_eval(step: u64, r: &EvalResult) {
    let per_domain: Vec<String> = r
        .domains
        .iter()
        .map(|d| format!("{} {:.3}", d.domain, d.loss))
        .collect();
    let purity = r
        .mean_purity()
        .map_or(String::new(), |p| format!(", routing purity {p:.3}"));
    tracing::info!(
        "step {step}: val loss {:.4} ({}){purity}",
        r.loss,
        per_domain.join(", ")
    );
}

/// What training `cfg` asks of memory (see [`switchyard_models::memory`]).
pub fn train_job(cfg: &TrainConfig) -> Job {
    Job::Train {
        batch: cfg.train.batch_size,
        seq_len: cfg.data.seq_len,
        grad_accum: cfg.train.grad_accum,
    }
}

fn scalar(t: &Tensor) -> RunResult<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// An independent seed from a parent seed and a salt (SplitMix64's finaliser).
fn mix_seed(seed: u64, salt: u64) -> u64 {
    let mut z = seed
        ^ salt
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_mul(0xd1b5_4a32_d192_ed03);
    // z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) * 0x94d049bb133111eb
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
