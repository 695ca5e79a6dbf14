//! `switchyard demo`: train a small MoE LM and its equal-active-compute dense baseline on the
//! built-in corpus and compare them (the work is in [`crate::demo`]).

use std::path::PathBuf;

use clap::Args;

use crate::{demo, report};

#[derive(Args)]
pub struct DemoArgs {
    /// The same path in well under a minute: a smaller model, fewer steps.
    #[arg(long)]
    pub quick: bool,
    /// Where the two runs and summary.json go.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Override a key of both runs' configs, e.g. --set train.steps=100 (repeatable).
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the MoE run's config as TOML and exit (the dense run differs only in
    /// model.ffn.sparse and run_dir).
    #[arg(long)]
    pub print_config: bool,
}

/// Runs the demo (or prints its config); `quiet` turns the progress bars off.
pub fn run(args: DemoArgs, quiet: bool) -> anyhow::Result<()> {
    let opts = demo::DemoOptions {
        quick: args.quick,
        out: args.out,
        overrides: args.set,
        progress: !quiet,
    };
    if args.print_config {
        print!("{}", demo::moe_config(&opts)?.to_toml_string());
        return Ok(());
    }
    let result = demo::run(&opts)?;
    print!("{}", report::demo_report(&result));
    Ok(())
}
