//! Asynchronous expert replication (`[replica]`, off by default).
//!
//! Every `replica.every` steps (and once when training starts or resumes) the trainer hands a
//! background thread a [`ParamSnapshot`] of each MoE layer's `experts.packed` parameter and
//! its AdamW moments. Handing it over copies nothing on the training thread: AdamW writes a
//! parameter from a fresh tensor (`Var::set` copies it into the variable's storage in
//! place, so a handle to the variable itself would change under the reader), and the
//! snapshot keeps that fresh tensor; the moments are shared copy-on-write, so the next update
//! copies them only if the thread has not finished with them by then. The thread copies each
//! routed expert's slice (see [`ExpertLayout`]) of the weights and of both moments into that
//! expert's replica, unless one of them holds a NaN or an infinity: then the expert keeps its
//! older replica and is reported damaged.
//!
//! **Restore.** An expert is restored from its replica (its weights and moment slices only;
//! the parameter's AdamW step count is kept) when
//! - the loss or the gradient norm of a step is not finite and a scan finds the expert's
//!   weights or moments non-finite: every such expert is restored and the step is **redone**
//!   once, on the next batch (the failed batch is consumed; no update was applied). If no
//!   expert is damaged, or one has no finite replica, or the redone step fails too, training
//!   stops with [`RunError::NonFinite`] as without replicas;
//! - the thread reported the expert damaged in the previous snapshot: checked at the next
//!   replica step, before its update (this catches experts that no token reached);
//! - [`Trainer::restore_expert`] is called (an expert pruned or damaged by mistake).
//!
//! Each restore is a [`RestoreEvent`] line in `metrics.jsonl`
//! (`{"event":"expert_restored","step":..,"layer":..,"expert":..,"replica_step":..,"cause":..}`)
//! and a `tracing` warning. Replicas live in memory only: a resumed run starts them from the
//! checkpoint it resumes. When nothing is restored the replicas never change training: the
//! update is bitwise the same with replicas on or off.
//!
//! [`ParamSnapshot`]: crate::ParamSnapshot
//! [`ExpertLayout`]: switchyard_core::expert::ExpertLayout

use std::ops::Range;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use candle_core::{backprop::GradStore, CpuStorage, DType, Storage, Tensor, Var};
use serde::{Deserialize, Serialize};
use switchyard_core::expert::ExpertLayout;

use super::error::{ConfigError, RunError, RunResult};
use super::fault::{ExpertFault, NAN_EXPERT_ENV};
use super::Trainer;
use crate::ParamSnapshot;

/// The `[replica]` section of the run config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaConfig {
    /// Refresh every expert's replica every this many steps (and check it); 0: no replicas.
    pub every: u64,
}

/// `cause` of a [`RestoreEvent`].
pub const CAUSE_NON_FINITE: &str = "non_finite_step";
pub const CAUSE_CHECK: &str = "replica_check";
pub const CAUSE_MANUAL: &str = "manual";

/// One line of `metrics.jsonl`: an expert was restored from its replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoreEvent {
    /// `"expert_restored"`.
    pub event: String,
    /// The step being made when it was restored (the restored state is used from this step).
    pub step: u64,
    /// The model layer (`model.layers.{layer}`).
    pub layer: usize,
    pub expert: usize,
    /// The step whose state the replica holds.
    pub replica_step: u64,
    /// [`CAUSE_NON_FINITE`], [`CAUSE_CHECK`] or [`CAUSE_MANUAL`].
    pub cause: String,
}

/// The saved state of one expert: its slice of the layer's packed weights and of the two
/// AdamW moments, as of `step`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpertReplica {
    pub step: u64,
    pub weights: Vec<f32>,
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

/// An MoE layer whose routed experts are replicated.
#[derive(Clone, Debug)]
pub struct ReplicatedLayer {
    /// The model layer (`model.layers.{layer}`).
    pub layer: usize,
    /// Store name of its `experts.packed` parameter.
    pub param: String,
    pub var: Var,
    /// Each expert's flat range in `param`.
    pub experts: Vec<Range<usize>>,
}

/// Each expert's contiguous range in a layout's flat vector.
pub fn expert_ranges(layout: &ExpertLayout) -> Vec<Range<usize>> {
    let starts: Vec<usize> = layout.slots.iter().map(|s| s.w1).collect();
    starts
        .iter()
        .enumerate()
        .map(|(e, &s)| s..starts.get(e + 1).copied().unwrap_or(layout.total))
        .collect()
}

/// (position in the replicated layers, expert, the snapshot's step)
type Damage = (usize, usize, u64);

#[derive(Default)]
struct Progress {
    submitted: u64,
    done: u64,
    damaged: Vec<Damage>,
}

struct Shared {
    replicas: Mutex<Vec<Vec<Option<ExpertReplica>>>>,
    progress: Mutex<Progress>,
    idle: Condvar,
}

struct Job {
    step: u64,
    snaps: Vec<ParamSnapshot>,
}

/// The background replicator of one trainer.
pub struct Replicas {
    every: u64,
    layers: Arc<Vec<ReplicatedLayer>>,
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    /// A snapshot is owed (the interval was reached on a skipped step).
    due: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic on the worker thread must not take the trainer down with it
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replicas {
    /// Starts the thread; replicas are empty until the first [`Replicas::submit`].
    pub fn start(every: u64, layers: Vec<ReplicatedLayer>) -> std::io::Result<Self> {
        let layers = Arc::new(layers);
        let shared = Arc::new(Shared {
            replicas: Mutex::new(layers.iter().map(|l| vec![None; l.experts.len()]).collect()),
            progress: Mutex::new(Progress::default()),
            idle: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = {
            let (layers, shared) = (Arc::clone(&layers), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("expert-replica".into())
                .spawn(move || work(&layers, &shared, rx))?
        };
        Ok(Self {
            every,
            layers,
            shared,
            tx: Some(tx),
            worker: Some(worker),
            due: false,
        })
    }

    pub fn every(&self) -> u64 {
        self.every
    }

    pub fn layers(&self) -> &[ReplicatedLayer] {
        &self.layers
    }

    /// Hands `snaps` (one per replicated layer, in order) to the thread; never waits.
    pub fn submit(&mut self, step: u64, snaps: Vec<ParamSnapshot>) {
        lock(&self.shared.progress).submitted += 1;
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Job { step, snaps }).is_ok());
        if !sent {
            // the thread is gone (it panicked): count the job as done so nobody waits for it
            lock(&self.shared.progress).done += 1;
            tracing::error!(
                "the expert-replica thread has stopped; replicas are no longer refreshed"
            );
        }
    }

    /// Waits until every submitted snapshot is copied; returns (and forgets) the experts the
    /// thread found damaged, as (position in [`Replicas::layers`], expert, snapshot step).
    pub fn wait_idle(&self) -> Vec<(usize, usize, u64)> {
        let mut p = lock(&self.shared.progress);
        while p.done < p.submitted {
            p = self.shared.idle.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut p.damaged)
    }

    /// The replica of expert `expert` of replicated layer `pos`, after waiting for the thread.
    pub fn replica(&self, pos: usize, expert: usize) -> Option<ExpertReplica> {
        self.wait_idle_keep();
        lock(&self.shared.replicas)
            .get(pos)
            .and_then(|l| l.get(expert))
            .cloned()
            .flatten()
    }

    fn wait_idle_keep(&self) {
        let damaged = self.wait_idle();
        lock(&self.shared.progress).damaged.extend(damaged);
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The thread: copies each expert's slices into its replica when they are all finite.
fn work(layers: &[ReplicatedLayer], shared: &Shared, rx: mpsc::Receiver<Job>) {
    for job in rx {
        let mut damaged = Vec::new();
        {
            let mut replicas = lock(&shared.replicas);
            for (pos, (layer, snap)) in layers.iter().zip(&job.snaps).enumerate() {
                let copied = with_f32(&snap.value, |w| {
                    for (e, r) in layer.experts.iter().enumerate() {
                        let (w, m, v) = (
                            &w[r.clone()],
                            &snap.exp_avg[r.clone()],
                            &snap.exp_avg_sq[r.clone()],
                        );
                        if !(all_finite(w) && all_finite(m) && all_finite(v)) {
                            damaged.push((pos, e, job.step));
                            continue;
                        }
                        let slot = &mut replicas[pos][e];
                        match slot {
                            Some(rep) => {
                                rep.step = job.step;
                                rep.weights.copy_from_slice(w);
                                rep.exp_avg.copy_from_slice(m);
                                rep.exp_avg_sq.copy_from_slice(v);
                            }
                            None => {
                                *slot = Some(ExpertReplica {
                                    step: job.step,
                                    weights: w.to_vec(),
                                    exp_avg: m.to_vec(),
                                    exp_avg_sq: v.to_vec(),
                                })
                            }
                        }
                    }
                });
                if let Err(e) = copied {
                    tracing::error!("expert replica of {}: {e}", layer.param);
                }
            }
        }
        drop(job);
        let mut p = lock(&shared.progress);
        p.done += 1;
        p.damaged.extend(damaged);
        shared.idle.notify_all();
    }
}

/// Calls `f` with `t`'s values as f32, in place when `t` is an f32 CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    if t.dtype() == DType::F32 && t.device().is_cpu() {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&v[a..b]));
        }
    }
    let v = t
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(f(&v))
}

/// No NaN or infinity in `v` (branch-free blocks, so it vectorises).
fn all_finite(v: &[f32]) -> bool {
    v.chunks(1024)
        .all(|c| c.iter().map(|x| usize::from(!x.is_finite())).sum::<usize>() == 0)
}

fn user_error(key: &str, reason: String) -> RunError {
    RunError::Config(ConfigError::invalid(key, reason))
}

impl Trainer {
    /// Restores expert `expert` of the MoE layer `model.layers.{layer}` (weights and AdamW
    /// moments) from its replica, e.g. after it was pruned or damaged by mistake; training
    /// continues from the restored state. Needs `replica.every > 0`. Returns the step whose
    /// state the replica held; the event goes to `metrics.jsonl` with the next step.
    pub fn restore_expert(&mut self, layer: usize, expert: usize) -> RunResult<u64> {
        let pos = self.replicated_layer(layer, expert, "restore_expert")?;
        if self.cfg.replica.every == 0 {
            return Err(user_error(
                "replica.every",
                "is 0, so no replicas are kept; set replica.every > 0 to restore experts".into(),
            ));
        }
        self.ensure_replicas()?;
        self.restore_from_replica(pos, expert, self.step + 1, CAUSE_MANUAL)?
            .ok_or_else(|| {
                user_error(
                    "replica.every",
                    format!("expert {expert} of layer {layer} has no finite replica yet"),
                )
            })
    }

    /// Restore events not yet written to `metrics.jsonl` (`run` writes them; a caller of
    /// [`Trainer::train_step`] may take them).
    pub fn take_restore_events(&mut self) -> Vec<RestoreEvent> {
        std::mem::take(&mut self.restore_events)
    }

    /// The replica of an expert (after waiting for the thread); `None` when replicas are off
    /// or the expert has none.
    pub fn expert_replica(&self, layer: usize, expert: usize) -> Option<ExpertReplica> {
        let r = self.replicas.as_ref()?;
        let pos = r.layers().iter().position(|l| l.layer == layer)?;
        r.replica(pos, expert)
    }

    /// The MoE layers of the model with their expert ranges.
    fn moe_param_layers(&self) -> Vec<ReplicatedLayer> {
        let names = self.store.all();
        self.model
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match &b.ffn {
                switchyard_models::Ffn::Moe(m) => Some((i, m)),
                switchyard_models::Ffn::Dense(_) => None,
            })
            .filter_map(|(i, m)| {
                let id = m.experts.packed.as_tensor().id();
                let (param, var) = names.iter().find(|(_, v)| v.as_tensor().id() == id)?;
                Some(ReplicatedLayer {
                    layer: i,
                    param: param.clone(),
                    var: var.clone(),
                    experts: expert_ranges(&m.experts.layout),
                })
            })
            .collect()
    }

    /// Checks `layer`/`expert` against the model; the position among the MoE layers.
    fn replicated_layer(&self, layer: usize, expert: usize, what: &str) -> RunResult<usize> {
        let layers = self.moe_param_layers();
        let Some(pos) = layers.iter().position(|l| l.layer == layer) else {
            let moe: Vec<usize> = layers.iter().map(|l| l.layer).collect();
            return Err(user_error(
                what,
                format!("layer {layer} is not an MoE layer; the MoE layers are {moe:?}"),
            ));
        };
        let n = layers[pos].experts.len();
        if expert >= n {
            return Err(user_error(
                what,
                format!(
                    "layer {layer} has {n} routed experts (0..{n}); there is no expert {expert}"
                ),
            ));
        }
        Ok(pos)
    }

    /// Starts the replicas (with a first snapshot of the current state) if they are on and
    /// not started yet. The first snapshot copies the experts' weights on this thread, once.
    pub(super) fn ensure_replicas(&mut self) -> RunResult<()> {
        if self.cfg.replica.every == 0 || self.replicas.is_some() {
            return Ok(());
        }
        let layers = self.moe_param_layers();
        if layers.is_empty() {
            tracing::info!(
                "replica.every is set but the model has no MoE layer: nothing to replicate"
            );
        }
        let mut snaps = Vec::with_capacity(layers.len());
        for l in &layers {
            snaps.extend(self.opt.snapshot(&l.param)?);
        }
        let mut r = Replicas::start(self.cfg.replica.every, layers).map_err(RunError::io(
            "start the expert-replica thread for",
            &self.cfg.run_dir,
        ))?;
        r.submit(self.step, snaps);
        self.replicas = Some(r);
        Ok(())
    }

    /// The optimiser update of step `step`; at a replica step, first restores the experts the
    /// previous snapshot found damaged, then hands the new state to the thread.
    pub(super) fn update(&mut self, grads: &GradStore, lr: f64, step: u64) -> RunResult<()> {
        let Some(r) = &mut self.replicas else {
            self.opt.step(grads, lr)?;
            return Ok(());
        };
        r.due |= step.is_multiple_of(r.every);
        if !r.due {
            self.opt.step(grads, lr)?;
            return Ok(());
        }
        let damaged = r.wait_idle();
        for (pos, expert, _) in damaged {
            // still damaged now? (a restore since the snapshot may have repaired it)
            if !self.damaged_experts(pos)?.contains(&expert) {
                continue;
            }
            if self
                .restore_from_replica(pos, expert, step, CAUSE_CHECK)?
                .is_none()
            {
                tracing::warn!(
                    "step {step}: an expert is damaged and has no finite replica to restore"
                );
            }
        }
        let r = self.replicas.as_mut().expect("checked above");
        let names: Vec<&str> = r.layers.iter().map(|l| l.param.as_str()).collect();
        let snaps = self.opt.step_and_snapshot(grads, lr, &names)?;
        r.submit(step, snaps);
        r.due = false;
        Ok(())
    }

    /// After a non-finite step: restores every expert whose weights or moments are not
    /// finite. `Ok(true)` if at least one was and none lacks a replica (the step may be
    /// redone).
    pub(super) fn restore_damaged_experts(&mut self, step: u64) -> RunResult<bool> {
        let Some(r) = &self.replicas else {
            return Ok(false);
        };
        // the scan below finds every damaged expert: the thread's reports are covered by it
        r.wait_idle();
        let mut damaged = Vec::new();
        for pos in 0..r.layers().len() {
            damaged.extend(self.damaged_experts(pos)?.into_iter().map(|e| (pos, e)));
        }
        let mut all = !damaged.is_empty();
        for (pos, e) in damaged {
            all &= self
                .restore_from_replica(pos, e, step, CAUSE_NON_FINITE)?
                .is_some();
        }
        Ok(all)
    }

    /// The experts of replicated layer `pos` whose weights or moments hold a NaN or an
    /// infinity now.
    fn damaged_experts(&self, pos: usize) -> RunResult<Vec<usize>> {
        let Some(l) = self.replicas.as_ref().and_then(|r| r.layers().get(pos)) else {
            return Ok(Vec::new());
        };
        let (m, v) = self.opt.moments(&l.param).unwrap_or((&[], &[]));
        Ok(with_f32(l.var.as_tensor(), |w| {
            l.experts
                .iter()
                .enumerate()
                .filter(|(_, rg)| {
                    let moments_ok = m.is_empty()
                        || (all_finite(&m[(*rg).clone()]) && all_finite(&v[(*rg).clone()]));
                    !(all_finite(&w[(*rg).clone()]) && moments_ok)
                })
                .map(|(e, _)| e)
                .collect()
        })?)
    }

    /// Writes the replica of (`pos`, `expert`) back into the weights and the moments; logs
    /// and records the event. `None` if there is no replica.
    fn restore_from_replica(
        &mut self,
        pos: usize,
        expert: usize,
        step: u64,
        cause: &str,
    ) -> RunResult<Option<u64>> {
        let Some(r) = &self.replicas else {
            return Ok(None);
        };
        let l = r.layers()[pos].clone();
        let Some(rep) = r.replica(pos, expert) else {
            return Ok(None);
        };
        let range = l.experts[expert].clone();
        let packed = l.var.as_tensor();
        let src = Tensor::from_slice(&rep.weights, rep.weights.len(), packed.device())?
            .to_dtype(packed.dtype())?;
        packed.slice_set(&src, 0, range.start)?;
        self.opt
            .set_moments(&l.param, range, &rep.exp_avg, &rep.exp_avg_sq)?;
        self.progress.suspend(|| {
            tracing::warn!(
                "step {step}: expert {expert} of layer {} restored from its replica of step {} ({cause})",
                l.layer,
                rep.step
            )
        });
        self.restore_events.push(RestoreEvent {
            event: "expert_restored".into(),
            step,
            layer: l.layer,
            expert,
            replica_step: rep.step,
            cause: cause.into(),
        });
        Ok(Some(rep.step))
    }

    /// The test-only expert fault of this step, if any (fires once; see [`super::fault`]).
    pub(super) fn inject_expert_fault(&mut self, step: u64) -> RunResult<()> {
        let Some(f @ ExpertFault { layer, expert, .. }) =
            self.faults.nan_expert.filter(|f| f.step == step)
        else {
            return Ok(());
        };
        self.faults.nan_expert = None;
        let pos = self.replicated_layer(layer, expert, NAN_EXPERT_ENV)?;
        let l = &self.moe_param_layers()[pos];
        let range = l.experts[expert].clone();
        tracing::warn!("step {step}: fault injection: NaN into {f:?}");
        if f.moments {
            let nan = vec![f32::NAN; range.len()];
            let (_, v) = self.opt.moments(&l.param).expect("an optimised parameter");
            let v = v[range.clone()].to_vec();
            self.opt.set_moments(&l.param, range, &nan, &v)?;
        } else {
            let packed = l.var.as_tensor();
            let nan =
                Tensor::full(f32::NAN, range.len(), packed.device())?.to_dtype(packed.dtype())?;
            packed.slice_set(&nan, 0, range.start)?;
        }
        Ok(())
    }
}
