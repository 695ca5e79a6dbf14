//! `switchyard train`: train a model from a TOML config, with `--set` overrides; resumable.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_train::trainer::config_toml::apply_override;
use switchyard_train::trainer::{self, TrainConfig, Trainer};

use crate::new_run::{is_inside, Flags, NewRun};
use crate::report;
use crate::UserError;

// Each flag is a shortcut for one config key: its default is that key's value in the
// config file, or the built-in default (`switchyard train --print-config` shows both).
#[derive(Args)]
pub struct TrainArgs {
    /// TOML run config (see configs/); keys it leaves out keep their built-in defaults.
    /// Default: no file, every key at its built-in default.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Set any config key, e.g. --set optim.lr=1e-3 --set model.n_layers=4 (repeatable;
    /// applied after the file and before the flags below; none by default). The value is
    /// TOML; bare words are strings.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Length of the whole run in optimiser updates, counted from step 0 also when resuming;
    /// the LR schedule decays to its end here. Sets train.steps (built-in default 200).
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Peak learning rate, reached after optim.warmup_steps and decayed (cosine) to
    /// optim.min_lr. Sets optim.lr (built-in default 3e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Windows (of data.seq_len tokens each) per micro-batch; an update sees batch_size ×
    /// train.grad_accum windows. Sets train.batch_size (built-in default 16).
    #[arg(long, value_name = "WINDOWS")]
    pub batch_size: Option<usize>,
    /// Directory that receives the checkpoints (step-*/, latest), metrics.jsonl and the
    /// carried tokenizer. Sets run_dir (built-in default runs/default).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Seed of parameter initialisation, data order and routing noise (the same seed and
    /// config give bitwise the same run). Sets seed (built-in default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate on the validation split every this many steps (0: only after the last step).
    /// Sets train.eval_every (built-in default 100).
    #[arg(long, value_name = "STEPS")]
    pub eval_every: Option<u64>,
    /// Save a checkpoint every this many steps (0: only after the last step); older ones
    /// beyond train.keep_last are removed. Sets train.checkpoint_every (built-in default 100).
    #[arg(long, value_name = "STEPS")]
    pub checkpoint_every: Option<u64>,
    /// Training text: a .txt file (one domain) or a directory of <domain>/*.txt files, split
    /// into training and validation documents. Sets data.path (default: unset, the built-in
    /// 7-domain corpus).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Start from this checkpoint's weights (a run or step directory, e.g. written by
    /// `switchyard import`) at step 0 with a fresh optimiser; its model and tokenizer are used.
    /// Sets init.from (default: unset, a fresh initialisation).
    #[arg(long, value_name = "CKPT")]
    pub init_from: Option<PathBuf>,
    /// Continue a run bitwise exactly from the latest checkpoint in run_dir, or from the
    /// given run or step directory; without --config the run's own config.json is used.
    /// Default: off (a new run).
    #[arg(long, value_name = "CKPT", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Replace the run already in run_dir: it is deleted (checkpoints, metrics, tokenizer)
    /// before the new run writes anything. Without it, a new run into a directory that holds
    /// one is refused.
    #[arg(long)]
    pub force: bool,
    /// Print the resolved config as TOML, every key with a one-line description (unset
    /// optional keys commented out), and exit without training.
    #[arg(long)]
    pub print_config: bool,
}

/// Trains (or prints the config); `quiet` turns the progress bar off.
pub fn run(args: TrainArgs, quiet: bool) -> anyhow::Result<()> {
    let mut overrides = args.set.clone();
    let mut flag = |key: &str, v: Option<String>| overrides.extend(v.map(|v| format!("{key}={v}")));
    flag("train.steps", args.steps.map(|v| v.to_string()));
    flag("optim.lr", args.lr.map(|v| format!("{v:e}")));
    flag("train.batch_size", args.batch_size.map(|v| v.to_string()));
    flag(
        "run_dir",
        args.run_dir.map(|p| toml_string(&p.display().to_string())),
    );
    flag("seed", args.seed.map(|v| v.to_string()));
    flag("train.eval_every", args.eval_every.map(|v| v.to_string()));
    flag(
        "train.checkpoint_every",
        args.checkpoint_every.map(|v| v.to_string()),
    );
    flag(
        "data.path",
        args.data.map(|p| toml_string(&p.display().to_string())),
    );
    flag(
        "init.from",
        args.init_from
            .map(|p| toml_string(&p.display().to_string())),
    );
    if quiet {
        overrides.push("log.progress=false".into());
    }
    let cfg = match (&args.config, &args.resume) {
        (Some(path), _) => TrainConfig::from_toml_file(path, &overrides)?,
        // Resuming without a config file: start from the run's own config.json.
        (None, Some(from)) => {
            let from = match from {
                Some(dir) => dir.clone(),
                None => run_dir_of(&overrides)?,
            };
            let saved = trainer::restore::read_checkpoint_config(&from)
                .with_context(|| format!("resuming from {}", from.display()))?;
            TrainConfig::from_toml_str(&saved.to_toml_string(), None, &overrides)?
        }
        (None, None) => TrainConfig::from_overrides(&overrides)?,
    };
    if args.print_config {
        print!("{}", cfg.to_documented_toml());
        return Ok(());
    }
    let resume_from = args
        .resume
        .map(|from| from.unwrap_or_else(|| cfg.run_dir.clone()));
    let new_run = match &resume_from {
        // continuing the run in run_dir itself
        Some(from) if is_inside(from, &cfg.run_dir) => None,
        _ => Some(NewRun::check(&cfg.run_dir, args.force, &Flags::TRAIN)?),
    };
    if let Some(new_run) = &new_run {
        let reads = [
            ("--resume", resume_from.as_deref()),
            ("init.from", cfg.init.from.as_deref()),
            ("data.path", cfg.data.path.as_deref()),
            ("data.tokenizer", cfg.data.tokenizer.as_deref()),
        ];
        for (what, path) in reads {
            if let Some(path) = path {
                new_run.refuse_reading(path, what)?;
            }
        }
    }
    let mut trainer = match &resume_from {
        None => Trainer::new(cfg)?,
        Some(from) => Trainer::resume(cfg, from)
            .with_context(|| format!("resuming from {}", from.display()))?,
    };
    if let Some(new_run) = &new_run {
        new_run.prepare()?;
    }
    let summary = trainer.run()?;
    print!("{}", report::eval_table(&[("val loss", &summary.eval)]));
    println!("{}", report::train_line(&summary));
    Ok(())
}

/// The run directory the overrides name (`--run-dir`, `--set run_dir=…`; the last wins),
/// else the default one. Only `run_dir` is read: the other overrides apply to the resumed
/// run's own config, and checking them against the defaults here (say `--steps 8` against
/// the default warm-up) must not send the resume to another directory.
fn run_dir_of(overrides: &[String]) -> anyhow::Result<PathBuf> {
    let mut table = toml::Table::new();
    let names_run_dir = |o: &&String| {
        o.split_once('=')
            .is_some_and(|(k, _)| k.trim() == "run_dir")
    };
    for assignment in overrides.iter().filter(names_run_dir) {
        apply_override(&mut table, assignment)?;
    }
    match table.get("run_dir") {
        None => Ok(TrainConfig::default().run_dir),
        Some(toml::Value::String(dir)) => Ok(PathBuf::from(dir)),
        Some(other) => Err(UserError::new(format!(
            "run_dir = {other} is not a path; give a string, e.g. --run-dir runs/x"
        ))
        .into()),
    }
}

/// A TOML string literal, so paths with odd characters survive `--set`.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
