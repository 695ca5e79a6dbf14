//! Expert replicas (`[replica]`, `trainer::replica`): an expert made NaN is restored from its
//! replica and training continues; without replicas the run stops as before; a restore puts
//! back exactly that expert's weights and moments; replicas never change a run without
//! faults, and resume stays exact with them.

mod common;

use std::ops::Range;

use common::*;
use switchyard_train::trainer::fault::{ExpertFault, NAN_EXPERT_ENV};
use switchyard_train::trainer::metrics::METRICS_FILE;
use switchyard_train::trainer::replica::{RestoreEvent, CAUSE_MANUAL, CAUSE_NON_FINITE};
use switchyard_train::trainer::{Faults, RunError, Trainer};
use switchyard_train::TrainConfig;

/// `tiny_run`'s only MoE layer and an expert of it (4 experts, top-2).
const LAYER: usize = 0;
const EXPERT: usize = 1;
const PACKED: &str = "model.layers.0.block_sparse_moe.experts.packed";

fn config(dir: &std::path::Path, every: u64) -> TrainConfig {
    let mut cfg = tiny_run(dir);
    cfg.replica.every = every;
    cfg
}

fn nan_expert(step: u64, moments: bool) -> Faults {
    Faults {
        nan_expert: Some(ExpertFault {
            layer: LAYER,
            expert: EXPERT,
            step,
            moments,
        }),
        ..Default::default()
    }
}

fn packed(t: &Trainer) -> Vec<f32> {
    t.store
        .get(PACKED)
        .unwrap()
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap()
}

fn moments(t: &Trainer) -> (Vec<f32>, Vec<f32>) {
    let (m, v) = t.optimizer().moments(PACKED).unwrap();
    (m.to_vec(), v.to_vec())
}

/// Expert `e`'s range in the packed vector: 4 SwiGLU experts of width 16 over d = 16.
fn expert_range(e: usize) -> Range<usize> {
    let n = 3 * 16 * 16;
    e * n..(e + 1) * n
}

fn restore_events(dir: &std::path::Path) -> Vec<RestoreEvent> {
    std::fs::read_to_string(dir.join(METRICS_FILE))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"expert_restored\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn all_finite(t: &Trainer) -> bool {
    store_bits(&t.store)
        .iter()
        .all(|(_, b)| b.iter().all(|&x| f32::from_bits(x).is_finite()))
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn without_replicas_a_nan_expert_stops_the_run() {
    let dir = TempDir::new("replica-off");
    let mut t = Trainer::new(config(dir.path(), 0)).unwrap();
    t.inject_faults(nan_expert(5, false));
    let err = t.run().unwrap_err();
    let RunError::NonFinite { step, what, .. } = &err else {
        panic!("wrong error: {err}")
    };
    assert_eq!((*step, *what), (5, "loss"));
    assert_eq!(t.step(), 4);
}

#[test]
fn with_replicas_a_nan_expert_is_restored_and_training_continues() {
    let dir = TempDir::new("replica-on");
    let mut t = Trainer::new(config(dir.path(), 2)).unwrap();
    t.inject_faults(nan_expert(5, false));
    let summary = t.run().unwrap();
    assert_eq!(summary.steps, 10);
    assert!(summary.eval.loss.is_finite(), "{}", summary.eval.loss);
    assert!(all_finite(&t), "every parameter is finite at the end");
    let events = restore_events(dir.path());
    assert_eq!(
        events,
        vec![RestoreEvent {
            event: "expert_restored".into(),
            step: 5,
            layer: LAYER,
            expert: EXPERT,
            replica_step: 4,
            cause: CAUSE_NON_FINITE.into(),
        }]
    );
    // the event comes before step 5's record, and every step has its record
    let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "step")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=10).collect::<Vec<_>>());
    let at = |needle: &str| text.find(needle).unwrap();
    assert!(at("expert_restored") < at("\"event\":\"step\",\"step\":5,"));
}

/// With a learning rate of 0 the weights never move, so after the fault, the restore and the
/// redone step the faulty expert holds its replica's (= its initial) weights bitwise and no
/// other weight changed.
#[test]
fn the_restored_expert_gets_its_replica_weights_and_nothing_else_moves() {
    let dir = TempDir::new("replica-lr0");
    let mut cfg = config(dir.path(), 3);
    cfg.optim.lr = 0.0;
    cfg.optim.min_lr = 0.0;
    let mut t = Trainer::new(cfg).unwrap();
    let before = store_bits(&t.store);
    t.inject_faults(nan_expert(4, false));
    for _ in 0..6 {
        t.train_step().unwrap();
    }
    let events = t.take_restore_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].step, events[0].replica_step), (4, 3));
    let replica = t.expert_replica(LAYER, EXPERT).unwrap();
    assert_eq!(
        bits_of(&replica.weights),
        bits_of(&packed(&t)[expert_range(EXPERT)])
    );
    assert!(store_bits(&t.store) == before);
}

/// `restore_expert` puts back exactly that expert's weights and moments of the replica step
/// and leaves the other experts and every other parameter as they are.
#[test]
fn restore_expert_puts_back_exactly_that_expert() {
    let dir = TempDir::new("replica-manual");
    let mut t = Trainer::new(config(dir.path(), 4)).unwrap();
    for _ in 0..4 {
        t.train_step().unwrap();
    }
    let (w4, (m4, v4)) = (packed(&t), moments(&t));
    for _ in 0..2 {
        t.train_step().unwrap();
    }
    let (w6, (m6, v6)) = (packed(&t), moments(&t));
    let others6: Vec<_> = store_bits(&t.store)
        .into_iter()
        .filter(|(n, _)| n != PACKED)
        .collect();
    let e = 2;
    assert_eq!(t.restore_expert(LAYER, e).unwrap(), 4);
    let (w, (m, v)) = (packed(&t), moments(&t));
    let r = expert_range(e);
    for (now, at4, at6) in [(&w, &w4, &w6), (&m, &m4, &m6), (&v, &v4, &v6)] {
        assert_ne!(
            bits_of(&at4[r.clone()]),
            bits_of(&at6[r.clone()]),
            "it trained"
        );
        assert_eq!(bits_of(&now[r.clone()]), bits_of(&at4[r.clone()]));
        assert_eq!(bits_of(&now[..r.start]), bits_of(&at6[..r.start]));
        assert_eq!(bits_of(&now[r.end..]), bits_of(&at6[r.end..]));
    }
    let others: Vec<_> = store_bits(&t.store)
        .into_iter()
        .filter(|(n, _)| n != PACKED)
        .collect();
    assert!(others == others6);
    let events = t.take_restore_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].expert,
            events[0].replica_step,
            events[0].cause.as_str()
        ),
        (e, 4, CAUSE_MANUAL)
    );
    // training goes on from the restored state
    t.train_step().unwrap();

    // arguments are checked, not trusted
    for (layer, expert, says) in [(LAYER, 4, "no expert 4"), (1, 0, "not an MoE layer")] {
        let err = t.restore_expert(layer, expert).unwrap_err();
        assert!(matches!(err, RunError::Config(_)), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    let mut off = Trainer::new(config(dir.path(), 0)).unwrap();
    let err = off.restore_expert(LAYER, 0).unwrap_err();
    assert!(err.to_string().contains("replica.every"), "{err}");
}

/// NaN in an expert's moments at a replica step: that step's snapshot is not taken as the
/// expert's replica (the older one is kept), and the expert is restored from the older one
/// when the next step's loss turns NaN.
#[test]
fn a_damaged_snapshot_keeps_the_older_replica() {
    let dir = TempDir::new("replica-moments");
    let mut t = Trainer::new(config(dir.path(), 2)).unwrap();
    t.inject_faults(nan_expert(4, true));
    let summary = t.run().unwrap();
    assert!(summary.eval.loss.is_finite());
    assert!(all_finite(&t));
    let (m, v) = moments(&t);
    assert!(m.iter().chain(&v).all(|x| x.is_finite()));
    let events = restore_events(dir.path());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].step, events[0].expert, events[0].replica_step),
        (5, EXPERT, 2)
    );
}

#[test]
fn replicas_never_change_a_run_without_faults() {
    let run = |every: u64| {
        let dir = TempDir::new("replica-same");
        let mut cfg = config(dir.path(), every);
        cfg.train.eval_every = 5;
        cfg.train.grad_accum = 2;
        let mut t = Trainer::new(cfg).unwrap();
        let summary = t.run().unwrap();
        assert!(restore_events(dir.path()).is_empty());
        (trainer_bits(&t), summary.eval.loss.to_bits())
    };
    let off = run(0);
    // every step (copy-on-write of moments still shared with the thread) and an odd interval
    for every in [1, 3] {
        assert!(
            run(every) == off,
            "replica.every = {every} changed training"
        );
    }
}

#[test]
fn resume_with_replicas_is_exact() {
    const N: u64 = 4;
    let make = |dir: &std::path::Path| {
        let mut cfg = config(dir, 3);
        cfg.train.steps = 2 * N;
        cfg
    };
    let straight_dir = TempDir::new("replica-straight");
    let mut straight = Trainer::new(make(straight_dir.path())).unwrap();
    straight.run().unwrap();

    let split_dir = TempDir::new("replica-split");
    let mut first = Trainer::new(make(split_dir.path())).unwrap();
    for _ in 0..N {
        first.train_step().unwrap();
    }
    first.save_checkpoint().unwrap();
    drop(first);
    let mut second = Trainer::resume(make(split_dir.path()), split_dir.path()).unwrap();
    second.run().unwrap();
    assert!(trainer_bits(&straight) == trainer_bits(&second));
    // the resumed run replicates from the checkpoint it resumed
    assert_eq!(second.expert_replica(LAYER, 0).unwrap().step, 6);
}

#[test]
fn an_expert_fault_is_parsed_and_checked() {
    assert_eq!(
        ExpertFault::parse("0:1@5"),
        Some(ExpertFault {
            layer: 0,
            expert: 1,
            step: 5,
            moments: false
        })
    );
    for bad in ["", "0:1", "0@5", "a:1@5", "0:1@0", "0:1@-2"] {
        assert_eq!(ExpertFault::parse(bad), None, "{bad}");
    }
    // an expert the model does not have is a user error naming the variable
    let dir = TempDir::new("replica-badfault");
    let mut t = Trainer::new(config(dir.path(), 2)).unwrap();
    t.inject_faults(Faults {
        nan_expert: Some(ExpertFault {
            layer: LAYER,
            expert: 7,
            step: 1,
            moments: false,
        }),
        ..Default::default()
    });
    let err = t.train_step().unwrap_err();
    assert!(matches!(err, RunError::Config(_)), "{err}");
    assert!(err.to_string().contains(NAN_EXPERT_ENV), "{err}");
}
