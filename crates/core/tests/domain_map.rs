//! The domain-map loss (`losses.domain_map`): its value is `−mean log Σ_{e∈experts(d)} p_e`
//! over the mapped tokens, its gradients match central differences in f64 (alone and through
//! a whole layer), and routing purity counts what it says.

mod common;

use candle_core::{Device, Tensor, Var};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use switchyard_core::domain_map::{domain_map_loss, purity_counts, top1_experts, DOMAIN_MAP_EPS};
use switchyard_core::router::{HashConfig, TopKConfig};
use switchyard_core::testing::gradcheck;
use switchyard_core::{DispatchPlan, DomainTargets, ForwardCtx, MoeBlock, RouterConfig};

const EPS: f64 = 1e-6;
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-3;
const E: usize = 4;

/// Domains 0..4 over T tokens; domain 3 is unmapped, domain 1 maps to two experts.
fn labels() -> (Vec<u32>, Vec<Vec<usize>>) {
    let domains = (0..T as u32).map(|t| (t * 3 + 1) % 4).collect();
    let map = vec![vec![2], vec![0, 3], vec![1], vec![]];
    (domains, map)
}

fn logits() -> Var {
    let v: Vec<f64> = (0..T * E).map(|i| (i as f64 * 0.91).sin() * 2.0).collect();
    Var::from_tensor(&Tensor::from_vec(v, (T, E), &Device::Cpu).unwrap()).unwrap()
}

#[test]
fn value_is_the_mean_negative_log_mass_on_the_mapped_experts() {
    let (domains, map) = labels();
    let l = logits();
    let probs = candle_nn::ops::softmax(l.as_tensor(), 1).unwrap();
    let p = probs.to_vec2::<f64>().unwrap();
    let targets = DomainTargets {
        domains: &domains,
        experts: Some(&map),
    };
    let got = domain_map_loss(&probs, &targets, None)
        .unwrap()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    // the definition, token by token
    let (mut sum, mut n) = (0.0, 0);
    for (t, &d) in domains.iter().enumerate() {
        let experts = &map[d as usize];
        if experts.is_empty() {
            continue;
        }
        sum -= (experts.iter().map(|&e| p[t][e]).sum::<f64>() + DOMAIN_MAP_EPS).ln();
        n += 1;
    }
    assert!(n > 0 && n < T, "some tokens mapped, some not");
    let want = sum / n as f64;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");

    // default mapping: domain d -> expert d mod E
    let default = DomainTargets {
        domains: &domains,
        experts: None,
    };
    let got = domain_map_loss(&probs, &default, None)
        .unwrap()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let want = -domains
        .iter()
        .enumerate()
        .map(|(t, &d)| (p[t][d as usize % E] + DOMAIN_MAP_EPS).ln())
        .sum::<f64>()
        / T as f64;
    assert!((got - want).abs() < 1e-12, "default: {got} vs {want}");

    // an expert that is unavailable for the batch leaves its domain's tokens out when it was
    // the domain's only expert (domain 0 -> expert 2)
    let mut available = vec![true; E];
    available[2] = false;
    let without = domain_map_loss(&probs, &targets, Some(&available))
        .unwrap()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let (mut sum, mut n) = (0.0, 0);
    for (t, &d) in domains.iter().enumerate() {
        let experts: Vec<usize> = map[d as usize]
            .iter()
            .copied()
            .filter(|&e| e != 2)
            .collect();
        if !experts.is_empty() {
            sum -= (experts.iter().map(|&e| p[t][e]).sum::<f64>() + DOMAIN_MAP_EPS).ln();
            n += 1;
        }
    }
    assert!((without - sum / n as f64).abs() < 1e-12);

    // no mapped token: no loss
    let none = DomainTargets {
        domains: &[3; T],
        experts: Some(&map),
    };
    assert!(domain_map_loss(&probs, &none, None).unwrap().is_none());
    // a label count that does not match the tokens is an error, not a panic
    let short = DomainTargets {
        domains: &domains[..3],
        experts: None,
    };
    assert!(domain_map_loss(&probs, &short, None).is_err());
}

#[test]
fn gradient_matches_central_differences() {
    let (domains, map) = labels();
    let l = logits();
    let targets = DomainTargets {
        domains: &domains,
        experts: Some(&map),
    };
    let rep = gradcheck(
        std::slice::from_ref(&l),
        || {
            let probs = candle_nn::ops::softmax(l.as_tensor(), 1)?;
            Ok(domain_map_loss(&probs, &targets, None)?.unwrap())
        },
        EPS,
        ATOL,
        RTOL,
    )
    .unwrap();
    println!("domain_map alone: max |Δ| = {:.3e}", rep.max_abs);
    assert!(rep.ok(), "{:?}", rep.worst);
}

/// The whole layer with only the domain-map loss on: the input, gate and expert gradients of
/// `y·proj + w·loss` against central differences, and the loss is in `aux_loss`.
#[test]
fn layer_gradient_with_the_loss_on_matches_central_differences() {
    let (domains, map) = labels();
    let mut cfg = small_cfg(RouterConfig::TopK(TopKConfig { k: 2 }), swiglu(E));
    cfg.losses.switch_balance = 0.0;
    cfg.losses.importance = 0.0;
    cfg.losses.z = 0.0;
    cfg.losses.domain_map = 0.7;
    let f = stable_fixture(&cfg, true);
    let run = |with_labels: bool| {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut ctx = ForwardCtx::new(true, &mut rng);
        ctx.seq_len = Some(T / 2);
        if with_labels {
            ctx.domains = Some(DomainTargets {
                domains: &domains,
                experts: Some(&map),
            });
        }
        f.layer.forward(f.x.as_tensor(), &mut ctx)
    };
    let out = run(true).unwrap();
    let aux = out.aux_loss.to_scalar::<f64>().unwrap();
    assert!(out.losses.domain_map > 0.0);
    assert!((aux - 0.7 * out.losses.domain_map).abs() < 1e-12, "{aux}");
    // without labels the loss is off
    let plain = run(false).unwrap();
    assert_eq!(plain.losses.domain_map, 0.0);
    assert_eq!(plain.aux_loss.to_scalar::<f64>().unwrap(), 0.0);

    let vars: Vec<Var> = f.vars().into_iter().map(|(_, v)| v).collect();
    let rep = gradcheck(
        &vars,
        || {
            let out = run(true)?;
            Ok(((out.y * &f.proj)?.sum_all()? + out.aux_loss)?)
        },
        EPS,
        ATOL,
        RTOL,
    )
    .unwrap();
    println!("layer with domain_map: max |Δ| = {:.3e}", rep.max_abs);
    assert!(rep.ok(), "{:?}", rep.worst);
}

#[test]
fn a_hash_router_refuses_the_loss_and_names_the_key() {
    let mut cfg = small_cfg(RouterConfig::Hash(HashConfig::default()), swiglu(E));
    cfg.losses.domain_map = 1.0;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("losses.domain_map"), "{err}");
    cfg.losses.domain_map = f64::NAN;
    cfg.router = RouterConfig::TopK(TopKConfig { k: 1 });
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("losses.domain_map"));
}

#[test]
fn purity_counts_top1_by_weight_and_dropped_tokens_as_impure() {
    // 4 tokens, 3 experts; token 0 -> {0: 0.3, 2: 0.7}, token 1 -> {1: 1.0}, token 2 dropped,
    // token 3 -> {0: 0.5, 1: 0.5} (a tie: the lower expert)
    let plan =
        DispatchPlan::from_assignments(4, 3, &[(0, 0), (0, 2), (1, 1), (3, 0), (3, 1)]).unwrap();
    // weights in plan order (sorted by expert, then token)
    let mut w = Vec::new();
    for (&t, &e) in plan.token.iter().zip(&plan.expert) {
        w.push(match (t, e) {
            (0, 0) => 0.3,
            (0, 2) => 0.7,
            (1, 1) => 1.0,
            _ => 0.5,
        });
    }
    let w = Tensor::from_vec(w, plan.len(), &Device::Cpu).unwrap();
    let top1 = top1_experts(&plan, &w).unwrap();
    assert_eq!(top1, vec![Some(2), Some(1), None, Some(0)]);
    // domains: token 0 and 2 are domain 0 (-> expert 2), token 1 domain 1 (-> 0), token 3
    // domain 2 (unmapped)
    let domains = [0, 1, 0, 2];
    let map = vec![vec![2], vec![0], vec![]];
    let counts = purity_counts(
        &top1,
        &DomainTargets {
            domains: &domains,
            experts: Some(&map),
        },
        3,
    )
    .unwrap();
    assert_eq!(counts, vec![(1, 2), (0, 1), (0, 0)]);
}
