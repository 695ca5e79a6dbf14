//! `switchyard train`: train a model from a TOML config, with `--set` overrides; resumable.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_train::trainer::{self, TrainConfig, Trainer};

use crate::new_run::{is_inside, Flags, NewRun};
use crate::report;

#[derive(Args)]
pub struct TrainArgs {
    /// TOML config (see configs/); without it the built-in defaults are used.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Override any config key, e.g. --set optim.lr=1e-3 --set model.n_layers=4 (repeatable;
    /// applied after the file and before the flags below).
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Optimiser updates in the whole run; the LR schedule ends here (train.steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Peak learning rate after warmup (optim.lr).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Windows of data.seq_len tokens per micro-batch (train.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Directory for checkpoints, metrics.jsonl and the carried tokenizer (run_dir).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Seed of parameter initialisation, data order and routing noise (seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate on the validation split every this many steps; 0: only at the end
    /// (train.eval_every).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Save a checkpoint every this many steps; 0: only at the end (train.checkpoint_every).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Training text: a .txt file or a directory of <domain>/*.txt; default: the built-in
    /// corpus (data.path).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Start from this checkpoint's weights (a run or step directory, e.g. written by
    /// `switchyard import`) with a fresh optimiser; its model and tokenizer are used
    /// (init.from).
    #[arg(long, value_name = "CKPT")]
    pub init_from: Option<PathBuf>,
    /// Continue from the latest checkpoint in run_dir, or from the given checkpoint directory.
    #[arg(long, value_name = "CKPT", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Replace the run already in run_dir: it is deleted (checkpoints, metrics, tokenizer)
    /// before the new run writes anything. Without it, a new run into a directory that holds
    /// one is refused.
    #[arg(long)]
    pub force: bool,
    /// Print the resolved config as TOML and exit.
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
            let from = from.clone().unwrap_or_else(|| run_dir_of(&overrides));
            let saved = trainer::restore::read_checkpoint_config(&from)
                .with_context(|| format!("resuming from {}", from.display()))?;
            TrainConfig::from_toml_str(&saved.to_toml_string(), None, &overrides)?
        }
        (None, None) => TrainConfig::from_overrides(&overrides)?,
    };
    if args.print_config {
        print!("{}", cfg.to_toml_string());
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
    println!(
        "trained {} steps ({} tokens, {} skipped) in {:.1}s; checkpoint: {}",
        summary.steps,
        summary.tokens_seen,
        summary.skipped_steps,
        summary.wall_time_s,
        summary.checkpoint.display()
    );
    Ok(())
}

/// The run directory the overrides name, else the default one.
fn run_dir_of(overrides: &[String]) -> PathBuf {
    TrainConfig::from_overrides(overrides)
        .map(|c| c.run_dir)
        .unwrap_or_else(|_| TrainConfig::default().run_dir)
}

/// A TOML string literal, so paths with odd characters survive `--set`.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
