//! `switchyard compare-routers`: the demo's model trained once per router, compared in one
//! table (the work is in [`crate::compare`]).

use std::path::PathBuf;

use clap::Args;

use crate::compare;

#[derive(Args)]
pub struct CompareRoutersArgs {
    /// `all` (every router, plus top_k and sigmoid_bias with the domain-map loss), or a
    /// comma-separated list of router types, each optionally with `+domain_map`, e.g.
    /// `top_k,switch,top_k+domain_map`.
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub routers: String,
    /// Optimiser steps per router; default: the demo's (300, or 30 with --quick).
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Directory of the run per router and of compare.json, compare.md, compare.html;
    /// default runs/compare-routers, or runs/compare-routers-quick with --quick.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The demo's quick model and schedule: a smoke test whose figures compare nothing.
    #[arg(long)]
    pub quick: bool,
    /// Replace an earlier comparison in the output directory (its runs are deleted first).
    #[arg(long)]
    pub force: bool,
    /// Override a key of every router's config, e.g. --set data.max_valid_windows=8
    /// (repeatable; none by default).
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

pub fn run(args: CompareRoutersArgs, quiet: bool) -> anyhow::Result<()> {
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from(if args.quick {
            "runs/compare-routers-quick"
        } else {
            "runs/compare-routers"
        })
    });
    let opts = compare::CompareOptions {
        routers: args.routers,
        steps: args.steps,
        out: out.clone(),
        quick: args.quick,
        force: args.force,
        overrides: args.set,
        progress: !quiet,
    };
    let rows = compare::run(&opts)?;
    print!("{}", compare::markdown(&rows));
    println!(
        "\nwritten: {}, {}, {}",
        out.join(compare::JSON_FILE).display(),
        out.join(compare::MARKDOWN_FILE).display(),
        out.join(compare::HTML_FILE).display()
    );
    Ok(())
}
