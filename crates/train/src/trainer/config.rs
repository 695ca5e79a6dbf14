//! [`TrainConfig`]: everything a training run needs, with its defaults in one place and one
//! `validate()` that names the offending key (dotted, as in the TOML file) and says how to fix
//! it. Reading TOML and `--set key=value` overrides live in `config_toml.rs`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchyard_core::router::TopKConfig;
use switchyard_core::{ExpertSpec, MoeConfig, RouterConfig};
use switchyard_data::{tokenizer::BYTE_VOCAB_SIZE, CorpusConfig};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, ModelError};

use super::error::ConfigError;

/// A whole training run. Serialised as the run's `config.json` in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Seeds parameter initialisation, batch order and routing noise (each its own stream).
    pub seed: u64,
    /// Checkpoints (`step-*/`, `latest`) and `metrics.jsonl` go here.
    pub run_dir: PathBuf,
    /// Start from another checkpoint's weights (fine-tuning); unset: a fresh initialisation.
    pub init: InitConfig,
    pub model: LmConfig,
    pub data: DataConfig,
    pub optim: OptimConfig,
    pub train: LoopConfig,
    pub log: LogConfig,
    /// Expert lifecycle hooks (add, split, prune during training); all off by default.
    pub lifecycle: super::lifecycle::LifecycleConfig,
    /// Background replicas of every expert's weights and AdamW moments (off by default).
    pub replica: super::replica::ReplicaConfig,
}

/// Where the first weights come from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InitConfig {
    /// A Switchyard checkpoint (a run or step directory, e.g. one `switchyard import` wrote)
    /// whose parameters and router buffers the run starts from, at step 0 with a fresh
    /// optimiser, LR schedule, data order and routing noise. Without a `[model]` section the
    /// model is the checkpoint's (`--set model.key=value` still edits it), and without
    /// `data.tokenizer` the checkpoint's `tokenizer.json`, if it carries one, tokenizes the data.
    pub from: Option<PathBuf>,
}

/// Where the text comes from and how it is cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataConfig {
    /// A `.txt` file (one domain, named after the file) or a directory `<dir>/<domain>/*.txt`.
    /// Unset: the built-in synthetic corpus.
    pub path: Option<PathBuf>,
    /// A HuggingFace `tokenizer.json` (or a directory holding one) to tokenize the text with.
    /// Unset: the byte tokenizer (259 ids). The run directory gets a copy, so `generate`,
    /// `eval`, `analyze` and `export` of the run use it too.
    pub tokenizer: Option<PathBuf>,
    /// Built-in corpus only: generator seed, documents per domain, bytes per document.
    pub corpus_seed: u64,
    pub docs_per_domain: usize,
    pub doc_bytes: usize,
    /// Tokens per training window (must not exceed `model.max_seq_len`).
    pub seq_len: usize,
    /// Share of each domain's documents held out for validation, in (0, 1).
    pub valid_fraction: f64,
    /// Seeds which documents are held out; kept apart from `seed` so runs with different
    /// seeds are evaluated on the same text.
    pub split_seed: u64,
    /// At most this many validation windows per domain are evaluated (the first ones), to
    /// bound the cost of an evaluation.
    pub max_valid_windows: usize,
    /// A domain left out of the training batches until step `new_domain_step` (a new domain
    /// appearing mid-run; validation covers it throughout). Unset: none.
    pub new_domain: Option<String>,
    /// The step after which `new_domain` enters the training data.
    pub new_domain_step: u64,
}

/// AdamW and the learning-rate schedule (linear warmup, cosine decay to `min_lr` at
/// `train.steps`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimConfig {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip; 0 turns clipping off (the norm is still logged).
    pub clip_grad_norm: f64,
}

/// The training loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoopConfig {
    /// Optimiser updates in the whole run (the LR schedule ends here).
    pub steps: u64,
    /// Windows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are averaged into one update.
    pub grad_accum: usize,
    /// Evaluate on the validation set every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Keep only the newest this many checkpoints (0 keeps all).
    pub keep_last: usize,
    /// Skip an update whose loss exceeds `spike_factor ×` the running mean of recent losses
    /// (after warmup); 0 turns the check off.
    pub spike_factor: f64,
    /// Warn when one expert receives more than this share of a layer's tokens.
    pub collapse_share: f64,
    /// Domain name → the experts its tokens should route to, for `losses.domain_map` (and
    /// routing purity in evaluation). Empty: domain id `d` → expert `d mod E`.
    pub domain_experts: std::collections::BTreeMap<String, Vec<usize>>,
}

/// Logging and progress display.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// Append one JSON line per step (and per evaluation) to `run_dir/metrics.jsonl`.
    pub metrics: bool,
    /// A `tracing` info line every this many steps (0: none; evaluations are always logged).
    pub every: u64,
    /// Show the progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// Most text the built-in corpus generates per domain (4 GiB; the defaults make 128 KiB).
pub const MAX_CORPUS_BYTES_PER_DOMAIN: u64 = 1 << 32;

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            run_dir: PathBuf::from("runs/default"),
            init: InitConfig::default(),
            model: default_model(),
            data: DataConfig::default(),
            optim: OptimConfig::default(),
            train: LoopConfig::default(),
            log: LogConfig::default(),
            lifecycle: Default::default(),
            replica: Default::default(),
        }
    }
}

/// A small top-2-of-8 MoE LM over bytes; `configs/tiny.toml` spells it out.
pub fn default_model() -> LmConfig {
    const D: usize = 64;
    const EXPERTS: usize = 8;
    const EXPERT_HIDDEN: usize = 64;
    LmConfig {
        vocab_size: BYTE_VOCAB_SIZE,
        d_model: D,
        n_layers: 2,
        n_heads: 4,
        max_seq_len: 128,
        ffn: FfnConfig {
            dense_hidden: 4 * D,
            sparse: LayerFfn::Moe(MoeConfig {
                d_model: D,
                experts: vec![ExpertSpec::swiglu(EXPERT_HIDDEN); EXPERTS],
                router: RouterConfig::TopK(TopKConfig { k: 2 }),
                ..Default::default()
            }),
            moe_every: 1,
            first_dense: 0,
        },
        ..Default::default()
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        let corpus = CorpusConfig::default();
        Self {
            path: None,
            tokenizer: None,
            corpus_seed: corpus.seed,
            docs_per_domain: corpus.docs_per_domain,
            doc_bytes: corpus.doc_bytes,
            seq_len: 128,
            valid_fraction: 0.1,
            split_seed: 0,
            max_valid_windows: 32,
            new_domain: None,
            new_domain_step: 0,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 20,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip_grad_norm: 1.0,
        }
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            steps: 200,
            batch_size: 16,
            grad_accum: 1,
            eval_every: 100,
            checkpoint_every: 100,
            keep_last: 3,
            spike_factor: 3.0,
            collapse_share: 0.9,
            domain_experts: Default::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            metrics: true,
            every: 10,
            progress: true,
        }
    }
}

impl TrainConfig {
    /// Checks every key once, at the boundary; the error names the key and how to fix it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate().map_err(|e| match e {
            ModelError::Config { field, reason } => {
                ConfigError::invalid(format!("model.{field}"), reason)
            }
            other => ConfigError::invalid("model", other.to_string()),
        })?;
        if self.run_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "run_dir",
                "must name a directory, e.g. \"runs/tiny\"",
            ));
        }
        self.validate_data()?;
        self.validate_loop()?;
        self.lifecycle.validate(self.train.steps)?;
        if self.data.new_domain.is_some()
            && !(1..self.train.steps).contains(&self.data.new_domain_step)
        {
            return Err(ConfigError::invalid(
                "data.new_domain_step",
                format!(
                    "must be in 1..{} (train.steps) for the new domain to appear, got {}",
                    self.train.steps, self.data.new_domain_step
                ),
            ));
        }
        super::domain_map::validate(self)?;
        self.validate_optim()
    }

    fn validate_data(&self) -> Result<(), ConfigError> {
        let d = &self.data;
        if d.seq_len == 0 {
            return Err(ConfigError::invalid(
                "data.seq_len",
                "must be at least 1; 128 is usual",
            ));
        }
        if d.seq_len > self.model.max_seq_len {
            return Err(ConfigError::invalid(
                "data.seq_len",
                format!(
                    "{} exceeds model.max_seq_len = {}; lower data.seq_len or raise model.max_seq_len",
                    d.seq_len, self.model.max_seq_len
                ),
            ));
        }
        if !(d.valid_fraction > 0.0 && d.valid_fraction < 1.0) {
            return Err(ConfigError::invalid(
                "data.valid_fraction",
                format!(
                    "{} must be strictly between 0 and 1, e.g. 0.1",
                    d.valid_fraction
                ),
            ));
        }
        if d.path.is_none() && (d.docs_per_domain < 2 || d.doc_bytes == 0) {
            let key = if d.doc_bytes == 0 {
                "data.doc_bytes"
            } else {
                "data.docs_per_domain"
            };
            return Err(ConfigError::invalid(
                key,
                "the built-in corpus needs at least 2 documents per domain (one for validation) of at least 1 byte",
            ));
        }
        // the corpus is generated in memory (text, then token ids): refuse absurd sizes here
        // rather than abort on the allocation
        let corpus_bytes = (d.docs_per_domain as u128) * (d.doc_bytes as u128);
        if d.path.is_none() && corpus_bytes > MAX_CORPUS_BYTES_PER_DOMAIN as u128 {
            return Err(ConfigError::invalid(
                "data.docs_per_domain",
                format!(
                    "{} documents of data.doc_bytes = {} bytes is beyond what the built-in corpus \
                     can generate (at most {MAX_CORPUS_BYTES_PER_DOMAIN} bytes per domain); \
                     lower data.docs_per_domain or data.doc_bytes",
                    d.docs_per_domain, d.doc_bytes
                ),
            ));
        }
        if d.max_valid_windows == 0 {
            return Err(ConfigError::invalid(
                "data.max_valid_windows",
                "must be at least 1",
            ));
        }
        // with a HF tokenizer the ids are checked against model.vocab_size once the text is
        // tokenized (trainer::data::build_dataset)
        if d.tokenizer.is_none() && self.model.vocab_size < BYTE_VOCAB_SIZE {
            return Err(ConfigError::invalid(
                "model.vocab_size",
                format!(
                    "{} is smaller than the byte tokenizer's {BYTE_VOCAB_SIZE} ids; set it to {BYTE_VOCAB_SIZE}",
                    self.model.vocab_size
                ),
            ));
        }
        Ok(())
    }

    fn validate_optim(&self) -> Result<(), ConfigError> {
        let o = &self.optim;
        let finite_nonneg = |key: &str, v: f64, hint: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("{v} must be a finite number >= 0; {hint}"),
                ))
            }
        };
        finite_nonneg("optim.lr", o.lr, "3e-3 suits the small models here")?;
        finite_nonneg("optim.min_lr", o.min_lr, "e.g. lr / 10")?;
        if o.min_lr > o.lr {
            return Err(ConfigError::invalid(
                "optim.min_lr",
                format!(
                    "{} exceeds optim.lr = {}; the schedule decays from lr to min_lr",
                    o.min_lr, o.lr
                ),
            ));
        }
        if o.warmup_steps > self.train.steps {
            return Err(ConfigError::invalid(
                "optim.warmup_steps",
                format!(
                    "{} exceeds train.steps = {}; warm up for a fraction of the run",
                    o.warmup_steps, self.train.steps
                ),
            ));
        }
        finite_nonneg("optim.weight_decay", o.weight_decay, "0 turns decay off")?;
        finite_nonneg(
            "optim.clip_grad_norm",
            o.clip_grad_norm,
            "0 turns clipping off, 1.0 is usual",
        )?;
        for (key, b) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{b} is outside [0, 1); 0.9 and 0.95 are usual"),
                ));
            }
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return Err(ConfigError::invalid(
                "optim.eps",
                format!("{} must be finite and > 0, e.g. 1e-8", o.eps),
            ));
        }
        Ok(())
    }

    fn validate_loop(&self) -> Result<(), ConfigError> {
        let t = &self.train;
        for (key, v) in [
            ("train.steps", t.steps as usize),
            ("train.batch_size", t.batch_size),
            ("train.grad_accum", t.grad_accum),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if !(t.spike_factor.is_finite() && (t.spike_factor == 0.0 || t.spike_factor > 1.0)) {
            return Err(ConfigError::invalid(
                "train.spike_factor",
                format!(
                    "{} must be 0 (off) or a finite number > 1, e.g. 3",
                    t.spike_factor
                ),
            ));
        }
        if !(t.collapse_share > 0.0 && t.collapse_share <= 1.0) {
            return Err(ConfigError::invalid(
                "train.collapse_share",
                format!("{} must be in (0, 1], e.g. 0.9", t.collapse_share),
            ));
        }
        Ok(())
    }

    /// The corpus generator settings of the built-in corpus.
    pub fn corpus(&self) -> CorpusConfig {
        CorpusConfig {
            seed: self.data.corpus_seed,
            docs_per_domain: self.data.docs_per_domain,
            doc_bytes: self.data.doc_bytes,
        }
    }
}
