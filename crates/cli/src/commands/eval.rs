//! `switchyard eval`: validation loss per domain and overall of any model `load_any` reads (a
//! run directory, a step directory or an HF directory), with the tokenizer it carries.

use std::path::PathBuf;

use clap::Args;
use switchyard_interop::load_any;
use switchyard_io::{mem_available_bytes, ModelSource};
use switchyard_models::{Job, MemoryNeed};
use switchyard_train::trainer;

use crate::commands::generate::hf_tokenizer;
use crate::report;
use crate::run_config::run_config;

#[derive(Args)]
pub struct EvalArgs {
    /// The model: a run directory (its latest checkpoint), a step-* directory or a
    /// HuggingFace directory.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Evaluate on the validation split of this text file or <domain>/*.txt directory.
    /// Default: the run's own data (the built-in corpus for an HF directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation windows per domain, at least 1 (default: the run's data.max_valid_windows).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_windows: Option<u64>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let m = load_any(&args.ckpt)?;
    let tok_file = hf_tokenizer(&m)?.map(|t| t.path.display().to_string());
    let mut cfg = run_config(&m)?;
    if let Some(path) = args.data {
        cfg.data.path = Some(path);
    }
    // the model is loaded; what evaluating adds must fit beside it
    let job = Job::Infer {
        batch: trainer::eval::EVAL_BATCH_WINDOWS,
        seq_len: cfg.data.seq_len,
        kv_cache: false,
    };
    MemoryNeed::of(&m.model.cfg, job)?
        .beyond_weights()
        .check(mem_available_bytes())?;
    let data = trainer::data::build_dataset_with(&cfg, m.text_tokenizer())?;
    let windows = args
        .max_windows
        .map_or(cfg.data.max_valid_windows, |w| w as usize);
    let result = trainer::evaluate(&m.model, &data, windows)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    let tok_name = tok_file.unwrap_or_else(|| "bytes".into());
    match &m.source {
        ModelSource::Checkpoint { step_dir, step, .. } => println!(
            "checkpoint {} (step {step}), tokenizer {tok_name}",
            step_dir.display()
        ),
        ModelSource::HfDir { dir } => println!("{} with {tok_name}", dir.display()),
    }
    print!("{}", report::eval_table(&[("val loss", &result)]));
    Ok(())
}
