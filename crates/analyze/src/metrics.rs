//! Routing metrics computed from a [`RoutingTrace`], per MoE layer. Every function here is a
//! pure function of the trace, checked in `tests/metrics.rs` on traces with known routing.

use std::collections::HashMap;

use serde::Serialize;

use crate::trace::{LayerTrace, RoutingTrace};

/// How many tokens / n-grams to keep per expert.
pub const TOP_PER_EXPERT: usize = 8;

#[derive(Clone, Debug, Serialize)]
pub struct LayerMetrics {
    pub layer: usize,
    pub num_experts: usize,
    /// Assignments per expert.
    pub load: Vec<u64>,
    /// Coefficient of variation of `load` (population std / mean); 0 is perfectly balanced.
    pub load_cv: f64,
    /// Mean over tokens of the router's entropy (nats).
    pub entropy: f64,
    pub dead_experts: Vec<usize>,
    pub dropped_fraction: f64,
    /// `[domain][expert]` assignment counts.
    pub domain_expert: Vec<Vec<u64>>,
    /// Normalised mutual information between a token's domain and its experts (one sample
    /// per assignment), `I(D;E) / mean(H(D), H(E))` as scikit-learn's default.
    pub nmi: f64,
    /// Most frequent token ids per expert, with counts.
    pub top_tokens: Vec<Vec<(u32, u64)>>,
    /// Most frequent trigrams (two previous tokens + the routed one) per expert.
    pub top_ngrams: Vec<Vec<(Vec<u32>, u64)>>,
    /// `[e1][e2]`: tokens routed to both `e1` and `e2` (diagonal: tokens routed to `e`).
    pub coactivation: Vec<Vec<u64>>,
    /// Per expert: its architecture (e.g. `swiglu 128`, `ffn gelu 64`) and its multiply-adds
    /// per routed token; filled from the model by [`crate::analyze`] (empty from a trace alone).
    pub experts: Vec<ExpertInfo>,
    /// Routing purity against the run's domain → expert mapping ([`purity`]), when the run
    /// has one (`losses.domain_map` / `train.domain_experts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purity: Option<Purity>,
}

/// What an expert is and what a token routed to it costs.
#[derive(Clone, Debug, Serialize)]
pub struct ExpertInfo {
    pub architecture: String,
    pub macs_per_token: usize,
}

impl ExpertInfo {
    pub fn of(spec: &switchyard_core::ExpertSpec, d_model: usize) -> Self {
        let architecture = match spec.kind {
            switchyard_core::ExpertKind::SwiGlu => format!("swiglu {}", spec.hidden),
            switchyard_core::ExpertKind::Ffn { activation } => {
                format!("ffn {activation:?} {}", spec.hidden).to_lowercase()
            }
        };
        Self {
            architecture,
            macs_per_token: spec.params(d_model),
        }
    }
}

/// Routing purity of one layer: the share of a mapped domain's tokens whose top-1 expert
/// (largest weight) is one of the domain's experts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Purity {
    /// Over every token of every mapped domain.
    pub overall: f64,
    /// In domain id order; `None` for a domain mapped to no expert (or without tokens).
    pub by_domain: Vec<Option<f64>>,
}

/// Routing purity of `lt` against `experts` (`experts[d]`: domain `d`'s experts; `None`: the
/// default, `d mod E`; see [`switchyard_core::DomainTargets`]).
pub fn purity(trace: &RoutingTrace, lt: &LayerTrace, experts: Option<&[Vec<usize>]>) -> Purity {
    let top1: Vec<Option<usize>> = (0..trace.num_tokens()).map(|n| lt.top_expert(n)).collect();
    let targets = switchyard_core::DomainTargets {
        domains: &trace.domains,
        experts,
    };
    // one label per traced token by construction
    let counts = switchyard_core::domain_map::purity_counts(&top1, &targets, lt.num_experts)
        .unwrap_or_default();
    let (pure, total) = counts.iter().fold((0, 0), |(p, t), c| (p + c.0, t + c.1));
    let mut by_domain: Vec<Option<f64>> = counts
        .iter()
        .map(|&(p, t)| (t > 0).then(|| p as f64 / t as f64))
        .collect();
    by_domain.resize(trace.domain_names.len().max(by_domain.len()), None);
    Purity {
        overall: pure as f64 / total.max(1) as f64,
        by_domain,
    }
}

/// Co-activation across two layers: `counts[e][f]` tokens went to expert `e` in `from` and to
/// expert `f` in `to`.
#[derive(Clone, Debug, Serialize)]
pub struct CrossLayer {
    pub from: usize,
    pub to: usize,
    pub counts: Vec<Vec<u64>>,
}

pub fn layer_metrics(trace: &RoutingTrace, lt: &LayerTrace) -> LayerMetrics {
    let e = lt.num_experts;
    let n = trace.num_tokens();
    let d = trace.domain_names.len().max(
        trace
            .domains
            .iter()
            .map(|&x| x as usize + 1)
            .max()
            .unwrap_or(0),
    );
    let mut load = vec![0u64; e];
    let mut domain_expert = vec![vec![0u64; e]; d];
    let mut coactivation = vec![vec![0u64; e]; e];
    let mut tokens: Vec<HashMap<u32, u64>> = vec![HashMap::new(); e];
    let mut ngrams: Vec<HashMap<Vec<u32>, u64>> = vec![HashMap::new(); e];
    for i in 0..n {
        let chosen: Vec<usize> = lt.experts_of(i).collect();
        for &x in &chosen {
            load[x] += 1;
            domain_expert[trace.domains[i] as usize][x] += 1;
            *tokens[x].entry(trace.token_ids[i]).or_default() += 1;
            if let Some(p1) = trace.prev(i) {
                if let Some(p2) = trace.prev(p1) {
                    *ngrams[x]
                        .entry(vec![
                            trace.token_ids[p2],
                            trace.token_ids[p1],
                            trace.token_ids[i],
                        ])
                        .or_default() += 1;
                }
            }
            for &y in &chosen {
                coactivation[x][y] += 1;
            }
        }
    }
    LayerMetrics {
        experts: Vec::new(),
        layer: lt.layer,
        num_experts: e,
        load_cv: cv(&load),
        entropy: lt.entropy.iter().map(|&h| h as f64).sum::<f64>() / n.max(1) as f64,
        dead_experts: (0..e).filter(|&x| load[x] == 0).collect(),
        dropped_fraction: lt.dropped.iter().filter(|&&x| x).count() as f64 / n.max(1) as f64,
        nmi: nmi(&domain_expert),
        top_tokens: tokens.into_iter().map(top).collect(),
        top_ngrams: ngrams.into_iter().map(top).collect(),
        load,
        domain_expert,
        coactivation,
        purity: None,
    }
}

/// The `TOP_PER_EXPERT` most frequent keys, by count then key.
fn top<K: Ord + Clone>(m: HashMap<K, u64>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(TOP_PER_EXPERT);
    v
}

/// Population coefficient of variation; 0 for an empty or all-zero vector.
pub fn cv(x: &[u64]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().sum::<u64>() as f64 / n.max(1.0);
    if mean == 0.0 {
        return 0.0;
    }
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

/// Normalised mutual information of a contingency table (rows: labels, columns: clusters),
/// arithmetic normalisation. 1.0 when both sides are constant (identical labelings).
pub fn nmi(table: &[Vec<u64>]) -> f64 {
    let total: u64 = table.iter().flatten().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    let rows: Vec<f64> = table
        .iter()
        .map(|r| r.iter().sum::<u64>() as f64 / t)
        .collect();
    let cols: Vec<f64> = (0..table.first().map_or(0, |r| r.len()))
        .map(|j| table.iter().map(|r| r[j]).sum::<u64>() as f64 / t)
        .collect();
    let h = |p: &[f64]| {
        -p.iter()
            .filter(|&&x| x > 0.0)
            .map(|&x| x * x.ln())
            .sum::<f64>()
    };
    let (hr, hc) = (h(&rows), h(&cols));
    let mut mi = 0.0;
    for (i, r) in table.iter().enumerate() {
        for (j, &c) in r.iter().enumerate() {
            if c > 0 {
                let p = c as f64 / t;
                mi += p * (p / (rows[i] * cols[j])).ln();
            }
        }
    }
    if hr == 0.0 && hc == 0.0 {
        return 1.0;
    }
    let denom = (hr + hc) / 2.0;
    if denom == 0.0 {
        0.0
    } else {
        (mi / denom).clamp(0.0, 1.0)
    }
}

/// Co-activation between consecutive MoE layers.
pub fn cross_layer(trace: &RoutingTrace) -> Vec<CrossLayer> {
    trace
        .layers
        .windows(2)
        .map(|w| {
            let (a, b) = (&w[0], &w[1]);
            let mut counts = vec![vec![0u64; b.num_experts]; a.num_experts];
            for i in 0..trace.num_tokens() {
                for x in a.experts_of(i) {
                    for y in b.experts_of(i) {
                        counts[x][y] += 1;
                    }
                }
            }
            CrossLayer {
                from: a.layer,
                to: b.layer,
                counts,
            }
        })
        .collect()
}

/// All per-layer metrics.
pub fn all_layers(trace: &RoutingTrace) -> Vec<LayerMetrics> {
    trace
        .layers
        .iter()
        .map(|lt| layer_metrics(trace, lt))
        .collect()
}
