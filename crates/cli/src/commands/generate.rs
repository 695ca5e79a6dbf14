//! `switchyard generate`: continue a prompt with any model `load_any` reads (a run directory,
//! a step directory or an HF directory), with the tokenizer the model carries.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_data::{ByteTokenizer, HfTokenizer, Tokenizer};
use switchyard_interop::{load_any, LoadedModel};
use switchyard_io::{mem_available_bytes, ModelSource};
use switchyard_models::{Job, LmCtx, MemoryNeed, Sampler};

use crate::UserError;

#[derive(Args)]
pub struct GenerateArgs {
    /// The model: a run directory (its latest checkpoint), a step-* directory or a
    /// HuggingFace directory.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Text the generated tokens continue, printed before them; it and the new tokens must
    /// fit the model's context (model.max_seq_len tokens). Default: empty, a new document.
    #[arg(short, long, default_value = "", hide_default_value = true)]
    pub prompt: String,
    /// Softmax temperature of sampling (logits divided by it); lower is more predictable,
    /// 0 picks the most likely token every time.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Nucleus sampling: draw only from the most likely tokens that together hold this
    /// probability (a fraction in (0, 1]; 1 turns it off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Seed of the sampler and of routing noise: the same model, prompt and seed give the
    /// same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most new tokens to generate; fewer at an end-of-sequence token or when the model's
    /// context is full (said on stderr).
    #[arg(long, value_name = "TOKENS", default_value_t = 200)]
    pub max_tokens: usize,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let m = load_any(&args.ckpt)?;
    let mut sampler = Sampler::new(args.temperature, args.top_p, args.seed);
    let text = match hf_tokenizer(&m)? {
        Some(tok) => with_hf_tokenizer(&m, tok, &args, &mut sampler)?,
        None => with_bytes(&m, &args, &mut sampler)?,
    };
    println!("{}{text}", args.prompt);
    Ok(())
}

/// The model's HF tokenizer; an HF directory must have one (its ids are not bytes).
pub(crate) fn hf_tokenizer(m: &LoadedModel) -> anyhow::Result<Option<&HfTokenizer>> {
    if let ModelSource::HfDir { .. } = m.source {
        let tok = m.tokenizer.as_ref();
        return tok.context("no tokenizer.json next to the model").map(Some);
    }
    Ok(m.tokenizer.as_ref())
}

/// The prompt gets its BOS; generation stops at EOS.
fn with_hf_tokenizer(
    m: &LoadedModel,
    tok: &HfTokenizer,
    args: &GenerateArgs,
    sampler: &mut Sampler,
) -> anyhow::Result<String> {
    let ids = tok.try_encode(&args.prompt, true)?;
    if ids.is_empty() {
        return Err(UserError::new("the prompt encodes to no tokens; give some text").into());
    }
    let max_len = m.model.cfg.max_seq_len;
    if ids.len() >= max_len {
        return Err(UserError::new(format!(
            "the prompt is {} tokens (its BOS included), but the model's context is {max_len} \
             tokens and one must be left for a new token: shorten it to at most {} tokens",
            ids.len(),
            max_len - 1
        ))
        .into());
    }
    let max_new = new_tokens(args.max_tokens, ids.len(), max_len);
    check_generation_memory(m, ids.len() + max_new)?;
    let mut out = m
        .model
        .generate(&ids, max_new, sampler, &mut LmCtx::new(false, args.seed))?;
    if let Some(end) = out.iter().position(|&t| Some(t) == tok.eos) {
        out.truncate(end);
    }
    Ok(tok.decode(&out))
}

/// Byte-level models: training text follows an EOS (documents are packed EOS-separated), so
/// a prompt starts where a document would; generation stops at the next EOS.
fn with_bytes(
    m: &LoadedModel,
    args: &GenerateArgs,
    sampler: &mut Sampler,
) -> anyhow::Result<String> {
    let tok = ByteTokenizer;
    let mut prompt = vec![tok.eos()];
    prompt.extend(tok.encode(&args.prompt));
    let max_len = m.model.cfg.max_seq_len;
    // one token of the context is the start-of-text token, one is left for a new token
    if prompt.len() >= max_len {
        return Err(UserError::new(format!(
            "the prompt is {} bytes, but the model's context is {max_len} tokens: one \
             start-of-text token, the prompt's bytes and at least one new token must fit, so \
             shorten it to at most {} bytes",
            prompt.len() - 1,
            max_len.saturating_sub(2)
        ))
        .into());
    }
    let max_new = new_tokens(args.max_tokens, prompt.len(), max_len);
    check_generation_memory(m, prompt.len() + max_new)?;
    let mut ids = m
        .model
        .generate(&prompt, max_new, sampler, &mut LmCtx::new(false, args.seed))?;
    if let Some(end) = ids.iter().position(|&t| t == tok.eos()) {
        ids.truncate(end);
    }
    Ok(tok.decode(&ids))
}

/// How many tokens to generate: `--max-tokens`, or fewer when the model's context (`max_len`)
/// has less room after the prompt's `prompt_len` tokens, which is said on stderr.
fn new_tokens(max_tokens: usize, prompt_len: usize, max_len: usize) -> usize {
    let room = max_len.saturating_sub(prompt_len);
    if max_tokens > room {
        tracing::warn!(
            "--max-tokens {max_tokens} is more than the model's context leaves after the prompt \
             ({max_len} tokens, {prompt_len} of them the prompt's): generating at most {room} tokens"
        );
    }
    max_tokens.min(room)
}

/// Refuses a generation of `positions` positions whose KV cache and activations would not fit
/// beside the loaded model.
fn check_generation_memory(m: &LoadedModel, positions: usize) -> anyhow::Result<()> {
    let job = Job::Infer {
        batch: 1,
        seq_len: positions,
        kv_cache: true,
    };
    MemoryNeed::of(&m.model.cfg, job)?
        .beyond_weights()
        .check(mem_available_bytes())?;
    Ok(())
}
