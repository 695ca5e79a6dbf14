//! `switchyard`: train, evaluate and sample MoE language models; `switchyard demo` compares an
//! MoE LM with its equal-active-compute dense baseline on the built-in corpus.
//!
//! Exit codes: 0 success, 1 error, 2 usage or configuration error, 3 training stopped on a
//! non-finite loss or gradient.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use switchyard_cli::{demo, exit_code, hints, interop, report, EXIT_ERROR};
use switchyard_data::{ByteTokenizer, Tokenizer};
use switchyard_models::{LmCtx, Sampler};
use switchyard_train::trainer::{self, load_model, TrainConfig, Trainer};

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
    Train(TrainArgs),
    /// Continue a prompt with a trained model.
    Generate(GenerateArgs),
    /// Validation loss of a trained model, per domain and overall.
    Eval(EvalArgs),
    /// Train a small MoE LM and its equal-active-compute dense baseline on the built-in
    /// corpus and compare them.
    Demo(DemoArgs),
    /// Kernels and MoE layers against the machine's dense-GEMM ceiling: a table, and JSON rows
    /// with --json (switchyard-bench's binary adds peak-memory figures).
    Bench(BenchArgs),
    /// Routing analysis of a trained MoE model: load, entropy, domain×expert NMI, top tokens,
    /// co-activation, causal ablation; tables, PNG/SVG plots and a self-contained HTML report.
    Analyze(AnalyzeArgs),
    /// Convert a HuggingFace MoE checkpoint (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V2/V3) into
    /// a Switchyard run directory.
    Import(interop::ImportArgs),
    /// Write a Switchyard checkpoint as a HuggingFace directory that transformers loads.
    Export(interop::ExportArgs),
    /// Logits, router logits and chosen experts of every MoE layer for given ids, as safetensors.
    Logits(interop::LogitsArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// TOML config (see configs/); without it the built-in defaults are used.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Override any config key, e.g. --set optim.lr=1e-3 --set model.n_layers=4 (repeatable;
    /// applied after the file and before the flags below).
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// train.steps
    #[arg(long)]
    steps: Option<u64>,
    /// optim.lr
    #[arg(long)]
    lr: Option<f64>,
    /// train.batch_size
    #[arg(long)]
    batch_size: Option<usize>,
    /// run_dir
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// seed
    #[arg(long)]
    seed: Option<u64>,
    /// train.eval_every
    #[arg(long)]
    eval_every: Option<u64>,
    /// train.checkpoint_every
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// data.path: a .txt file or a directory of <domain>/*.txt (default: built-in corpus)
    #[arg(long)]
    data: Option<PathBuf>,
    /// init.from: start from this checkpoint's weights (a run or step directory, e.g. written
    /// by `switchyard import`) with a fresh optimiser; its model and tokenizer are used.
    #[arg(long, value_name = "CKPT")]
    init_from: Option<PathBuf>,
    /// Continue from the latest checkpoint in run_dir, or from the given checkpoint directory.
    #[arg(long, value_name = "CKPT", num_args = 0..=1)]
    resume: Option<Option<PathBuf>>,
    /// Print the resolved config as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// A run directory (its latest checkpoint) or a step-* directory.
    #[arg(long)]
    ckpt: PathBuf,
    #[arg(short, long, default_value = "")]
    prompt: String,
    /// 0 picks the most likely byte every time.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Nucleus sampling: draw from the most likely bytes holding this much probability.
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
}

#[derive(Args)]
struct EvalArgs {
    /// A run directory (its latest checkpoint) or a step-* directory.
    #[arg(long)]
    ckpt: PathBuf,
    /// Evaluate on the validation split of this text file or <domain>/*.txt directory instead
    /// of the run's own data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Validation windows per domain (default: the run's data.max_valid_windows).
    #[arg(long)]
    max_windows: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// The same path in well under a minute: a smaller model, fewer steps.
    #[arg(long)]
    quick: bool,
    /// Where the two runs and summary.json go.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Override a key of both runs' configs, e.g. --set train.steps=100 (repeatable).
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the MoE run's config as TOML and exit (the dense run differs only in
    /// model.ffn.sparse and run_dir).
    #[arg(long)]
    print_config: bool,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// A run directory (its latest checkpoint) or a step-* directory.
    #[arg(long)]
    ckpt: PathBuf,
    /// Analyse on this text file or <domain>/*.txt directory instead of the run's own data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory (default: <ckpt>/analysis).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Validation windows traced per domain.
    #[arg(long, default_value_t = 32)]
    windows: usize,
    /// Skip the causal ablation (one extra pass per expert and layer).
    #[arg(long)]
    no_ablation: bool,
    /// Instead of analysing, force the routing recorded in this trace.safetensors into the
    /// model and check the logits match a normal forward bit for bit.
    #[arg(long, value_name = "TRACE")]
    replay: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Small token counts and few repetitions: seconds instead of minutes.
    #[arg(long)]
    quick: bool,
    /// Also write one JSON object per row to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Thread counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Layer configs, comma-separated: mixtral8, fine64, sweep_e<E>.
    #[arg(long, value_delimiter = ',', default_value = "mixtral8,fine64")]
    configs: Vec<String>,
    /// Also sweep the number of experts from 8 to 1024 at equal active FLOPs.
    #[arg(long)]
    sweep: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            for hint in hints(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(exit_code(&err).unwrap_or(EXIT_ERROR))
        }
    }
}

fn init_logging(quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train(args, cli.quiet),
        Command::Generate(args) => generate(args),
        Command::Eval(args) => eval(args),
        Command::Bench(args) => bench(args),
        Command::Analyze(args) => analyze_cmd(args),
        Command::Import(args) => interop::import(args),
        Command::Export(args) => interop::export(args),
        Command::Logits(args) => interop::logits(args),
        Command::Demo(args) => {
            let opts = demo::DemoOptions {
                quick: args.quick,
                out: args.out,
                overrides: args.set,
                progress: !cli.quiet,
            };
            if args.print_config {
                print!("{}", demo::moe_config(&opts)?.to_toml_string());
                return Ok(());
            }
            let result = demo::run(&opts)?;
            print!("{}", report::demo_report(&result));
            Ok(())
        }
    }
}

fn train(args: TrainArgs, quiet: bool) -> anyhow::Result<()> {
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
    let mut trainer = match args.resume {
        None => Trainer::new(cfg)?,
        Some(from) => {
            let from = from.unwrap_or_else(|| cfg.run_dir.clone());
            Trainer::resume(cfg, &from)
                .with_context(|| format!("resuming from {}", from.display()))?
        }
    };
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

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    if interop::uses_hf_tokenizer(&args.ckpt) {
        let mut sampler = Sampler::new(args.temperature, args.top_p, args.seed);
        return interop::generate(&args.ckpt, &args.prompt, &mut sampler, args.max_tokens);
    }
    let loaded = load_model(&args.ckpt)?;
    let tok = ByteTokenizer;
    // Training text follows an EOS (documents are packed EOS-separated), so a prompt starts
    // where a document would.
    let mut prompt = vec![tok.eos()];
    prompt.extend(tok.encode(&args.prompt));
    let max_new = args
        .max_tokens
        .min(loaded.cfg.model.max_seq_len.saturating_sub(prompt.len()));
    anyhow::ensure!(
        prompt.len() < loaded.cfg.model.max_seq_len,
        "the prompt is {} bytes, but the model sees at most {} tokens; shorten it",
        prompt.len() - 1,
        loaded.cfg.model.max_seq_len - 1
    );
    let mut sampler = Sampler::new(args.temperature, args.top_p, args.seed);
    let mut ids = loaded.model.generate(
        &prompt,
        max_new,
        &mut sampler,
        &mut LmCtx::new(false, args.seed),
    )?;
    if let Some(end) = ids.iter().position(|&t| t == tok.eos()) {
        ids.truncate(end);
    }
    println!("{}{}", args.prompt, tok.decode(&ids));
    Ok(())
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    if switchyard_interop::ckpt::is_hf_dir(&args.ckpt) {
        return interop::eval(&args.ckpt, args.data, args.max_windows, args.json);
    }
    let loaded = load_model(&args.ckpt)?;
    let mut cfg = loaded.cfg.clone();
    if let Some(path) = args.data {
        cfg.data.path = Some(path);
    }
    // the tokenizer the model carries (imported or fine-tuned HF models), else bytes
    let tok: &dyn Tokenizer = match &loaded.tokenizer {
        Some(t) => t,
        None => &ByteTokenizer,
    };
    let data = trainer::data::build_dataset_with(&cfg, tok)?;
    let windows = args.max_windows.unwrap_or(cfg.data.max_valid_windows);
    let result = trainer::evaluate(&loaded.model, &data, windows)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        let tok_name = loaded
            .tokenizer
            .as_ref()
            .map_or("bytes".to_string(), |t| t.path.display().to_string());
        println!(
            "checkpoint {} (step {}), tokenizer {tok_name}",
            loaded.checkpoint.dir.display(),
            loaded.checkpoint.step
        );
        print!("{}", report::eval_table(&[("val loss", &result)]));
    }
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let opts = switchyard_bench::BenchOpts {
        quick: args.quick,
        threads: args.threads,
        configs: args.configs,
        sweep: args.sweep,
        ..Default::default()
    };
    print!(
        "{}",
        switchyard_bench::run_and_report(&opts, args.json.as_deref())?
    );
    Ok(())
}

fn analyze_cmd(args: AnalyzeArgs) -> anyhow::Result<()> {
    if let Some(trace) = &args.replay {
        let worst = switchyard_cli::analyze::replay(&args.ckpt, trace)?;
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
    let run = switchyard_cli::analyze::AnalyzeRun {
        ckpt: args.ckpt,
        data: args.data,
        out,
        windows_per_domain: args.windows,
        ablation: !args.no_ablation,
    };
    let s = switchyard_cli::analyze::run(&run)?;
    print!("{}", switchyard_analyze::report::terminal_tables(&s));
    println!("\nreport:  {}", s.report.display());
    println!("trace:   {}", s.trace.display());
    println!("metrics: {}", s.metrics_json.display());
    Ok(())
}
