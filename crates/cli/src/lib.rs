//! # switchyard-cli
//!
//! The `switchyard` command (`src/main.rs`, thin: clap parsing, logging, exit codes) and the
//! pieces it is made of, usable from other tools:
//! - [`commands`]: one file per command (`train`, `generate`, `eval`, `demo`, `bench`,
//!   `analyze`, `import`, `export`, `logits`), each with its clap `Args` and its `run`;
//! - [`demo`]: [`demo::run`] trains an MoE LM and its equal-active-compute dense baseline on
//!   the built-in corpus and returns a [`demo::DemoResult`] (run directories, evaluations,
//!   the domain → expert routing table, `summary.json`); later steps such as an HTML report
//!   start from that result;
//! - [`analyze`]: `switchyard analyze` (routing trace, metrics, plots, HTML report) and trace replay;
//! - [`run_config`]: the run config a loaded model is evaluated or analysed with;
//! - [`report`]: the plain-text tables the commands print;
//! - [`error_report`], [`exit_code`] (the rule is in [`exit`]) and [`hints`]: how an error
//!   reaches the user;
//! - [`new_run`]: the check that a command never silently replaces a run directory.
//!
//! Every command that reads a model (generate, eval, analyze, export, logits) loads it with
//! `switchyard_interop::load_any`, so each takes a run directory, a step directory or an HF
//! directory alike. Training itself lives in `switchyard-train` ([`switchyard_train::Trainer`]),
//! run directories in `switchyard-io`, models in `switchyard-models`, data in `switchyard-data`.
//!
//! ```no_run
//! use switchyard_cli::demo::{run, DemoOptions};
//!
//! let result = run(&DemoOptions { quick: true, out: "runs/demo-quick".into(), ..Default::default() })?;
//! println!("MoE {:.3} vs dense {:.3}", result.moe.eval.loss, result.dense.eval.loss);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod analyze;
pub mod commands;
pub mod compare;
pub mod demo;
pub mod demo_new_domain;
pub mod exit;
pub mod new_run;
pub mod report;
pub mod run_config;
pub mod surgery;

pub use exit::{exit_code, UserError, EXIT_ERROR, EXIT_NON_FINITE, EXIT_USAGE};

use switchyard_interop::InteropError;
use switchyard_io::{CheckpointError, LoadError};
use switchyard_train::trainer::{ConfigError, RunError};

/// The error as the user reads it: each message of the chain, outermost first, joined by
/// `: ` like anyhow's `{:#}`, except that a cause whose text its wrapper already printed
/// (`#[error("data: {0}")]` around a `#[from]` source) is not printed a second time.
pub fn error_report(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// What the user can do about an error, one suggestion per line.
pub fn hints(err: &anyhow::Error) -> Vec<String> {
    for e in err.chain() {
        if let Some(u) = e.downcast_ref::<UserError>() {
            return u.hint.iter().cloned().collect();
        }
        if let Some(c) = e.downcast_ref::<ConfigError>() {
            return config_hints(c);
        }
        if let Some(r) = e.downcast_ref::<RunError>() {
            match r {
                RunError::Config(c) => return config_hints(c),
                RunError::NonFinite { .. } => {
                    return vec![
                        "lower optim.lr (e.g. --lr 1e-3) or keep optim.clip_grad_norm > 0, then continue from the last good checkpoint with --resume".into(),
                    ]
                }
                RunError::Checkpoint(c) => return checkpoint_hints(c),
                RunError::Resume { .. } => {
                    return vec!["resume with the config the run was started with (it is stored in the checkpoint's config.json)".into()]
                }
                _ => {}
            }
        }
        if let Some(c) = e.downcast_ref::<CheckpointError>() {
            return checkpoint_hints(c);
        }
        // transparent wrappers hide the checkpoint error from the chain
        let wrapped = match e.downcast_ref::<InteropError>() {
            Some(InteropError::Checkpoint(c)) => Some(c),
            Some(InteropError::Load(LoadError::Checkpoint(c))) => Some(c),
            _ => match e.downcast_ref::<LoadError>() {
                Some(LoadError::Checkpoint(c)) => Some(c),
                _ => None,
            },
        };
        if let Some(c) = wrapped {
            return checkpoint_hints(c);
        }
    }
    vec![]
}

fn config_hints(c: &ConfigError) -> Vec<String> {
    match c {
        ConfigError::UnknownKey { .. } | ConfigError::BadValue { .. } => {
            vec!["`switchyard train --print-config` prints every key with its default".into()]
        }
        ConfigError::Override { .. } => {
            vec!["write overrides as --set section.key=value, e.g. --set optim.lr=1e-3".into()]
        }
        _ => vec![],
    }
}

fn checkpoint_hints(c: &CheckpointError) -> Vec<String> {
    match c {
        CheckpointError::NotFound { .. } => {
            vec!["--ckpt takes a run directory (e.g. runs/demo/moe) or one of its step-* directories".into()]
        }
        CheckpointError::Corrupt { .. }
        | CheckpointError::Truncated { .. }
        | CheckpointError::NonFinite { .. }
        | CheckpointError::Format { .. } => {
            vec!["pass an earlier step-* directory of the run; checkpoints are never modified after they are written".into()]
        }
        _ => vec![],
    }
}
