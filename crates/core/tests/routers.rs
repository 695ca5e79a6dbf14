//! Behaviour of each router and of the layer's regularisers and statistics.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use switchyard_core::router::{self, RouterInput};
use switchyard_core::router::{
    ExpertChoiceConfig, GroupLimitedConfig, HashConfig, HierarchicalConfig, NoisyTopKConfig,
    SigmoidBiasConfig, SinkhornConfig, SwitchConfig, TopKConfig,
};
use switchyard_core::{
    losses, DispatchImpl, DropPolicy, ExpertSpec, GroupScore, MoeConfig, RouterConfig, ScoreFn,
};

/// A router's dense combine weights `[T, E]` on the host.
fn dense(out: &router::RouterOutput) -> Vec<Vec<f64>> {
    out.dense
        .tensor(&out.plan)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap()
}

fn route(cfg: &RouterConfig, logits: &[Vec<f64>], train: bool) -> router::RouterOutput {
    let (t, c) = (logits.len(), logits[0].len());
    let flat: Vec<f64> = logits.iter().flatten().cloned().collect();
    let x = Tensor::from_vec(flat, (t, c), &Device::Cpu).unwrap();
    let e = match cfg {
        RouterConfig::NoisyTopK(_) => c / 2,
        RouterConfig::Hierarchical(HierarchicalConfig { groups, .. }) => c - groups,
        _ => c,
    };
    let r = router::build(cfg, e).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    r.route(RouterInput {
        gate_out: &x,
        token_ids: None,
        available: None,
        train,
        rng: &mut rng,
    })
    .unwrap()
}

fn assignments(out: &router::RouterOutput) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = out
        .plan
        .token
        .iter()
        .cloned()
        .zip(out.plan.expert.iter().cloned())
        .collect();
    v.sort();
    v
}

#[test]
fn switch_drops_by_position_or_probability() {
    // all four tokens prefer expert 0; capacity = ceil(1.0 · 4 / 2) = 2
    let logits = vec![
        vec![1.0, 0.0],
        vec![2.0, 0.0],
        vec![3.0, 0.0],
        vec![0.5, 0.0],
    ];
    let pos = RouterConfig::Switch(SwitchConfig {
        k: 1,
        capacity_factor: 1.0,
        eval_capacity_factor: None,
        drop_policy: DropPolicy::Position,
    });
    let out = route(&pos, &logits, true);
    assert_eq!(assignments(&out), vec![(0, 0), (1, 0)]);
    assert_eq!(out.plan.dropped, vec![false, false, true, true]);
    let prob = RouterConfig::Switch(SwitchConfig {
        k: 1,
        capacity_factor: 1.0,
        eval_capacity_factor: None,
        drop_policy: DropPolicy::Probability,
    });
    let out = route(&prob, &logits, true);
    assert_eq!(assignments(&out), vec![(1, 0), (2, 0)]);
    // eval capacity factor applies outside training
    let ev = RouterConfig::Switch(SwitchConfig {
        k: 1,
        capacity_factor: 1.0,
        eval_capacity_factor: Some(2.0),
        drop_policy: DropPolicy::Position,
    });
    assert_eq!(route(&ev, &logits, false).plan.len(), 4);
}

#[test]
fn dropped_tokens_get_zero_moe_output() {
    let r = RouterConfig::Switch(SwitchConfig {
        k: 1,
        capacity_factor: 0.25,
        eval_capacity_factor: None,
        drop_policy: DropPolicy::Position,
    });
    let f = fixture(&small_cfg(r, swiglu(4)), 1, DType::F32);
    let out = f.run(false, DispatchImpl::Kernel, 0);
    let plan = &out.routing.as_ref().unwrap().plan;
    assert!(
        plan.dropped.iter().any(|&d| d),
        "capacity 1 per expert must drop some of 8 tokens"
    );
    let y = out.y.to_vec2::<f32>().unwrap();
    for (t, row) in y.iter().enumerate() {
        assert_eq!(row.iter().all(|&v| v == 0.0), plan.dropped[t], "token {t}");
    }
    assert!(
        (out.stats.unwrap().dropped_fraction
            - plan.dropped.iter().filter(|&&d| d).count() as f64 / 8.0)
            .abs()
            < 1e-12
    );
}

#[test]
fn expert_choice_balances_load_exactly() {
    let logits: Vec<Vec<f64>> = (0..8)
        .map(|t| (0..4).map(|e| ((t * 4 + e) as f64 * 0.77).sin()).collect())
        .collect();
    let out = route(
        &RouterConfig::ExpertChoice(ExpertChoiceConfig {
            capacity_factor: 1.0,
        }),
        &logits,
        true,
    );
    assert_eq!(out.plan.tokens_per_expert(), vec![2, 2, 2, 2]);
    // each expert took its two highest-probability tokens
    let p = out.probs.to_vec2::<f64>().unwrap();
    #[allow(clippy::needless_range_loop)] // `e` indexes the columns of `p`, and the plan
    for e in 0..4 {
        let taken: Vec<usize> = out
            .plan
            .range(e)
            .map(|a| out.plan.token[a] as usize)
            .collect();
        let worst_taken = taken.iter().map(|&t| p[t][e]).fold(f64::INFINITY, f64::min);
        let best_left = (0..8)
            .filter(|t| !taken.contains(t))
            .map(|t| p[t][e])
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(worst_taken >= best_left);
    }
}

#[test]
fn hash_routing_is_a_fixed_function_of_the_token_id() {
    let f = fixture(
        &small_cfg(RouterConfig::Hash(HashConfig { seed: 4 }), swiglu(4)),
        0,
        DType::F32,
    );
    let plan = f.run(true, DispatchImpl::Kernel, 0).routing.unwrap().plan;
    let r = switchyard_core::router::HashRouter::new(HashConfig { seed: 4 }, 4);
    for a in 0..plan.len() {
        assert_eq!(
            plan.expert[a] as usize,
            r.expert_of(f.ids[plan.token[a] as usize])
        );
    }
    // without ids: a clear error
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut ctx = switchyard_core::ForwardCtx::new(false, &mut rng);
    let err = switchyard_core::MoeBlock::forward(&f.layer, f.x.as_tensor(), &mut ctx)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("token ids"), "{err}");
}

#[test]
fn sigmoid_bias_shifts_selection_not_weights_and_balances() {
    let cfg = SigmoidBiasConfig {
        k: 1,
        bias_update_rate: 0.5,
        scaling: 1.0,
    };
    let mut r = router::SigmoidBiasRouter::new(cfg, 2);
    let logits = Tensor::new(&[[1.0f64, 0.0], [1.0, 0.5]], &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    use switchyard_core::Router;
    let out = r
        .route(RouterInput {
            gate_out: &logits,
            token_ids: None,
            available: None,
            train: true,
            rng: &mut rng,
        })
        .unwrap();
    assert_eq!(out.plan.tokens_per_expert(), vec![2, 0]);
    r.after_step(&out.plan.tokens_per_expert());
    assert_eq!(r.balancer.bias, vec![-0.5, 0.5]);
    let out = r
        .route(RouterInput {
            gate_out: &logits,
            token_ids: None,
            available: None,
            train: true,
            rng: &mut rng,
        })
        .unwrap();
    // token 1 now goes to expert 1 (0.62 + 0.5 > 0.73 − 0.5); its weight is the unbiased score
    assert_eq!(out.plan.tokens_per_expert(), vec![0, 2]);
    let w = dense(&out);
    assert!((w[1][1] - 1.0 / (1.0 + (-0.5f64).exp())).abs() < 1e-12);
}

#[test]
fn bias_update_reaches_balance_in_a_layer() {
    let cfg = MoeConfig {
        router: RouterConfig::SigmoidBias(SigmoidBiasConfig {
            k: 1,
            bias_update_rate: 0.05,
            scaling: 1.0,
        }),
        renormalize: false,
        ..small_cfg(RouterConfig::TopK(TopKConfig { k: 1 }), swiglu(4))
    };
    let mut f = fixture(&cfg, 2, DType::F32);
    let cv = |load: &[usize]| {
        let m = load.iter().sum::<usize>() as f64 / load.len() as f64;
        (load.iter().map(|&l| (l as f64 - m).powi(2)).sum::<f64>() / load.len() as f64).sqrt() / m
    };
    let first = f
        .run(true, DispatchImpl::Kernel, 0)
        .stats
        .unwrap()
        .tokens_per_expert;
    f.layer.after_step(); // consume the first forward's load
    let mut last = first.clone();
    for _ in 0..60 {
        last = f
            .run(true, DispatchImpl::Kernel, 0)
            .stats
            .unwrap()
            .tokens_per_expert;
        f.layer.after_step();
    }
    assert!(
        cv(&last) < cv(&first) || cv(&first) == 0.0,
        "load {first:?} → {last:?} did not balance"
    );
}

#[test]
fn group_limited_keeps_experts_inside_the_best_groups() {
    // group 0 = experts {0,1}, group 1 = {2,3}; expert 2 is the single best, group 0 has the best pair
    let logits = vec![vec![2.0, 1.9, 2.5, -3.0]];
    let max = RouterConfig::GroupLimited(GroupLimitedConfig {
        k: 2,
        groups: 2,
        topk_groups: 1,
        score: ScoreFn::Sigmoid,
        group_score: GroupScore::Max,
        bias_update_rate: 0.0,
        scaling: 1.0,
    });
    assert_eq!(
        assignments(&route(&max, &logits, false)),
        vec![(0, 2), (0, 3)]
    );
    let top2 = RouterConfig::GroupLimited(GroupLimitedConfig {
        k: 2,
        groups: 2,
        topk_groups: 1,
        score: ScoreFn::Sigmoid,
        group_score: GroupScore::Top2Sum,
        bias_update_rate: 0.0,
        scaling: 1.0,
    });
    assert_eq!(
        assignments(&route(&top2, &logits, false)),
        vec![(0, 0), (0, 1)]
    );
}

#[test]
fn hierarchical_weights_are_products_and_sum_to_one() {
    // 2 groups of 2; primary prefers group 1, inside it expert 3
    let logits = vec![vec![0.0, 1.0, /* experts */ 0.3, 0.2, 0.1, 0.9]];
    let out = route(
        &RouterConfig::Hierarchical(HierarchicalConfig {
            groups: 2,
            k_groups: 1,
            k_inner: 1,
        }),
        &logits,
        false,
    );
    assert_eq!(assignments(&out), vec![(0, 3)]);
    let w = dense(&out)[0].clone();
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    let out = route(
        &RouterConfig::Hierarchical(HierarchicalConfig {
            groups: 2,
            k_groups: 2,
            k_inner: 1,
        }),
        &logits,
        false,
    );
    let w = dense(&out)[0].clone();
    let pg1 = 1.0 / (1.0 + (-1.0f64).exp());
    assert!(
        (w[3] - pg1).abs() < 1e-12 && (w[0] - (1.0 - pg1)).abs() < 1e-12,
        "{w:?}"
    );
}

#[test]
fn sinkhorn_balances_a_skewed_batch() {
    // every token prefers expert 0 a little: top-1 sends all to it, Sinkhorn spreads them
    let logits: Vec<Vec<f64>> = (0..8)
        .map(|t| vec![1.0, 0.9 - 0.01 * t as f64, 0.8 + 0.01 * t as f64, 0.7])
        .collect();
    let plain = route(&RouterConfig::TopK(TopKConfig { k: 1 }), &logits, true)
        .plan
        .tokens_per_expert();
    let sk = route(
        &RouterConfig::Sinkhorn(SinkhornConfig {
            k: 1,
            iterations: 100,
        }),
        &logits,
        true,
    )
    .plan
    .tokens_per_expert();
    assert_eq!(plain, vec![8, 0, 0, 0]);
    assert!(*sk.iter().max().unwrap() <= 4, "sinkhorn load {sk:?}");
    // evaluation routes by the raw logits
    assert_eq!(
        route(
            &RouterConfig::Sinkhorn(SinkhornConfig {
                k: 1,
                iterations: 100
            }),
            &logits,
            false
        )
        .plan
        .tokens_per_expert(),
        vec![8, 0, 0, 0]
    );
}

#[test]
fn noisy_top_k_is_noisy_only_in_training() {
    let logits: Vec<Vec<f64>> = (0..16)
        .map(|t| {
            (0..8)
                .map(|e| {
                    if e < 4 {
                        ((t + e) as f64).sin() * 0.1
                    } else {
                        2.0
                    }
                })
                .collect()
        })
        .collect();
    let a = route(
        &RouterConfig::NoisyTopK(NoisyTopKConfig { k: 1 }),
        &logits,
        false,
    );
    let b = route(
        &RouterConfig::NoisyTopK(NoisyTopKConfig { k: 1 }),
        &logits,
        true,
    );
    assert!(a.load_loss.is_none() && b.load_loss.is_some());
    assert_ne!(
        a.plan, b.plan,
        "noise of scale ~2 must change some top-1 choices"
    );
}

#[test]
fn expert_dropout_removes_whole_experts_and_renormalises() {
    let cfg = MoeConfig {
        expert_dropout: 0.5,
        ..small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(6))
    };
    let f = fixture(&cfg, 0, DType::F64);
    let mut saw_drop = false;
    for seed in 0..10 {
        let out = f.run(true, DispatchImpl::Kernel, seed);
        let r = out.routing.unwrap();
        let used: std::collections::BTreeSet<u32> = r.plan.expert.iter().cloned().collect();
        saw_drop |= used.len() < 6;
        // still k experts per token, and each token's weights sum to 1
        let w = r.weights.to_vec1::<f64>().unwrap();
        for t in 0..T as u32 {
            let s: f64 = (0..r.plan.len())
                .filter(|&a| r.plan.token[a] == t)
                .map(|a| w[a])
                .sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
        // unavailable experts get zero probability
        let p = r.probs.to_vec2::<f64>().unwrap();
        for e in (0..6).filter(|e| !used.contains(&(*e as u32))) {
            let dropped_for_all = p.iter().all(|row| row[e] == 0.0);
            let merely_unchosen = p.iter().any(|row| row[e] > 0.0);
            assert!(dropped_for_all || merely_unchosen);
        }
    }
    assert!(saw_drop);
    // no dropout at evaluation
    let out = f.run(false, DispatchImpl::Kernel, 0);
    assert!(out
        .routing
        .unwrap()
        .probs
        .to_vec2::<f64>()
        .unwrap()
        .iter()
        .flatten()
        .all(|&p| p > 0.0));
}

#[test]
fn jitter_changes_training_routing_only() {
    let cfg = MoeConfig {
        jitter: 0.5,
        ..small_cfg(RouterConfig::TopK(TopKConfig { k: 1 }), swiglu(4))
    };
    let f = fixture(&cfg, 0, DType::F64);
    let l = |train, seed| {
        f.run(train, DispatchImpl::Kernel, seed)
            .routing
            .unwrap()
            .logits
            .unwrap()
            .to_vec2::<f64>()
            .unwrap()
    };
    assert_eq!(l(false, 1), l(false, 2));
    assert_ne!(l(true, 1), l(true, 2));
}

#[test]
fn shared_experts_add_to_every_token() {
    let with = MoeConfig {
        shared_experts: vec![ExpertSpec::swiglu(3)],
        ..small_cfg(
            RouterConfig::Switch(SwitchConfig {
                k: 1,
                capacity_factor: 0.25,
                eval_capacity_factor: None,
                drop_policy: DropPolicy::Position,
            }),
            swiglu(4),
        )
    };
    let f = fixture(&with, 3, DType::F32);
    let out = f.run(false, DispatchImpl::Kernel, 0);
    let plan = out.routing.unwrap().plan;
    let y = out.y.to_vec2::<f32>().unwrap();
    // dropped tokens still get the shared expert's output
    for t in (0..T).filter(|&t| plan.dropped[t]) {
        assert!(y[t].iter().any(|&v| v != 0.0));
    }
    let x = f.x.as_tensor();
    let shared = f
        .layer
        .shared
        .as_ref()
        .unwrap()
        .expert_forward(0, x)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for t in (0..T).filter(|&t| plan.dropped[t]) {
        for j in 0..D {
            assert!((y[t][j] - shared[t][j]).abs() < 1e-6);
        }
    }
}

#[test]
fn statistics_describe_the_plan() {
    let f = fixture(
        &small_cfg(RouterConfig::TopK(TopKConfig { k: 1 }), swiglu(6)),
        5,
        DType::F64,
    );
    let out = f.run(false, DispatchImpl::Kernel, 0);
    let s = out.stats.unwrap();
    let r = out.routing.unwrap();
    assert_eq!(s.tokens_per_expert.iter().sum::<usize>(), T);
    assert_eq!(
        s.dead_experts,
        (0..6)
            .filter(|&e| s.tokens_per_expert[e] == 0)
            .collect::<Vec<_>>()
    );
    let p = r.probs.to_vec2::<f64>().unwrap();
    let h: f64 = p
        .iter()
        .map(|row| -row.iter().map(|&q| q * q.ln()).sum::<f64>())
        .sum::<f64>()
        / T as f64;
    assert!((s.entropy - h).abs() < 1e-12);
    let ml = r
        .logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert_eq!(s.max_logit, ml);
    assert_eq!(s.dropped_fraction, 0.0);
    // every loss is reported
    assert!(out.losses.switch_balance > 0.0 && out.losses.z > 0.0 && out.losses.importance >= 0.0);
}

/// The layer reports (and weights) the importance loss of the final combine weights, read from
/// the plan weights' per-expert sums: the same value as `losses::importance` of the dense
/// renormalised `[T, E]` weights, with and without renormalisation.
#[test]
fn importance_is_that_of_the_dense_combine_weights() {
    for renormalize in [true, false] {
        let cfg = MoeConfig {
            renormalize,
            ..small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(5))
        };
        let f = fixture(&cfg, 4, DType::F64);
        let out = f.run(true, DispatchImpl::Kernel, 0);
        let r = out.routing.unwrap();
        let mut mask = vec![0f64; T * 5];
        for (&t, &e) in r.plan.token.iter().zip(&r.plan.expert) {
            mask[t as usize * 5 + e as usize] = 1.0;
        }
        let mask = Tensor::from_vec(mask, (T, 5), &Device::Cpu).unwrap();
        let dense = (&r.probs * mask).unwrap();
        let dense = if renormalize {
            router::safe_row_normalize(&dense).unwrap()
        } else {
            dense
        };
        let want = losses::importance(&dense)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            (out.losses.importance - want).abs() < 1e-12 * (1.0 + want.abs()),
            "renormalize={renormalize}: {} vs {want}",
            out.losses.importance
        );
        assert!(want > 0.0);
    }
}
