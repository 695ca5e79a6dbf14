//! `switchyard experts …` and `switchyard upcycle` end to end: each result resumes training,
//! loads in eval, generate, analyze and export; an added expert leaves the logits bitwise
//! equal and then enters routing as training opens its gate; bad arguments exit 2.

mod common;

use std::path::Path;

use common::{switchyard, text, tiny_run, TempDir};

fn ok(args: &[&str]) -> String {
    let o = switchyard(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?} failed:\n{out}\n{err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Logits for a few ids through `switchyard logits`.
fn logits_of(ckpt: &Path, out: &Path) -> Vec<f32> {
    ok(&[
        "logits",
        "--model",
        s(ckpt),
        "--ids",
        "[1, 2, 3, 4, 5, 6, 7, 8]",
        "--out",
        s(out),
    ]);
    let t = candle_core::safetensors::load(out, &candle_core::Device::Cpu).unwrap();
    t["logits"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The model's config.json in a run's latest checkpoint.
fn model_config(run: &Path) -> serde_json::Value {
    let latest = std::fs::read_to_string(run.join("latest")).unwrap();
    let text = std::fs::read_to_string(run.join(latest.trim()).join("config.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["model"].clone()
}

#[test]
fn add_keeps_logits_then_trains_and_every_command_reads_the_result() {
    let t = TempDir::new("lifecycle-add");
    let (o, run) = tiny_run(&t.0, &[]);
    assert!(o.status.success(), "{}", text(&o).1);
    let added = t.0.join("added");
    let out = ok(&[
        "experts",
        "add",
        "--ckpt",
        s(&run),
        "--count",
        "2",
        "--out",
        s(&added),
    ]);
    assert!(out.contains("layer 0: 4 -> 6 experts"), "{out}");
    assert!(out.contains("(+0.0000 nats)"), "{out}");
    let cfg = model_config(&added);
    assert_eq!(cfg["ffn"]["sparse"]["experts"].as_array().unwrap().len(), 6);
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(added.join("surgery.json")).unwrap())
            .unwrap();
    assert_eq!(rec["before"]["loss"], rec["after"]["loss"]);
    // logits bitwise equal before training resumes
    let (a, b) = (
        logits_of(&run, &t.0.join("a.safetensors")),
        logits_of(&added, &t.0.join("b.safetensors")),
    );
    assert!(a == b, "logits changed by adding closed experts");
    // training continues from it
    ok(&["train", "--resume", s(&added), "--steps", "12"]);
    // every reader takes the result
    ok(&["eval", "--ckpt", s(&added)]);
    ok(&[
        "generate",
        "--ckpt",
        s(&added),
        "--prompt",
        "ab",
        "--max-tokens",
        "4",
    ]);
    ok(&[
        "analyze",
        "--ckpt",
        s(&added),
        "--out",
        s(&t.0.join("report")),
    ]);
    ok(&["export", "--ckpt", s(&added), "--out", s(&t.0.join("hf"))]);
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.0.join("hf/config.json")).unwrap())
            .unwrap();
    assert_eq!(hf["num_local_experts"], 6);
}

#[test]
fn split_merge_prune_on_one_layer_and_upcycle() {
    let t = TempDir::new("lifecycle-ops");
    let (o, run) = tiny_run(&t.0, &[]);
    assert!(o.status.success(), "{}", text(&o).1);
    let split = t.0.join("split");
    let out = ok(&[
        "experts",
        "split",
        "--ckpt",
        s(&run),
        "--layer",
        "0",
        "--expert",
        "1",
        "--out",
        s(&split),
    ]);
    assert!(
        out.contains("layer 0: 4 -> 5 experts") && out.contains("validation loss"),
        "{out}"
    );
    let merged = t.0.join("merged");
    let out = ok(&[
        "experts",
        "merge",
        "--ckpt",
        s(&split),
        "--layer",
        "0",
        "--experts",
        "1,4",
        "--out",
        s(&merged),
    ]);
    assert!(out.contains("layer 0: 5 -> 4 experts"), "{out}");
    let pruned = t.0.join("pruned");
    let out = ok(&[
        "experts",
        "prune",
        "--ckpt",
        s(&merged),
        "--keep",
        "1",
        "--out",
        s(&pruned),
    ]);
    // k = 2 cannot stay with one expert: clamped, with a warning
    assert!(out.contains("router.k lowered from 2 to 1"), "{out}");
    ok(&["train", "--resume", s(&pruned), "--steps", "8"]);
    ok(&["eval", "--ckpt", s(&pruned)]);

    // upcycle the dense twin of the tiny model
    let dense_run = t.0.join("dense");
    let o = switchyard(&[
        "train",
        "--config",
        s(&t.0.join("run.toml")),
        "--run-dir",
        s(&dense_run),
        "--set",
        "model.ffn.sparse={ type = \"dense\", hidden = 32 }",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let up = t.0.join("up");
    let out = ok(&[
        "upcycle",
        "--ckpt",
        s(&dense_run),
        "--experts",
        "4",
        "--k",
        "4",
        "--noise",
        "0",
        "--out",
        s(&up),
    ]);
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(up.join("surgery.json")).unwrap()).unwrap();
    let (b, a) = (
        rec["before"]["loss"].as_f64().unwrap(),
        rec["after"]["loss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 1e-4,
        "upcycled k = N loss {a} vs dense {b}\n{out}"
    );
    ok(&["train", "--resume", s(&up), "--steps", "8"]);
    ok(&["export", "--ckpt", s(&up), "--out", s(&t.0.join("up-hf"))]);
}

#[test]
fn bad_surgery_arguments_exit_2_with_the_reason() {
    let t = TempDir::new("lifecycle-bad");
    let (o, run) = tiny_run(&t.0, &[]);
    assert!(o.status.success(), "{}", text(&o).1);
    let cases: &[(&[&str], &str)] = &[
        (
            &["experts", "split", "--layer", "3", "--expert", "0"],
            "not an MoE layer",
        ),
        (
            &["experts", "split", "--layer", "0", "--expert", "9"],
            "expert 9 does not exist",
        ),
        (
            &["experts", "merge", "--layer", "0", "--experts", "2"],
            "at least two",
        ),
        (
            &["experts", "prune", "--experts", "0:0,0:1,0:2,0:3"],
            "leaves none",
        ),
        (
            &["experts", "prune", "--experts", "zero"],
            "not layer:expert",
        ),
        (&["experts", "add", "--count", "0"], "at least one"),
        (
            &["upcycle", "--experts", "4", "--k", "2"],
            "already has MoE layers",
        ),
    ];
    for (args, want) in cases {
        let mut a: Vec<&str> = args.to_vec();
        let out = t.0.join("out");
        a.extend(["--ckpt", s(&run), "--out", s(&out)]);
        let o = switchyard(&a);
        let (so, se) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{a:?}:\n{so}\n{se}");
        assert!(se.contains(want), "{a:?}: want `{want}` in\n{se}");
        assert!(!out.exists(), "{a:?} left {}", out.display());
    }
    // an existing run in --out is refused without --force
    let o = switchyard(&[
        "experts",
        "add",
        "--ckpt",
        s(&run),
        "--count",
        "1",
        "--out",
        s(&run),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}

#[test]
fn new_domain_demo_runs_three_runs_and_writes_its_table() {
    let t = TempDir::new("lifecycle-demo");
    let out = t.0.join("nd");
    let o = switchyard(&[
        "-q",
        "demo",
        "--new-domain",
        "--quick",
        "--out",
        s(&out),
        "--set",
        "train.steps=4",
        "--set",
        "optim.warmup_steps=1",
        "--set",
        "data.max_valid_windows=2",
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("| cjk (new) |") && so.contains("grow / all seven"),
        "{so}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(v["appear_step"], 4);
    assert_eq!(v["steps"], 8);
    assert_eq!(
        v["experts_after"].as_u64().unwrap(),
        v["experts_before"].as_u64().unwrap() + 2
    );
    for run in ["grow", "continue", "all"] {
        assert!(out.join(run).join("latest").is_file(), "{run}");
    }
    // the surgery is in grow's metrics, at the step the domain appeared
    let m = std::fs::read_to_string(out.join("grow/metrics.jsonl")).unwrap();
    let ev: Vec<serde_json::Value> = m
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "surgery")
        .collect();
    assert_eq!(ev.len(), 1, "{m}");
    assert_eq!(ev[0]["step"], 4);
    let steps = m
        .lines()
        .filter(|l| l.contains(r#""event":"step""#))
        .count();
    assert_eq!(
        steps, 8,
        "every step of grow is logged, before and after the surgery"
    );
    // a second run into the same directory is refused
    let o = switchyard(&["-q", "demo", "--new-domain", "--quick", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}
