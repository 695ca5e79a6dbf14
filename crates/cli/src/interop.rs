//! `switchyard import | export | logits`, and `generate` / `eval` for models that carry a
//! HuggingFace tokenizer (an HF checkpoint directory, or a run directory written by
//! `switchyard import`). The work itself is in `switchyard_interop::commands`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_data::{Dataset, DatasetConfig, Tokenizer};
use switchyard_interop::commands::{
    export_model_dir, import_to_checkpoint, logits_to_file, parse_ids_arg,
};
use switchyard_interop::{load_model_dir, HfArch};
use switchyard_models::{LmCtx, Sampler};
use switchyard_train::trainer::{self, TrainConfig};

#[derive(Args)]
pub struct ImportArgs {
    /// A HuggingFace checkpoint directory: config.json, *.safetensors (+ index), tokenizer.json.
    pub hf_dir: PathBuf,
    /// The Switchyard run directory to write (generate, eval, analyze and export read it).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A Switchyard run or step directory (imported or trained), or an HF directory.
    #[arg(long, visible_alias = "model")]
    pub ckpt: PathBuf,
    /// The HF directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2 or deepseek_v3 (default: the
    /// architecture it was imported from, else the first that expresses the model).
    #[arg(long)]
    pub arch: Option<HfArch>,
}

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

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let s = import_to_checkpoint(&args.hf_dir, &args.out)
        .with_context(|| format!("importing {}", args.hf_dir.display()))?;
    println!(
        "imported {} ({} parameters, MoE layers {:?}{}) into {}",
        s.arch,
        s.params,
        s.moe_layers,
        if s.tokenizer {
            ", with tokenizer.json"
        } else {
            ""
        },
        s.step_dir.display()
    );
    Ok(())
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let r = export_model_dir(&args.ckpt, &args.out, args.arch)
        .with_context(|| format!("exporting {}", args.ckpt.display()))?;
    println!(
        "exported as {} ({} tensors) to {}",
        r.arch,
        r.tensors,
        r.dir.display()
    );
    Ok(())
}

pub fn logits(args: LogitsArgs) -> anyhow::Result<()> {
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

/// Whether `dir` is a model `generate` / `eval` should run with its HF tokenizer.
pub fn uses_hf_tokenizer(dir: &std::path::Path) -> bool {
    switchyard_interop::ckpt::is_hf_dir(dir)
        || [Some(dir), dir.parent()]
            .into_iter()
            .flatten()
            .any(|d| d.join("tokenizer.json").is_file())
}

/// `generate` with the model's HF tokenizer: the prompt gets its BOS, generation stops at EOS.
pub fn generate(
    ckpt: &std::path::Path,
    prompt: &str,
    sampler: &mut Sampler,
    max_tokens: usize,
) -> anyhow::Result<()> {
    let m = load_model_dir(ckpt)?;
    let tok = m
        .tokenizer
        .as_ref()
        .context("no tokenizer.json next to the model")?;
    let ids = tok.try_encode(prompt, true)?;
    anyhow::ensure!(
        !ids.is_empty(),
        "the prompt encodes to no tokens; give some text"
    );
    let max_len = m.model.cfg.max_seq_len;
    anyhow::ensure!(
        ids.len() < max_len,
        "the prompt is {} tokens, but the model sees at most {max_len}",
        ids.len()
    );
    let max_new = max_tokens.min(max_len - ids.len());
    let mut out = m
        .model
        .generate(&ids, max_new, sampler, &mut LmCtx::new(false, sampler.seed))?;
    if let Some(end) = out.iter().position(|&t| Some(t) == tok.eos) {
        out.truncate(end);
    }
    println!("{prompt}{}", tok.decode(&out));
    Ok(())
}

/// `eval` of an HF directory (not a Switchyard checkpoint) with its tokenizer on `data`
/// (default: the built-in corpus); prints the loss per domain. Checkpoints, imported or
/// trained, go through the ordinary `eval`, which uses the tokenizer they carry.
pub fn eval(
    ckpt: &std::path::Path,
    data: Option<PathBuf>,
    max_windows: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let m = load_model_dir(ckpt)?;
    let tok = m
        .tokenizer
        .as_ref()
        .context("no tokenizer.json next to the model")?;
    let mut cfg = TrainConfig::default();
    cfg.data.path = data;
    cfg.data.seq_len = cfg.data.seq_len.min(m.model.cfg.max_seq_len);
    let docs = trainer::data::load_documents(&cfg)?;
    let dcfg = DatasetConfig {
        seq_len: cfg.data.seq_len,
        valid_fraction: cfg.data.valid_fraction,
        split_seed: cfg.data.split_seed,
    };
    let dataset = Dataset::build(&docs, tok, &dcfg)?;
    let result = trainer::evaluate(
        &m.model,
        &dataset,
        max_windows.unwrap_or(cfg.data.max_valid_windows),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{} with {}", ckpt.display(), tok.path.display());
        print!("{}", crate::report::eval_table(&[("val loss", &result)]));
    }
    Ok(())
}
