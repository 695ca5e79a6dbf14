//! Same config, same seed, same thread count: bitwise the same run.

mod common;

use common::*;
use switchyard_core::router::NoisyTopKConfig;
use switchyard_train::trainer::Trainer;
use switchyard_train::TrainConfig;

const STEPS: u64 = 6;

fn run(cfg: TrainConfig) -> (Vec<(String, Vec<u32>)>, Vec<u64>) {
    let mut t = Trainer::new(cfg).unwrap();
    let losses = (0..STEPS)
        .map(|_| t.train_step().unwrap().loss.to_bits())
        .collect();
    (store_bits(&t.store), losses)
}

fn noisy(dir: &std::path::Path) -> TrainConfig {
    let mut cfg = tiny_run(dir);
    // every source of randomness at once: noisy gating, jitter, expert dropout, accumulation
    cfg.model.ffn.sparse = match cfg.model.ffn.sparse {
        switchyard_models::LayerFfn::Moe(mut m) => {
            m.router = switchyard_core::RouterConfig::NoisyTopK(NoisyTopKConfig { k: 2 });
            m.losses.load = 0.01;
            m.jitter = 0.01;
            m.expert_dropout = 0.2;
            switchyard_models::LayerFfn::Moe(m)
        }
        other => other,
    };
    cfg.train.grad_accum = 2;
    cfg.log.metrics = false;
    cfg
}

#[test]
fn two_runs_with_the_same_seed_are_bitwise_identical() {
    let dir = TempDir::new("det");
    let a = run(noisy(dir.path()));
    let b = run(noisy(dir.path()));
    assert_eq!(a.1, b.1, "losses differ");
    assert!(a.0 == b.0, "parameters differ");
}

#[test]
fn another_seed_gives_another_run() {
    let dir = TempDir::new("det-seed");
    let a = run(noisy(dir.path()));
    let mut cfg = noisy(dir.path());
    cfg.seed = 1;
    let b = run(cfg);
    assert_ne!(a.1, b.1);
}
