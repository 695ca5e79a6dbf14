//! Helpers shared by the CLI test binaries (`cli.rs`, `messages.rs`): the tiny run config,
//! a self-deleting temp directory and running the real binary.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A tiny run: 1-layer MoE LM (d = 16) on a few short documents per domain.
pub const TINY_CONFIG: &str = r#"
seed = 3

[model]
d_model = 16
n_layers = 1
n_heads = 2
max_seq_len = 32

[model.ffn.sparse]
experts = { count = 4, kind = "swiglu", hidden = 16 }
router = { type = "top_k", k = 2 }

[data]
docs_per_domain = 4
doc_bytes = 256
seq_len = 16
valid_fraction = 0.25
max_valid_windows = 2

[optim]
warmup_steps = 2

[train]
steps = 6
batch_size = 4
eval_every = 0
checkpoint_every = 3
"#;

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "switchyard-cli-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn switchyard(args: &[&str]) -> Output {
    switchyard_env(args, &[])
}

/// [`switchyard`] with extra environment variables (the fault-injection hook).
pub fn switchyard_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn tiny_run(dir: &Path, extra: &[&str]) -> (Output, PathBuf) {
    tiny_run_env(dir, extra, &[])
}

pub fn tiny_run_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Output, PathBuf) {
    let config = dir.join("run.toml");
    std::fs::write(&config, TINY_CONFIG).unwrap();
    let run_dir = dir.join("run");
    let mut args = vec![
        "train",
        "--config",
        config.to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
    ];
    args.extend(extra);
    (switchyard_env(&args, env), run_dir)
}
