//! Criterion benches of the MoE layer: forward+backward of `mixtral8` and `fine64` through the
//! whole layer (gate, router, dispatch op, losses) and of the dispatch op alone.
//!
//! Run with: `cargo bench -p switchyard-bench --bench moe_layer`
//! (`switchyard bench` prints the same shapes as ratios to the dense ceiling.)

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use switchyard_bench::shapes::{named, LayerShape};
use switchyard_core::dispatch::dispatch;
use switchyard_core::router::TopKConfig;
use switchyard_core::{
    ExpertSpec, ForwardCtx, Init, MoeBlock, MoeConfig, MoeLayer, ParamBuilder, ParamStore,
    RouterConfig,
};

/// Tokens per batch: a quarter of the suite's 4096, so a criterion run stays in minutes.
const TOKENS: usize = 1024;
const CONFIGS: [&str; 2] = ["mixtral8", "fine64"];

fn layer(s: &LayerShape) -> (MoeLayer, Var) {
    let cfg = MoeConfig {
        d_model: s.d,
        experts: vec![ExpertSpec::swiglu(s.h); s.experts],
        router: RouterConfig::TopK(TopKConfig { k: s.k }),
        ..Default::default()
    };
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 3, DType::F32, &Device::Cpu);
    let layer = MoeLayer::new(&pb.pp("moe"), &cfg).unwrap();
    let xs = pb.sample(s.tokens * s.d, Init::Normal(1.0));
    let x = Tensor::from_vec(xs, (s.tokens, s.d), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    (layer, Var::from_tensor(&x).unwrap())
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("moe_layer");
    g.sample_size(10);
    for name in CONFIGS {
        let s = LayerShape {
            tokens: TOKENS,
            ..named(name, false).unwrap()
        };
        let (layer, x) = layer(&s);
        g.throughput(Throughput::Elements(s.fwd_bwd_flops() as u64));
        g.bench_function(format!("{name}/fwd_bwd"), |b| {
            b.iter(|| {
                let mut rng = ChaCha8Rng::seed_from_u64(0);
                let out = layer
                    .forward(x.as_tensor(), &mut ForwardCtx::new(true, &mut rng))
                    .unwrap();
                switchyard_core::backward(&(out.y.sum_all().unwrap() + out.aux_loss).unwrap())
                    .unwrap()
            })
        });
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let routing = layer
            .forward(x.as_tensor(), &mut ForwardCtx::new(true, &mut rng))
            .unwrap()
            .routing
            .unwrap();
        let w = Var::from_tensor(&routing.weights.detach()).unwrap();
        let layout = Arc::new(layer.experts.layout.clone());
        g.bench_function(format!("{name}/dispatch_fwd_bwd"), |b| {
            b.iter(|| {
                let y = dispatch(
                    x.as_tensor(),
                    w.as_tensor(),
                    layer.experts.packed.as_tensor(),
                    &layout,
                    &routing.plan,
                )
                .unwrap();
                switchyard_core::backward(&y.sum_all().unwrap()).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
