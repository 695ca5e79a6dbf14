//! The dispatch kernels on the AVX2+FMA path (what a CPU without AVX-512 runs), forced on
//! this machine through `SWITCHYARD_GEMM_ISA`'s switch: same agreement with the reference as
//! the default path, and agreement with the default path itself.
//!
//! One test function: the switch is process-wide, and tests in one binary run in parallel.

mod big_plan;
mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use switchyard_core::dispatch::{dispatch, dispatch_reference};
use switchyard_core::expert::ExpertLayout;
use switchyard_core::{Activation, DispatchPlan, ExpertSpec, Init, ParamBuilder, ParamStore};
use switchyard_kernels::gemm::{set_isa, uses_avx512, GemmIsa};

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

/// Output and the gradients of x, w, p (fast kernel when `fast`, else the reference).
fn run(fast: bool) -> Vec<Tensor> {
    // several row tiles per expert and mixed kinds, so every kernel loop runs
    const TOKENS: usize = 300;
    const D_MODEL: usize = 40;
    let specs = [
        ExpertSpec::swiglu(48),
        ExpertSpec::ffn(Activation::Silu, 35),
        ExpertSpec::swiglu(20),
    ];
    let dev = Device::Cpu;
    let pb = ParamBuilder::new(&ParamStore::new(), 8, DType::F32, &dev);
    let layout = Arc::new(ExpertLayout::new(D_MODEL, &specs));
    let pairs: Vec<(u32, u32)> = (0..TOKENS as u32)
        .flat_map(|t| [(t, t % 3), (t, (t + 1 + t / 7 % 2) % 3)])
        .collect();
    let plan = Arc::new(DispatchPlan::from_assignments(TOKENS, specs.len(), &pairs).unwrap());
    let mk = |n: usize, shape: &[usize]| {
        Var::from_tensor(
            &Tensor::from_vec(pb.sample(n, Init::Normal(0.5)), shape, &dev)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap(),
        )
        .unwrap()
    };
    let (x, w, p) = (
        mk(TOKENS * D_MODEL, &[TOKENS, D_MODEL]),
        mk(plan.len(), &[plan.len()]),
        mk(layout.total, &[layout.total]),
    );
    let proj = mk(TOKENS * D_MODEL, &[TOKENS, D_MODEL]);
    let y = if fast {
        dispatch(x.as_tensor(), w.as_tensor(), p.as_tensor(), &layout, &plan).unwrap()
    } else {
        dispatch_reference(x.as_tensor(), w.as_tensor(), p.as_tensor(), &layout, &plan).unwrap()
    };
    let g = (y.clone() * proj.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut out = vec![y];
    out.extend(
        [&x, &w, &p]
            .iter()
            .map(|v| g.get(v.as_tensor()).unwrap().clone()),
    );
    out
}

#[test]
fn avx2_path_matches_reference_and_default_path() {
    let reference = run(false);
    let default = run(true);
    set_isa(GemmIsa::Avx2);
    assert!(
        !uses_avx512(),
        "the switch must take the kernels off AVX-512"
    );
    let avx2 = run(true);
    // a plan that runs in several waves, through dispatch::backward
    let b = big_plan::big();
    let (y_ref, loss_ref) = b.run(true);
    let g_ref = loss_ref.backward().unwrap();
    let (y_big, loss_big) = b.run(false);
    let g_big = switchyard_core::dispatch::backward(&loss_big).unwrap();
    set_isa(GemmIsa::Auto);
    let e = big_plan::rel_err(&y_big, &y_ref);
    assert!(e < 1e-5, "AVX2 path, several waves, y: rel err {e}");
    for v in b.vars() {
        let e = big_plan::rel_err(
            g_big.get(v.as_tensor()).unwrap(),
            g_ref.get(v.as_tensor()).unwrap(),
        );
        assert!(e < 1e-5, "AVX2 path, several waves, grads: rel err {e}");
    }
    for (i, name) in ["y", "dx", "dw", "dp"].iter().enumerate() {
        let e = rel_err(&avx2[i], &reference[i]);
        assert!(e < 1e-5, "AVX2 path vs reference, {name}: rel err {e}");
        let e = rel_err(&avx2[i], &default[i]);
        assert!(e < 1e-5, "AVX2 path vs default path, {name}: rel err {e}");
    }
}
