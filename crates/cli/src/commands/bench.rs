//! `switchyard bench`: kernels and MoE layers against the machine's dense-GEMM ceiling (the
//! work is in `switchyard-bench`).

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// Small token counts and few repetitions: seconds instead of minutes.
    #[arg(long)]
    pub quick: bool,
    /// Also write one JSON object per row (every measured field) to this file. Default: none,
    /// only the table.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Thread counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Layer configs, comma-separated: mixtral8, fine64, sweep_e<E>.
    #[arg(long, value_delimiter = ',', default_value = "mixtral8,fine64")]
    pub configs: Vec<String>,
    /// Also sweep the number of experts from 8 to 1024 at equal active FLOPs.
    #[arg(long)]
    pub sweep: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
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
