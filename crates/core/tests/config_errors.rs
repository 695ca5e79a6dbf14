//! Bad configuration gets a clear error naming the field, never a panic.

use candle_core::{DType, Device};
use switchyard_core::router::{
    ExpertChoiceConfig, GroupLimitedConfig, HierarchicalConfig, SinkhornConfig, SwitchConfig,
    TopKConfig,
};
use switchyard_core::{
    ExpertSpec, GateConfig, GroupScore, MoeConfig, MoeLayer, ParamBuilder, ParamStore,
    RouterConfig, ScoreFn, SoftMoeLayer,
};

fn err_of(cfg: MoeConfig) -> String {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
    match MoeLayer::new(&pb, &cfg) {
        Ok(_) => panic!("config should be rejected: {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

fn base() -> MoeConfig {
    MoeConfig {
        d_model: 8,
        experts: vec![ExpertSpec::swiglu(4); 4],
        ..Default::default()
    }
}

fn expect(cfg: MoeConfig, field: &str, words: &str) {
    let e = err_of(cfg);
    assert!(
        e.contains(field) && e.contains(words),
        "error `{e}` should name `{field}` and say `{words}`"
    );
}

#[test]
fn k_larger_than_experts() {
    expect(
        MoeConfig {
            router: RouterConfig::TopK(TopKConfig { k: 5 }),
            ..base()
        },
        "router.k",
        "exceeds the number of experts (4)",
    );
    expect(
        MoeConfig {
            router: RouterConfig::TopK(TopKConfig { k: 0 }),
            ..base()
        },
        "router.k",
        "at least 1",
    );
}

#[test]
fn zero_experts() {
    expect(
        MoeConfig {
            experts: vec![],
            ..base()
        },
        "experts",
        "at least one routed expert",
    );
}

#[test]
fn capacity_factor_not_positive() {
    for cf in [0.0, -1.0, f64::NAN] {
        let r = RouterConfig::Switch(SwitchConfig {
            k: 1,
            capacity_factor: cf,
            eval_capacity_factor: None,
            drop_policy: switchyard_core::DropPolicy::Position,
        });
        expect(
            MoeConfig {
                router: r,
                ..base()
            },
            "router.capacity_factor",
            "> 0",
        );
    }
    expect(
        MoeConfig {
            router: RouterConfig::ExpertChoice(ExpertChoiceConfig {
                capacity_factor: 0.0,
            }),
            ..base()
        },
        "router.capacity_factor",
        "> 0",
    );
}

#[test]
fn expert_width_zero() {
    let mut cfg = base();
    cfg.experts[2].hidden = 0;
    expect(cfg, "experts[2].hidden", "at least 1");
    expect(
        MoeConfig {
            shared_experts: vec![ExpertSpec::swiglu(0)],
            ..base()
        },
        "shared_experts[0].hidden",
        "at least 1",
    );
}

#[test]
fn group_count_must_divide_experts() {
    let r = RouterConfig::GroupLimited(GroupLimitedConfig {
        k: 1,
        groups: 3,
        topk_groups: 1,
        score: ScoreFn::Softmax,
        group_score: GroupScore::Max,
        bias_update_rate: 0.0,
        scaling: 1.0,
    });
    expect(
        MoeConfig {
            router: r,
            ..base()
        },
        "router.groups",
        "divide the number of experts (4)",
    );
    expect(
        MoeConfig {
            router: RouterConfig::Hierarchical(HierarchicalConfig {
                groups: 3,
                k_groups: 1,
                k_inner: 1,
            }),
            ..base()
        },
        "router.groups",
        "divide",
    );
    let r = RouterConfig::GroupLimited(GroupLimitedConfig {
        k: 3,
        groups: 2,
        topk_groups: 1,
        score: ScoreFn::Softmax,
        group_score: GroupScore::Max,
        bias_update_rate: 0.0,
        scaling: 1.0,
    });
    expect(
        MoeConfig {
            router: r,
            ..base()
        },
        "router.k",
        "raise topk_groups",
    );
}

#[test]
fn other_fields() {
    expect(
        MoeConfig {
            d_model: 0,
            ..base()
        },
        "d_model",
        "at least 1",
    );
    expect(
        MoeConfig {
            jitter: 1.5,
            ..base()
        },
        "jitter",
        "[0, 1)",
    );
    expect(
        MoeConfig {
            expert_dropout: -0.1,
            ..base()
        },
        "expert_dropout",
        "[0, 1)",
    );
    expect(
        MoeConfig {
            gate: GateConfig::Mlp {
                hidden: 0,
                activation: switchyard_core::Activation::Relu,
                context: false,
            },
            ..base()
        },
        "gate.hidden",
        "at least 1",
    );
    let mut cfg = base();
    cfg.losses.z = f64::INFINITY;
    expect(cfg, "losses.z", "finite");
    let mut cfg = base();
    cfg.losses.load = 0.1;
    expect(cfg, "losses.load", "noisy_top_k");
    expect(
        MoeConfig {
            router: RouterConfig::Sinkhorn(SinkhornConfig {
                k: 1,
                iterations: 0,
            }),
            ..base()
        },
        "router.iterations",
        "at least 1",
    );
}

#[test]
fn soft_moe_config_errors() {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
    let e = SoftMoeLayer::new(&pb, 4, &[ExpertSpec::swiglu(2)], 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("slots_per_expert"), "{e}");
    let e = SoftMoeLayer::new(&pb, 4, &[], 1).err().unwrap().to_string();
    assert!(e.contains("experts"), "{e}");
}

#[test]
fn config_parses_from_toml_like_json() {
    // configs are plain serde data; the CLI reads them from TOML
    let cfg: MoeConfig = serde_json::from_str(
        r#"{"d_model": 8, "experts": [{"kind": "swiglu", "hidden": 4}, {"kind": "ffn", "activation": "gelu", "hidden": 6}],
            "router": {"type": "switch", "k": 1, "capacity_factor": 1.25, "eval_capacity_factor": null, "drop_policy": "probability"}}"#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.experts[1].hidden, 6);
}
