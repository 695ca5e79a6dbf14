//! `[lifecycle]` hooks during training: scheduled adds, the new domain's experts, splits of
//! overloaded experts and prunes of dead ones happen at the right step, are logged in
//! metrics.jsonl, keep the run resumable bit for bit, and a new domain is absent from the
//! batches until it appears.

mod common;

use common::*;
use switchyard_train::trainer::{AddAt, Trainer};
use switchyard_train::TrainConfig;

fn experts(t: &Trainer) -> Vec<usize> {
    t.cfg
        .model
        .moe_layers()
        .iter()
        .map(|&l| t.cfg.model.layer_moe_config(l).unwrap().experts.len())
        .collect()
}

fn events(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "surgery")
        .collect()
}

fn with_add(dir: &std::path::Path) -> TrainConfig {
    let mut cfg = tiny_run(dir);
    cfg.train.steps = 8;
    cfg.lifecycle.add = vec![AddAt {
        step: 3,
        count: 2,
        layers: vec![],
    }];
    if let switchyard_models::LayerFfn::Moe(m) = &mut cfg.model.ffn.sparse {
        m.gate_in_steps = 2; // the new experts are fully in by step 5
    }
    cfg
}

#[test]
fn scheduled_add_happens_at_its_step_and_resume_stays_exact() {
    let d = TempDir::new("lc-add");
    let mut t = Trainer::new(with_add(d.path())).unwrap();
    assert_eq!(experts(&t), vec![4]);
    let summary = t.run().unwrap();
    assert_eq!(summary.steps, 8);
    assert_eq!(experts(&t), vec![6]);
    let ev = events(d.path());
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["step"], 3);
    assert_eq!(ev[0]["experts_after"], serde_json::json!([6]));
    assert!(summary.eval.loss.is_finite());
    // the added experts were trained: they receive tokens once their gates are open
    let counts = &summary.eval.routing[0].counts;
    let new_tokens: usize = counts.iter().map(|row| row[4] + row[5]).sum();
    assert!(new_tokens > 0, "{counts:?}");

    // straight 8 steps == 5 steps (past the surgery), save, resume, 3 more
    let s = TempDir::new("lc-add-split");
    let mut a = Trainer::new(with_add(s.path())).unwrap();
    let mut m =
        switchyard_train::trainer::metrics::MetricsWriter::open(s.path(), false, None).unwrap();
    for _ in 0..5 {
        a.train_step().unwrap();
        a.run_step_hooks(&mut m).unwrap();
    }
    a.save_checkpoint().unwrap();
    drop(a);
    // resuming with the original config (4 experts) takes the checkpoint's grown model
    let mut b = Trainer::resume(with_add(s.path()), s.path()).unwrap();
    assert_eq!(experts(&b), vec![6]);
    b.run().unwrap();
    assert!(
        store_bits(&t.store) == store_bits(&b.store),
        "parameters differ after a resume across a surgery"
    );
}

#[test]
fn split_and_prune_hooks_act_on_evaluations() {
    // split: a threshold every layer passes, so each evaluation splits the busiest expert
    let d = TempDir::new("lc-split");
    let mut cfg = tiny_run(d.path());
    cfg.train.steps = 6;
    cfg.train.eval_every = 2;
    cfg.lifecycle.split_load_share = 0.01;
    let mut t = Trainer::new(cfg).unwrap();
    t.run().unwrap();
    assert_eq!(experts(&t), vec![7]);
    let ev = events(d.path());
    assert_eq!(ev.len(), 3);
    assert!(ev.iter().all(|e| e["operation"] == "split"));

    // prune: experts added closed (gate-in 0 for 1000 steps) never get a token -> pruned
    // after two evaluations
    let d = TempDir::new("lc-prune");
    let mut cfg = tiny_run(d.path());
    cfg.train.steps = 8;
    cfg.train.eval_every = 1;
    cfg.lifecycle.add = vec![AddAt {
        step: 2,
        count: 1,
        layers: vec![],
    }];
    cfg.lifecycle.prune_dead_evals = 2;
    if let switchyard_models::LayerFfn::Moe(m) = &mut cfg.model.ffn.sparse {
        m.gate_in_steps = 1000;
    }
    let mut t = Trainer::new(cfg).unwrap();
    t.run().unwrap();
    let ev = events(d.path());
    let ops: Vec<(&str, u64)> = ev
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap(),
                e["step"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ops, vec![("add", 2), ("prune", 3)], "{ev:?}");
    assert_eq!(experts(&t), vec![4]);
}

#[test]
fn a_new_domain_is_absent_until_its_step_and_gets_its_experts() {
    let d = TempDir::new("lc-domain");
    let mut cfg = tiny_run(d.path());
    cfg.train.steps = 16;
    cfg.data.new_domain = Some("cjk".into());
    cfg.data.new_domain_step = 3;
    cfg.lifecycle.add_on_new_domain = 2;
    cfg.lifecycle.freeze_old_experts = true;
    if let switchyard_models::LayerFfn::Moe(m) = &mut cfg.model.ffn.sparse {
        m.gate_in_steps = 2;
    }
    let mut t = Trainer::new(cfg.clone()).unwrap();
    let cjk = t
        .data
        .domains
        .names()
        .iter()
        .position(|n| n == "cjk")
        .unwrap() as u32;
    let mut seen_after = 0;
    let mut at_surgery = None;
    let packed = |t: &Trainer| {
        bits(
            t.store
                .get("model.layers.0.block_sparse_moe.experts.packed")
                .unwrap()
                .as_tensor(),
        )
    };
    let gate = |t: &Trainer| {
        bits(
            t.store
                .get("model.layers.0.block_sparse_moe.gate.weight")
                .unwrap()
                .as_tensor(),
        )
    };
    for step in 0..cfg.train.steps {
        let b = t.peek_batch().unwrap();
        let has = b.domains.contains(&cjk);
        assert!(
            step >= 3 || !has,
            "step {step}: cjk in a batch before it appears"
        );
        seen_after += usize::from(has);
        t.train_step().unwrap();
        let mut m =
            switchyard_train::trainer::metrics::MetricsWriter::open(d.path(), false, None).unwrap();
        t.run_step_hooks(&mut m).unwrap();
        if step + 1 == 3 {
            at_surgery = Some((packed(&t), gate(&t)));
        }
    }
    // the old experts (the first 4 segments, gate rows 0..4) froze at the surgery; the new
    // ones trained
    let (p3, g3) = at_surgery.unwrap();
    let (p, g) = (packed(&t), gate(&t));
    let seg = 3 * 16 * 16;
    assert_eq!(p[..4 * seg], p3[..4 * seg], "old experts moved");
    assert_ne!(p[4 * seg..], p3[4 * seg..], "new experts did not train");
    assert_eq!(g[..4 * 16], g3[..4 * 16], "old gate rows moved");
    assert_ne!(g[4 * 16..], g3[4 * 16..]);
    assert!(seen_after > 0, "cjk never appeared after its step");
    assert_eq!(experts(&t), vec![6]);
    // an unknown domain is a config error naming the key
    cfg.data.new_domain = Some("klingon".into());
    let e = Trainer::new(cfg).err().unwrap().to_string();
    assert!(
        e.contains("data.new_domain") && e.contains("klingon"),
        "{e}"
    );
}

#[test]
fn architecture_search_prunes_the_weakest_candidate_per_evaluation() {
    use switchyard_core::{Activation, ExpertSpec};
    for by in [
        switchyard_train::trainer::SearchBy::Usage,
        switchyard_train::trainer::SearchBy::Ablation,
    ] {
        let d = TempDir::new("lc-search");
        let mut cfg = tiny_run(d.path());
        cfg.train.steps = 6;
        cfg.train.eval_every = 1;
        if let switchyard_models::LayerFfn::Moe(m) = &mut cfg.model.ffn.sparse {
            m.experts = vec![
                ExpertSpec::swiglu(8),
                ExpertSpec::swiglu(24),
                ExpertSpec::ffn(Activation::Gelu, 16),
                ExpertSpec::ffn(Activation::Relu, 32),
                ExpertSpec::swiglu(16),
                ExpertSpec::ffn(Activation::Silu, 8),
            ];
        }
        cfg.lifecycle.search_keep = 3;
        cfg.lifecycle.search_by = by;
        let mut t = Trainer::new(cfg).unwrap();
        t.run().unwrap();
        assert_eq!(experts(&t), vec![3], "{by:?}");
        let ev = events(d.path());
        let steps: Vec<u64> = ev.iter().map(|e| e["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3], "{by:?}: {ev:?}");
        assert!(ev[0]["reason"]
            .as_str()
            .unwrap()
            .contains("architecture search"));
        // the survivors are a subset of the pool, in pool order
        let m = t.cfg.model.layer_moe_config(0).unwrap();
        assert_eq!(m.experts.len(), 3);
    }
}
