//! Times the routing pieces of one MoE layer (gate, router, losses, stats) next to the whole
//! layer and the dispatch op alone, as a cross-check of `switchyard bench`'s routing share.
//!
//! Run with: `RAYON_NUM_THREADS=1 cargo run --release -p switchyard-bench --example route_cost -- 64`
//! (the argument is the number of experts; k=8, h=256, d=512, T=4096; `-- 8 route 2 1024`
//! loops the routing of mixtral8's shapes).

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Instant;
use switchyard_core::dispatch::dispatch;
use switchyard_core::router::RouterInput;
use switchyard_core::router::TopKConfig;
use switchyard_core::*;

/// The allocator `switchyard-bench` runs on: freed blocks of 256 KiB and up are reused; here
/// `SWITCHYARD_RECYCLE=0` turns that off and `SWITCHYARD_RECYCLE_MIN=N` starts it at N bytes.
#[global_allocator]
static ALLOC: switchyard_kernels::alloc::Recycling<std::alloc::System> =
    switchyard_kernels::alloc::Recycling::new(std::alloc::System);

fn med(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[3]
}

fn main() {
    let e: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(64);
    ALLOC.set_enabled(std::env::var("SWITCHYARD_RECYCLE").map_or(true, |v| v != "0"));
    if let Ok(b) = std::env::var("SWITCHYARD_RECYCLE_MIN") {
        ALLOC.set_min_bytes(b.parse().expect("bytes"));
    }
    // k and h: `-- E [route] [k] [h]` (default k=8, h=256; mixtral8 is `-- 8 route 2 1024`)
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map_or(default, |s| s.parse().expect("k and h are numbers"))
    };
    let (k, h, d, t) = (arg(3, 8), arg(4, 256), 512, 4096);
    let cfg = MoeConfig {
        d_model: d,
        experts: vec![ExpertSpec::swiglu(h); e],
        router: RouterConfig::TopK(TopKConfig { k }),
        ..Default::default()
    };
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 1, DType::F32, &Device::Cpu);
    let layer = MoeLayer::new(&pb.pp("moe"), &cfg).unwrap();
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (t, d), &Device::Cpu).unwrap()).unwrap();
    let fwd = || {
        let mut r = ChaCha8Rng::seed_from_u64(0);
        layer
            .forward(x.as_tensor(), &mut ForwardCtx::new(true, &mut r))
            .unwrap()
    };
    let out = fwd();
    let routing = out.routing.clone().unwrap();
    let mut loads = routing.plan.tokens_per_expert();
    loads.sort();
    println!(
        "rows per expert: min {} median {} max {}",
        loads[0],
        loads[loads.len() / 2],
        loads[loads.len() - 1]
    );
    let w = Var::from_tensor(&routing.weights.detach()).unwrap();
    let layout = Arc::new(layer.experts.layout.clone());
    let run_dispatch = || {
        dispatch(
            x.as_tensor(),
            w.as_tensor(),
            layer.experts.packed.as_tensor(),
            &layout,
            &routing.plan,
        )
        .unwrap()
    };
    let gate = layer.gate.as_ref().unwrap();
    let logits = gate.forward(x.as_tensor(), None).unwrap();
    let route_fb = || {
        let mut r = ChaCha8Rng::seed_from_u64(0);
        let (routing, aux) = layer
            .route_only(x.as_tensor(), &mut ForwardCtx::new(true, &mut r))
            .unwrap();
        let c = (routing.weights.ones_like().unwrap() * 0.1).unwrap();
        ((routing.weights * c).unwrap().sum_all().unwrap() + aux)
            .unwrap()
            .backward()
            .unwrap();
    };
    // `-- 64 route`: only the routing's forward and backward, in a loop (for perf)
    if std::env::args().nth(2).is_some_and(|a| a == "route") {
        for _ in 0..200 {
            route_fb();
        }
        println!("route_only fwd+bwd {:8.2} ms", med(route_fb));
        // pieces of it, each forward and backward on a [T, E] variable
        let lv = Var::from_tensor(&logits.detach()).unwrap();
        let piece = |name: &str, f: &dyn Fn(&Tensor) -> Tensor| {
            println!(
                "  {name:26} {:8.2} ms",
                med(|| {
                    f(lv.as_tensor()).sum_all().unwrap().backward().unwrap();
                })
            );
        };
        for _ in 0..2 {
            piece("softmax composed", &|l| {
                switchyard_core::rowops::softmax_composed(l).unwrap()
            });
            piece("softmax fused", &|l| {
                switchyard_core::rowops::softmax_rows(l).unwrap()
            });
            piece("logsumexp composed", &|l| {
                switchyard_core::rowops::logsumexp_composed(l).unwrap()
            });
            piece("logsumexp fused", &|l| {
                switchyard_core::rowops::logsumexp_rows(l).unwrap()
            });
        }
        piece("z_loss", &|l| losses::z_loss(l).unwrap());
        piece("softmax + z + balance", &|l| {
            let p = switchyard_core::rowops::softmax_rows(l).unwrap();
            let counts = routing.plan.tokens_per_expert();
            (losses::switch_balance(&p, &counts, k).unwrap() + losses::z_loss(l).unwrap()).unwrap()
        });
        println!(
            "  {:26} {:8.2} ms",
            "gate fwd+bwd",
            med(|| {
                gate.forward(x.as_tensor(), None)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
            })
        );
        return;
    }
    println!("route_only fwd+bwd {:8.2} ms", med(route_fb));
    println!(
        "layer fwd          {:8.2} ms",
        med(|| {
            fwd();
        })
    );
    println!(
        "layer fwd+bwd      {:8.2} ms",
        med(|| {
            let o = fwd();
            (o.y.sum_all().unwrap() + o.aux_loss)
                .unwrap()
                .backward()
                .unwrap();
        })
    );
    println!(
        "layer fwd+bwd (dispatch::backward) {:8.2} ms",
        med(|| {
            let o = fwd();
            switchyard_core::backward(&(o.y.sum_all().unwrap() + o.aux_loss).unwrap()).unwrap();
        })
    );
    println!(
        "layer fwd, bwd of aux_loss only    {:8.2} ms",
        med(|| {
            let o = fwd();
            o.aux_loss.backward().unwrap();
        })
    );
    println!(
        "dispatch fwd+bwd (dispatch::backward) {:8.2} ms",
        med(|| {
            let y = run_dispatch();
            switchyard_core::backward(&y.sum_all().unwrap()).unwrap();
        })
    );
    println!(
        "dispatch fwd       {:8.2} ms",
        med(|| {
            run_dispatch();
        })
    );
    // the kernels alone on the same plan and data (no candle)
    {
        use switchyard_kernels::dispatch as kernel;
        let opts = switchyard_kernels::KernelOptions::default();
        let host = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (xs, ws, ps) = (
            host(x.as_tensor()),
            host(w.as_tensor()),
            host(layer.experts.packed.as_tensor()),
        );
        let gy = vec![1f32; xs.len()];
        println!(
            "kernel fwd         {:8.2} ms",
            med(|| {
                kernel::forward(&xs, &ws, &ps, &layout, &routing.plan, &opts);
            })
        );
        println!(
            "kernel fwd+bwd     {:8.2} ms",
            med(|| {
                let (_, s) = kernel::forward(&xs, &ws, &ps, &layout, &routing.plan, &opts);
                kernel::backward(&xs, &ws, &ps, &layout, &routing.plan, &s, &gy, &opts);
            })
        );
    }
    println!(
        "dispatch fwd+bwd   {:8.2} ms",
        med(|| {
            run_dispatch().sum_all().unwrap().backward().unwrap();
        })
    );
    println!(
        "gate fwd           {:8.2} ms",
        med(|| {
            gate.forward(x.as_tensor(), None).unwrap();
        })
    );
    println!(
        "router.route       {:8.2} ms",
        med(|| {
            let mut r = ChaCha8Rng::seed_from_u64(0);
            layer
                .router
                .route(RouterInput {
                    gate_out: &logits,
                    token_ids: None,
                    available: None,
                    train: true,
                    rng: &mut r,
                })
                .unwrap();
        })
    );
    println!(
        "stats              {:8.2} ms",
        med(|| {
            RoutingStats::compute(&routing.plan, &routing.probs, routing.logits.as_ref()).unwrap();
        })
    );
    println!(
        "losses             {:8.2} ms",
        med(|| {
            losses::switch_balance(&routing.probs, &routing.plan.tokens_per_expert(), k).unwrap();
            losses::z_loss(routing.logits.as_ref().unwrap()).unwrap();
        })
    );
}
