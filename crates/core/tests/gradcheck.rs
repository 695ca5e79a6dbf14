//! f64 central-difference gradient checks (eps 1e-6, atol 1e-5, rtol 1e-3) for every
//! differentiable router, expert kind and loss, and the whole layer, through both dispatch
//! implementations. Each check covers the input, the gate weights and the expert weights.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use switchyard_core::router::{
    ExpertChoiceConfig, GroupLimitedConfig, HashConfig, HierarchicalConfig, NoisyTopKConfig,
    SigmoidBiasConfig, SinkhornConfig, SwitchConfig, TopKConfig,
};
use switchyard_core::testing::gradcheck;
use switchyard_core::{
    losses, Activation, DispatchImpl, DropPolicy, ExpertSpec, GroupScore, MoeConfig, RouterConfig,
    ScoreFn,
};

const EPS: f64 = 1e-6;
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-3;

fn check_layer(cfg: MoeConfig, train: bool) {
    let f = stable_fixture(&cfg, train);
    for which in [DispatchImpl::Kernel, DispatchImpl::Reference] {
        let vars: Vec<Var> = f.vars().into_iter().map(|(_, v)| v).collect();
        let names: Vec<String> = f.vars().into_iter().map(|(n, _)| n).collect();
        let gateless = switchyard_core::router::build(&cfg.router, cfg.num_experts())
            .unwrap()
            .gate_outputs()
            == 0;
        assert!(names.iter().any(|n| n.contains("gate")) || gateless);
        assert!(names.iter().any(|n| n.contains("experts.packed")));
        let rep = gradcheck(&vars, || f.objective(train, which), EPS, ATOL, RTOL).unwrap();
        println!(
            "{:<14} {:?}: max |Δ| = {:.3e} over {} entries",
            cfg.router.name(),
            which,
            rep.max_abs,
            rep.checked
        );
        if let Some((vi, i, a, n)) = rep.worst {
            panic!(
                "{} {which:?}: d/d{}[{i}] analytic {a} vs numeric {n}",
                cfg.router.name(),
                names[vi]
            );
        }
    }
}

#[test]
fn top_k_router() {
    check_layer(
        small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(4)),
        true,
    );
}

#[test]
fn top_k_router_without_renormalisation() {
    check_layer(
        MoeConfig {
            renormalize: false,
            ..small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(4))
        },
        true,
    );
}

#[test]
fn noisy_top_k_router_in_training() {
    check_layer(
        small_cfg(RouterConfig::NoisyTopK(NoisyTopKConfig { k: 2 }), swiglu(4)),
        true,
    );
}

#[test]
fn switch_router_with_capacity() {
    for policy in [DropPolicy::Position, DropPolicy::Probability] {
        let r = RouterConfig::Switch(SwitchConfig {
            k: 1,
            capacity_factor: 1.0,
            eval_capacity_factor: None,
            drop_policy: policy,
        });
        check_layer(
            MoeConfig {
                renormalize: false,
                ..small_cfg(r, swiglu(4))
            },
            true,
        );
    }
}

#[test]
fn expert_choice_router() {
    check_layer(
        small_cfg(
            RouterConfig::ExpertChoice(ExpertChoiceConfig {
                capacity_factor: 2.0,
            }),
            swiglu(4),
        ),
        true,
    );
}

#[test]
fn hash_router() {
    check_layer(
        small_cfg(RouterConfig::Hash(HashConfig { seed: 1 }), swiglu(4)),
        true,
    );
}

#[test]
fn sigmoid_bias_router() {
    let r = RouterConfig::SigmoidBias(SigmoidBiasConfig {
        k: 2,
        bias_update_rate: 0.01,
        scaling: 2.5,
    });
    check_layer(small_cfg(r, swiglu(4)), true);
}

#[test]
fn group_limited_router() {
    for (score, gs) in [
        (ScoreFn::Softmax, GroupScore::Max),
        (ScoreFn::Sigmoid, GroupScore::Top2Sum),
    ] {
        let r = RouterConfig::GroupLimited(GroupLimitedConfig {
            k: 2,
            groups: 2,
            topk_groups: 1,
            score,
            group_score: gs,
            bias_update_rate: 0.0,
            scaling: 1.0,
        });
        check_layer(small_cfg(r, swiglu(4)), true);
    }
}

#[test]
fn hierarchical_router() {
    check_layer(
        small_cfg(
            RouterConfig::Hierarchical(HierarchicalConfig {
                groups: 2,
                k_groups: 1,
                k_inner: 2,
            }),
            swiglu(4),
        ),
        true,
    );
}

#[test]
fn sinkhorn_router() {
    check_layer(
        small_cfg(
            RouterConfig::Sinkhorn(SinkhornConfig {
                k: 2,
                iterations: 50,
            }),
            swiglu(4),
        ),
        true,
    );
}

/// Every router in the registry at its default config, so a new router is checked too.
#[test]
fn every_registered_router_at_its_defaults() {
    for router in RouterConfig::defaults() {
        check_layer(small_cfg(router, swiglu(4)), true);
    }
}

#[test]
fn every_expert_kind_in_one_heterogeneous_layer() {
    let experts = vec![
        ExpertSpec::ffn(Activation::Relu, 3),
        ExpertSpec::ffn(Activation::Gelu, 5),
        ExpertSpec::ffn(Activation::Silu, 2),
        ExpertSpec::swiglu(4),
    ];
    check_layer(
        small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), experts),
        true,
    );
}

#[test]
fn shared_experts_mlp_gate_with_context() {
    let cfg = MoeConfig {
        shared_experts: vec![ExpertSpec::swiglu(2)],
        gate: switchyard_core::GateConfig::Mlp {
            hidden: 3,
            activation: Activation::Gelu,
            context: true,
        },
        ..small_cfg(RouterConfig::TopK(TopKConfig { k: 1 }), swiglu(4))
    };
    check_layer(cfg, true);
}

#[test]
fn soft_moe_layer() {
    use rand::SeedableRng;
    use switchyard_core::{ForwardCtx, MoeBlock, ParamBuilder, ParamStore, SoftMoeLayer};
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 3, DType::F64, &Device::Cpu);
    let layer = SoftMoeLayer::new(
        &pb.pp("soft"),
        D,
        &[ExpertSpec::swiglu(3), ExpertSpec::ffn(Activation::Gelu, 2)],
        2,
    )
    .unwrap();
    let x = Var::from_tensor(
        &Tensor::from_vec(
            pb.sample(T * D, switchyard_core::Init::Normal(1.0)),
            (T, D),
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let proj = Tensor::from_vec(
        pb.sample(T * D, switchyard_core::Init::Normal(1.0)),
        (T, D),
        &Device::Cpu,
    )
    .unwrap();
    let mut vars = vec![x.clone()];
    vars.extend(store.all().into_iter().map(|(_, v)| v));
    let rep = gradcheck(
        &vars,
        || {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let mut ctx = ForwardCtx::new(true, &mut rng);
            ctx.seq_len = Some(T / 2);
            let y = layer.forward(x.as_tensor(), &mut ctx)?.y;
            Ok((y * &proj)?.sum_all()?)
        },
        EPS,
        ATOL,
        RTOL,
    )
    .unwrap();
    println!("soft_moe max |Δ| = {:.3e}", rep.max_abs);
    assert!(rep.ok(), "{:?}", rep.worst);
}

/// The losses on their own, w.r.t. their tensor inputs.
#[test]
fn losses_alone() {
    let dev = Device::Cpu;
    let vals = |seed: u64| -> Vec<f64> {
        (0..T * 4)
            .map(|i| ((i as f64 + seed as f64) * 1.37).sin() * 2.0)
            .collect()
    };
    let logits = Var::from_tensor(&Tensor::from_vec(vals(0), (T, 4), &dev).unwrap()).unwrap();
    let noise = Var::from_tensor(&Tensor::from_vec(vals(5), (T, 4), &dev).unwrap()).unwrap();
    let std = Var::from_tensor(
        &(Tensor::from_vec(vals(9), (T, 4), &dev)
            .unwrap()
            .abs()
            .unwrap()
            + 0.5)
            .unwrap(),
    )
    .unwrap();
    let counts = [5, 3, 6, 2];
    type LossFn<'a> = Box<dyn Fn() -> switchyard_core::Result<Tensor> + 'a>;
    let cases: Vec<(&str, LossFn)> = vec![
        (
            "switch_balance",
            Box::new(|| {
                losses::switch_balance(&candle_nn::ops::softmax(logits.as_tensor(), 1)?, &counts, 2)
            }),
        ),
        ("z", Box::new(|| losses::z_loss(logits.as_tensor()))),
        (
            "importance",
            Box::new(|| losses::importance(&candle_nn::ops::softmax(logits.as_tensor(), 1)?)),
        ),
        (
            "load",
            Box::new(|| {
                let noisy = (logits.as_tensor() + (noise.as_tensor() * std.as_tensor())?)?;
                losses::load(logits.as_tensor(), &noisy, std.as_tensor(), 2)
            }),
        ),
    ];
    for (name, f) in cases {
        let rep = gradcheck(
            &[logits.clone(), noise.clone(), std.clone()],
            f,
            EPS,
            ATOL,
            RTOL,
        )
        .unwrap();
        println!("loss {name}: max |Δ| = {:.3e}", rep.max_abs);
        assert!(rep.ok(), "{name}: {:?}", rep.worst);
    }
}
