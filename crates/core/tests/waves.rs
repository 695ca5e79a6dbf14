//! The kernels on plans large enough to run in several waves (see `dispatch::kernel`), and
//! `dispatch::backward` (candle's backward with the packed expert gradients handed over
//! directly) against plain `loss.backward()`.

mod big_plan;
mod common;

use big_plan::*;
use candle_core::DType;
use common::*;
use switchyard_core::dispatch::{self, dispatch};
use switchyard_core::router::TopKConfig;
use switchyard_core::{DispatchImpl, ExpertSpec, MoeConfig, RouterConfig};

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
    let run = |threads: usize| b.kernel_bits(threads, |_, _| {});
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
        ..small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(6))
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
