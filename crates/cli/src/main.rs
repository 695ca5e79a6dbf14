//! `switchyard`: train, evaluate and sample MoE language models; `switchyard demo` compares an
//! MoE LM with its equal-active-compute dense baseline on the built-in corpus.
//!
//! This file only parses the command line and dispatches: each command is one file under
//! `src/commands/` with its arguments and its `run`.
//!
//! Exit codes (the rule is in `switchyard_cli::exit`): 0 success, 1 I/O failure or damaged
//! data, 2 the user's input is wrong (usage, config, a refusal), 3 training diverged.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard_cli::commands::{
    analyze, bench, compare_routers, demo, eval, experts, export, generate, import, logits, train,
    upcycle,
};
use switchyard_cli::{error_report, exit_code, hints, EXIT_ERROR};

/// Large freed blocks (256 KiB and up, e.g. a big layer's expert-weight gradient) are reused by
/// the next step's allocation of the same size instead of being unmapped and faulted in again
/// (see `switchyard_kernels::alloc`).
#[global_allocator]
static ALLOC: switchyard_kernels::alloc::Recycling<std::alloc::System> =
    switchyard_kernels::alloc::Recycling::new(std::alloc::System);

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Mixture-of-Experts language models on the CPU"
)]
struct Cli {
    /// Only warnings and errors; no progress bar.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config; every key can be overridden with --set.
    Train(train::TrainArgs),
    /// Continue a prompt with a trained or imported model (run, step or HF directory).
    Generate(generate::GenerateArgs),
    /// Validation loss of a trained or imported model, per domain and overall.
    Eval(eval::EvalArgs),
    /// Train a small MoE LM and its equal-active-compute dense baseline on the built-in
    /// corpus and compare them.
    Demo(demo::DemoArgs),
    /// Train the demo's model once per router (same data, seed, active compute) and compare
    /// validation loss, load balance, drops, NMI(domain, expert) and speed in one table.
    CompareRouters(compare_routers::CompareRoutersArgs),
    /// Kernels and MoE layers against the machine's dense-GEMM ceiling: a table, and JSON rows
    /// with --json (switchyard-bench's binary adds peak-memory figures).
    Bench(bench::BenchArgs),
    /// Routing analysis of a trained MoE model: load, entropy, domain×expert NMI, top tokens,
    /// co-activation, causal ablation; tables, PNG/SVG plots and a self-contained HTML report.
    Analyze(analyze::AnalyzeArgs),
    #[command(about = import::about())]
    Import(import::ImportArgs),
    /// Write a Switchyard checkpoint as a HuggingFace directory that transformers loads.
    Export(export::ExportArgs),
    /// Logits, router logits and chosen experts of every MoE layer for given ids, as safetensors.
    Logits(logits::LogitsArgs),
    /// Expert surgery on a checkpoint (add, split, merge, prune), written as a new run that
    /// training resumes from; weights, gate rows, router buffers and AdamW moments move together.
    Experts(experts::ExpertsArgs),
    /// Sparse upcycling: a dense checkpoint's FFNs copied into N experts behind a fresh gate.
    Upcycle(upcycle::UpcycleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_report(&err));
            for hint in hints(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(exit_code(&err).unwrap_or(EXIT_ERROR))
        }
    }
}

/// Logs go to stderr, coloured only when it is a terminal (no escape codes in files and pipes)
/// and `NO_COLOR` is unset.
fn init_logging(quiet: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args, cli.quiet),
        Command::Generate(args) => generate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Demo(args) => demo::run(args, cli.quiet),
        Command::CompareRouters(args) => compare_routers::run(args, cli.quiet),
        Command::Bench(args) => bench::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Import(args) => import::run(args),
        Command::Export(args) => export::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Experts(args) => experts::run(args),
        Command::Upcycle(args) => upcycle::run(args),
    }
}
