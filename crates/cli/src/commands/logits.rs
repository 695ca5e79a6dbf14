//! `switchyard logits`: logits, router logits and chosen experts of every MoE layer for given
//! ids, saved as safetensors in the parity fixtures' format (the work is in
//! `switchyard_interop::commands`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_interop::commands::{logits_to_file, parse_ids_arg, IdsInput};

#[derive(Args)]
pub struct LogitsArgs {
    /// A Switchyard run or step directory, or an HF directory.
    #[arg(long)]
    pub model: PathBuf,
    /// A JSON list of token ids ('[1, 5, 9]'), a file holding one, or text (a file or the
    /// argument itself; encoded with the model's tokenizer including its BOS). A directory or
    /// a path that names no file is refused.
    #[arg(long, value_parser = ids_arg)]
    pub ids: IdsInput,
    /// Output safetensors: input_ids, logits, and per MoE layer i router_logits.i,
    /// chosen_experts.i, routing_weights.i (the parity fixtures' format).
    #[arg(long)]
    pub out: PathBuf,
    /// Also store this many greedy tokens (KV cache on) as `greedy`.
    #[arg(long, default_value_t = 0)]
    pub greedy: usize,
}

/// `--ids` is read while the command line is parsed, so a bad one is a usage error (exit 2).
fn ids_arg(arg: &str) -> Result<IdsInput, String> {
    parse_ids_arg(arg).map_err(|e| format!("{e:#}"))
}

pub fn run(args: LogitsArgs) -> anyhow::Result<()> {
    let r = logits_to_file(&args.model, &args.ids, &args.out, args.greedy)
        .with_context(|| format!("running {}", args.model.display()))?;
    println!(
        "{} tokens, {} MoE layers -> {}",
        r.input_ids.len(),
        r.layers.len(),
        args.out.display()
    );
    Ok(())
}
