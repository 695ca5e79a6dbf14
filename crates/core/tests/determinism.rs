//! Same seed → bitwise-equal outputs (for any thread count); ties break to the lower index.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use switchyard_core::router::{self, top_k, RouterInput};
use switchyard_core::{DispatchImpl, DropPolicy, MoeConfig, RouterConfig};

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

fn run_f32(cfg: &MoeConfig, seed: u64) -> (Vec<u32>, Vec<Vec<u32>>) {
    let f = fixture(cfg, seed, DType::F32);
    let out = f.run(true, DispatchImpl::Kernel, 11);
    let loss = ((out.y.clone() * &f.proj).unwrap().sum_all().unwrap() + out.aux_loss).unwrap();
    let grads = loss.backward().unwrap();
    let g = f.vars().iter().map(|(_, v)| bits(grads.get(v.as_tensor()).unwrap())).collect();
    (bits(&out.y), g)
}

#[test]
fn same_seed_same_bits_for_forward_and_backward() {
    let cfg = MoeConfig { jitter: 0.1, expert_dropout: 0.2, ..small_cfg(RouterConfig::NoisyTopK { k: 2 }, swiglu(6)) };
    let a = run_f32(&cfg, 5);
    let b = run_f32(&cfg, 5);
    assert_eq!(a, b);
    let c = run_f32(&cfg, 6);
    assert_ne!(a.0, c.0, "a different seed should change the output");
}

#[test]
fn thread_count_does_not_change_bits() {
    let cfg = small_cfg(RouterConfig::TopK { k: 2 }, swiglu(6));
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| run_f32(&cfg, 9));
    let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap().install(|| run_f32(&cfg, 9));
    assert_eq!(one, four);
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
        RouterConfig::TopK { k: 2 },
        RouterConfig::SigmoidBias { k: 2, bias_update_rate: 0.0, scaling: 1.0 },
        RouterConfig::Switch { k: 1, capacity_factor: 4.0, eval_capacity_factor: None, drop_policy: DropPolicy::Probability },
    ] {
        let r = router::build(&cfg, 4).unwrap();
        let out = r.route(RouterInput { gate_out: &logits, token_ids: None, available: None, train: false, rng: &mut rng }).unwrap();
        for tok in 0..4u32 {
            let chosen: Vec<u32> = (0..out.plan.len()).filter(|&a| out.plan.token[a] == tok).map(|a| out.plan.expert[a]).collect();
            assert_eq!(chosen, (0..cfg.k() as u32).collect::<Vec<_>>(), "{}", cfg.name());
        }
    }
    // expert choice with equal scores: each expert takes the lowest token indices
    let r = router::build(&RouterConfig::ExpertChoice { capacity_factor: 1.0 }, 4).unwrap();
    let out = r.route(RouterInput { gate_out: &logits, token_ids: None, available: None, train: false, rng: &mut rng }).unwrap();
    assert!(out.plan.token.iter().all(|&t| t == 0));
}
