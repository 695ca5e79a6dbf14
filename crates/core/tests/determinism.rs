//! Same seed → bitwise-equal outputs (for any thread count); ties break to the lower index.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use switchyard_core::router::{self, top_k, RouterInput};
use switchyard_core::router::{
    ExpertChoiceConfig, NoisyTopKConfig, SigmoidBiasConfig, SwitchConfig, TopKConfig,
};
use switchyard_core::{DispatchImpl, DropPolicy, MoeConfig, RouterConfig};

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn run_f32(cfg: &MoeConfig, seed: u64) -> (Vec<u32>, Vec<Vec<u32>>) {
    let f = fixture(cfg, seed, DType::F32);
    let out = f.run(true, DispatchImpl::Kernel, 11);
    let loss = ((out.y.clone() * &f.proj).unwrap().sum_all().unwrap() + out.aux_loss).unwrap();
    let grads = loss.backward().unwrap();
    let g = f
        .vars()
        .iter()
        .map(|(_, v)| bits(grads.get(v.as_tensor()).unwrap()))
        .collect();
    (bits(&out.y), g)
}

#[test]
fn same_seed_same_bits_for_forward_and_backward() {
    let cfg = MoeConfig {
        jitter: 0.1,
        expert_dropout: 0.2,
        ..small_cfg(RouterConfig::NoisyTopK(NoisyTopKConfig { k: 2 }), swiglu(6))
    };
    let a = run_f32(&cfg, 5);
    let b = run_f32(&cfg, 5);
    assert_eq!(a, b);
    let c = run_f32(&cfg, 6);
    assert_ne!(a.0, c.0, "a different seed should change the output");
}

#[test]
fn thread_count_does_not_change_bits() {
    let cfg = small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(6));
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| run_f32(&cfg, 9));
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap()
        .install(|| run_f32(&cfg, 9));
    assert_eq!(one, four);
}

/// Every router in the registry at its default config: same seed, same bits.
#[test]
fn every_registered_router_is_deterministic() {
    for router in RouterConfig::defaults() {
        let name = router.name();
        let cfg = small_cfg(router, swiglu(6));
        assert_eq!(run_f32(&cfg, 5), run_f32(&cfg, 5), "{name}");
    }
}

#[test]
fn top_k_ties_break_to_lower_index() {
    assert_eq!(top_k(&[1.0, 3.0, 3.0, 0.5, 3.0], 2, 0..5), vec![1, 2]);
    assert_eq!(top_k(&[2.0, 2.0, 2.0], 1, 0..3), vec![0]);
    assert_eq!(top_k(&[f64::NAN, 0.0, -1.0], 2, 0..3), vec![1, 2]);
}

#[test]
fn routers_break_ties_to_lower_expert_and_token() {
    // every logit equal: each router must pick the lowest indices
    let logits = Tensor::zeros((4, 4), DType::F64, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for cfg in [
        RouterConfig::TopK(TopKConfig { k: 2 }),
        RouterConfig::SigmoidBias(SigmoidBiasConfig {
            k: 2,
            bias_update_rate: 0.0,
            scaling: 1.0,
        }),
        RouterConfig::Switch(SwitchConfig {
            k: 1,
            capacity_factor: 4.0,
            eval_capacity_factor: None,
            drop_policy: DropPolicy::Probability,
        }),
    ] {
        let r = router::build(&cfg, 4).unwrap();
        let out = r
            .route(RouterInput {
                gate_out: &logits,
                token_ids: None,
                available: None,
                train: false,
                rng: &mut rng,
            })
            .unwrap();
        for tok in 0..4u32 {
            let chosen: Vec<u32> = (0..out.plan.len())
                .filter(|&a| out.plan.token[a] == tok)
                .map(|a| out.plan.expert[a])
                .collect();
            assert_eq!(
                chosen,
                (0..cfg.k() as u32).collect::<Vec<_>>(),
                "{}",
                cfg.name()
            );
        }
    }
    // expert choice with equal scores: each expert takes the lowest token indices
    let r = router::build(
        &RouterConfig::ExpertChoice(ExpertChoiceConfig {
            capacity_factor: 1.0,
        }),
        4,
    )
    .unwrap();
    let out = r
        .route(RouterInput {
            gate_out: &logits,
            token_ids: None,
            available: None,
            train: false,
            rng: &mut rng,
        })
        .unwrap();
    assert!(out.plan.token.iter().all(|&t| t == 0));
}

/// Dispatch op fwd+bwd bits `(y, dx, dw, dp)` on a plan large enough that experts are cut
/// into several row tiles and their weight gradients into several column blocks.
fn big_dispatch_bits(threads: usize) -> Vec<Vec<u32>> {
    use std::sync::Arc;
    use switchyard_core::dispatch::dispatch;
    use switchyard_core::expert::ExpertLayout;
    use switchyard_core::{Activation, DispatchPlan, ExpertSpec, Init, ParamBuilder, ParamStore};
    // 700 tokens × top-3 over 6 experts: ~350 rows each (> ROW_TILE = 256), mixed kinds/widths
    const TOKENS: usize = 700;
    const D_MODEL: usize = 48;
    const K: usize = 3;
    let specs = [
        ExpertSpec::swiglu(96),
        ExpertSpec::swiglu(40),
        ExpertSpec::ffn(Activation::Gelu, 72),
        ExpertSpec::swiglu(128),
        ExpertSpec::ffn(Activation::Relu, 33),
        ExpertSpec::swiglu(64),
    ];
    let dev = Device::Cpu;
    let pb = ParamBuilder::new(&ParamStore::new(), 4, DType::F32, &dev);
    let layout = Arc::new(ExpertLayout::new(D_MODEL, &specs));
    let pairs: Vec<(u32, u32)> = (0..TOKENS as u32)
        .flat_map(|t| (0..K as u32).map(move |j| (t, (t * 7 + j * 2 + t / 5) % 6)))
        .collect();
    let mut pairs = pairs;
    pairs.sort();
    pairs.dedup();
    let plan = Arc::new(DispatchPlan::from_assignments(TOKENS, specs.len(), &pairs).unwrap());
    assert!(
        (0..6).any(|e| plan.range(e).len() > 256),
        "the plan must need several row tiles"
    );
    let mk = |n: usize, shape: &[usize]| {
        let t = Tensor::from_vec(pb.sample(n, Init::Normal(0.5)), shape, &dev)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        candle_core::Var::from_tensor(&t).unwrap()
    };
    let (x, w, p) = (
        mk(TOKENS * D_MODEL, &[TOKENS, D_MODEL]),
        mk(plan.len(), &[plan.len()]),
        mk(layout.total, &[layout.total]),
    );
    let proj = mk(TOKENS * D_MODEL, &[TOKENS, D_MODEL]);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| {
            let y = dispatch(x.as_tensor(), w.as_tensor(), p.as_tensor(), &layout, &plan).unwrap();
            let g = (y.clone() * proj.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut out = vec![bits(&y)];
            out.extend(
                [&x, &w, &p]
                    .iter()
                    .map(|v| bits(g.get(v.as_tensor()).unwrap())),
            );
            out
        })
}

#[test]
fn thread_count_does_not_change_bits_on_a_large_plan() {
    let one = big_dispatch_bits(1);
    for threads in [2, 3, 4] {
        assert!(
            one == big_dispatch_bits(threads),
            "{threads} threads changed the bits"
        );
    }
}

#[test]
fn top_k_without_sorting_matches_a_full_sort() {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for trial in 0..300 {
        let e = rng.random_range(1..80);
        // few distinct values so ties are common; a NaN now and then
        let vals: Vec<f64> = (0..e)
            .map(|_| {
                if rng.random_range(0..20) == 0 {
                    f64::NAN
                } else {
                    rng.random_range(0..6) as f64
                }
            })
            .collect();
        let k = rng.random_range(0..=e.min(40));
        let key = |i: usize| {
            if vals[i].is_nan() {
                f64::NEG_INFINITY
            } else {
                vals[i]
            }
        };
        let mut expect: Vec<usize> = (0..e).collect();
        expect.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        expect.truncate(k);
        assert_eq!(top_k(&vals, k, 0..e), expect, "trial {trial}: e={e} k={k}");
        // candidates in any order give the same answer
        assert_eq!(
            top_k(&vals, k, (0..e).rev()),
            expect,
            "trial {trial} (reversed candidates)"
        );
    }
}

#[test]
fn top_k_router_selects_per_row_top_k_in_place_at_any_thread_count() {
    // the router reads f32 / f64 logits in place, in token blocks over the pool: the same
    // pairs as `top_k` on each row, with ties, NaN, ±0 and unavailable experts
    use rand::Rng;
    let (t, e, k) = (1000, 37, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let vals: Vec<f64> = (0..t * e)
        .map(|_| match rng.random_range(0..40) {
            0 => f64::NAN,
            1 => -0.0,
            2 => 0.0,
            _ => rng.random_range(-4..4) as f64 * 0.5,
        })
        .collect();
    let available: Vec<bool> = (0..e).map(|x| x % 7 != 3).collect();
    let router = router::build(&RouterConfig::TopK(TopKConfig { k }), e).unwrap();
    for dtype in [DType::F32, DType::F64] {
        let logits = Tensor::from_vec(vals.clone(), (t, e), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let mut expect = Vec::new();
        for tok in 0..t {
            // the router adds 0 to available experts' logits (and -1e9 to the others): -0
            // becomes +0 there
            let row: Vec<f64> = vals[tok * e..(tok + 1) * e]
                .iter()
                .map(|&v| v + 0.0)
                .collect();
            for x in top_k(&row, k, (0..e).filter(|&x| available[x])) {
                expect.push((x as u32, tok as u32));
            }
        }
        expect.sort();
        for threads in [1, 3] {
            let plan = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut rng = ChaCha8Rng::seed_from_u64(0);
                    router
                        .route(RouterInput {
                            gate_out: &logits,
                            token_ids: None,
                            available: Some(&available),
                            train: true,
                            rng: &mut rng,
                        })
                        .unwrap()
                        .plan
                });
            let mut got: Vec<(u32, u32)> = plan
                .expert
                .iter()
                .zip(&plan.token)
                .map(|(&x, &tok)| (x, tok))
                .collect();
            got.sort();
            let differ = got.iter().zip(&expect).filter(|(a, b)| a != b).count();
            assert!(
                got.len() == expect.len() && differ == 0,
                "{dtype:?}, {threads} threads: {} pairs for {}, {differ} differ",
                got.len(),
                expect.len()
            );
        }
    }
}
