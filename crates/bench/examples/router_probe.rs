//! `route_only` forward+backward (gate, router, plan, weights, losses, statistics) of the
//! softmax top-k, noisy top-k and Switch routers at fine64's shapes (T=4096, d=512, E=64,
//! k=8; Switch k=1), in training mode, on the recycling allocator the binaries use.
//!
//! Then the noisy top-k router's load loss alone at the same shapes, fused
//! (`rowops::load_sums`) and composed from candle ops (`rowops::load_sums_composed`, the
//! reference), forward+backward, the two taking turns.
//!
//! Run with: `RAYON_NUM_THREADS=1 cargo run --release -p switchyard-bench --example router_probe`
//! (`ONLY=noisy_top_k` runs one router, e.g. under perf; `ONLY=load` the load loss alone).

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use switchyard_core::router::{NoisyTopKConfig, SwitchConfig, TopKConfig};
use switchyard_core::*;

#[global_allocator]
static ALLOC: switchyard_kernels::alloc::Recycling<std::alloc::System> =
    switchyard_kernels::alloc::Recycling::new(std::alloc::System);

fn main() {
    let routers = [
        ("top_k", RouterConfig::TopK(TopKConfig { k: 8 })),
        (
            "noisy_top_k",
            RouterConfig::NoisyTopK(NoisyTopKConfig { k: 8 }),
        ),
        (
            "switch",
            RouterConfig::Switch(SwitchConfig {
                k: 1,
                capacity_factor: 1.25,
                eval_capacity_factor: None,
                drop_policy: DropPolicy::Position,
            }),
        ),
    ];
    let only = std::env::var("ONLY").ok();
    for (name, router) in routers {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let cfg = MoeConfig {
            d_model: 512,
            experts: vec![ExpertSpec::swiglu(256); 64],
            router,
            ..Default::default()
        };
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, 1, DType::F32, &Device::Cpu);
        let layer = MoeLayer::new(&pb.pp("moe"), &cfg).unwrap();
        let x = Tensor::randn(0f32, 1., (4096, 512), &Device::Cpu).unwrap();
        let x = Var::from_tensor(&x).unwrap();
        // median of 15 timed calls after one warm-up
        let secs = switchyard_bench::timing::median_secs(15, || -> Result<()> {
            let mut r = ChaCha8Rng::seed_from_u64(0);
            let (routing, aux) =
                layer.route_only(x.as_tensor(), &mut ForwardCtx::new(true, &mut r))?;
            ((routing.weights.sum_all()? * 0.1)? + aux)?.backward()?;
            Ok(())
        })
        .unwrap();
        let ms = secs * 1e3;
        println!("{name}: route_only fwd+bwd {ms:.2} ms");
    }
    if only.as_deref().is_none_or(|o| o == "load") {
        load_loss();
    }
}

/// The load loss `CV(Σ_t P(t, e))²` forward+backward at T=4096, E=64, k=8: fused and composed
/// in turns, five rounds of median-of-5 each.
fn load_loss() {
    let (t, e, k) = (4096, 64, 8);
    let var = |scale: f32, shift: f32| {
        let x = Tensor::randn(0f32, scale, (t, e), &Device::Cpu).unwrap();
        Var::from_tensor(&(x.abs().unwrap() + shift as f64).unwrap()).unwrap()
    };
    let (clean, std) = (var(1.0, 0.0), var(0.5, 0.01));
    let eps = Tensor::randn(0f32, 1., (t, e), &Device::Cpu).unwrap();
    type Sums = fn(&Tensor, &Tensor, &Tensor, usize) -> Result<Tensor>;
    let time = |f: Sums| {
        switchyard_bench::timing::median_secs(5, || -> Result<()> {
            let noisy = (clean.as_tensor() + (&eps * std.as_tensor())?)?;
            let sums = f(clean.as_tensor(), &noisy, std.as_tensor(), k)?;
            losses::cv_squared(&sums)?.backward()?;
            Ok(())
        })
        .unwrap()
            * 1e3
    };
    let (mut fused, mut composed) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        fused.push(time(rowops::load_sums));
        composed.push(time(rowops::load_sums_composed));
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("load loss fwd+bwd [ms], fused:    {}", show(&fused));
    println!("load loss fwd+bwd [ms], composed: {}", show(&composed));
}
