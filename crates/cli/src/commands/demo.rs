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
    /// Where the two runs (moe/, dense/), analysis/ and summary.json go; default runs/demo,
    /// or runs/demo-quick with --quick.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace a previous demo in the output directory (its runs are deleted first); without
    /// it, a directory that holds one is refused.
    #[arg(long)]
    pub force: bool,
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
        out: args
            .out
            .unwrap_or_else(|| demo::DemoOptions::default_out(args.quick)),
        force: args.force,
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
