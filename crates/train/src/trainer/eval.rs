//! Validation: next-token cross-entropy per domain and overall, and where each domain's tokens
//! are routed (a domain × expert table per MoE layer).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use switchyard_data::{Batch, Dataset};
use switchyard_models::{per_token_ce, LmCtx, MoeLm};

use super::domain_map::{DomainMapping, LayerPurity, PurityAccumulator};
use super::error::RunResult;

/// Validation windows per forward: large enough to keep the matmuls efficient, small enough
/// that the logits (`windows × seq_len × vocab` floats) stay a few MiB.
pub const EVAL_BATCH_WINDOWS: usize = 8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainLoss {
    pub domain: String,
    /// Mean next-token cross-entropy (nats per token).
    pub loss: f64,
    pub tokens: usize,
}

/// Routing of the validation tokens of one MoE layer, by domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRouting {
    /// Index of the layer in the model.
    pub layer: usize,
    /// `counts[domain][expert]`: assignments of that domain's tokens to that expert (a token
    /// routed to `k` experts counts `k` times; dropped tokens count nowhere).
    pub counts: Vec<Vec<usize>>,
}

impl LayerRouting {
    /// `counts` normalised per domain: the share of a domain's assignments each expert got.
    pub fn shares(&self) -> Vec<Vec<f64>> {
        self.counts
            .iter()
            .map(|row| {
                let total = row.iter().sum::<usize>().max(1) as f64;
                row.iter().map(|&c| c as f64 / total).collect()
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean over every evaluated token of every domain.
    pub loss: f64,
    /// In domain id order.
    pub domains: Vec<DomainLoss>,
    /// One entry per MoE layer (empty for a dense model).
    pub routing: Vec<LayerRouting>,
    /// Routing purity per MoE layer, when the run maps domains to experts (else empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purity: Vec<LayerPurity>,
}

impl EvalResult {
    /// Routing purity over every MoE layer's mapped tokens (the mean of the layers'), if the
    /// run maps domains to experts.
    pub fn mean_purity(&self) -> Option<f64> {
        (!self.purity.is_empty())
            .then(|| self.purity.iter().map(|p| p.overall).sum::<f64>() / self.purity.len() as f64)
    }
}

/// Evaluates the first `max_windows` validation windows of every domain, in eval mode
/// (no routing noise). Leaves no trace in the balancing state of the model's MoE layers.
pub fn evaluate(model: &MoeLm, data: &Dataset, max_windows: usize) -> RunResult<EvalResult> {
    evaluate_with(model, data, max_windows, None)
}

/// [`evaluate`], plus routing purity against `mapping` when given.
pub fn evaluate_with(
    model: &MoeLm,
    data: &Dataset,
    max_windows: usize,
    mapping: Option<&DomainMapping>,
) -> RunResult<EvalResult> {
    let mut purity = PurityAccumulator::default();
    let device = model.embed_tokens.device().clone();
    let n_domains = data.domains.len();
    let moe_layers = model.cfg.moe_layers();
    let mut routing: Vec<LayerRouting> = moe_layers
        .iter()
        .map(|&layer| LayerRouting {
            layer,
            counts: vec![Vec::new(); n_domains],
        })
        .collect();
    let mut ctx = LmCtx::new(false, 0);
    let mut domains = Vec::with_capacity(n_domains);
    let (mut total_nll, mut total_tokens) = (0.0f64, 0usize);
    for (d, packed) in data.valid.iter().enumerate() {
        let windows: Vec<usize> = (0..packed.num_windows().min(max_windows)).collect();
        let (mut nll, mut tokens) = (0.0f64, 0usize);
        for chunk in windows.chunks(EVAL_BATCH_WINDOWS) {
            let batch = Batch::from_windows(packed, chunk);
            let shape = (batch.batch_size, batch.seq_len);
            let ids = Tensor::from_vec(batch.inputs.clone(), shape, &device)?;
            let targets = Tensor::from_vec(batch.targets.clone(), shape, &device)?;
            let out = model.forward(&ids, &mut ctx)?;
            if let Some(m) = mapping {
                purity.add(m, &out.layers, &batch.domains)?;
            }
            let ce = per_token_ce(&out.logits, &targets)?;
            nll += ce.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
            tokens += chunk.len() * batch.seq_len;
            let moe_reports = out.layers.iter().filter(|r| r.is_moe);
            for (slot, report) in routing.iter_mut().zip(moe_reports) {
                if let Some(stats) = &report.stats {
                    let row = &mut slot.counts[d];
                    row.resize(stats.tokens_per_expert.len(), 0);
                    row.iter_mut()
                        .zip(&stats.tokens_per_expert)
                        .for_each(|(r, c)| *r += c);
                }
            }
        }
        domains.push(DomainLoss {
            domain: data.domains.name(d as u32).unwrap_or("?").to_string(),
            loss: nll / tokens.max(1) as f64,
            tokens,
        });
        total_nll += nll;
        total_tokens += tokens;
    }
    model.moe_layers().for_each(|m| m.discard_pending_load());
    Ok(EvalResult {
        loss: total_nll / total_tokens.max(1) as f64,
        domains,
        routing,
        purity: purity.finish(n_domains),
    })
}
