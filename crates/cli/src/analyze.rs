//! `switchyard analyze`: trace a checkpoint's routing on validation data of every domain and
//! write the metrics, plots and HTML report (see `switchyard-analyze`); `--replay` checks a
//! recorded trace reproduces the model's logits bit for bit.

use std::path::{Path, PathBuf};

use anyhow::Context;
use switchyard_analyze::{trace, AnalysisSummary, AnalyzeOptions};
use switchyard_data::{Batch, ByteTokenizer, Dataset, Tokenizer};
use switchyard_interop::load_any;
use switchyard_io::ModelSource;
use switchyard_train::trainer;

use crate::run_config::run_config;

/// Windows per traced batch: every batch must have the same shape for replay.
pub const TRACE_BATCH: usize = 4;

/// Up to `per_domain` validation windows of every domain, cut into equally shaped batches
/// (domain by domain, so each batch holds one domain). Batches hold [`TRACE_BATCH`] windows,
/// fewer when some domain has fewer windows than that.
pub fn validation_batches(data: &Dataset, per_domain: usize) -> Vec<Batch> {
    let all: Vec<Batch> = data.valid_batches().map(|(_, b)| b).collect();
    let fewest = all
        .iter()
        .map(|b| b.batch_size.min(per_domain))
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0);
    let rows = TRACE_BATCH.min(fewest);
    let mut out = Vec::new();
    for b in all.iter().filter(|_| rows > 0) {
        let l = b.seq_len;
        for i in 0..b.batch_size.min(per_domain) / rows {
            let r = i * rows * l..(i + 1) * rows * l;
            out.push(Batch {
                batch_size: rows,
                seq_len: l,
                inputs: b.inputs[r.clone()].to_vec(),
                targets: b.targets[r.clone()].to_vec(),
                domains: b.domains[r].to_vec(),
            });
        }
    }
    out
}

/// Options of one analysis run.
pub struct AnalyzeRun {
    pub ckpt: PathBuf,
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub windows_per_domain: usize,
    pub ablation: bool,
}

/// A model to analyse with the run config its data comes from and its tokenizer.
struct Subject {
    model: switchyard_models::MoeLm,
    cfg: trainer::TrainConfig,
    tokenizer: Option<switchyard_data::HfTokenizer>,
    /// What the report is titled with.
    source: PathBuf,
}

/// A Switchyard checkpoint (native, imported or fine-tuned), or an HF directory directly
/// (then the built-in corpus with the default data settings, windows capped at the model's
/// `max_seq_len`; see [`run_config`]).
fn load_subject(path: &Path) -> anyhow::Result<Subject> {
    let context = || format!("loading {}", path.display());
    let m = load_any(path).with_context(context)?;
    let cfg = run_config(&m).with_context(context)?;
    let source = match &m.source {
        ModelSource::Checkpoint { step_dir, .. } => step_dir.clone(),
        ModelSource::HfDir { dir } => dir.clone(),
    };
    Ok(Subject {
        model: m.model,
        cfg,
        tokenizer: m.tokenizer,
        source,
    })
}

/// Loads the model, traces it and writes the report; returns the summary.
pub fn run(a: &AnalyzeRun) -> anyhow::Result<AnalysisSummary> {
    let loaded = load_subject(&a.ckpt)?;
    let mut cfg = loaded.cfg.clone();
    if let Some(p) = &a.data {
        cfg.data.path = Some(p.clone());
    }
    // the model's own tokenizer: an imported or fine-tuned HF model carries tokenizer.json
    let tok: &dyn Tokenizer = match &loaded.tokenizer {
        Some(t) => t,
        None => &ByteTokenizer,
    };
    let data = trainer::data::build_dataset_with(&cfg, tok)?;
    let batches = validation_batches(&data, a.windows_per_domain);
    anyhow::ensure!(
        !batches.is_empty(),
        "no validation window of {} tokens to trace; use more data or a shorter data.seq_len",
        cfg.data.seq_len
    );
    let names: Vec<String> = data.domains.names().to_vec();
    let mut opts = AnalyzeOptions::new(&a.out);
    opts.ablation = a.ablation;
    // one batch per domain keeps the ablation to Σ E passes over a few thousand tokens
    opts.ablation_batches = names.len();
    opts.title = format!("Switchyard routing report: {}", loaded.source.display());
    // routing purity when the run maps domains to experts (names resolved against this data)
    opts.domain_experts = trainer::domain_map::resolve(&cfg, &data.domains)?.map(|m| m.experts);
    switchyard_analyze::analyze(&loaded.model, &batches, &names, tok, &opts)
        .context("analysing the routing")
}

/// Replays `trace_path` through the checkpoint's model and compares with a plain forward.
/// Returns the largest absolute logit difference (0 when replay is exact).
pub fn replay(ckpt: &Path, trace_path: &Path) -> anyhow::Result<f32> {
    let loaded = load_subject(ckpt)?;
    let tr = trace::load(trace_path)?;
    let replayed = trace::replay_logits(&loaded.model, &tr)?;
    let (b, l) = (tr.batch_size, tr.seq_len);
    let mut worst = 0f32;
    for (bi, r) in replayed.iter().enumerate() {
        let ids = candle_core::Tensor::from_slice(
            &tr.token_ids[bi * b * l..(bi + 1) * b * l],
            (b, l),
            &candle_core::Device::Cpu,
        )?;
        let fresh = loaded
            .model
            .forward(&ids, &mut switchyard_models::LmCtx::new(false, 0))?
            .logits;
        let d = (fresh - r)?.abs()?.max_all()?.to_scalar::<f32>()?;
        worst = worst.max(d);
    }
    Ok(worst)
}
