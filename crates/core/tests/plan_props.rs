//! Property tests of dispatch-plan invariants for every router in the registry: each kept assignment appears
//! once, offsets are monotone, capacity is respected, renormalised weights sum to 1.

mod common;

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchyard_core::router::{self, ExpertChoiceConfig, RouterInput, SwitchConfig};
use switchyard_core::{DispatchPlan, RouterConfig};

fn capacity_of(cfg: &RouterConfig, t: usize, e: usize) -> Option<usize> {
    match *cfg {
        RouterConfig::Switch(SwitchConfig {
            k, capacity_factor, ..
        }) => Some(((capacity_factor * (t * k) as f64 / e as f64).ceil() as usize).max(1)),
        RouterConfig::ExpertChoice(ExpertChoiceConfig { capacity_factor }) => {
            Some(((capacity_factor * t as f64 / e as f64).ceil() as usize).clamp(1, t))
        }
        _ => None,
    }
}

fn check_plan(plan: &DispatchPlan, cfg: &RouterConfig, t: usize, e: usize) {
    plan.check().unwrap();
    assert!(plan.offsets.windows(2).all(|w| w[0] <= w[1]));
    let mut seen = std::collections::HashSet::new();
    for (&tok, &x) in plan.token.iter().zip(&plan.expert) {
        assert!(seen.insert((tok, x)), "assignment ({tok},{x}) twice");
    }
    if let Some(cap) = capacity_of(cfg, t, e) {
        assert!(
            plan.tokens_per_expert().iter().all(|&c| c <= cap),
            "{:?} exceeds capacity {cap}",
            plan.tokens_per_expert()
        );
    }
    let per_token = |tok: u32| plan.token.iter().filter(|&&x| x == tok).count();
    match cfg {
        // capacity may drop a token's choices; experts choose tokens, not tokens experts
        RouterConfig::Switch(c) => assert!((0..t as u32).all(|tok| per_token(tok) <= c.k)),
        RouterConfig::ExpertChoice(_) => {}
        _ => assert!((0..t as u32).all(|tok| per_token(tok) == cfg.k())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn plans_keep_their_invariants(t in 1usize..40, e in 1usize..9, seed in 0u64..1000, train in any::<bool>(), renorm in any::<bool>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for cfg in RouterConfig::examples(e) {
            if cfg.validate(e).is_err() { continue; }
            let r = router::build(&cfg, e).unwrap();
            let cols = r.gate_outputs();
            let vals: Vec<f64> = (0..t * cols).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal) * 2.0).collect();
            let logits = Tensor::from_vec(vals, (t, cols), &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
            let ids: Vec<u32> = (0..t as u32).map(|i| i * 31 + seed as u32).collect();
            let out = r.route(RouterInput { gate_out: &logits, token_ids: Some(&ids), available: None, train, rng: &mut rng }).unwrap();
            check_plan(&out.plan, &cfg, t, e);
            if renorm {
                let dense = router::safe_row_normalize(&out.dense.tensor(&out.plan).unwrap()).unwrap();
                let sums = dense.sum(1).unwrap().to_vec1::<f64>().unwrap();
                for (tok, s) in sums.iter().enumerate() {
                    if !out.plan.dropped[tok] {
                        prop_assert!((s - 1.0).abs() < 1e-9, "{} token {tok}: weights sum to {s}", cfg.name());
                    } else {
                        prop_assert_eq!(*s, 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn from_assignments_sorts_and_indexes(t in 1usize..30, e in 1usize..6, seed in 0u64..1000) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pairs: Vec<(u32, u32)> = (0..t as u32).flat_map(|tok| (0..e as u32).map(move |x| (tok, x))).filter(|_| true).collect();
        pairs.retain(|_| rng.random_bool(0.4));
        let plan = DispatchPlan::from_assignments(t, e, &pairs).unwrap();
        plan.check().unwrap();
        prop_assert_eq!(plan.len(), pairs.len());
        let (off, idx) = plan.by_token();
        prop_assert_eq!(off[t] as usize, plan.len());
        for tok in 0..t {
            for &a in &idx[off[tok] as usize..off[tok + 1] as usize] {
                prop_assert_eq!(plan.token[a as usize] as usize, tok);
            }
        }
    }
}

#[test]
fn duplicate_assignment_is_rejected() {
    let err = DispatchPlan::from_assignments(2, 2, &[(0, 1), (0, 1)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("same token twice"), "{err}");
}
