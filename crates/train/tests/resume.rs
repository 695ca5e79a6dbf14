//! `--resume` continues exactly: 2N steps straight give bitwise the same parameters and
//! optimiser state as N steps, save, load, N more steps.

mod common;

use common::*;
use switchyard_core::router::{NoisyTopKConfig, SigmoidBiasConfig};
use switchyard_core::RouterConfig;
use switchyard_models::LayerFfn;
use switchyard_train::trainer::{RunError, Trainer};
use switchyard_train::TrainConfig;

const N: u64 = 4;

fn with_router(
    mut cfg: TrainConfig,
    router: RouterConfig,
    jitter: f64,
    dropout: f64,
) -> TrainConfig {
    if let LayerFfn::Moe(m) = &mut cfg.model.ffn.sparse {
        m.router = router;
        m.jitter = jitter;
        m.expert_dropout = dropout;
    }
    cfg.train.steps = 2 * N;
    // an evaluation in the middle of the straight run must not disturb it
    cfg.train.eval_every = N;
    cfg
}

fn check_resume_is_exact(make: impl Fn(&std::path::Path) -> TrainConfig) {
    let straight_dir = TempDir::new("resume-straight");
    let mut straight = Trainer::new(make(straight_dir.path())).unwrap();
    let summary = straight.run().unwrap();
    assert_eq!(summary.steps, 2 * N);

    let split_dir = TempDir::new("resume-split");
    let mut first = Trainer::new(make(split_dir.path())).unwrap();
    for _ in 0..N {
        first.train_step().unwrap();
    }
    first.save_checkpoint().unwrap();
    drop(first);
    let mut second = Trainer::resume(make(split_dir.path()), split_dir.path()).unwrap();
    assert_eq!(second.step(), N);
    let resumed = second.run().unwrap();

    assert!(
        trainer_bits(&straight) == trainer_bits(&second),
        "parameters or optimiser state differ after resume"
    );
    assert_eq!(summary.eval.loss.to_bits(), resumed.eval.loss.to_bits());
}

#[test]
fn resume_is_exact_with_router_noise_jitter_dropout_and_accumulation() {
    check_resume_is_exact(|dir| {
        let mut cfg = with_router(
            tiny_run(dir),
            RouterConfig::NoisyTopK(NoisyTopKConfig { k: 2 }),
            0.01,
            0.2,
        );
        cfg.train.grad_accum = 2;
        cfg
    });
}

#[test]
fn resume_is_exact_with_aux_loss_free_bias_buffers() {
    check_resume_is_exact(|dir| {
        with_router(
            tiny_run(dir),
            RouterConfig::SigmoidBias(SigmoidBiasConfig {
                k: 2,
                bias_update_rate: 0.01,
                scaling: 1.0,
            }),
            0.0,
            0.0,
        )
    });
}

#[test]
fn resume_with_another_model_is_refused() {
    let dir = TempDir::new("resume-mismatch");
    let mut t = Trainer::new(tiny_run(dir.path())).unwrap();
    t.train_step().unwrap();
    t.save_checkpoint().unwrap();
    let mut other = tiny_run(dir.path());
    other.model.n_layers = 2;
    let err = Trainer::resume(other, dir.path())
        .err()
        .expect("a different model cannot resume");
    assert!(matches!(err, RunError::Resume { .. }), "{err}");
    assert!(err.to_string().contains("`model` differs"), "{err}");
}
