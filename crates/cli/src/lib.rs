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
//! - [`exit_code`] and [`hints`]: how an error reaches the user.
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
pub mod demo;
pub mod report;
pub mod run_config;

use switchyard_interop::InteropError;
use switchyard_io::{CheckpointError, LoadError};
use switchyard_models::ModelError;
use switchyard_train::trainer::{ConfigError, RunError};

/// Any other failure.
pub const EXIT_ERROR: u8 = 1;
/// Bad command line or configuration (clap uses 2 for usage errors too).
pub const EXIT_USAGE: u8 = 2;
/// Training stopped because the loss or gradient norm was not finite.
pub const EXIT_NON_FINITE: u8 = 3;

/// The exit code an error deserves, if it is one of the special kinds.
pub fn exit_code(err: &anyhow::Error) -> Option<u8> {
    err.chain().find_map(|e| {
        if is_memory_refusal(e) {
            return Some(EXIT_USAGE);
        }
        if let Some(r) = e.downcast_ref::<RunError>() {
            match r {
                RunError::NonFinite { .. } => Some(EXIT_NON_FINITE),
                RunError::Config(_) => Some(EXIT_USAGE),
                _ => None,
            }
        } else if e.downcast_ref::<ConfigError>().is_some() {
            Some(EXIT_USAGE)
        } else {
            None
        }
    })
}

/// A refusal because the model, job or checkpoint needs more memory than is available: the
/// user's input asks too much (exit 2). Transparent wrappers hide the inner error from the
/// chain, so they are looked into.
fn is_memory_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let model = |m: &ModelError| matches!(m, ModelError::TooLarge(_));
    let ckpt = |c: &CheckpointError| matches!(c, CheckpointError::TooLarge { .. });
    let load = |l: &LoadError| match l {
        LoadError::Model(m) => model(m),
        LoadError::Checkpoint(c) => ckpt(c),
        _ => false,
    };
    if let Some(m) = e.downcast_ref::<ModelError>() {
        return model(m);
    }
    if let Some(c) = e.downcast_ref::<CheckpointError>() {
        return ckpt(c);
    }
    if let Some(l) = e.downcast_ref::<LoadError>() {
        return load(l);
    }
    match e.downcast_ref::<RunError>() {
        Some(RunError::Checkpoint(c)) => return ckpt(c),
        Some(RunError::Model(m)) => return model(m),
        _ => {}
    }
    match e.downcast_ref::<InteropError>() {
        Some(InteropError::Model(m)) => model(m),
        Some(InteropError::Load(l)) => load(l),
        Some(InteropError::Checkpoint(c)) => ckpt(c),
        _ => false,
    }
}

/// What the user can do about an error, one suggestion per line.
pub fn hints(err: &anyhow::Error) -> Vec<String> {
    for e in err.chain() {
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
