//! The kernels on plans large enough to run in several waves (see `dispatch::kernel`), and
//! `dispatch::backward` (candle's backward with the packed expert gradients handed over
//! directly) against plain `loss.backward()`.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use switchyard_core::dispatch::{self, dispatch, dispatch_reference, kernel};
use switchyard_core::expert::ExpertLayout;
use switchyard_core::{
    Activation, DispatchImpl, DispatchPlan, ExpertSpec, Init, MoeConfig, ParamBuilder, ParamStore,
    RouterConfig,
};

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

const TOKENS: usize = 2600;
const D_MODEL: usize = 16;
const K: usize = 4;
const E: usize = 10;

struct Big {
    layout: Arc<ExpertLayout>,
    plan: Arc<DispatchPlan>,
    x: Var,
    w: Var,
    p: Var,
    proj: Tensor,
}

/// 2600 tokens × top-4 over 10 experts of mixed kinds: 10 400 assignments, so several waves
/// of at least `WAVE_MIN_ROWS` rows, experts of ~1000 rows (several row tiles each).
fn big() -> Big {
    let specs: Vec<ExpertSpec> = (0..E)
        .map(|e| match e % 3 {
            0 => ExpertSpec::swiglu(8 + e),
            1 => ExpertSpec::ffn(Activation::Gelu, 12),
            _ => ExpertSpec::ffn(Activation::Relu, 5 + e),
        })
        .collect();
    let dev = Device::Cpu;
    let pb = ParamBuilder::new(&ParamStore::new(), 8, DType::F32, &dev);
    let layout = Arc::new(ExpertLayout::new(D_MODEL, &specs));
    let mut pairs: Vec<(u32, u32)> = (0..TOKENS as u32)
        .flat_map(|t| (0..K as u32).map(move |j| (t, (t * 3 + j * 2 + t / 7) % E as u32)))
        .collect();
    pairs.sort();
    pairs.dedup();
    let plan = Arc::new(DispatchPlan::from_assignments(TOKENS, E, &pairs).unwrap());
    assert!(plan.len() > 3 * kernel::WAVE_MIN_ROWS, "several waves");
    let mk = |n: usize, shape: &[usize]| {
        let t = Tensor::from_vec(pb.sample(n, Init::Normal(0.5)), shape, &dev)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        Var::from_tensor(&t).unwrap()
    };
    Big {
        x: mk(TOKENS * D_MODEL, &[TOKENS, D_MODEL]),
        w: mk(plan.len(), &[plan.len()]),
        p: mk(layout.total, &[layout.total]),
        proj: mk(TOKENS * D_MODEL, &[TOKENS, D_MODEL]).as_tensor().clone(),
        layout,
        plan,
    }
}

impl Big {
    fn vars(&self) -> [&Var; 3] {
        [&self.x, &self.w, &self.p]
    }

    /// `(y, loss)` through the kernel or the reference.
    fn run(&self, reference: bool) -> (Tensor, Tensor) {
        let (x, w, p) = (self.x.as_tensor(), self.w.as_tensor(), self.p.as_tensor());
        let y = if reference {
            dispatch_reference(x, w, p, &self.layout, &self.plan).unwrap()
        } else {
            dispatch(x, w, p, &self.layout, &self.plan).unwrap()
        };
        let loss = (y.clone() * &self.proj).unwrap().sum_all().unwrap();
        (y, loss)
    }
}

#[test]
fn several_waves_match_the_reference() {
    let b = big();
    let (y, loss) = b.run(false);
    let (y_ref, loss_ref) = b.run(true);
    assert!(
        rel_err(&y, &y_ref) < 1e-5,
        "forward {}",
        rel_err(&y, &y_ref)
    );
    let (g, g_ref) = (loss.backward().unwrap(), loss_ref.backward().unwrap());
    for (name, v) in ["x", "weights", "experts"].iter().zip(b.vars()) {
        let (a, r) = (
            g.get(v.as_tensor()).unwrap(),
            g_ref.get(v.as_tensor()).unwrap(),
        );
        assert!(rel_err(a, r) < 1e-5, "grad {name}: {}", rel_err(a, r));
    }
}

#[test]
fn several_waves_same_bits_for_any_thread_count() {
    let b = big();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let (y, loss) = b.run(false);
                let g = dispatch::backward(&loss).unwrap();
                let mut out = vec![bits(&y)];
                out.extend(b.vars().map(|v| bits(g.get(v.as_tensor()).unwrap())));
                out
            })
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(one == run(threads), "{threads} threads changed the bits");
    }
}

#[test]
fn dispatch_backward_equals_plain_backward_on_a_large_plan() {
    let b = big();
    let (_, loss) = b.run(false);
    let plain = loss.backward().unwrap();
    let direct = dispatch::backward(&loss).unwrap();
    for v in b.vars() {
        assert_eq!(
            bits(plain.get(v.as_tensor()).unwrap()),
            bits(direct.get(v.as_tensor()).unwrap())
        );
    }
}

#[test]
fn dispatch_backward_sums_two_uses_of_one_packed_variable() {
    // the same expert weights in two dispatch calls, plus a term that uses them outside the
    // dispatch op: the deferred gradient must meet candle's
    let b = big();
    let (x, w, p) = (b.x.as_tensor(), b.w.as_tensor(), b.p.as_tensor());
    let y1 = dispatch(x, w, p, &b.layout, &b.plan).unwrap();
    let x2 = (x * 0.5).unwrap();
    let y2 = dispatch(&x2, w, p, &b.layout, &b.plan).unwrap();
    let loss = ((y1 * &b.proj).unwrap().sum_all().unwrap()
        + (y2.sqr().unwrap().sum_all().unwrap() * 0.1).unwrap())
    .unwrap();
    let loss = (loss + p.sqr().unwrap().sum_all().unwrap()).unwrap();
    let plain = loss.backward().unwrap();
    let direct = dispatch::backward(&loss).unwrap();
    for v in b.vars() {
        let (a, r) = (
            direct.get(v.as_tensor()).unwrap(),
            plain.get(v.as_tensor()).unwrap(),
        );
        assert!(rel_err(a, r) < 1e-6, "{}", rel_err(a, r));
    }
    // without the extra term the sum is taken in candle's order: bitwise equal
    let y1 = dispatch(x, w, p, &b.layout, &b.plan).unwrap();
    let y2 = dispatch(&x2, w, p, &b.layout, &b.plan).unwrap();
    let loss = ((y1 * &b.proj).unwrap().sum_all().unwrap()
        + (y2.sqr().unwrap().sum_all().unwrap() * 0.1).unwrap())
    .unwrap();
    let plain = loss.backward().unwrap();
    let direct = dispatch::backward(&loss).unwrap();
    for v in b.vars() {
        let (a, r) = (
            direct.get(v.as_tensor()).unwrap(),
            plain.get(v.as_tensor()).unwrap(),
        );
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            r.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

#[test]
fn dispatch_backward_flows_through_a_packed_tensor_that_is_not_a_variable() {
    let b = big();
    let (x, w) = (b.x.as_tensor(), b.w.as_tensor());
    let p2 = (b.p.as_tensor() * 2.0).unwrap();
    let loss = (dispatch(x, w, &p2, &b.layout, &b.plan).unwrap() * &b.proj)
        .unwrap()
        .sum_all()
        .unwrap();
    let plain = loss.backward().unwrap();
    let direct = dispatch::backward(&loss).unwrap();
    for v in b.vars() {
        assert_eq!(
            bits(plain.get(v.as_tensor()).unwrap()),
            bits(direct.get(v.as_tensor()).unwrap())
        );
    }
}

#[test]
fn dispatch_backward_equals_plain_backward_on_a_layer_with_shared_experts() {
    let cfg = MoeConfig {
        shared_experts: vec![ExpertSpec::swiglu(5)],
        shared_gate: true,
        ..small_cfg(RouterConfig::TopK { k: 2 }, swiglu(6))
    };
    let f = fixture(&cfg, 3, DType::F32);
    let out = f.run(true, DispatchImpl::Kernel, 2);
    let loss = ((out.y.clone() * &f.proj).unwrap().sum_all().unwrap() + out.aux_loss).unwrap();
    let plain = loss.backward().unwrap();
    let direct = dispatch::backward(&loss).unwrap();
    let vars = f.vars();
    assert!(vars.len() >= 4);
    for (name, v) in vars {
        assert_eq!(
            bits(plain.get(v.as_tensor()).unwrap()),
            bits(direct.get(v.as_tensor()).unwrap()),
            "{name}"
        );
    }
    // and nothing is left deferred for the next plain backward on this thread
    let again = loss.backward().unwrap();
    assert!(again.get(f.layer.experts.packed.as_tensor()).is_some());
}
