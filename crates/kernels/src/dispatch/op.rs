//! The dispatch as a candle custom op with an explicit backward, and [`backward`]: the
//! training step's `loss.backward()` that hands the kernels' expert-weight gradients to the
//! gradient store without candle's zeros-then-add.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor, WithDType};

use super::{KFloat, Saved};
use crate::layout::ExpertLayout;
use crate::plan::DispatchPlan;
use crate::{KernelError, KernelOptions, Result};

enum SavedAny {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

/// The dispatch as a candle custom op with an explicit backward.
///
/// The forward stores the expert pre-activations in the op itself; candle keeps the op alive
/// in the graph, so the backward finds them without recomputing the first matmuls.
pub struct MoeDispatchOp {
    layout: Arc<ExpertLayout>,
    plan: Arc<DispatchPlan>,
    opts: KernelOptions,
    saved: Mutex<Option<SavedAny>>,
}

impl MoeDispatchOp {
    pub fn new(layout: Arc<ExpertLayout>, plan: Arc<DispatchPlan>, opts: KernelOptions) -> Self {
        Self {
            layout,
            plan,
            opts,
            saved: Mutex::new(None),
        }
    }
}

fn cpu_slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("moe_dispatch: {what} must be contiguous"),
    }
}

/// Runs `f` on the contiguous host data of `t` (no copy when `t` is already contiguous).
fn with_host<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(cpu_slice::<T>(cpu, layout, "tensor")?)),
        _ => candle_core::bail!("moe_dispatch runs on CPU tensors only for now"),
    }
}

impl MoeDispatchOp {
    fn fwd<T: KFloat + WithDType>(
        &self,
        x: &[T],
        w: &[T],
        p: &[T],
        wrap: fn(Saved<T>) -> SavedAny,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, saved) = super::forward(x, w, p, &self.layout, &self.plan, &self.opts);
        *self.saved.lock().expect("dispatch op poisoned") = Some(wrap(saved));
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((self.plan.num_tokens, self.layout.d_model)),
        ))
    }

    fn bwd_typed<T: KFloat + WithDType + Deferrable>(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
        gy: &Tensor,
        saved: &Saved<T>,
    ) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let g = with_host::<T, _>(x, |x| {
            with_host::<T, _>(w, |w| {
                with_host::<T, _>(p, |p| {
                    with_host::<T, _>(gy, |gy| {
                        super::backward(x, w, p, &self.layout, &self.plan, saved, gy, &self.opts)
                    })
                })
            })
        })????;
        let dev = x.device();
        let dp = match defer(p, g.dp) {
            None => None,
            Some(dp) => Some(Tensor::from_vec(dp, p.shape(), dev)?),
        };
        Ok((
            Tensor::from_vec(g.dx, x.shape(), dev)?,
            Tensor::from_vec(g.dw, w.shape(), dev)?,
            dp,
        ))
    }
}

impl CustomOp3 for MoeDispatchOp {
    fn name(&self) -> &'static str {
        "moe_dispatch"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => self.fwd::<f32>(
                cpu_slice(s1, l1, "x")?,
                cpu_slice(s2, l2, "weights")?,
                cpu_slice(s3, l3, "expert params")?,
                SavedAny::F32,
            ),
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => self.fwd::<f64>(
                cpu_slice(s1, l1, "x")?,
                cpu_slice(s2, l2, "weights")?,
                cpu_slice(s3, l3, "expert params")?,
                SavedAny::F64,
            ),
            _ => candle_core::bail!(
                "moe_dispatch: x, weights and expert params must all be f32 or all f64, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let guard = self.saved.lock().expect("dispatch op poisoned");
        let (dx, dw, dp) = match (&*guard, x.dtype()) {
            (Some(SavedAny::F32(s)), DType::F32) => self.bwd_typed::<f32>(x, w, p, gy, s)?,
            (Some(SavedAny::F64(s)), DType::F64) => self.bwd_typed::<f64>(x, w, p, gy, s)?,
            _ => candle_core::bail!(
                "moe_dispatch backward: no saved forward state of dtype {:?}",
                x.dtype()
            ),
        };
        Ok((Some(dx), Some(dw), dp))
    }
}

/// Fast dispatch through the custom op; same contract as the readable
/// `switchyard_core::dispatch::dispatch_reference`:
/// `y[t] = Σ_{a: token(a)=t} w[a] · expert(a)(x[t])`.
///
/// # Shapes
/// `x [T, d]`, `w [n]`, `packed [layout.total]` → `[T, d]`.
pub fn dispatch(
    x: &Tensor,
    w: &Tensor,
    packed: &Tensor,
    layout: &Arc<ExpertLayout>,
    plan: &Arc<DispatchPlan>,
    opts: &KernelOptions,
) -> Result<Tensor> {
    check_inputs(x, w, packed, layout, plan)?;
    let op = MoeDispatchOp::new(layout.clone(), plan.clone(), *opts);
    Ok(x.contiguous()?
        .apply_op3(&w.contiguous()?, &packed.contiguous()?, op)?)
}

/// Checks the shapes of a dispatch's inputs against the layout and the plan.
pub fn check_inputs(
    x: &Tensor,
    w: &Tensor,
    p: &Tensor,
    layout: &ExpertLayout,
    plan: &DispatchPlan,
) -> Result<()> {
    let bad = |why: String| Err(KernelError::input("dispatch", why));
    if x.dims() != [plan.num_tokens, layout.d_model] {
        return bad(format!(
            "x has shape {:?}, expected [{}, {}]",
            x.dims(),
            plan.num_tokens,
            layout.d_model
        ));
    }
    if w.dims() != [plan.len()] {
        return bad(format!(
            "weights have shape {:?}, expected [{}] (one per assignment)",
            w.dims(),
            plan.len()
        ));
    }
    if p.dims() != [layout.total] {
        return bad(format!(
            "expert params have shape {:?}, expected [{}]",
            p.dims(),
            layout.total
        ));
    }
    if plan.num_experts != layout.num_experts() {
        return bad(format!(
            "plan has {} experts, layout {}",
            plan.num_experts,
            layout.num_experts()
        ));
    }
    Ok(())
}

/// An expert-parameter gradient held back from candle's accumulation (see [`backward`]).
enum DeferredGrad {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

trait Deferrable: Sized {
    fn wrap(v: Vec<Self>) -> DeferredGrad;
    fn add_into(g: &mut DeferredGrad, v: &[Self]) -> bool;
}

macro_rules! deferrable {
    ($t:ident, $v:ident) => {
        impl Deferrable for $t {
            fn wrap(v: Vec<Self>) -> DeferredGrad {
                DeferredGrad::$v(v)
            }
            fn add_into(g: &mut DeferredGrad, v: &[Self]) -> bool {
                match g {
                    DeferredGrad::$v(acc) if acc.len() == v.len() => {
                        acc.iter_mut().zip(v).for_each(|(a, &b)| *a += b);
                        true
                    }
                    _ => false,
                }
            }
        }
    };
}
deferrable!(f32, F32);
deferrable!(f64, F64);

type Deferred = Vec<(Tensor, DeferredGrad)>;

thread_local! {
    /// `Some` while [`backward`] runs on this thread.
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// Inside [`backward`], keeps the gradient `dp` of a packed-parameter variable `p` aside
/// (summed with any earlier one of the same variable, in the order candle visits the ops) and
/// returns `None`; otherwise returns `dp` for candle to accumulate.
fn defer<T: Deferrable>(p: &Tensor, dp: Vec<T>) -> Option<Vec<T>> {
    if !p.is_variable() {
        return Some(dp);
    }
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        let Some(list) = d.as_mut() else {
            return Some(dp);
        };
        match list.iter_mut().find(|(t, _)| t.id() == p.id()) {
            Some((_, acc)) => {
                if T::add_into(acc, &dp) {
                    None
                } else {
                    Some(dp)
                }
            }
            None => {
                list.push((p.clone(), T::wrap(dp)));
                None
            }
        }
    })
}

/// `loss.backward()`, with the dispatch ops' gradients of the packed expert parameters
/// handed to the [`GradStore`] directly instead of through candle's accumulation.
///
/// candle 0.11 adds every gradient into `zeros_like(param)` and allocates the sum
/// (`GradStore::or_insert` then `add`), so for the packed expert weights — most of a layer's
/// parameters — a plain `loss.backward()` allocates and writes the parameter size three times.
/// Here each packed variable's gradient is the kernel's own buffer (summed in place when
/// several dispatch calls use the same variable), inserted into the store once candle is done;
/// a gradient that candle also holds for that variable (from other ops) is added to it.
///
/// Plain `loss.backward()` stays correct and returns the same values (bitwise, when only
/// dispatch ops use the packed variables); this is an optimisation, not a requirement.
/// No buffer is reused: each returned gradient owns fresh memory.
pub fn backward(loss: &Tensor) -> candle_core::Result<GradStore> {
    struct Restore(Option<Option<Deferred>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take().flatten();
            DEFERRED.with(|d| *d.borrow_mut() = prev);
        }
    }
    let restore = Restore(Some(DEFERRED.with(|d| d.replace(Some(Vec::new())))));
    let grads = loss.backward();
    let deferred = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    let mut grads = grads?;
    for (var, g) in deferred {
        let g = match g {
            DeferredGrad::F32(v) => Tensor::from_vec(v, var.shape(), var.device())?,
            DeferredGrad::F64(v) => Tensor::from_vec(v, var.shape(), var.device())?,
        };
        let g = match grads.remove(&var) {
            Some(prev) => prev.add(&g)?,
            None => g,
        };
        grads.insert(&var, g);
    }
    Ok(grads)
}
