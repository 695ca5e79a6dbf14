//! The sigmoid-gated shared expert (`MoeConfig::shared_gate`, Qwen2-MoE's
//! `shared_expert_gate`): its value against a hand-written formula, its gradients against
//! central differences, and its config check.

mod common;

use candle_core::{DType, Var};
use common::*;
use switchyard_core::router::TopKConfig;
use switchyard_core::testing::gradcheck;
use switchyard_core::{DispatchImpl, ExpertSpec, MoeConfig, RouterConfig};

fn gated_cfg() -> MoeConfig {
    MoeConfig {
        shared_experts: vec![ExpertSpec::swiglu(3)],
        shared_gate: true,
        ..small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(4))
    }
}

/// `y_gated − y_ungated = (sigmoid(x·wᵀ) − 1) · shared(x)` for the same routed experts.
#[test]
fn shared_gate_scales_the_shared_expert_by_a_sigmoid() {
    let gated = fixture(&gated_cfg(), 3, DType::F64);
    let plain_cfg = MoeConfig {
        shared_gate: false,
        ..gated_cfg()
    };
    let plain = fixture(&plain_cfg, 3, DType::F64);
    // same weights in both layers
    for (name, v) in plain.store.all() {
        v.set(gated.store.get(&name).unwrap().as_tensor()).unwrap();
    }
    plain.x.set(gated.x.as_tensor()).unwrap();
    let w = gated
        .layer
        .shared_gate
        .as_ref()
        .expect("gate created")
        .as_tensor()
        .clone();
    assert_eq!(w.dims(), &[1, D]);

    let x = gated.x.as_tensor();
    let yg = gated.run(false, DispatchImpl::Reference, 0).y;
    let yp = plain.run(false, DispatchImpl::Reference, 0).y;
    let shared = gated
        .layer
        .shared
        .as_ref()
        .unwrap()
        .expert_forward(0, x)
        .unwrap();
    // torch: F.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
    let g = candle_nn::ops::sigmoid(&x.matmul(&w.t().unwrap()).unwrap()).unwrap();
    let want = shared.broadcast_mul(&(g - 1.0).unwrap()).unwrap();
    let got = (yg - yp).unwrap();
    let err = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(err < 1e-12, "max |Δ| = {err}");
}

#[test]
fn shared_gate_gradients_match_central_differences() {
    let f = stable_fixture(&gated_cfg(), true);
    let names: Vec<String> = f.vars().into_iter().map(|(n, _)| n).collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("shared_expert_gate.weight")),
        "{names:?}"
    );
    let vars: Vec<Var> = f.vars().into_iter().map(|(_, v)| v).collect();
    for which in [DispatchImpl::Kernel, DispatchImpl::Reference] {
        let rep = gradcheck(&vars, || f.objective(true, which), 1e-6, 1e-5, 1e-3).unwrap();
        if let Some((vi, i, a, n)) = rep.worst {
            panic!(
                "{which:?}: d/d{}[{i}] analytic {a} vs numeric {n}",
                names[vi]
            );
        }
    }
}

#[test]
fn shared_gate_without_shared_experts_is_rejected() {
    let cfg = MoeConfig {
        shared_gate: true,
        ..small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(4))
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("shared_gate"), "{err}");
}
