//! Each surgery's defining property: outputs preserved where they should be, the optimiser
//! state carried, shapes and counts consistent, and inverse operations giving the original
//! state back.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use switchyard_core::{ExpertSpec, MoeConfig, RouterConfig};
use switchyard_lifecycle::{
    add_experts, merge_experts, prune_experts, split_expert, upcycle, AddInit, LifecycleError,
    ModelState, UpcycleOptions,
};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, LmCtx};

fn router(json: serde_json::Value) -> RouterConfig {
    serde_json::from_value(json).unwrap()
}

fn lm(router_cfg: RouterConfig, experts: usize) -> LmConfig {
    LmConfig {
        vocab_size: 40,
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        max_seq_len: 32,
        ffn: FfnConfig {
            dense_hidden: 24,
            sparse: LayerFfn::Moe(MoeConfig {
                d_model: 16,
                experts: vec![ExpertSpec::swiglu(12); experts],
                router: router_cfg,
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A state with optimiser moments (random, positive second moments) and step counts, as a
/// checkpoint of a run in progress has.
fn with_moments(mut s: ModelState) -> ModelState {
    for (i, (name, t)) in s.params.clone().iter().enumerate() {
        let m = Tensor::randn(0f32, 0.01, t.dims(), &Device::Cpu).unwrap();
        let v = (Tensor::randn(0f32, 1e-3, t.dims(), &Device::Cpu)
            .unwrap()
            .sqr()
            .unwrap()
            + 1e-8)
            .unwrap();
        s.optimizer.insert(format!("{name}.exp_avg"), m);
        s.optimizer.insert(format!("{name}.exp_avg_sq"), v);
        s.optimizer.insert(
            format!("{name}.step"),
            Tensor::new(40 + i as i64, &Device::Cpu).unwrap(),
        );
    }
    s
}

fn ids() -> Tensor {
    let v: Vec<u32> = (0..2 * 24).map(|i| (i * 7 + 3) % 40).collect();
    Tensor::from_vec(v, (2, 24), &Device::Cpu).unwrap()
}

/// Eval-mode logits of the model a state describes.
fn logits(s: &ModelState) -> Vec<f32> {
    let m = s.build().unwrap();
    let out = m.forward(&ids(), &mut LmCtx::new(false, 0)).unwrap();
    out.logits.flatten_all().unwrap().to_vec1().unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn same_tensors(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, t) in a {
        if t.dtype() == DType::I64 {
            assert_eq!(
                t.to_scalar::<i64>().unwrap(),
                b[k].to_scalar::<i64>().unwrap(),
                "{k}"
            );
        } else {
            assert_eq!(host(t), host(&b[k]), "{k} differs");
        }
    }
}

fn routers_that_add() -> Vec<RouterConfig> {
    vec![
        router(serde_json::json!({"type": "top_k", "k": 2})),
        router(serde_json::json!({"type": "noisy_top_k", "k": 2})),
        router(
            serde_json::json!({"type": "switch", "k": 1, "capacity_factor": 1.0, "drop_policy": "position"}),
        ),
        router(
            serde_json::json!({"type": "sigmoid_bias", "k": 2, "bias_update_rate": 0.01, "scaling": 1.0}),
        ),
    ]
}

#[test]
fn add_keeps_logits_bitwise_for_every_router_that_can_add() {
    for r in routers_that_add() {
        let name = r.name();
        let s0 = with_moments(ModelState::init(lm(r, 4), 3).unwrap());
        for init in [AddInit::Fresh { like: 1 }, AddInit::Copy { from: 2 }] {
            let mut s = s0.clone();
            let rep = add_experts(&mut s, &[], 3, &init, 0.05, 9).unwrap();
            assert_eq!(rep.layers, vec![0, 1]);
            assert_eq!(rep.experts_after, vec![7, 7]);
            let (a, b) = (logits(&s), logits(&s0));
            let diff = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(a == b, "{name} {init:?}: logits changed, max |Δ| = {diff}");
            // counts consistent with the config
            let m = s.build().unwrap();
            assert_eq!(
                m.num_params_total(),
                s.model.param_count().unwrap().total,
                "{name}"
            );
            assert!(s.model.is_uniform() && s.model.layer_moe.is_empty());
            // every new expert is closed, every old one open
            let a = &s.buffers[&switchyard_io::gate_in_key(0)];
            assert_eq!(a, &vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        }
    }
}

#[test]
fn add_on_one_layer_makes_a_per_layer_config_and_keeps_the_other_layer() {
    let s0 = with_moments(ModelState::init(lm(routers_that_add().remove(0), 4), 3).unwrap());
    let mut s = s0.clone();
    add_experts(&mut s, &[1], 2, &AddInit::Fresh { like: 0 }, 0.0, 1).unwrap();
    assert_eq!(s.model.layer_moe_config(0).unwrap().experts.len(), 4);
    assert_eq!(s.model.layer_moe_config(1).unwrap().experts.len(), 6);
    assert!(!s.model.is_uniform());
    assert!(logits(&s) == logits(&s0));
    let p0 = "model.layers.0.block_sparse_moe.experts.packed";
    assert_eq!(host(&s.params[p0]), host(&s0.params[p0]));
    // the config round-trips through JSON as a checkpoint's config.json does
    let back: LmConfig = serde_json::from_value(serde_json::to_value(&s.model).unwrap()).unwrap();
    assert_eq!(back, s.model);
}

#[test]
fn add_carries_moments_and_seeds_new_second_moments_from_the_layer() {
    let s0 = with_moments(ModelState::init(lm(routers_that_add().remove(0), 4), 3).unwrap());
    let mut s = s0.clone();
    add_experts(&mut s, &[0], 1, &AddInit::Fresh { like: 0 }, 0.0, 1).unwrap();
    let key = "model.layers.0.block_sparse_moe.experts.packed";
    let seg = 3 * 16 * 12;
    let (old_m, new_m) = (
        host(&s0.optimizer[&format!("{key}.exp_avg")]),
        host(&s.optimizer[&format!("{key}.exp_avg")]),
    );
    let (old_v, new_v) = (
        host(&s0.optimizer[&format!("{key}.exp_avg_sq")]),
        host(&s.optimizer[&format!("{key}.exp_avg_sq")]),
    );
    assert_eq!(new_m.len(), 5 * seg);
    assert_eq!(&new_m[..4 * seg], &old_m[..]);
    assert_eq!(&new_v[..4 * seg], &old_v[..]);
    assert!(new_m[4 * seg..].iter().all(|&x| x == 0.0));
    for i in 0..seg {
        let mean = (0..4).map(|e| old_v[e * seg + i] as f64).sum::<f64>() / 4.0;
        assert!((new_v[4 * seg + i] as f64 - mean).abs() <= 1e-6 * mean.abs() + 1e-12);
    }
    // step counts stay
    let step = |st: &ModelState| {
        st.optimizer[&format!("{key}.step")]
            .to_scalar::<i64>()
            .unwrap()
    };
    assert_eq!(step(&s), step(&s0));
    // gate rows: old rows and their moments unchanged, the new row fresh
    let g = "model.layers.0.block_sparse_moe.gate.weight";
    assert_eq!(s.params[g].dims(), &[5, 16]);
    assert_eq!(&host(&s.params[g])[..4 * 16], &host(&s0.params[g])[..]);
    assert_eq!(
        &host(&s.optimizer[&format!("{g}.exp_avg_sq")])[..4 * 16],
        &host(&s0.optimizer[&format!("{g}.exp_avg_sq")])[..]
    );
}

#[test]
fn noisy_top_k_gate_rows_move_in_both_blocks() {
    let r = router(serde_json::json!({"type": "noisy_top_k", "k": 2}));
    let s0 = ModelState::init(lm(r, 4), 3).unwrap();
    let mut s = s0.clone();
    prune_experts(&mut s, &[(0, 1)]).unwrap();
    let g = "model.layers.0.block_sparse_moe.gate.weight";
    let (old, new) = (host(&s0.params[g]), host(&s.params[g]));
    assert_eq!(s.params[g].dims(), &[6, 16]);
    let row = |v: &[f32], r: usize| v[r * 16..(r + 1) * 16].to_vec();
    // logits block: experts 0, 2, 3; noise block: rows 4 + (0, 2, 3)
    for (new_r, old_r) in [(0, 0), (1, 2), (2, 3), (3, 4), (4, 6), (5, 7)] {
        assert_eq!(row(&new, new_r), row(&old, old_r));
    }
}

#[test]
fn add_then_prune_the_added_gives_the_original_state_back() {
    let s0 = with_moments(ModelState::init(lm(routers_that_add().remove(3), 4), 3).unwrap());
    let mut s = s0.clone();
    add_experts(&mut s, &[], 2, &AddInit::Copy { from: 0 }, 0.1, 4).unwrap();
    let rep = prune_experts(&mut s, &[(0, 4), (0, 5), (1, 4), (1, 5)]).unwrap();
    assert_eq!(rep.experts_after, vec![4, 4]);
    assert!(rep.warnings.is_empty());
    same_tensors(&s.params, &s0.params);
    same_tensors(&s.optimizer, &s0.optimizer);
    assert_eq!(s.buffers, s0.buffers);
    assert_eq!(s.model, s0.model);
}

#[test]
fn split_then_merge_gives_the_original_back_and_split_keeps_routing_mass() {
    let r = router(serde_json::json!({"type": "top_k", "k": 2}));
    let s0 = with_moments(ModelState::init(lm(r, 4), 3).unwrap());
    let mut s = s0.clone();
    split_expert(&mut s, 1, 2, 0.0, 5).unwrap();
    assert_eq!(s.model.layer_moe_config(1).unwrap().experts.len(), 5);
    assert_eq!(s.model.layer_moe_config(0).unwrap().experts.len(), 4);
    // router probabilities: the pair (2, 4) holds expert 2's old mass; the others unchanged
    let probs = |st: &ModelState| -> Vec<Vec<f32>> {
        let m = st.build().unwrap();
        let out = m.forward(&ids(), &mut LmCtx::new(false, 0)).unwrap();
        let p = &out.layers[1].routing.as_ref().unwrap().probs;
        p.to_vec2::<f32>().unwrap()
    };
    let (p0, p1) = (probs(&s0), probs(&s));
    // layer 1's input is unchanged (layer 0 untouched), so the rows compare token by token
    for (a, b) in p0.iter().zip(&p1) {
        for e in [0, 1, 3] {
            assert!((a[e] - b[e]).abs() < 1e-6, "{a:?} vs {b:?}");
        }
        assert!((a[2] - (b[2] + b[4])).abs() < 1e-6);
        assert!(
            (b[2] - b[4]).abs() < 1e-6,
            "noise 0: the two halves are equal"
        );
    }
    assert_eq!(
        s.buffers[&switchyard_io::gate_in_key(1)],
        vec![1.0, 1.0, 0.5, 1.0, 0.5]
    );
    let usage = [3.0, 1.0, 5.0, 2.0, 5.0];
    merge_experts(&mut s, 1, &[2, 4], &usage).unwrap();
    same_tensors(&s.params, &s0.params);
    same_tensors(&s.optimizer, &s0.optimizer);
    assert_eq!(s.buffers, s0.buffers);
    assert_eq!(s.model, s0.model);
    assert!(logits(&s) == logits(&s0));
}

#[test]
fn merge_is_usage_weighted() {
    let r = router(serde_json::json!({"type": "top_k", "k": 2}));
    let s0 = ModelState::init(lm(r, 4), 3).unwrap();
    let mut s = s0.clone();
    merge_experts(&mut s, 0, &[3, 1], &[0.0, 1.0, 0.0, 3.0]).unwrap();
    let key = "model.layers.0.block_sparse_moe.experts.packed";
    let seg = 3 * 16 * 12;
    let (old, new) = (host(&s0.params[key]), host(&s.params[key]));
    assert_eq!(new.len(), 3 * seg);
    for i in 0..seg {
        let want = 0.25 * old[seg + i] as f64 + 0.75 * old[3 * seg + i] as f64;
        assert!((new[seg + i] as f64 - want).abs() < 1e-6);
    }
    assert_eq!(&new[..seg], &old[..seg]);
    assert_eq!(&new[2 * seg..], &old[2 * seg..3 * seg]);
}

#[test]
fn prune_clamps_k_with_a_warning_and_refuses_what_cannot_work() {
    let r = router(serde_json::json!({"type": "top_k", "k": 3}));
    let s0 = ModelState::init(lm(r, 4), 3).unwrap();
    let mut s = s0.clone();
    let rep = prune_experts(&mut s, &[(0, 0), (0, 3)]).unwrap();
    assert_eq!(rep.warnings.len(), 1, "{:?}", rep.warnings);
    assert!(rep.warnings[0].contains("router.k lowered from 3 to 2"));
    assert_eq!(s.model.layer_moe_config(0).unwrap().router.k(), 2);
    s.build().unwrap();
    let err = |r: Result<_, LifecycleError>| r.unwrap_err().to_string();
    let mut s = s0.clone();
    assert!(err(prune_experts(&mut s, &[(0, 0), (0, 1), (0, 2), (0, 3)])).contains("leaves none"));
    assert!(err(prune_experts(&mut s, &[(0, 9)])).contains("expert 9 does not exist"));
    assert!(err(prune_experts(&mut s, &[(5, 0)])).contains("not an MoE layer"));
    assert!(err(merge_experts(&mut s, 0, &[1], &[1.0; 4])).contains("at least two"));
    // groups that no longer divide the expert count are refused, naming the key
    let h = router(
        serde_json::json!({"type": "hierarchical", "groups": 2, "k_groups": 1, "k_inner": 1}),
    );
    let mut s = ModelState::init(lm(h, 4), 3).unwrap();
    let e = err(prune_experts(&mut s, &[(0, 0)]));
    assert!(e.contains("groups"), "{e}");
    let hash = router(serde_json::json!({"type": "hash", "seed": 0}));
    let mut s = ModelState::init(lm(hash, 4), 3).unwrap();
    assert!(err(split_expert(&mut s, 0, 0, 0.0, 1)).contains("hash router"));
    let ec = router(serde_json::json!({"type": "expert_choice", "capacity_factor": 1.0}));
    let mut s = ModelState::init(lm(ec, 4), 3).unwrap();
    let e = err(add_experts(
        &mut s,
        &[],
        1,
        &AddInit::Fresh { like: 0 },
        0.0,
        1,
    ));
    assert!(
        e.contains("expert_choice") && e.contains("supported"),
        "{e}"
    );
}

#[test]
fn hierarchical_prune_of_a_whole_group_keeps_group_rows() {
    let h = router(
        serde_json::json!({"type": "hierarchical", "groups": 2, "k_groups": 1, "k_inner": 1}),
    );
    let s0 = ModelState::init(lm(h, 4), 3).unwrap();
    let mut s = s0.clone();
    // 4 experts in 2 groups -> remove one from each group: 2 experts, 2 groups of 1
    prune_experts(&mut s, &[(0, 1), (0, 3)]).unwrap();
    let g = "model.layers.0.block_sparse_moe.gate.weight";
    let (old, new) = (host(&s0.params[g]), host(&s.params[g]));
    assert_eq!(s.params[g].dims(), &[4, 16]);
    let row = |v: &[f32], r: usize| v[r * 16..(r + 1) * 16].to_vec();
    for (n, o) in [(0, 0), (1, 1), (2, 2), (3, 4)] {
        assert_eq!(row(&new, n), row(&old, o));
    }
    s.build().unwrap();
}

#[test]
fn upcycle_with_k_equal_n_and_no_noise_matches_the_dense_model() {
    let dense = lm(routers_that_add().remove(0), 4).dense_equivalent();
    let s0 = with_moments(ModelState::init(dense, 11).unwrap());
    let mut s = s0.clone();
    let moe = upcycle(
        &mut s,
        &UpcycleOptions {
            experts: 4,
            k: 4,
            noise: 0.0,
            seed: 2,
        },
    )
    .unwrap();
    assert_eq!(moe.experts.len(), 4);
    let (a, b) = (logits(&s0), logits(&s));
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-5, "max |Δlogit| = {max}");
    // moments: the dense FFN's go to every copy; the gate starts from zero at step 0
    let p = "model.layers.0.block_sparse_moe.experts.packed";
    let m = host(&s.optimizer[&format!("{p}.exp_avg")]);
    let seg = m.len() / 4;
    let g = host(&s0.optimizer["model.layers.0.mlp.gate_proj.weight.exp_avg"]);
    assert_eq!(&m[..g.len()], &g[..]);
    assert_eq!(&m[..seg], &m[3 * seg..]);
    let gs = s.optimizer["model.layers.0.block_sparse_moe.gate.weight.step"]
        .to_scalar::<i64>()
        .unwrap();
    assert_eq!(gs, 0);
    assert!(!s.optimizer.keys().any(|k| k.contains(".mlp.")));
    // with k < N and noise, the copies differ and the output moves a little
    let mut s2 = s0.clone();
    upcycle(
        &mut s2,
        &UpcycleOptions {
            experts: 4,
            k: 2,
            noise: 0.01,
            seed: 2,
        },
    )
    .unwrap();
    let c = logits(&s2);
    let max2 = a
        .iter()
        .zip(&c)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max2 > 0.0 && max2 < 0.1, "max |Δlogit| = {max2}");
    // an MoE model is refused
    let mut moe_state = s.clone();
    let e = upcycle(
        &mut moe_state,
        &UpcycleOptions {
            experts: 4,
            k: 1,
            noise: 0.0,
            seed: 1,
        },
    );
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("already has MoE layers"));
}
