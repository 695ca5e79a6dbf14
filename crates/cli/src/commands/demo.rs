//! `switchyard demo`: train a small MoE LM and its equal-active-compute dense baseline on the
//! built-in corpus and compare them (the work is in [`crate::demo`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::{demo, report};

#[derive(Args)]
pub struct DemoArgs {
    /// The same path in well under a minute: a smaller model, fewer steps (a smoke test;
    /// its figures say nothing about MoE vs dense).
    #[arg(long)]
    pub quick: bool,
    /// Directory that receives both runs (moe/, dense/), the routing analysis and
    /// summary.json; default runs/demo, or runs/demo-quick with --quick.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace a previous demo in the output directory (its runs are deleted first); without
    /// it, a directory that holds one is refused.
    #[arg(long)]
    pub force: bool,
    /// Override a key of both runs' configs, e.g. --set train.steps=100 (repeatable; none by
    /// default). Keys as in `switchyard demo --print-config`.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the MoE run's config as TOML, every key described, and exit (the dense run
    /// differs only in model.ffn.sparse and run_dir).
    #[arg(long)]
    pub print_config: bool,
    /// Print README's markdown table (validation loss per domain of both models, their
    /// difference, the parameter counts) from the summary.json of an earlier demo, and exit
    /// without training. Default: off.
    #[arg(long, value_name = "SUMMARY_JSON")]
    pub table: Option<PathBuf>,
    /// The expert-lifecycle demo instead: six domains, then a seventh appears and experts are
    /// added for it (old ones frozen; `--set lifecycle.freeze_old_experts=false` keeps them
    /// training), against continuing without new experts and against training on all seven
    /// from the start (runs/demo-new-domain[-quick]).
    #[arg(long, conflicts_with = "table")]
    pub new_domain: bool,
}

/// Runs the demo (or prints its config); `quiet` turns the progress bars off.
pub fn run(args: DemoArgs, quiet: bool) -> anyhow::Result<()> {
    let default_out = if args.new_domain {
        crate::demo_new_domain::default_out(args.quick)
    } else {
        demo::DemoOptions::default_out(args.quick)
    };
    let opts = demo::DemoOptions {
        quick: args.quick,
        out: args.out.unwrap_or(default_out),
        force: args.force,
        overrides: args.set,
        progress: !quiet,
    };
    if args.print_config {
        print!("{}", demo::moe_config(&opts)?.to_documented_toml());
        return Ok(());
    }
    if let Some(path) = &args.table {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let summary: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        print!("{}", report::demo_markdown(&summary)?);
        return Ok(());
    }
    if args.new_domain {
        let r = crate::demo_new_domain::run(&opts)?;
        print!("{}", crate::demo_new_domain::report(&r));
        println!("summary: {}", opts.out.join(demo::SUMMARY_FILE).display());
        return Ok(());
    }
    let result = demo::run(&opts)?;
    print!("{}", report::demo_report(&result));
    Ok(())
}
