//! `switchyard logits`: logits, router logits and chosen experts of every MoE layer for given
//! ids, saved as safetensors in the parity fixtures' format (the work is in
//! `switchyard_interop::commands`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_interop::commands::{logits_to_file, parse_ids_arg};

#[derive(Args)]
pub struct LogitsArgs {
    /// A Switchyard run or step directory, or an HF directory.
    #[arg(long)]
    pub model: PathBuf,
    /// A JSON list of token ids, a file holding one, or text (a file or the argument itself;
    /// encoded with the model's tokenizer including its BOS).
    #[arg(long)]
    pub ids: String,
    /// Output safetensors: input_ids, logits, and per MoE layer i router_logits.i,
    /// chosen_experts.i, routing_weights.i (the parity fixtures' format).
    #[arg(long)]
    pub out: PathBuf,
    /// Also store this many greedy tokens (KV cache on) as `greedy`.
    #[arg(long, default_value_t = 0)]
    pub greedy: usize,
}

pub fn run(args: LogitsArgs) -> anyhow::Result<()> {
    let ids = parse_ids_arg(&args.ids)?;
    let r = logits_to_file(&args.model, &ids, &args.out, args.greedy)
        .with_context(|| format!("running {}", args.model.display()))?;
    println!(
        "{} tokens, {} MoE layers -> {}",
        r.input_ids.len(),
        r.layers.len(),
        args.out.display()
    );
    Ok(())
}
