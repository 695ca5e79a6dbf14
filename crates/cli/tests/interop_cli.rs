//! The real `switchyard` binary on the HF fixtures: import → logits → export → import again,
//! generate with the HF tokenizer, and the message and exit code of an unknown architecture.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/tests/fixtures")
        .join(name)
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchyard-cli-interop-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run switchyard")
}

fn ok(args: &[&str]) -> String {
    let out = switchyard(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn logits_of(path: &Path) -> Vec<f32> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    t["logits"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn import_logits_export_round_trip() {
    let d = scratch("roundtrip");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (run, hf, a, b) = (
        d.join("run"),
        d.join("hf"),
        d.join("a.safetensors"),
        d.join("b.safetensors"),
    );
    let out = ok(&["import", &s(&fixture("qwen2_moe")), "--out", &s(&run)]);
    assert!(out.contains("qwen2_moe"), "{out}");
    ok(&[
        "logits",
        "--model",
        &s(&run),
        "--ids",
        "[1, 40, 41, 42]",
        "--out",
        &s(&a),
        "--greedy",
        "3",
    ]);
    let out = ok(&["export", "--ckpt", &s(&run), "--out", &s(&hf)]);
    assert!(out.contains("exported as qwen2_moe"), "{out}");
    ok(&[
        "logits",
        "--model",
        &s(&hf),
        "--ids",
        "[1, 40, 41, 42]",
        "--out",
        &s(&b),
    ]);
    assert_eq!(logits_of(&a), logits_of(&b));

    let text = ok(&[
        "generate",
        "--ckpt",
        &s(&run),
        "--prompt",
        "The quick",
        "--temperature",
        "0",
        "--max-tokens",
        "4",
    ]);
    assert!(text.starts_with("The quick"), "{text}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unknown_architecture_fails_with_the_supported_list() {
    let d = scratch("unknown");
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"]}"#,
    )
    .unwrap();
    let out = switchyard(&[
        "import",
        d.to_str().unwrap(),
        "--out",
        d.join("run").to_str().unwrap(),
    ]);
    // an architecture this build does not implement is the user's input (exit 2), not damage
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gpt_oss")
            && err.contains("mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// The architecture lists in `import`'s and `export --arch`'s help come from the family
/// registry, so a new family shows up there without an edit.
#[test]
fn help_lists_the_registered_architectures() {
    let list = switchyard_interop::supported_architectures().join(", ");
    for args in [
        &["import", "--help"][..],
        &["export", "--help"],
        &["--help"],
    ] {
        let help = ok(args);
        assert!(
            help.contains(&list),
            "{args:?} does not list {list}:\n{help}"
        );
    }
}

/// Regression (issue 22, "no command silently destroys a run"): `export --out` into a run
/// directory wrote an HF model beside its checkpoints, and over an earlier export replaced it
/// silently (leaving stale shards).
#[test]
fn export_never_writes_into_a_run_and_overwrites_a_model_only_with_force() {
    let d = scratch("export-guard");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (run, hf) = (d.join("run"), d.join("hf"));
    ok(&["import", &s(&fixture("qwen3_moe")), "--out", &s(&run)]);
    let before: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let refused = |args: &[&str], needle: &str| {
        let out = switchyard(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    // into the run itself, into its step directory, or inside it
    let step = run.join("step-00000000");
    refused(
        &["export", "--ckpt", &s(&run), "--out", &s(&run), "--force"],
        "run or step directory",
    );
    refused(
        &["export", "--ckpt", &s(&run), "--out", &s(&step)],
        "run or step directory",
    );
    refused(
        &["export", "--ckpt", &s(&run), "--out", &s(&run.join("hf"))],
        "overlaps",
    );
    let after: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the run was changed");

    // a new directory, then again: refused; with --force a stale shard goes too
    ok(&["export", "--ckpt", &s(&run), "--out", &s(&hf)]);
    refused(&["export", "--ckpt", &s(&run), "--out", &s(&hf)], "--force");
    std::fs::write(hf.join("model-00009-of-00009.safetensors"), b"stale").unwrap();
    std::fs::write(hf.join("notes.txt"), b"mine").unwrap();
    ok(&["export", "--ckpt", &s(&run), "--out", &s(&hf), "--force"]);
    assert!(!hf.join("model-00009-of-00009.safetensors").exists());
    assert!(
        hf.join("notes.txt").exists(),
        "--force deletes only model files"
    );
    // the HF directory onto itself
    refused(
        &["export", "--ckpt", &s(&hf), "--out", &s(&hf), "--force"],
        "overlaps",
    );
    ok(&["import", &s(&hf), "--out", &s(&d.join("again"))]);
    std::fs::remove_dir_all(&d).unwrap();
}
