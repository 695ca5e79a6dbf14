//! `metrics.jsonl`: one JSON object per line, `"event": "step"` after every optimiser step
//! (or skipped step) and `"event": "eval"` after every evaluation. Appended and flushed line
//! by line, so a crashed run keeps everything up to its last step.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_core::losses::LossValues;
use switchyard_models::LayerReport;

use super::error::{RunError, RunResult};
use super::eval::EvalResult;

/// The run directory's log file (named by `switchyard-io`, which owns the run directory).
pub use switchyard_io::run_dir::METRICS_FILE;

/// Routing health of one MoE layer over one optimiser step (all its micro-batches).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerMetrics {
    pub layer: usize,
    /// Unweighted auxiliary losses, averaged over micro-batches.
    pub switch_balance: f64,
    pub importance: f64,
    pub load: f64,
    pub z: f64,
    /// The domain-map loss (0 when off).
    #[serde(default)]
    pub domain_map: f64,
    /// Coefficient of variation (std / mean) of the tokens each expert received.
    pub load_cv: f64,
    pub dropped_fraction: f64,
    /// Mean entropy (nats) of the router distribution.
    pub entropy: f64,
    pub dead_experts: Vec<usize>,
    /// Largest share of the step's tokens that a single expert received.
    pub max_expert_share: f64,
    pub tokens_per_expert: Vec<usize>,
}

/// Accumulates per-layer statistics over the micro-batches of a step.
#[derive(Default)]
pub struct LayerAccumulator {
    layers: Vec<(LayerMetrics, usize)>,
    micro_batches: usize,
    tokens: usize,
}

impl LayerAccumulator {
    /// Adds one forward's reports of a micro-batch of `tokens` tokens.
    pub fn add(&mut self, reports: &[LayerReport], tokens: usize) {
        let moe: Vec<&LayerReport> = reports.iter().filter(|r| r.is_moe).collect();
        if self.layers.is_empty() {
            self.layers = moe
                .iter()
                .map(|r| {
                    (
                        LayerMetrics {
                            layer: r.layer,
                            ..Default::default()
                        },
                        0,
                    )
                })
                .collect();
        }
        for ((m, dropped_tokens), r) in self.layers.iter_mut().zip(moe) {
            let LossValues {
                switch_balance,
                importance,
                load,
                z,
                domain_map,
            } = r.losses;
            m.switch_balance += switch_balance;
            m.importance += importance;
            m.load += load;
            m.z += z;
            m.domain_map += domain_map;
            if let Some(s) = &r.stats {
                m.tokens_per_expert.resize(s.tokens_per_expert.len(), 0);
                m.tokens_per_expert
                    .iter_mut()
                    .zip(&s.tokens_per_expert)
                    .for_each(|(a, b)| *a += b);
                m.entropy += s.entropy;
                *dropped_tokens += (s.dropped_fraction * tokens as f64).round() as usize;
            }
        }
        self.micro_batches += 1;
        self.tokens += tokens;
    }

    /// The step's metrics; the accumulator is emptied.
    pub fn finish(&mut self) -> Vec<LayerMetrics> {
        let n = self.micro_batches.max(1) as f64;
        let tokens = self.tokens.max(1) as f64;
        let out = std::mem::take(&mut self.layers)
            .into_iter()
            .map(|(mut m, dropped)| {
                for v in [
                    &mut m.switch_balance,
                    &mut m.importance,
                    &mut m.load,
                    &mut m.z,
                    &mut m.domain_map,
                    &mut m.entropy,
                ] {
                    *v /= n;
                }
                m.dropped_fraction = dropped as f64 / tokens;
                let counts: Vec<f64> = m.tokens_per_expert.iter().map(|&c| c as f64).collect();
                m.load_cv = coefficient_of_variation(&counts);
                m.dead_experts = m
                    .tokens_per_expert
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| c == 0)
                    .map(|(e, _)| e)
                    .collect();
                m.max_expert_share =
                    m.tokens_per_expert.iter().copied().max().unwrap_or(0) as f64 / tokens;
                m
            })
            .collect();
        self.micro_batches = 0;
        self.tokens = 0;
        out
    }
}

/// `std / mean` with the population std; 0 for an empty or all-zero list.
pub fn coefficient_of_variation(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    var.sqrt() / mean
}

/// One line of `metrics.jsonl` for an optimiser step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub event: String,
    pub step: u64,
    pub lr: f64,
    /// Task loss plus the weighted auxiliary loss, averaged over micro-batches.
    pub loss: f64,
    /// Next-token cross-entropy alone.
    pub ce: f64,
    /// The weighted auxiliary loss that was added.
    pub aux: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub tokens_seen: u64,
    /// The update was skipped as a loss spike.
    pub skipped: bool,
    pub layers: Vec<LayerMetrics>,
}

/// One line of `metrics.jsonl` for an evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRecord {
    pub event: String,
    pub step: u64,
    pub val_loss: f64,
    pub domains: std::collections::BTreeMap<String, f64>,
    /// Routing purity per MoE layer, when the run maps domains to experts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purity: Vec<super::domain_map::LayerPurity>,
}

impl EvalRecord {
    pub fn new(step: u64, r: &EvalResult) -> Self {
        Self {
            event: "eval".into(),
            step,
            val_loss: r.loss,
            domains: r
                .domains
                .iter()
                .map(|d| (d.domain.clone(), d.loss))
                .collect(),
            purity: r.purity.clone(),
        }
    }
}

/// Appends records to `run_dir/metrics.jsonl`.
pub struct MetricsWriter {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl MetricsWriter {
    /// `enabled = false` writes nothing. A fresh run truncates the file; a resumed one keeps
    /// only the lines up to the checkpoint's step, so the file reads as one continuous run.
    pub fn open(run_dir: &Path, enabled: bool, resume_step: Option<u64>) -> RunResult<Self> {
        let path = run_dir.join(METRICS_FILE);
        if !enabled {
            return Ok(Self { path, out: None });
        }
        std::fs::create_dir_all(run_dir).map_err(RunError::io("create run directory", run_dir))?;
        let kept = match resume_step {
            Some(step) => lines_up_to(&path, step),
            None => String::new(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(RunError::io("open", &path))?;
        file.write_all(kept.as_bytes())
            .map_err(RunError::io("write", &path))?;
        Ok(Self {
            out: Some(BufWriter::new(file)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> RunResult<()> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        let line = serde_json::to_string(record).expect("metrics records serialise");
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(RunError::io("write", &self.path))
    }
}

/// The lines of an existing metrics file whose `step` is at most `step`.
fn lines_up_to(path: &Path, step: u64) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    text.lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}
