//! `switchyard analyze`: routing statistics, plots and an HTML report of a trained MoE model,
//! or `--replay` of a recorded trace (the work is in [`crate::analyze`]).

use std::path::PathBuf;

use clap::Args;

use crate::analyze::{self, AnalyzeRun};

#[derive(Args)]
pub struct AnalyzeArgs {
    /// The model: a run directory (its latest checkpoint), a step-* directory or a
    /// HuggingFace directory.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Analyse on this text file or <domain>/*.txt directory instead of the run's own data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory (default: <ckpt>/analysis).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Validation windows traced per domain.
    #[arg(long, default_value_t = 32)]
    pub windows: usize,
    /// Skip the causal ablation (one extra pass per expert and layer).
    #[arg(long)]
    pub no_ablation: bool,
    /// Instead of analysing, force the routing recorded in this trace.safetensors into the
    /// model and check the logits match a normal forward bit for bit.
    #[arg(long, value_name = "TRACE")]
    pub replay: Option<PathBuf>,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    if let Some(trace) = &args.replay {
        let worst = analyze::replay(&args.ckpt, trace)?;
        println!("replayed {}: max |Δ logits| = {worst:e}", trace.display());
        anyhow::ensure!(
            worst == 0.0,
            "replay differs from a normal forward (max |Δ logits| {worst:e}); was the trace recorded with this checkpoint?"
        );
        return Ok(());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.ckpt.join("analysis"));
    let run = AnalyzeRun {
        ckpt: args.ckpt,
        data: args.data,
        out,
        windows_per_domain: args.windows,
        ablation: !args.no_ablation,
    };
    let s = analyze::run(&run)?;
    print!("{}", switchyard_analyze::report::terminal_tables(&s));
    println!("\nreport:  {}", s.report.display());
    println!("trace:   {}", s.trace.display());
    println!("metrics: {}", s.metrics_json.display());
    Ok(())
}
