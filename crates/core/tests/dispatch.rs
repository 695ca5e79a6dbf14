//! The fast dispatch (custom op + CPU kernel) against the readable reference, in f32:
//! outputs and all three gradients agree to 1e-5 relative.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchyard_core::dispatch::{dispatch, dispatch_reference};
use switchyard_core::expert::ExpertLayout;
use switchyard_core::{Activation, DispatchPlan, ExpertSpec, ParamBuilder, ParamStore};

/// max |a − b| / max(max |b|, 1e-6)
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn random_plan(t: usize, e: usize, k: usize, rng: &mut ChaCha8Rng) -> DispatchPlan {
    let mut pairs = Vec::new();
    for tok in 0..t {
        let mut chosen: Vec<u32> = Vec::new();
        while chosen.len() < k {
            let x = rng.random_range(0..e as u32);
            if !chosen.contains(&x) {
                chosen.push(x);
            }
        }
        pairs.extend(chosen.into_iter().map(|x| (tok as u32, x)));
    }
    DispatchPlan::from_assignments(t, e, &pairs).unwrap()
}

fn compare(specs: &[ExpertSpec], t: usize, d: usize, k: usize, seed: u64) {
    let dev = Device::Cpu;
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, seed, DType::F32, &dev);
    let layout = Arc::new(ExpertLayout::new(d, specs));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = Arc::new(random_plan(t, specs.len(), k, &mut rng));
    let mk = |n: usize, shape: &[usize]| {
        Var::from_tensor(
            &Tensor::from_vec(
                pb.sample(n, switchyard_core::Init::Normal(0.5)),
                shape,
                &dev,
            )
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap(),
        )
        .unwrap()
    };
    let x = mk(t * d, &[t, d]);
    let w = mk(plan.len(), &[plan.len()]);
    // biases start at zero in real layers; random here so their gradients are exercised
    let p = mk(layout.total, &[layout.total]);
    let proj = mk(t * d, &[t, d]);
    let y_fast = dispatch(x.as_tensor(), w.as_tensor(), p.as_tensor(), &layout, &plan).unwrap();
    let y_ref =
        dispatch_reference(x.as_tensor(), w.as_tensor(), p.as_tensor(), &layout, &plan).unwrap();
    assert!(
        rel_err(&y_fast, &y_ref) < 1e-5,
        "forward: {}",
        rel_err(&y_fast, &y_ref)
    );
    let g_fast = (y_fast * proj.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g_ref = (y_ref * proj.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, v) in [("x", &x), ("weights", &w), ("experts", &p)] {
        let (a, b) = (
            g_fast.get(v.as_tensor()).unwrap(),
            g_ref.get(v.as_tensor()).unwrap(),
        );
        let err = rel_err(a, b);
        assert!(err < 1e-5, "grad {name}: rel err {err}");
    }
}

#[test]
fn kernel_matches_reference_swiglu() {
    compare(&[ExpertSpec::swiglu(24); 6], 50, 16, 2, 1);
}

#[test]
fn kernel_matches_reference_heterogeneous_widths_and_kinds() {
    let specs = [
        ExpertSpec::swiglu(8),
        ExpertSpec::ffn(Activation::Relu, 40),
        ExpertSpec::ffn(Activation::Gelu, 17),
        ExpertSpec::ffn(Activation::Silu, 1),
        ExpertSpec::swiglu(33),
    ];
    compare(&specs, 64, 12, 3, 2);
}

#[test]
fn kernel_matches_reference_fine_grained_with_idle_experts() {
    // 32 experts, 10 tokens, top-1: most experts receive nothing
    compare(&[ExpertSpec::swiglu(4); 32], 10, 8, 1, 3);
}

#[test]
fn empty_plan_gives_zero_output_and_zero_grads() {
    let dev = Device::Cpu;
    let layout = Arc::new(ExpertLayout::new(4, &[ExpertSpec::swiglu(3); 2]));
    let plan = Arc::new(DispatchPlan::from_assignments(3, 2, &[]).unwrap());
    let x = Var::ones((3, 4), DType::F32, &dev).unwrap();
    let w = Var::zeros(0, DType::F32, &dev).unwrap();
    let p = Var::ones(layout.total, DType::F32, &dev).unwrap();
    let y = dispatch(x.as_tensor(), w.as_tensor(), p.as_tensor(), &layout, &plan).unwrap();
    assert_eq!(y.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        g.get(x.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn mismatched_shapes_are_errors_not_panics() {
    let dev = Device::Cpu;
    let layout = Arc::new(ExpertLayout::new(4, &[ExpertSpec::swiglu(3); 2]));
    let plan = Arc::new(DispatchPlan::from_assignments(3, 2, &[(0, 1)]).unwrap());
    let x = Tensor::ones((3, 5), DType::F32, &dev).unwrap();
    let w = Tensor::ones(1, DType::F32, &dev).unwrap();
    let p = Tensor::ones(layout.total, DType::F32, &dev).unwrap();
    let err = dispatch(&x, &w, &p, &layout, &plan)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[3, 5]") && err.contains("expected [3, 4]"),
        "{err}"
    );
}
