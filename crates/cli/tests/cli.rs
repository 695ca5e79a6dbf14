//! The real `switchyard` binary: train → generate → eval on a tiny config, the exit codes,
//! and the messages a user sees for a corrupted checkpoint or a bad config.

use std::path::Path;
use std::process::Command;

mod common;

use common::{switchyard, text, tiny_run, tiny_run_env, TempDir, TINY_CONFIG};

#[test]
fn train_generate_eval_and_resume() {
    let dir = TempDir::new("flow");
    let (out, run_dir) = tiny_run(&dir.0, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "train failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("overall") && stdout.contains("step-00000006"),
        "{stdout}"
    );
    assert!(run_dir.join("metrics.jsonl").is_file());

    let ckpt = run_dir.to_str().unwrap();
    let out = switchyard(&[
        "generate",
        "--ckpt",
        ckpt,
        "--prompt",
        "a+b",
        "--max-tokens",
        "8",
        "--seed",
        "1",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "generate failed:\n{stderr}");
    assert!(stdout.starts_with("a+b"), "{stdout}");
    let again = switchyard(&[
        "generate",
        "--ckpt",
        ckpt,
        "--prompt",
        "a+b",
        "--max-tokens",
        "8",
        "--seed",
        "1",
    ]);
    assert_eq!(again.stdout, out.stdout, "same seed, same text");

    let out = switchyard(&["eval", "--ckpt", ckpt]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "eval failed:\n{stderr}");
    for domain in [
        "prose", "arith", "json", "code", "dna", "logs", "cjk", "overall",
    ] {
        assert!(stdout.contains(domain), "{domain} missing:\n{stdout}");
    }

    // resume without the config file: the run's own config.json, two more steps
    let out = switchyard(&["train", "--resume", ckpt, "--steps", "8"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "resume failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("step-00000008"), "{stdout}");

    // the same with the run named by --run-dir: the other flags (10 steps, fewer than the
    // default warm-up) used to fail a check against the defaults and send the resume to
    // runs/default instead
    let run = run_dir.to_str().unwrap();
    let out = switchyard(&["train", "--resume", "--run-dir", run, "--steps", "10"]);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "resume --run-dir failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("step-00000010"), "{stdout}");
}

#[test]
fn eval_of_zero_windows_is_refused_as_a_usage_error() {
    let out = switchyard(&["eval", "--ckpt", "no-such-run", "--max-windows", "0"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--max-windows"), "{stderr}");
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = TempDir::new("nocolor");
    let config = dir.0.join("run.toml");
    std::fs::write(&config, TINY_CONFIG).unwrap();
    let run_dir = dir.0.join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["train", "--config", config.to_str().unwrap()])
        .args(["--run-dir", run_dir.to_str().unwrap(), "--steps", "2"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "train failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("INFO") && stderr.contains("training to step 2"),
        "no log lines on stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in piped logs:\n{stderr:?}"
    );
}

#[test]
fn a_corrupted_checkpoint_is_rejected_naming_the_file() {
    let dir = TempDir::new("corrupt");
    let (out, run_dir) = tiny_run(&dir.0, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let model = run_dir.join("step-00000006/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(&model, bytes).unwrap();

    let out = switchyard(&["eval", "--ckpt", run_dir.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("step-00000006/model.safetensors") && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");

    // the earlier checkpoint still loads
    let earlier = run_dir.join("step-00000003");
    let out = switchyard(&["eval", "--ckpt", earlier.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
}

/// Regression (issue 22, item 1): these aborted the process (exit 134, "memory allocation
/// of … bytes failed"); now they are refused as wrong input (exit 2), naming the key, or,
/// within the limits, with the memory needed and available.
#[test]
fn absurd_sizes_are_refused_with_exit_2_not_an_abort() {
    let dir = TempDir::new("absurd");
    let cases = [
        (
            &["model.d_model=1099511627776", "model.n_heads=1"][..],
            "model.d_model",
        ),
        (&["model.vocab_size=1099511627776"][..], "model.vocab_size"),
        (&["model.n_layers=1000000"][..], "model.n_layers"),
        (
            &[
                "model.d_model=1048576",
                "model.n_heads=1",
                "model.ffn.sparse.d_model=1048576",
            ][..],
            "GiB",
        ),
    ];
    for (i, (sets, expect)) in cases.into_iter().enumerate() {
        let mut extra = vec![];
        for s in sets {
            extra.extend(["--set", s]);
        }
        let (out, _) = tiny_run(&dir.0, &extra);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{sets:?}: {stderr}");
        assert!(stderr.contains(expect), "{sets:?}: {stderr}");

        let mut args = vec!["demo", "--quick", "--out"];
        let demo_out = dir.0.join(format!("demo-{i}"));
        args.push(demo_out.to_str().unwrap());
        args.extend(&extra);
        let out = switchyard(&args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "demo {sets:?}: {stderr}");
        assert!(stderr.contains(expect), "demo {sets:?}: {stderr}");
    }
}

#[test]
fn config_mistakes_exit_with_2_and_a_hint() {
    let dir = TempDir::new("config");
    let (out, _) = tiny_run(&dir.0, &["--set", "optim.lrr=1e-3"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown config key `optim.lrr`; did you mean `optim.lr`?"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");

    let (out, _) = tiny_run(&dir.0, &["--set", "train.batch_size=-1"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("train.batch_size"), "{stderr}");

    let out = switchyard(&["train", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_nan_loss_exits_with_3_and_leaves_the_last_checkpoint() {
    let dir = TempDir::new("nan");
    let (out, run_dir) = tiny_run_env(&dir.0, &[], &[(NAN_FAULT, "5")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("step 5")
            && stderr.contains("not finite")
            && stderr.contains("step-00000003"),
        "{stderr}"
    );
    let out = switchyard(&["eval", "--ckpt", run_dir.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("step 3"), "{stdout}");
}

/// The test-only hook that makes one step's loss NaN (`switchyard_train::trainer::fault`).
const NAN_FAULT: &str = "SWITCHYARD_FAULT_NAN_LOSS_AT_STEP";

/// The test-only hook that makes one expert's weights NaN (`LAYER:EXPERT@STEP`).
const NAN_EXPERT_FAULT: &str = "SWITCHYARD_FAULT_NAN_EXPERT";

/// A NaN expert stops a run with exit code 3; with `replica.every` it is restored from its
/// replica, the run finishes and `metrics.jsonl` records the restore.
#[test]
fn a_nan_expert_exits_with_3_unless_replicas_restore_it() {
    let dir = TempDir::new("nan-expert");
    let (out, _) = tiny_run_env(&dir.0, &[], &[(NAN_EXPERT_FAULT, "0:1@5")]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);

    let dir = TempDir::new("nan-expert-replica");
    let set = ["--set", "replica.every=2"];
    let (out, run_dir) = tiny_run_env(&dir.0, &set, &[(NAN_EXPERT_FAULT, "0:1@5")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("step-00000006"), "{stdout}");
    assert!(
        stderr.contains("restored from its replica of step 4"),
        "{stderr}"
    );
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains(
            r#"{"event":"expert_restored","step":5,"layer":0,"expert":1,"replica_step":4"#
        ),
        "{metrics}"
    );

    // a malformed fault is a usage error naming the variable
    let dir = TempDir::new("nan-expert-bad");
    let (out, _) = tiny_run_env(&dir.0, &[], &[(NAN_EXPERT_FAULT, "1@5")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains(NAN_EXPERT_FAULT));
}

/// Regression (issue 22, item 10): the fault was saved in the checkpoint's config, so a plain
/// `--resume` hit the same NaN again.
#[test]
fn resuming_after_an_injected_nan_does_not_repeat_it() {
    let dir = TempDir::new("nan-resume");
    let (out, run_dir) = tiny_run_env(&dir.0, &[], &[(NAN_FAULT, "5")]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);
    let config = std::fs::read_to_string(run_dir.join("step-00000003/config.json")).unwrap();
    assert!(!config.contains("fault"), "{config}");
    let out = switchyard(&["train", "--resume", "--run-dir", run_dir.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("step-00000006"), "{stdout}");
}

/// A checkpoint written before fault injection left the config may still carry a `fault`
/// table in its config.json: it loads and resumes, and the table is ignored with a warning.
#[test]
fn an_old_checkpoint_with_a_fault_table_loads_and_resumes_without_it() {
    let dir = TempDir::new("old-fault");
    let (out, run_dir) = tiny_run(&dir.0, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let step = run_dir.join("step-00000006");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(step.join("config.json")).unwrap()).unwrap();
    config["fault"] = serde_json::json!({ "nan_loss_at_step": 7, "spike_loss_at_step": null });
    rewrite_checkpoint_file(
        &step,
        "config.json",
        &serde_json::to_vec_pretty(&config).unwrap(),
    );

    let ckpt = run_dir.to_str().unwrap();
    let out = switchyard(&["eval", "--ckpt", ckpt]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = switchyard(&["train", "--resume", ckpt, "--steps", "8"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("step-00000008"), "{stdout}");
    assert!(stderr.contains("ignoring the `fault` table"), "{stderr}");
}

/// Replaces one file of a checkpoint and updates its size and CRC in state.json, as an older
/// version (or a careful hand) would have written it.
fn rewrite_checkpoint_file(step_dir: &Path, file: &str, data: &[u8]) {
    use switchyard_io::{state, FileDigest};
    std::fs::write(step_dir.join(file), data).unwrap();
    let state_path = step_dir.join("state.json");
    let mut decoded: state::DecodedState<serde_json::Value> =
        state::decode(&state_path, &std::fs::read(&state_path).unwrap()).unwrap();
    decoded
        .checksums
        .insert(file.to_string(), FileDigest::of(data));
    let encoded = state::encode(decoded.step, decoded.checksums, &decoded.state).unwrap();
    std::fs::write(&state_path, encoded).unwrap();
}

#[test]
fn demo_quick_writes_its_summary() {
    let dir = TempDir::new("demo");
    let out_dir = dir.0.join("demo");
    // smaller still than --quick, to keep the suite fast in the dev profile
    let args = [
        "demo",
        "--quick",
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "train.steps=4",
        "--set",
        "optim.warmup_steps=1",
        "--set",
        "data.docs_per_domain=4",
        "--set",
        "data.valid_fraction=0.25",
        "--set",
        "data.max_valid_windows=1",
    ];
    // an earlier demo in the same place: refused without --force, and untouched
    let old_step = out_dir.join("moe/step-00000300");
    std::fs::create_dir_all(&old_step).unwrap();
    std::fs::write(out_dir.join("moe/latest"), "step-00000300\n").unwrap();
    std::fs::create_dir_all(out_dir.join("analysis")).unwrap();
    std::fs::write(out_dir.join("analysis/layer3_old.png"), "png").unwrap();
    std::fs::write(out_dir.join("summary.json"), "{}").unwrap();
    let out = switchyard(&args);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in ["already holds a demo", "--out", "--force"] {
        assert!(stderr.contains(needle), "{needle} missing:\n{stderr}");
    }
    assert!(old_step.is_dir() && out_dir.join("summary.json").is_file());
    // --force replaces it whole: none of the old files are left beside the new ones
    let out = switchyard(&[&args[..], &["--force"]].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(!old_step.exists() && !out_dir.join("analysis/layer3_old.png").exists());
    for needle in ["MoE", "dense", "overall", "layer 0", "summary.json"] {
        assert!(stdout.contains(needle), "{needle} missing:\n{stdout}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    for model in ["moe", "dense"] {
        let m = &summary[model];
        assert!(m["val_loss"].as_f64().unwrap().is_finite());
        assert_eq!(m["val_loss_by_domain"].as_object().unwrap().len(), 7);
        assert!(m["params_active_per_token"].as_u64().unwrap() > 0);
        assert!(
            m["params_total"].as_u64().unwrap() >= m["params_active_per_token"].as_u64().unwrap()
        );
    }
    assert_eq!(
        summary["routing"].as_array().unwrap().len(),
        2,
        "one table per MoE layer"
    );
    assert!(summary["wall_time_s"].as_f64().unwrap() > 0.0);
    // README's table is printed from it
    let table = switchyard(&[
        "demo",
        "--table",
        out_dir.join("summary.json").to_str().unwrap(),
    ]);
    let (table, stderr) = text(&table);
    assert!(
        table.contains("| **overall** |") && table.contains("parameters per token"),
        "{table}\n{stderr}"
    );
    assert!(out_dir.join("moe/latest").is_file() && out_dir.join("dense/latest").is_file());
    // the demo ends with the routing report, and its trace replays bit-exactly
    assert!(
        stdout.contains("NMI(domain, expert)") && stdout.contains("report.html"),
        "{stdout}"
    );
    let report = summary["analysis"]["report"].as_str().unwrap();
    assert!(std::path::Path::new(report).is_file());
    assert_eq!(
        summary["analysis"]["nmi_by_layer"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let trace = out_dir.join("analysis/trace.safetensors");
    let moe = out_dir.join("moe");
    let out = switchyard(&[
        "analyze",
        "--ckpt",
        moe.to_str().unwrap(),
        "--replay",
        trace.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "replay failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("the logits match a normal forward bit for bit"),
        "{stdout}"
    );
    // analyze on its own, without the ablation
    let an = dir.0.join("an");
    let out = switchyard(&[
        "analyze",
        "--ckpt",
        moe.to_str().unwrap(),
        "--out",
        an.to_str().unwrap(),
        "--no-ablation",
        "--windows",
        "2",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "analyze failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("NMI")
            && an.join("report.html").is_file()
            && an.join("layer0_domain_expert.png").is_file(),
        "{stdout}"
    );
}

#[test]
fn demo_quick_has_its_own_default_directory() {
    for (args, run_dir) in [
        (&["demo", "--print-config"][..], "runs/demo/moe"),
        (
            &["demo", "--quick", "--print-config"][..],
            "runs/demo-quick/moe",
        ),
    ] {
        let out = switchyard(args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stdout.contains(&format!("run_dir = \"{run_dir}\"")),
            "{args:?}: {stdout}"
        );
    }
}

#[test]
fn an_imported_model_fine_tunes_evaluates_analyses_and_exports() {
    let dir = TempDir::new("finetune");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/tests/fixtures/qwen3_moe");
    let imported = dir.0.join("imported");
    let run = dir.0.join("ft");
    let (imp, run_s) = (imported.to_str().unwrap(), run.to_str().unwrap());
    let out = switchyard(&["import", fixture.to_str().unwrap(), "--out", imp]);
    assert!(out.status.success(), "import failed: {:?}", text(&out));
    let out = switchyard(&[
        "train",
        "--init-from",
        imp,
        "--run-dir",
        run_s,
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--set",
        "data.seq_len=16",
        "--set",
        "data.docs_per_domain=3",
        "--set",
        "data.doc_bytes=300",
        "--set",
        "data.max_valid_windows=2",
        "--set",
        "optim.warmup_steps=1",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "fine-tuning failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("trained 3 steps"), "{stdout}");
    for f in ["tokenizer.json", "hf_source.json", "latest"] {
        assert!(run.join(f).is_file(), "{f} missing in the run directory");
    }
    // the run's config names the imported tokenizer and model
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("step-00000003/config.json")).unwrap(),
    )
    .unwrap();
    assert!(cfg["data"]["tokenizer"]
        .as_str()
        .unwrap()
        .ends_with("tokenizer.json"));
    assert_eq!(cfg["model"]["vocab_size"], 384);

    let out = switchyard(&["eval", "--ckpt", run_s, "--max-windows", "2"]);
    assert!(out.status.success(), "eval failed: {:?}", text(&out));
    assert!(text(&out).0.contains("overall"));
    // with the run's copy of the HF tokenizer, not bytes
    let tok_copy = run.join("tokenizer.json").display().to_string();
    assert!(text(&out).0.contains(&tok_copy), "{:?}", text(&out));
    let an = dir.0.join("an");
    let out = switchyard(&[
        "analyze",
        "--ckpt",
        run_s,
        "--out",
        an.to_str().unwrap(),
        "--no-ablation",
        "--windows",
        "2",
    ]);
    assert!(out.status.success(), "analyze failed: {:?}", text(&out));
    assert!(an.join("report.html").is_file());
    let hf = dir.0.join("hf");
    let out = switchyard(&["export", "--ckpt", run_s, "--out", hf.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "export failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("qwen3_moe"), "{stdout}");

    // analyze also reads an HF directory directly, with its tokenizer
    let an_hf = dir.0.join("an-hf");
    let out = switchyard(&[
        "analyze",
        "--ckpt",
        fixture.to_str().unwrap(),
        "--out",
        an_hf.to_str().unwrap(),
        "--no-ablation",
        "--windows",
        "2",
    ]);
    assert!(
        out.status.success(),
        "analyze of an HF dir failed: {:?}",
        text(&out)
    );
    assert!(an_hf.join("report.html").is_file());

    // an HF directory is not a checkpoint to start from: the error says to import it
    let out = switchyard(&["train", "--init-from", fixture.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("switchyard import"), "{stderr}");
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_run_into_an_existing_run_is_refused_and_force_replaces_it_whole() {
    let dir = TempDir::new("replace");
    let (out, run_dir) = tiny_run(&dir.0, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let before = entries(&run_dir);
    let metrics = std::fs::read(run_dir.join("metrics.jsonl")).unwrap();

    // README's first command run twice: the second refuses and changes nothing
    let (out, _) = tiny_run(&dir.0, &["--steps", "2"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in ["already holds a run", "--resume", "--run-dir", "--force"] {
        assert!(stderr.contains(needle), "{needle} missing:\n{stderr}");
    }
    assert_eq!(entries(&run_dir), before);
    assert_eq!(
        std::fs::read(run_dir.join("metrics.jsonl")).unwrap(),
        metrics
    );

    // fine-tuning a run into itself would delete what it reads: refused even with --force
    let rd = run_dir.to_str().unwrap();
    let out = switchyard(&[
        "train",
        "--init-from",
        rd,
        "--run-dir",
        rd,
        "--force",
        "--set",
        "data.seq_len=16",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("init.from"), "{stderr}");
    assert_eq!(entries(&run_dir), before);

    // --force: only the new run is left (no step 6, a fresh metrics.jsonl)
    let (out, _) = tiny_run(&dir.0, &["--steps", "2", "--force"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        entries(&run_dir),
        ["latest", "metrics.jsonl", "step-00000002"]
    );

    // a directory that is not a run is never replaced, not even with --force
    let other = dir.0.join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("todo.txt"), "keep me").unwrap();
    let config = dir.0.join("run.toml");
    let base = [
        "train",
        "--config",
        config.to_str().unwrap(),
        "--run-dir",
        other.to_str().unwrap(),
    ];
    for extra in [&[][..], &["--force"][..]] {
        let out = switchyard(&[&base[..], extra].concat());
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("not a Switchyard run directory"),
            "{stderr}"
        );
        assert_eq!(entries(&other), ["todo.txt"]);
    }
}

#[test]
fn import_into_an_existing_run_is_refused_and_force_never_mixes_models() {
    let dir = TempDir::new("import-over");
    let (out, run_dir) = tiny_run(&dir.0, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/tests/fixtures/qwen3_moe");
    let (fx, rd) = (fixture.to_str().unwrap(), run_dir.to_str().unwrap());

    let out = switchyard(&["import", fx, "--out", rd]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in ["already holds a run", "--out", "--force"] {
        assert!(stderr.contains(needle), "{needle} missing:\n{stderr}");
    }
    // the run is untouched: its own model still evaluates
    assert!(!run_dir.join("tokenizer.json").exists());
    let out = switchyard(&["eval", "--ckpt", rd]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("step 6"), "{}", text(&out).0);

    // --force: the imported model alone, nothing of the trained run
    let out = switchyard(&["import", fx, "--out", rd, "--force"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        entries(&run_dir),
        [
            "hf_source.json",
            "latest",
            "step-00000000",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    let out = switchyard(&["eval", "--ckpt", rd, "--max-windows", "1"]);
    assert!(out.status.success(), "{}", text(&out).1);

    // an HF directory is not a run: never replaced
    let out = switchyard(&["import", fx, "--out", fx, "--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    assert!(fixture.join("config.json").is_file());
}

#[test]
fn input_mistakes_exit_2_and_damage_exits_1() {
    let dir = TempDir::new("exit-codes");
    let missing = dir.0.join("no-such-text");
    // data.path that does not exist
    let (out, _) = tiny_run(&dir.0, &["--data", missing.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-text"), "{stderr}");
    // a batch larger than the data has windows
    let (out, _) = tiny_run(&dir.0, &["--batch-size", "100000"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("batch_size"), "{stderr}");
    // a checkpoint path that does not exist
    let out = switchyard(&["eval", "--ckpt", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);

    let (out, run_dir) = tiny_run(&dir.0, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    // resuming with another model is the user's config
    let out = switchyard(&[
        "train",
        "--resume",
        run_dir.to_str().unwrap(),
        "--set",
        "model.n_layers=2",
        "--steps",
        "8",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    // a damaged state.json is data damage
    let state = run_dir.join("step-00000006/state.json");
    std::fs::write(&state, b"{ not json").unwrap();
    let out = switchyard(&["eval", "--ckpt", state.parent().unwrap().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
}

/// `compare-routers --quick` with two routers and the domain-map variant: the table on
/// stdout and in compare.md / compare.json / compare.html, one run per variant; an existing
/// comparison is refused without --force (exit 2) and replaced with it.
#[test]
fn compare_routers_quick_writes_its_table_and_refuses_to_overwrite() {
    let dir = TempDir::new("compare");
    let out_dir = dir.0.join("cmp");
    let args = [
        "compare-routers",
        "--quick",
        "--routers",
        "top_k,switch,top_k+domain_map",
        "--steps",
        "3",
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "data.docs_per_domain=4",
        "--set",
        "data.valid_fraction=0.25",
        "--set",
        "data.max_valid_windows=1",
    ];
    let out = switchyard(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "| top_k |",
        "| switch |",
        "| top_k+domain_map |",
        "NMI",
        "tokens/s",
        "compare.json",
    ] {
        assert!(stdout.contains(needle), "{needle} missing:\n{stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("compare.json")).unwrap())
            .unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        let name = r["variant"].as_str().unwrap();
        assert_eq!(r["k"], 2, "{name}: same active compute");
        assert!(r["val_loss"].as_f64().unwrap().is_finite());
        assert_eq!(r["val_loss_by_domain"].as_array().unwrap().len(), 7);
        let nmi = r["nmi"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&nmi), "{name}: {nmi}");
        assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0);
        // purity only where the loss maps domains to experts
        assert_eq!(
            r["purity"].is_null(),
            !name.ends_with("+domain_map"),
            "{name}"
        );
        assert!(
            out_dir.join(name).join("latest").is_file(),
            "{name}: its run"
        );
    }
    let md = std::fs::read_to_string(out_dir.join("compare.md")).unwrap();
    assert!(stdout.contains(&md));
    let html = std::fs::read_to_string(out_dir.join("compare.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("top_k+domain_map"));

    // a second run into the same --out: refused, nothing touched
    let before = std::fs::read_to_string(out_dir.join("compare.json")).unwrap();
    let out = switchyard(&args);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("already holds a router comparison") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("compare.json")).unwrap(),
        before
    );
    // an unknown router is a usage error naming the choices
    let out = switchyard(&[
        "compare-routers",
        "--quick",
        "--routers",
        "top_kk",
        "--out",
        dir.0.join("x").to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("top_kk") && stderr.contains("expert_choice"),
        "{stderr}"
    );
    // --force replaces it
    let out = switchyard(&[&args[..], &["--force"]].concat());
    assert!(out.status.success(), "{}", text(&out).1);
}
