//! Limits by design: the magnitudes a model config may ask for, and the memory a config needs
//! for a job — computed from the config alone, before anything is allocated.
//!
//! Every command that builds a model asks here first (`train` and `demo` through the trainer,
//! `import`, and `generate`, `eval`, `analyze`, `export`, `logits` through the loaders; a
//! server will call [`check_memory`] the same way), so a config that asks for more memory than
//! the machine has is refused with both sizes instead of aborting the process when an
//! allocation fails.
//!
//! Two checks, in this order:
//! 1. [`LmConfig::check_magnitudes`] (part of [`LmConfig::validate`]): each count and width
//!    under a named limit ([`MAX_WIDTH`], [`MAX_LAYERS`], …), far above any real model, so
//!    that no later product of them can overflow and no loop over layers or experts runs for
//!    minutes. A config past one names its key.
//! 2. [`MemoryNeed::of`] + [`MemoryNeed::check`]: bytes of parameters, RoPE tables, gradients,
//!    AdamW moments, activations and KV cache for a [`Job`], against Linux `MemAvailable`.
//!
//! The figures are estimates of the peak (f32 everywhere, candle keeping every activation the
//! backward pass needs), counted in f64 so an absurd config cannot overflow them.
//!
//! ```
//! use switchyard_models::memory::{Job, MemoryNeed};
//! use switchyard_models::LmConfig;
//!
//! let cfg = LmConfig { d_model: 1 << 20, n_heads: 1, ..Default::default() };
//! let need = MemoryNeed::of(&cfg, Job::Load)?;
//! assert!(need.check(Some(64 << 30)).is_err()); // 4 Ti parameters do not fit in 64 GiB
//! # Ok::<(), switchyard_models::ModelError>(())
//! ```

use std::collections::BTreeSet;
use std::fmt;

use switchyard_core::{ExpertKind, ExpertSpec, GateConfig, MoeConfig};

use crate::config::{LayerFfn, LmConfig};
use crate::{ModelError, Result};

/// Largest width the config may name: `d_model`, `vocab_size`, head counts and widths, FFN
/// and expert hidden widths (16 Mi; real models stay under 300 Ki).
pub const MAX_WIDTH: usize = 1 << 24;
/// Most layers (real models have at most a few hundred).
pub const MAX_LAYERS: usize = 1 << 16;
/// Most routed (or shared) experts per MoE layer (real models have at most a few hundred).
pub const MAX_EXPERTS: usize = 1 << 16;
/// Longest context, `max_seq_len` (16 Mi positions).
pub const MAX_SEQ_LEN: usize = 1 << 24;
/// Most parameters in one model (16 Ti, 64 TiB as f32): beyond any machine, and small enough
/// that parameter counts in `usize` cannot overflow.
pub const MAX_PARAMETERS: f64 = (1u64 << 44) as f64;

const BYTES_F32: f64 = 4.0;
/// RoPE tables are computed in f64, then cast to f32: both copies are alive at the peak.
const BYTES_ROPE_ENTRY: f64 = 8.0 + 4.0;
const GIB: f64 = (1u64 << 30) as f64;

/// What the model is needed for; decides which parts of [`MemoryNeed`] count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Build the model: parameters and RoPE tables (import, loading a checkpoint).
    Load,
    /// Forward passes without gradients over `batch` sequences of `seq_len` tokens (eval);
    /// with `kv_cache`, keys and values of every position are kept (generation).
    Infer {
        batch: usize,
        seq_len: usize,
        kv_cache: bool,
    },
    /// Training with AdamW on micro-batches of `batch` × `seq_len` tokens; `grad_accum > 1`
    /// keeps a second set of gradients (the sum).
    Train {
        batch: usize,
        seq_len: usize,
        grad_accum: usize,
    },
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Load => write!(f, "to load"),
            Job::Infer {
                batch,
                seq_len,
                kv_cache: false,
            } => write!(f, "to evaluate batches of {batch} × {seq_len} tokens"),
            Job::Infer { seq_len, .. } => write!(f, "to generate {seq_len} positions"),
            Job::Train { batch, seq_len, .. } => {
                write!(f, "to train on batches of {batch} × {seq_len} tokens")
            }
        }
    }
}

/// Bytes a model config needs for a [`Job`], by part (f64: absurd configs must not overflow).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryNeed {
    pub job: Job,
    /// The parameters, f32.
    pub parameters: f64,
    /// RoPE cos/sin tables (`max_seq_len × rope_dim`, each built in f64 then cast).
    pub tables: f64,
    /// One gradient per parameter (two with gradient accumulation); training only.
    pub gradients: f64,
    /// AdamW's two moments per parameter; training only.
    pub optimizer: f64,
    /// Activations of one batch: those kept for the backward pass when training, one layer's
    /// at a time otherwise, plus the logits.
    pub activations: f64,
    /// Keys and values of every layer and position; generation only.
    pub kv_cache: f64,
}

impl MemoryNeed {
    /// The estimate for `cfg` (whose magnitudes are checked first; nothing is allocated).
    pub fn of(cfg: &LmConfig, job: Job) -> Result<Self> {
        cfg.check_magnitudes()?;
        let params = parameter_estimate(cfg);
        let mut need = MemoryNeed {
            job,
            parameters: params * BYTES_F32,
            tables: 2.0 * (cfg.max_seq_len * cfg.rope_dim()) as f64 * BYTES_ROPE_ENTRY,
            gradients: 0.0,
            optimizer: 0.0,
            activations: 0.0,
            kv_cache: 0.0,
        };
        let (layer, logits) = (per_token_layer_activations(cfg), cfg.vocab_size as f64);
        match job {
            Job::Load => {}
            Job::Infer {
                batch,
                seq_len,
                kv_cache,
            } => {
                let tokens = (batch as f64) * (seq_len.min(cfg.max_seq_len) as f64);
                // no autograd: one layer's activations at a time; logits and their softmax
                need.activations = tokens * (layer(seq_len) + 2.0 * logits) * BYTES_F32;
                if kv_cache {
                    need.kv_cache = tokens * cfg.n_layers as f64 * kv_per_token(cfg) * BYTES_F32;
                }
            }
            Job::Train {
                batch,
                seq_len,
                grad_accum,
            } => {
                let tokens = (batch as f64) * (seq_len as f64);
                let copies = if grad_accum > 1 { 2.0 } else { 1.0 };
                need.gradients = copies * params * BYTES_F32;
                need.optimizer = 2.0 * params * BYTES_F32;
                // every layer's activations are kept for backward, and the backward pass
                // holds gradients of about the same size; logits and the composed
                // log-softmax's three
                let kept = cfg.n_layers as f64 * layer(seq_len) + 4.0 * logits;
                need.activations = 2.0 * tokens * kept * BYTES_F32;
            }
        }
        Ok(need)
    }

    /// All parts together, in bytes.
    pub fn total(&self) -> f64 {
        self.parameters
            + self.tables
            + self.gradients
            + self.optimizer
            + self.activations
            + self.kv_cache
    }

    /// The same job for a model that is already in memory: only what the job adds.
    pub fn beyond_weights(mut self) -> Self {
        self.parameters = 0.0;
        self.tables = 0.0;
        self
    }

    /// Refuses with [`ModelError::TooLarge`] when [`total`](Self::total) exceeds
    /// `available` bytes; unknown availability (`None`) passes.
    pub fn check(self, available: Option<u64>) -> Result<Self> {
        match available {
            Some(avail) if self.total() > avail as f64 => {
                Err(ModelError::TooLarge(Box::new(TooLarge {
                    need: self,
                    available: avail,
                })))
            }
            _ => Ok(self),
        }
    }
}

/// [`MemoryNeed::of`] checked against the memory available now (Linux `MemAvailable`): the
/// one call every command makes before building or running a model.
pub fn check_memory(cfg: &LmConfig, job: Job) -> Result<MemoryNeed> {
    MemoryNeed::of(cfg, job)?.check(available_bytes())
}

/// The memory Switchyard plans for, in bytes: Linux `MemAvailable` (free memory plus
/// reclaimable caches), capped by the environment variable [`MEMORY_LIMIT_VAR`] when it is
/// set (`8GiB`, `512MiB`, `1000000` bytes…). `None` when neither is known. Every "would not
/// fit in memory" refusal (configs, checkpoints, HF imports) compares against this.
pub fn available_bytes() -> Option<u64> {
    let limit = std::env::var(MEMORY_LIMIT_VAR)
        .ok()
        .and_then(|v| match parse_bytes(&v) {
            Some(n) => Some(n),
            None => {
                eprintln!(
                    "warning: {MEMORY_LIMIT_VAR}={v:?} is not a size (e.g. 8GiB, 512MiB, \
                     1000000); ignored"
                );
                None
            }
        });
    match (proc_mem_available(), limit) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    }
}

/// Caps [`available_bytes`]: a size such as `8GiB`, `512MiB`, `64KiB` or plain bytes. For
/// users who share a machine, and for the fuzz targets, where any allocation beyond it counts
/// as a missing size check.
pub const MEMORY_LIMIT_VAR: &str = "SWITCHYARD_MEMORY_LIMIT";

fn proc_mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `8GiB` / `8G` / `512MiB` / `512M` / `64KiB` / `64K` / `1000` (bytes); binary units.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return None,
    };
    num.checked_mul(1u64 << shift)
}

/// A job that needs more memory than is available: both sizes, and the parts of the need.
#[derive(Clone, Debug, PartialEq)]
pub struct TooLarge {
    pub need: MemoryNeed,
    /// Bytes available when checked.
    pub available: u64,
}

impl fmt::Display for MemoryNeed {
    /// `about 12.3 GiB to train on batches of 16 × 128 tokens (parameters 1.0 GiB, …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("parameters", self.parameters),
            ("RoPE tables", self.tables),
            ("gradients", self.gradients),
            ("optimizer state", self.optimizer),
            ("activations", self.activations),
            ("KV cache", self.kv_cache),
        ]
        .iter()
        .filter(|(_, b)| *b > 0.0)
        .map(|(what, b)| format!("{what} {}", size(*b)))
        .collect();
        write!(
            f,
            "about {} {} ({})",
            gib(self.total()),
            self.job,
            parts.join(", ")
        )
    }
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fix = match self.need.job {
            Job::Load => "make the model smaller (d_model, n_layers, vocab_size, experts, max_seq_len) or use a machine with more memory",
            Job::Infer { kv_cache: false, .. } => "evaluate fewer or shorter windows, or use a machine with more memory",
            Job::Infer { .. } => "generate fewer tokens (--max-tokens) or use a machine with more memory",
            Job::Train { .. } => "make the model smaller (model.d_model, model.n_layers, experts) or the batch (train.batch_size, data.seq_len; train.grad_accum keeps the effective batch), or use a machine with more memory",
        };
        write!(
            f,
            "the model needs {} of memory, but only {} are available; {fix}",
            self.need,
            size(self.available as f64)
        )
    }
}

/// [`LmConfig::check_magnitudes`] for one MoE layer's config; `field` prefixes the keys.
fn check_moe_magnitudes(
    field: &str,
    m: &MoeConfig,
    limit: &impl Fn(&str, usize, usize) -> Result<()>,
) -> Result<()> {
    limit(&format!("{field}.d_model"), m.d_model, MAX_WIDTH)?;
    limit(&format!("{field}.experts"), m.experts.len(), MAX_EXPERTS)?;
    limit(
        &format!("{field}.shared_experts"),
        m.shared_experts.len(),
        MAX_EXPERTS,
    )?;
    for (list, specs) in [
        ("experts", &m.experts),
        ("shared_experts", &m.shared_experts),
    ] {
        for (i, e) in specs.iter().enumerate() {
            limit(&format!("{field}.{list}[{i}].hidden"), e.hidden, MAX_WIDTH)?;
        }
    }
    if let GateConfig::Mlp { hidden, .. } = m.gate {
        limit(&format!("{field}.gate.hidden"), hidden, MAX_WIDTH)?;
    }
    Ok(())
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / GIB)
}

/// GiB, or MiB for the parts too small to show in tenths of a GiB.
fn size(bytes: f64) -> String {
    if bytes >= GIB / 10.0 {
        gib(bytes)
    } else {
        format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
    }
}

impl LmConfig {
    /// Refuses counts and widths past the named limits of this module ([`MAX_WIDTH`],
    /// [`MAX_LAYERS`], [`MAX_EXPERTS`], [`MAX_SEQ_LEN`], [`MAX_PARAMETERS`]), naming the key.
    /// Cheap (no loop over layers), so it runs first in [`LmConfig::validate`].
    pub fn check_magnitudes(&self) -> Result<()> {
        let limit = |field: &str, value: usize, max: usize| -> Result<()> {
            if value > max {
                return Err(ModelError::config(
                    field,
                    format!(
                        "{value} is beyond what any model here can hold (at most {max}); \
                         check the value"
                    ),
                ));
            }
            Ok(())
        };
        limit("vocab_size", self.vocab_size, MAX_WIDTH)?;
        limit("d_model", self.d_model, MAX_WIDTH)?;
        limit("n_layers", self.n_layers, MAX_LAYERS)?;
        limit("n_heads", self.n_heads, MAX_WIDTH)?;
        limit("n_kv_heads", self.n_kv_heads.unwrap_or(0), MAX_WIDTH)?;
        limit("head_dim", self.head_dim.unwrap_or(0), MAX_WIDTH)?;
        limit("max_seq_len", self.max_seq_len, MAX_SEQ_LEN)?;
        limit("dense_layers", self.dense_layers.len(), MAX_LAYERS)?;
        limit("ffn.dense_hidden", self.ffn.dense_hidden, MAX_WIDTH)?;
        if let Some(m) = &self.mla {
            limit("mla.q_lora_rank", m.q_lora_rank.unwrap_or(0), MAX_WIDTH)?;
            limit("mla.kv_lora_rank", m.kv_lora_rank, MAX_WIDTH)?;
            limit("mla.qk_nope_head_dim", m.qk_nope_head_dim, MAX_WIDTH)?;
            limit("mla.qk_rope_head_dim", m.qk_rope_head_dim, MAX_WIDTH)?;
            limit("mla.v_head_dim", m.v_head_dim, MAX_WIDTH)?;
        }
        match &self.ffn.sparse {
            LayerFfn::Dense { hidden } => limit("ffn.sparse.hidden", *hidden, MAX_WIDTH)?,
            LayerFfn::Moe(m) => check_moe_magnitudes("ffn.sparse", m, &limit)?,
        }
        for (j, o) in self.layer_moe.iter().enumerate() {
            limit(&format!("layer_moe[{j}].layer"), o.layer, MAX_LAYERS)?;
            check_moe_magnitudes(&format!("layer_moe[{j}].moe"), &o.moe, &limit)?;
        }
        let params = parameter_estimate(self);
        if params > MAX_PARAMETERS {
            return Err(ModelError::config(
                "d_model",
                format!(
                    "the config asks for about {params:.3e} parameters, beyond the limit of \
                     {MAX_PARAMETERS:.3e}; make the model smaller (d_model, n_layers, \
                     vocab_size, experts)"
                ),
            ));
        }
        Ok(())
    }

    /// How many layers are dense and how many hold `ffn.sparse`, without looping over
    /// `dense_layers` once per layer.
    pub(crate) fn layer_kinds(&self) -> (usize, usize) {
        let forced: BTreeSet<usize> = self.dense_layers.iter().copied().collect();
        let sparse = (0..self.n_layers)
            .filter(|&i| self.ffn.is_sparse_slot(i) && !forced.contains(&i))
            .count();
        (self.n_layers - sparse, sparse)
    }
}

/// Parameters of `cfg` in f64, counted as [`LmConfig::param_count`] counts them except that
/// every gate has `E` outputs (a router may need fewer), so it never fails, never overflows
/// and needs no router built.
fn parameter_estimate(cfg: &LmConfig) -> f64 {
    let f = |n: usize| n as f64;
    let (d, v) = (f(cfg.d_model), f(cfg.vocab_size));
    let embed = v * d * if cfg.tie_embeddings { 1.0 } else { 2.0 };
    let (h, hd, kv) = (f(cfg.n_heads), f(cfg.head_dim()), f(cfg.kv_heads()));
    let attn = match &cfg.mla {
        Some(m) => {
            let (qk, r) = (f(m.qk_head_dim()), f(m.kv_lora_rank));
            let q = match m.q_lora_rank {
                None => d * h * qk,
                Some(qr) => d * f(qr) + f(qr) + f(qr) * h * qk,
            };
            q + d * (r + f(m.qk_rope_head_dim))
                + r
                + r * h * (f(m.qk_nope_head_dim) + f(m.v_head_dim))
                + h * f(m.v_head_dim) * d
        }
        None => {
            let (q_dim, kv_dim) = (h * hd, kv * hd);
            let mut n = 2.0 * d * q_dim + 2.0 * d * kv_dim;
            if cfg.qkv_bias {
                n += q_dim + 2.0 * kv_dim;
            }
            if cfg.qk_norm {
                n += q_dim + kv_dim;
            }
            if cfg.qk_norm_per_head {
                n += 2.0 * hd;
            }
            n
        }
    };
    let (dense_layers, sparse_layers) = cfg.layer_kinds();
    let dense_ffn = 3.0 * d * f(cfg.ffn.dense_hidden);
    let sparse_ffn = match &cfg.ffn.sparse {
        LayerFfn::Dense { hidden } => 3.0 * d * f(*hidden),
        LayerFfn::Moe(m) => moe_params(m),
    };
    // layers whose MoE differs from ffn.sparse's
    let overrides: f64 = cfg
        .layer_moe
        .iter()
        .map(|o| moe_params(&o.moe) - sparse_ffn)
        .sum();
    embed
        + d
        + f(cfg.n_layers) * (attn + 2.0 * d)
        + f(dense_layers) * dense_ffn
        + f(sparse_layers) * sparse_ffn
        + overrides
}

/// Routed and shared experts plus the gate of one MoE layer (a gate of `E` outputs whatever
/// the router; the shared-expert gate).
fn moe_params(m: &MoeConfig) -> f64 {
    let d = m.d_model as f64;
    let expert = |x: &ExpertSpec| {
        let h = x.hidden as f64;
        match x.kind {
            ExpertKind::SwiGlu => 3.0 * d * h,
            ExpertKind::Ffn { .. } => 2.0 * d * h + h + d,
        }
    };
    let experts: f64 = m.experts.iter().chain(&m.shared_experts).map(expert).sum();
    let (e, d_in) = (
        m.experts.len() as f64,
        if m.gate.uses_context() { 2.0 * d } else { d },
    );
    let gate = match m.gate {
        GateConfig::Linear { .. } => d_in * e,
        GateConfig::Mlp { hidden, .. } => hidden as f64 * (d_in + 1.0 + e),
    };
    let shared_gate = if m.shared_gate { d } else { 0.0 };
    experts + gate + shared_gate
}

/// Activations one token produces in one layer, in f32 values, as a function of the
/// sequence length (attention scores and probabilities grow with it).
fn per_token_layer_activations(cfg: &LmConfig) -> impl Fn(usize) -> f64 {
    let f = |n: usize| n as f64;
    let (d, h) = (f(cfg.d_model), f(cfg.n_heads));
    let (q, k, v) = match &cfg.mla {
        Some(m) => (
            h * f(m.qk_head_dim()),
            h * f(m.qk_head_dim()) + f(m.kv_lora_rank),
            h * f(m.v_head_dim),
        ),
        None => {
            let hd = f(cfg.head_dim());
            (h * hd, f(cfg.kv_heads()) * hd, f(cfg.kv_heads()) * hd)
        }
    };
    let moe = |m: &MoeConfig| -> f64 {
        let e = m.experts.len().max(1) as f64;
        let mean = m.experts.iter().map(|x| x.hidden as f64).sum::<f64>() / e;
        let shared: f64 = m.shared_experts.iter().map(|x| x.hidden as f64).sum();
        // gate logits, probabilities, weights; k experts' gate, up, activation,
        // product per token; the gathered rows in and out
        3.0 * e + 4.0 * (m.router.k() as f64 * mean + shared) + 4.0 * d
    };
    let widest_override = cfg
        .layer_moe
        .iter()
        .map(|o| moe(&o.moe))
        .fold(0.0, f64::max);
    let ffn = |sparse: bool| -> f64 {
        match (&cfg.ffn.sparse, sparse) {
            (LayerFfn::Moe(m), true) => moe(m).max(widest_override),
            // gate, up, silu (two ops), product; the output
            (LayerFfn::Dense { hidden }, true) => 5.0 * f(*hidden) + d,
            (_, false) => 5.0 * f(cfg.ffn.dense_hidden) + d,
        }
    };
    let (_, sparse) = cfg.layer_kinds();
    let widest_ffn = if sparse > 0 { ffn(true) } else { 0.0 }.max(if sparse < cfg.n_layers {
        ffn(false)
    } else {
        0.0
    });
    move |seq_len: usize| {
        // q and k: projection, heads, RoPE's products and sum; v: projection, heads;
        // per head and key: scores, scaled, masked, and the composed softmax's three;
        // attention output, its transpose, o_proj; two RMSNorms (square, divide, scale)
        // and two residual sums
        6.0 * (q + k) + 2.0 * v + 6.0 * h * seq_len as f64 + 2.0 * q + d + 8.0 * d + widest_ffn
    }
}

/// Cached keys and values per token and layer.
fn kv_per_token(cfg: &LmConfig) -> f64 {
    let h = cfg.n_heads as f64;
    match &cfg.mla {
        Some(m) => h * (m.qk_head_dim() + m.v_head_dim) as f64,
        None => 2.0 * (cfg.kv_heads() * cfg.head_dim()) as f64,
    }
}
