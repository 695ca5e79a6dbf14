//! The dense baseline has the MoE model's active parameters per token (within 1%).

mod common;

use candle_core::DType;
use common::*;
use switchyard_core::router::TopKConfig;
use switchyard_core::{ExpertSpec, RouterConfig};
use switchyard_models::{LayerFfn, LmConfig};

fn check(cfg: &LmConfig) -> (usize, usize) {
    let (_, moe) = build(cfg, 0, DType::F32);
    let dense_cfg = cfg.dense_equivalent();
    let (_, dense) = build(&dense_cfg, 0, DType::F32);
    assert!(dense.moe_layers().next().is_none());
    let (a, b) = (
        moe.num_params_active_per_token(),
        dense.num_params_active_per_token(),
    );
    let rel = (a as f64 - b as f64).abs() / a as f64;
    println!(
        "active/token: moe {a}, dense {b} ({:.3}%); total: moe {}, dense {}",
        100.0 * rel,
        moe.num_params_total(),
        dense.num_params_total()
    );
    assert!(
        rel < 0.01,
        "active params differ by {:.2}%: moe {a}, dense {b}",
        100.0 * rel
    );
    assert_eq!(
        dense.num_params_total(),
        b,
        "a dense model uses all its parameters"
    );
    assert!(moe.num_params_total() > a);
    (a, b)
}

fn hidden_of(cfg: &LmConfig) -> usize {
    match cfg.dense_equivalent().ffn.sparse {
        LayerFfn::Dense { hidden } => hidden,
        LayerFfn::Moe(_) => panic!("dense_equivalent left an MoE layer"),
    }
}

#[test]
fn top2_of_8_swiglu_experts() {
    let mut cfg = LmConfig {
        vocab_size: 259,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        ..tiny_cfg()
    };
    if let LayerFfn::Moe(m) = &mut cfg.ffn.sparse {
        m.d_model = 32;
        m.experts = vec![ExpertSpec::swiglu(32); 8];
    }
    // k·h + E/3 = 64 + 2.67
    assert_eq!(hidden_of(&cfg), 67);
    check(&cfg);
}

#[test]
fn shared_experts_heterogeneous_widths_and_mixed_layers() {
    let mut cfg = LmConfig {
        n_layers: 4,
        ..tiny_cfg()
    };
    cfg.ffn.first_dense = 1;
    cfg.ffn.moe_every = 2;
    if let LayerFfn::Moe(m) = &mut cfg.ffn.sparse {
        m.experts = vec![
            ExpertSpec::swiglu(8),
            ExpertSpec::swiglu(24),
            ExpertSpec::swiglu(16),
            ExpertSpec::swiglu(16),
        ];
        m.shared_experts = vec![ExpertSpec::swiglu(10)];
        m.router = RouterConfig::TopK(TopKConfig { k: 1 });
    }
    // k·mean(h) + shared + E/3 = 16 + 10 + 1.33
    assert_eq!(hidden_of(&cfg), 27);
    check(&cfg);
}

#[test]
fn a_dense_config_is_its_own_equivalent() {
    let cfg = LmConfig {
        ffn: switchyard_models::FfnConfig {
            sparse: LayerFfn::Dense { hidden: 20 },
            ..tiny_cfg().ffn
        },
        ..tiny_cfg()
    };
    assert_eq!(cfg.dense_equivalent(), cfg);
}
