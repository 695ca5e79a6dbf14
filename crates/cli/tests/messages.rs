//! What the user reads (issue 22, items 6 and 14): each message says what was wrong and what
//! was done, once, and names the right thing. One test per message that used to be wrong.

use std::path::{Path, PathBuf};

mod common;

use common::{switchyard, text, tiny_run, TempDir};

fn trained(dir: &Path) -> PathBuf {
    let (out, run) = tiny_run(dir, &[]);
    assert!(out.status.success(), "train failed: {:?}", text(&out));
    run
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/tests/fixtures")
        .join(name)
}

/// "the prompt is 127 bytes, but the model sees at most 127 tokens": the limit is the context
/// less the start token and one new token.
#[test]
fn a_too_long_prompt_is_refused_with_the_length_that_fits() {
    let dir = TempDir::new("prompt");
    let run = trained(&dir.0);
    let prompt = "a".repeat(31); // context 32 = start token + 31 bytes: no room for a new one
    let out = switchyard(&[
        "generate",
        "--ckpt",
        run.to_str().unwrap(),
        "--prompt",
        &prompt,
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "the user's input: {stderr}");
    assert!(
        stderr.contains("the prompt is 31 bytes") && stderr.contains("at most 30 bytes"),
        "{stderr}"
    );
    let fits = "a".repeat(30);
    let out = switchyard(&[
        "generate",
        "--ckpt",
        run.to_str().unwrap(),
        "--prompt",
        &fits,
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// `--max-tokens 10^12` silently stopped at the context length.
#[test]
fn max_tokens_beyond_the_context_says_how_many_will_be_generated() {
    let dir = TempDir::new("maxtok");
    let run = trained(&dir.0);
    let out = switchyard(&[
        "generate",
        "--ckpt",
        run.to_str().unwrap(),
        "--prompt",
        "ab",
        "--max-tokens",
        "1000000000000",
        "--temperature",
        "0",
    ]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // context 32 = start token + 2 prompt bytes + 29 new tokens
    assert!(
        stderr.contains("--max-tokens 1000000000000") && stderr.contains("at most 29 tokens"),
        "{stderr}"
    );
}

/// A step directory without state.json: eval called it an HF directory with an unsupported
/// architecture, generate said "no checkpoint". Both now name the missing file.
#[test]
fn a_step_dir_without_state_json_is_named_as_incomplete_by_every_command() {
    let dir = TempDir::new("nostate");
    let run = trained(&dir.0);
    let step = run.join("step-00000003");
    std::fs::remove_file(step.join("state.json")).unwrap();
    for cmd in ["eval", "generate", "analyze"] {
        let out = switchyard(&[cmd, "--ckpt", step.to_str().unwrap()]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(
            stderr.contains("step-00000003/state.json") && stderr.contains("missing"),
            "{cmd}: {stderr}"
        );
        assert!(!stderr.contains("architecture"), "{cmd}: {stderr}");
    }
}

/// With a config that has its own [model], an HF directory in --init-from got the generic
/// checkpoint error, not "convert it first with `switchyard import`".
#[test]
fn init_from_an_hf_dir_with_a_config_file_says_to_import_it() {
    let dir = TempDir::new("initfrom");
    let hf = fixture("qwen3_moe");
    let (out, _) = tiny_run(&dir.0, &["--init-from", hf.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("convert it first with `switchyard import"),
        "{stderr}"
    );
}

/// `logits --ids <a directory or mistyped path>` tokenized the path as text.
#[test]
fn logits_ids_naming_a_directory_or_missing_file_is_a_usage_error() {
    let dir = TempDir::new("ids");
    let out_file = dir.0.join("out.safetensors");
    let missing = dir.0.join("promt.txt");
    for (ids, needle) in [
        (dir.0.to_str().unwrap(), "is a directory"),
        (missing.to_str().unwrap(), "no such file"),
    ] {
        let out = switchyard(&[
            "logits",
            "--model",
            fixture("qwen3_moe").to_str().unwrap(),
            "--ids",
            ids,
            "--out",
            out_file.to_str().unwrap(),
        ]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle) && stderr.contains(ids), "{stderr}");
        assert!(!out_file.exists());
    }
}

/// `train --resume --steps 400` after 200 steps reported "trained 400 steps".
#[test]
fn resume_reports_the_steps_of_this_run_and_the_total() {
    let dir = TempDir::new("resume");
    let run = trained(&dir.0);
    let out = switchyard(&["train", "--resume", run.to_str().unwrap(), "--steps", "8"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("trained 2 steps this run (resumed at step 6, 8 in total)"),
        "{stdout}"
    );
}

/// `…my_text//prose/part1.txt…`, and the data error printed twice ("data: X: X").
#[test]
fn a_data_error_is_printed_once_without_a_double_slash() {
    let dir = TempDir::new("data");
    let missing = format!("{}/", dir.0.join("my_text").display());
    let (out, _) = tiny_run(&dir.0, &["--data", &missing]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        stderr.matches("does not exist").count(),
        1,
        "printed more than once:\n{stderr}"
    );
    assert!(
        stderr.contains("my_text/prose/part1.txt") && !stderr.contains("//"),
        "{stderr}"
    );
}

/// `configs/tiny.toml` printed 5 expert-collapse warnings: a layer whose top expert's share
/// hovers around the limit was warned about each time it went back above it.
#[test]
fn a_flickering_collapse_is_warned_about_once() {
    let dir = TempDir::new("collapse");
    let (out, run) = tiny_run(&dir.0, &["--steps", "40"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // the run must flicker for the test to mean anything: count its entries above 90%
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut above = false;
    let mut entries = 0;
    for l in metrics.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        if r["event"] != "step" || r["step"].as_u64().unwrap() <= 2 {
            continue; // warmup
        }
        let now = r["layers"][0]["max_expert_share"].as_f64().unwrap() > 0.9;
        entries += usize::from(now && !above);
        above = now;
    }
    assert!(
        entries >= 2,
        "the run no longer flickers ({entries} entries); pick another seed"
    );
    assert_eq!(
        stderr.matches("expert collapse").count(),
        1,
        "{entries} entries above the limit, but one warning per layer and episode:\n{stderr}"
    );
}
