//! The training loop: it learns, it guards against non-finite values and loss spikes, it
//! writes metrics and checkpoints that load back.

mod common;

use common::*;
use switchyard_train::trainer::{load_model, metrics::METRICS_FILE, Faults, RunError, Trainer};

/// Steps for the tiny model to memorise its training text.
const OVERFIT_STEPS: u64 = 150;
/// Byte-level cross-entropy starts near ln(259) ≈ 5.6; memorised text is far below.
const OVERFIT_TARGET: f64 = 0.6;

#[test]
fn tiny_model_overfits_a_tiny_batch() {
    let dir = TempDir::new("overfit");
    // One domain of two short documents: one for training (every one of its 16-byte windows
    // in every batch), one held out.
    let domain = dir.path().join("data/notes");
    std::fs::create_dir_all(&domain).unwrap();
    let text = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs! 0123456789 ok.\n";
    std::fs::write(domain.join("a.txt"), text).unwrap();
    std::fs::write(
        domain.join("b.txt"),
        "held-out text for validation, long enough for one window.\n",
    )
    .unwrap();
    let mut cfg = tiny_run(&dir.path().join("run"));
    cfg.data.path = Some(dir.path().join("data"));
    cfg.data.valid_fraction = 0.5;
    cfg.train.batch_size = switchyard_train::trainer::data::build_dataset(&cfg)
        .unwrap()
        .train
        .num_windows();
    cfg.train.steps = OVERFIT_STEPS;
    cfg.optim.lr = 1e-2;
    cfg.optim.min_lr = 1e-2;
    cfg.optim.weight_decay = 0.0;
    cfg.log.metrics = false;
    let mut t = Trainer::new(cfg).unwrap();
    let first = t.train_step().unwrap().ce;
    let mut last = first;
    for _ in 1..OVERFIT_STEPS {
        last = t.train_step().unwrap().ce;
    }
    println!("loss {first:.3} -> {last:.3} in {OVERFIT_STEPS} steps");
    assert!(first > 4.0, "starts near ln(259): {first}");
    assert!(last < OVERFIT_TARGET, "loss {first} -> {last}");
}

#[test]
fn nan_loss_stops_training_within_the_step_and_keeps_the_last_checkpoint() {
    let dir = TempDir::new("nan");
    let mut cfg = tiny_run(dir.path());
    cfg.train.checkpoint_every = 2;
    let mut t = Trainer::new(cfg).unwrap();
    t.inject_faults(Faults {
        nan_loss_at_step: Some(5),
        ..Default::default()
    });
    let err = t.run().unwrap_err();
    let RunError::NonFinite {
        step,
        what,
        last_checkpoint,
        ..
    } = &err
    else {
        panic!("wrong error: {err}")
    };
    assert_eq!((*step, *what), (5, "loss"));
    let last = last_checkpoint.clone().expect("step 4 was saved");
    assert!(last.ends_with("step-00000004"), "{}", last.display());
    assert!(err.to_string().contains("step-00000004"), "{err}");
    // nothing was applied or saved for step 5
    assert_eq!(t.step(), 4);
    assert!(!dir.path().join("step-00000005").exists());
    let loaded = load_model(dir.path()).unwrap();
    assert_eq!(loaded.step, 4);
    assert_eq!(
        store_bits(&loaded.store),
        store_bits(&t.store),
        "in-memory params are those of step 4"
    );
    let metrics = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
    let last_line: serde_json::Value =
        serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last_line["step"], 4);
}

#[test]
fn a_loss_spike_skips_the_update() {
    const SPIKE_STEP: u64 = 24; // after the 20-step running window has filled
    let dir = TempDir::new("spike");
    let mut cfg = tiny_run(dir.path());
    cfg.train.steps = SPIKE_STEP + 1;
    cfg.optim.warmup_steps = 0;
    cfg.log.metrics = false;
    let mut t = Trainer::new(cfg).unwrap();
    t.inject_faults(Faults {
        spike_loss_at_step: Some(SPIKE_STEP),
        ..Default::default()
    });
    for step in 1..=SPIKE_STEP {
        let before = store_bits(&t.store);
        let r = t.train_step().unwrap();
        assert_eq!(
            r.skipped,
            step == SPIKE_STEP,
            "step {step}: loss {}",
            r.loss
        );
        assert_eq!(
            store_bits(&t.store) == before,
            step == SPIKE_STEP,
            "step {step}"
        );
    }
    assert!(!t.train_step().unwrap().skipped);
}

#[test]
fn metrics_checkpoints_and_evaluation() {
    let dir = TempDir::new("metrics");
    let mut cfg = tiny_run(dir.path());
    cfg.train.steps = 6;
    cfg.train.eval_every = 3;
    cfg.train.checkpoint_every = 2;
    cfg.train.keep_last = 2;
    let summary = Trainer::new(cfg).unwrap().run().unwrap();
    assert_eq!(summary.steps, 6);
    assert!(summary.checkpoint.ends_with("step-00000006"));

    let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "step").collect();
    let evals: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "eval").collect();
    assert_eq!(steps.len(), 6);
    assert_eq!(
        evals
            .iter()
            .map(|e| e["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [3, 6]
    );
    let s = steps[0];
    for key in ["lr", "loss", "ce", "aux", "grad_norm", "tokens_per_s"] {
        assert!(s[key].as_f64().unwrap().is_finite(), "{key}: {s}");
    }
    let layer = &s["layers"][0];
    for key in [
        "switch_balance",
        "importance",
        "load",
        "z",
        "load_cv",
        "dropped_fraction",
        "entropy",
    ] {
        assert!(layer[key].is_number(), "{key}: {layer}");
    }
    assert!(layer["dead_experts"].is_array());
    assert_eq!(evals[1]["domains"].as_object().unwrap().len(), 7);

    // keep_last = 2: steps 4 and 6 remain
    let mut dirs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["step-00000004", "step-00000006"]);

    // the final evaluation is the one a reloaded model gives
    let loaded = load_model(dir.path()).unwrap();
    let data = switchyard_train::trainer::data::build_dataset(&loaded.cfg).unwrap();
    let again = switchyard_train::trainer::evaluate(
        &loaded.model,
        &data,
        loaded.cfg.data.max_valid_windows,
    )
    .unwrap();
    assert_eq!(again.loss.to_bits(), summary.eval.loss.to_bits());
    assert_eq!(again.routing.len(), 1);
    assert_eq!(again.routing[0].counts.len(), 7);
}

/// `configs/tiny.toml` printed 5 collapse warnings for 2 layers: a share hovering around the
/// limit re-raised the warning each time it came back above. One episode, one warning.
#[test]
fn a_collapse_that_flickers_warns_once_per_layer_and_episode() {
    use switchyard_train::trainer::guard::{CollapseEvent, CollapseWatch, COLLAPSE_CLEAR_STEPS};
    struct Sim {
        watch: CollapseWatch,
        step: u64,
        warnings: [u32; 2],
        ended: u32,
    }
    impl Sim {
        /// `steps` steps in which layer 0 is collapsed when `pattern(step)`, layer 1 never.
        fn run(&mut self, pattern: impl Fn(u64) -> bool, steps: u64) {
            for _ in 0..steps {
                self.step += 1;
                for layer in 0..2 {
                    let collapsed = layer == 0 && pattern(self.step);
                    match self.watch.observe(layer, self.step, collapsed) {
                        Some(CollapseEvent::Started) => self.warnings[layer] += 1,
                        Some(CollapseEvent::Ended { .. }) => self.ended += 1,
                        None => {}
                    }
                }
            }
        }
    }
    let mut sim = Sim {
        watch: CollapseWatch::new(2),
        step: 0,
        warnings: [0; 2],
        ended: 0,
    };
    // layer 0 above the limit every other step for 100 steps
    sim.run(|s| s % 2 == 0, 100);
    assert_eq!(sim.warnings, [1, 0]);
    // calm for just under the clearing period, then above again: still the same episode
    sim.run(|_| false, COLLAPSE_CLEAR_STEPS - 1);
    sim.run(|_| true, 1);
    assert_eq!((sim.warnings, sim.ended), ([1, 0], 0));
    // calm for the whole clearing period ends the episode; a new collapse warns again
    sim.run(|_| false, COLLAPSE_CLEAR_STEPS);
    assert_eq!(sim.ended, 1);
    sim.run(|_| true, 3);
    assert_eq!(sim.warnings, [2, 0]);
}
