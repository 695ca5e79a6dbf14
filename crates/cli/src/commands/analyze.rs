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
    /// Analyse on the validation split of this text file or <domain>/*.txt directory.
    /// Default: the run's own data (the built-in corpus for an HF directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Directory that receives trace.safetensors, metrics.json, the plots and report.html.
    /// Default: <ckpt>/analysis.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Validation windows traced per domain.
    #[arg(long, default_value_t = 32)]
    pub windows: usize,
    /// Skip the causal ablation (one extra pass per expert and layer).
    #[arg(long)]
    pub no_ablation: bool,
    /// Instead of analysing, force the routing recorded in this trace.safetensors into the
    /// model and check the logits match a normal forward bit for bit. Default: off (analyse).
    #[arg(long, value_name = "TRACE")]
    pub replay: Option<PathBuf>,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    if let Some(trace) = &args.replay {
        let worst = analyze::replay(&args.ckpt, trace)?;
        anyhow::ensure!(
            worst == 0.0,
            "replaying {} differs from a normal forward (max |Δ logits| = {worst:e}); was the \
             trace recorded with this checkpoint?",
            trace.display()
        );
        println!(
            "replayed {}: the logits match a normal forward bit for bit (max |Δ logits| = 0)",
            trace.display()
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
