//! AdamW with decoupled weight decay, over a [`ParamStore`]'s named `Var`s.
//!
//! candle-nn's `AdamW` keeps its moments private, so an exact resume is impossible with it.
//! This one mirrors PyTorch's `torch.optim.AdamW` (the single-tensor path,
//! `_single_tensor_adam` with `decoupled_weight_decay=True`) operation by operation, exports
//! its whole state as named tensors for `optimizer.safetensors`, and loads it back with every
//! mismatch reported at once.
//!
//! Determinism: each element's update depends only on that element, all arithmetic is f32 in
//! the order written below (scalars are computed in f64 and rounded to f32 once, as PyTorch
//! does), and parameters are visited in the store's sorted name order, so two runs with the
//! same inputs give bitwise-identical parameters and moments on any thread count.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use candle_core::{backprop::GradStore, DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use switchyard_core::ParamStore;

use crate::{Result, TrainError};

/// Decides whether a parameter, given its name and shape, gets weight decay.
pub type DecayRule = fn(name: &str, shape: &[usize]) -> bool;

/// The default [`DecayRule`]: decay matrices and higher-rank weights only.
///
/// No decay for any parameter of rank ≤ 1 (biases, norm gains, per-expert scalars), for any
/// name ending in `norm.weight` (`ln_f_norm.weight`, `input_layernorm.weight`, ... whatever
/// their rank) and for any bias (`bias` or a name ending in `.bias`). Shrinking a norm gain or
/// a bias towards zero regularises nothing useful and only fights the model (the GPT-2 /
/// nanoGPT convention). Embeddings and expert weights are decayed.
pub fn default_decay_rule(name: &str, shape: &[usize]) -> bool {
    let is_bias = name == "bias" || name.ends_with(".bias");
    !(shape.len() <= 1 || is_bias || name.ends_with("norm.weight"))
}

fn default_decay_rule_fn() -> DecayRule {
    default_decay_rule
}

/// Hyperparameters of [`AdamW`]. Defaults are PyTorch's `torch.optim.AdamW` defaults.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Base (peak) learning rate. [`AdamW::step`] takes the current rate explicitly, so a
    /// schedule can drive it; [`AdamW::step_base_lr`] uses this one.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied as `p -= lr * weight_decay * p` before the Adam update.
    pub weight_decay: f64,
    /// Which parameters get weight decay; not serialised (a function), always
    /// [`default_decay_rule`] after deserialising.
    #[serde(skip, default = "default_decay_rule_fn")]
    pub decay_rule: DecayRule,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            decay_rule: default_decay_rule,
        }
    }
}

impl AdamWConfig {
    /// Checks every field; [`AdamW::new`] calls this.
    pub fn validate(&self) -> Result<()> {
        check_lr("lr", self.lr)?;
        for (field, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(TrainError::config(
                    field,
                    format!("{b} is outside [0, 1); 0.9 and 0.999 are usual"),
                ));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(TrainError::config(
                "eps",
                format!("{} must be finite and > 0, e.g. 1e-8", self.eps),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(TrainError::config(
                "weight_decay",
                format!(
                    "{} must be finite and >= 0 (0 turns decay off)",
                    self.weight_decay
                ),
            ));
        }
        Ok(())
    }
}

fn check_lr(field: &str, lr: f64) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(TrainError::config(
            field,
            format!("learning rate {lr} must be finite and >= 0"),
        ))
    }
}

/// Optimiser state of one parameter. Like PyTorch, each parameter counts its own steps: a
/// parameter that got no gradient in a step is skipped entirely (no decay, no moment update).
struct ParamState {
    name: String,
    var: Var,
    shape: Vec<usize>,
    decay: bool,
    step: u64,
    /// Elements that are not updated (no decay, no moment update); see [`AdamW::freeze`].
    frozen: Option<Vec<bool>>,
    /// Shared only while a [`ParamSnapshot`] holds them (copy-on-write: an update that finds
    /// them shared writes a private copy, so a snapshot never changes under its holder).
    exp_avg: Arc<Vec<f32>>,
    exp_avg_sq: Arc<Vec<f32>>,
}

/// One parameter's value and AdamW moments as they were right after an update, for a reader
/// on another thread (expert replicas, `trainer::replica`). Taking one copies nothing: `value`
/// is the tensor the update wrote the parameter from, and the moments are shared
/// copy-on-write (see [`AdamW::step_and_snapshot`]).
#[derive(Clone, Debug)]
pub struct ParamSnapshot {
    pub name: String,
    /// The parameter's value (its own storage: later updates do not change it).
    pub value: Tensor,
    pub exp_avg: Arc<Vec<f32>>,
    pub exp_avg_sq: Arc<Vec<f32>>,
}

/// AdamW over the parameters a [`ParamStore`] held when the optimiser was created.
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<ParamState>,
}

/// Suffixes of the optimiser's state tensors: `<param>.exp_avg` (f32, the parameter's shape),
/// `<param>.exp_avg_sq` (same) and `<param>.step` (i64 scalar).
pub const STATE_SUFFIXES: [&str; 3] = ["exp_avg", "exp_avg_sq", "step"];

impl AdamW {
    /// Snapshots the store's parameters (sorted by name) with zero moments and step 0.
    /// Parameters added to the store later are not optimised.
    pub fn new(store: &ParamStore, cfg: AdamWConfig) -> Result<Self> {
        cfg.validate()?;
        let mut params = Vec::new();
        for (name, var) in store.all() {
            if !var.dtype().is_float() {
                return Err(TrainError::Param {
                    name,
                    reason: format!(
                        "dtype {:?}; AdamW only updates float parameters",
                        var.dtype()
                    ),
                });
            }
            let shape = var.dims().to_vec();
            let n = var.elem_count();
            let decay = (cfg.decay_rule)(&name, &shape);
            params.push(ParamState {
                name,
                var,
                shape,
                decay,
                step: 0,
                frozen: None,
                exp_avg: Arc::new(vec![0.0; n]),
                exp_avg_sq: Arc::new(vec![0.0; n]),
            });
        }
        Ok(Self { cfg, params })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Names of the optimised parameters, in update order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// Whether `name` gets weight decay; `None` if the optimiser does not hold it.
    pub fn decays(&self, name: &str) -> Option<bool> {
        self.find(name).map(|p| p.decay)
    }

    /// How many updates `name` has received; `None` if the optimiser does not hold it.
    pub fn param_step(&self, name: &str) -> Option<u64> {
        self.find(name).map(|p| p.step)
    }

    fn find(&self, name: &str) -> Option<&ParamState> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Freezes the elements of parameter `name` in `ranges` (flat indices): later steps leave
    /// them, and their moments, exactly as they are (the step count is per parameter and still
    /// advances). An empty list unfreezes the parameter. Not part of the saved state: the
    /// caller sets it again after a resume.
    pub fn freeze(&mut self, name: &str, ranges: &[std::ops::Range<usize>]) -> Result<()> {
        let Some(st) = self.params.iter_mut().find(|p| p.name == name) else {
            return Err(TrainError::Param {
                name: name.into(),
                reason: "no such parameter to freeze".into(),
            });
        };
        let n = st.exp_avg.len();
        if ranges.is_empty() {
            st.frozen = None;
            return Ok(());
        }
        let mut mask = vec![false; n];
        for r in ranges {
            if r.end > n || r.start > r.end {
                return Err(TrainError::Param {
                    name: name.into(),
                    reason: format!("frozen range {r:?} is outside its {n} elements"),
                });
            }
            mask[r.clone()].iter_mut().for_each(|m| *m = true);
        }
        st.frozen = Some(mask);
        Ok(())
    }

    /// One update with the configured base learning rate.
    pub fn step_base_lr(&mut self, grads: &GradStore) -> Result<()> {
        self.step(grads, self.cfg.lr)
    }

    /// One AdamW update at learning rate `lr`. Parameters without a gradient in `grads` are
    /// skipped, as in PyTorch. Parameters of f16/bf16/f64 are updated through f32.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_inner(grads, lr, &[]).map(drop)
    }

    /// [`AdamW::step`], then a [`ParamSnapshot`] of each parameter in `names` (in that order;
    /// names the optimiser does not hold are left out). The update is bitwise the same as
    /// [`AdamW::step`]'s. Nothing is copied here: a parameter's snapshot is the tensor its
    /// new value was written from, and its moments are shared until the next update of that
    /// parameter, which writes them into a private copy only if the snapshot is still held
    /// then. A parameter without a gradient (not updated) is copied.
    pub fn step_and_snapshot(
        &mut self,
        grads: &GradStore,
        lr: f64,
        names: &[&str],
    ) -> Result<Vec<ParamSnapshot>> {
        let mut snaps = self.step_inner(grads, lr, names)?;
        for name in names {
            if snaps.iter().all(|s| s.name != *name) {
                if let Some(s) = self.snapshot(name)? {
                    snaps.push(s);
                }
            }
        }
        snaps.sort_by_key(|s| names.iter().position(|n| *n == s.name));
        Ok(snaps)
    }

    /// A [`ParamSnapshot`] of `name` now (its value copied, its moments shared); `None` if
    /// the optimiser does not hold it.
    pub fn snapshot(&self, name: &str) -> Result<Option<ParamSnapshot>> {
        let Some(st) = self.find(name) else {
            return Ok(None);
        };
        Ok(Some(ParamSnapshot {
            name: st.name.clone(),
            value: st.var.as_tensor().copy()?,
            exp_avg: Arc::clone(&st.exp_avg),
            exp_avg_sq: Arc::clone(&st.exp_avg_sq),
        }))
    }

    /// `name`'s moments (`exp_avg`, `exp_avg_sq`, flat); `None` if the optimiser does not
    /// hold it.
    pub fn moments(&self, name: &str) -> Option<(&[f32], &[f32])> {
        self.find(name)
            .map(|p| (p.exp_avg.as_slice(), p.exp_avg_sq.as_slice()))
    }

    /// Overwrites the flat range `range` of `name`'s moments (an expert's slice, when one is
    /// restored from its replica). The parameter's step count is not changed.
    pub fn set_moments(
        &mut self,
        name: &str,
        range: Range<usize>,
        exp_avg: &[f32],
        exp_avg_sq: &[f32],
    ) -> Result<()> {
        let st = self
            .params
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| TrainError::Param {
                name: name.into(),
                reason: "the optimiser does not hold this parameter".into(),
            })?;
        let n = st.exp_avg.len();
        if range.end > n || exp_avg.len() != range.len() || exp_avg_sq.len() != range.len() {
            return Err(TrainError::Param {
                name: name.into(),
                reason: format!(
                    "moments for {range:?} ({} and {} values) do not fit {n} elements",
                    exp_avg.len(),
                    exp_avg_sq.len()
                ),
            });
        }
        Arc::make_mut(&mut st.exp_avg)[range.clone()].copy_from_slice(exp_avg);
        Arc::make_mut(&mut st.exp_avg_sq)[range].copy_from_slice(exp_avg_sq);
        Ok(())
    }

    fn step_inner(
        &mut self,
        grads: &GradStore,
        lr: f64,
        snapshot: &[&str],
    ) -> Result<Vec<ParamSnapshot>> {
        check_lr("lr (step)", lr)?;
        let mut snaps = Vec::new();
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } = self.cfg;
        for st in &mut self.params {
            let Some(grad) = grads.get(st.var.as_tensor()) else {
                continue;
            };
            if grad.dims() != st.shape.as_slice() {
                return Err(TrainError::Param {
                    name: st.name.clone(),
                    reason: format!(
                        "gradient has shape {:?}, the parameter {:?}",
                        grad.dims(),
                        st.shape
                    ),
                });
            }
            let g = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let mut p = st
                .var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            st.step += 1;
            let t = st.step as f64;

            // Scalars as PyTorch forms them: Python floats (f64), rounded to f32 by the kernel.
            // param.mul_(1 - lr * weight_decay)
            let decay = (1.0 - lr * weight_decay) as f32;
            // exp_avg.lerp_(grad, 1 - beta1)
            let w1 = (1.0 - beta1) as f32;
            // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            let (b2, one_minus_b2) = (beta2 as f32, (1.0 - beta2) as f32);
            // bias_correction1 = 1 - beta1 ** step; step_size = lr / bias_correction1
            let neg_step_size = (-(lr / (1.0 - beta1.powf(t)))) as f32;
            // bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
            let bc2_sqrt = (1.0 - beta2.powf(t)).sqrt() as f32;
            let eps = eps as f32;

            // one element's update; a frozen element is left alone
            let update = |p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
                if st.decay {
                    // p -= lr * wd * p
                    *p *= decay;
                }
                // m = b1 m + (1 - b1) g, as torch.lerp: m + w (g - m) for w < 0.5,
                // else g - (g - m)(1 - w)
                *m = if w1 < 0.5 {
                    *m + w1 * (g - *m)
                } else {
                    g - (g - *m) * (1.0 - w1)
                };
                // v = b2 v + (1 - b2) g²
                *v = *v * b2 + one_minus_b2 * g * g;
                // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps) = sqrt(v̂) + eps
                let denom = v.sqrt() / bc2_sqrt + eps;
                // param.addcdiv_(exp_avg, denom, value=-step_size): p -= lr m̂ / (sqrt(v̂) + eps)
                *p += neg_step_size * (*m / denom);
            };
            // copy-on-write: a snapshot still held elsewhere keeps the old values
            let (exp_avg, exp_avg_sq) = (
                Arc::make_mut(&mut st.exp_avg),
                Arc::make_mut(&mut st.exp_avg_sq),
            );
            let elems = p.iter_mut().zip(&g).zip(exp_avg).zip(exp_avg_sq);
            match st.frozen.as_deref() {
                None => elems.for_each(|(((p, &g), m), v)| update(p, g, m, v)),
                Some(frozen) => elems
                    .zip(frozen)
                    .filter(|(_, &f)| !f)
                    .for_each(|((((p, &g), m), v), _)| update(p, g, m, v)),
            }
            let dev = st.var.device();
            let new = Tensor::from_vec(p, st.shape.as_slice(), dev)?.to_dtype(st.var.dtype())?;
            st.var.set(&new)?;
            if snapshot.contains(&st.name.as_str()) {
                snaps.push(ParamSnapshot {
                    name: st.name.clone(),
                    value: new,
                    exp_avg: Arc::clone(&st.exp_avg),
                    exp_avg_sq: Arc::clone(&st.exp_avg_sq),
                });
            }
        }
        Ok(snaps)
    }

    /// The whole state as named tensors (see [`STATE_SUFFIXES`]), in parameter name order.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.params.len());
        for st in &self.params {
            let dev = st.var.device();
            let shape = st.shape.as_slice();
            out.push((
                format!("{}.exp_avg", st.name),
                Tensor::from_slice(&st.exp_avg, shape, dev)?,
            ));
            out.push((
                format!("{}.exp_avg_sq", st.name),
                Tensor::from_slice(&st.exp_avg_sq, shape, dev)?,
            ));
            out.push((
                format!("{}.step", st.name),
                Tensor::new(st.step as i64, dev)?,
            ));
        }
        Ok(out)
    }

    /// Replaces the whole state with `tensors` (as written by [`AdamW::state_tensors`]).
    /// Validates names, shapes and dtypes first and lists every problem in one
    /// [`TrainError::OptimizerState`]; on error the optimiser is unchanged.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut problems = Vec::new();
        let mut expected = std::collections::BTreeSet::new();
        for st in &self.params {
            for suffix in STATE_SUFFIXES {
                let key = format!("{}.{suffix}", st.name);
                let (want_dtype, want_shape): (DType, &[usize]) = if suffix == "step" {
                    (DType::I64, &[])
                } else {
                    (DType::F32, &st.shape)
                };
                match tensors.get(&key) {
                    None => {
                        problems.push(format!("missing `{key}` ({want_dtype:?} {want_shape:?})"))
                    }
                    Some(t) => {
                        if t.dims() != want_shape {
                            problems.push(format!(
                                "`{key}`: shape {:?} in the state vs {want_shape:?} expected",
                                t.dims()
                            ));
                        }
                        if t.dtype() != want_dtype {
                            problems.push(format!(
                                "`{key}`: dtype {:?} in the state vs {want_dtype:?} expected",
                                t.dtype()
                            ));
                        }
                    }
                }
                expected.insert(key);
            }
        }
        for key in tensors.keys().filter(|k| !expected.contains(*k)) {
            problems.push(format!(
                "unexpected `{key}` (no such parameter in the model)"
            ));
        }
        let mut loaded = Vec::with_capacity(self.params.len());
        if problems.is_empty() {
            for st in &self.params {
                let get = |s: &str| &tensors[&format!("{}.{s}", st.name)];
                let step = get("step").to_scalar::<i64>()?;
                if step < 0 {
                    problems.push(format!("`{}.step`: negative step count {step}", st.name));
                }
                let m = get("exp_avg").flatten_all()?.to_vec1::<f32>()?;
                let v = get("exp_avg_sq").flatten_all()?.to_vec1::<f32>()?;
                loaded.push((step as u64, m, v));
            }
        }
        if !problems.is_empty() {
            return Err(TrainError::OptimizerState { problems });
        }
        for (st, (step, m, v)) in self.params.iter_mut().zip(loaded) {
            st.step = step;
            st.exp_avg = Arc::new(m);
            st.exp_avg_sq = Arc::new(v);
        }
        Ok(())
    }
}
