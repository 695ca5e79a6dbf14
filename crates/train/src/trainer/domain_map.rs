//! The run's domain → expert mapping (`train.domain_experts`, used by the MoE layers'
//! `losses.domain_map`): resolving domain names against the data, and routing purity in
//! evaluation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_core::domain_map::{purity_counts, top1_experts};
use switchyard_core::DomainTargets;
use switchyard_data::DomainIndex;
use switchyard_models::{LayerFfn, LayerReport, LmConfig};

use super::config::TrainConfig;
use super::error::ConfigError;

/// Config key of the mapping, for error messages.
pub const DOMAIN_EXPERTS_KEY: &str = "train.domain_experts";

/// The mapping a run trains with: present when some MoE layer has `losses.domain_map > 0` or
/// `train.domain_experts` names a domain.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainMapping {
    /// `experts[d]`: the experts of domain id `d` (empty: unmapped). `None`: the default,
    /// domain `d` → expert `d mod E` of each layer.
    pub experts: Option<Vec<Vec<usize>>>,
}

impl DomainMapping {
    /// The targets of tokens labelled `domains`.
    pub fn targets<'a>(&'a self, domains: &'a [u32]) -> DomainTargets<'a> {
        DomainTargets {
            domains,
            experts: self.experts.as_deref(),
        }
    }
}

/// Whether any MoE layer of `model` has the domain-map loss on.
pub fn loss_on(model: &LmConfig) -> bool {
    model
        .moe_layers()
        .iter()
        .any(|&i| match model.layer_ffn(i) {
            LayerFfn::Moe(m) => m.losses.domain_map > 0.0,
            LayerFfn::Dense { .. } => false,
        })
}

/// Checks `train.domain_experts` against the model (data-independent part): every list is
/// non-empty and names experts every MoE layer has.
pub fn validate(cfg: &TrainConfig) -> Result<(), ConfigError> {
    let model = &cfg.model;
    let min_experts = model
        .moe_layers()
        .iter()
        .filter_map(|&i| match model.layer_ffn(i) {
            LayerFfn::Moe(m) => Some(m.num_experts()),
            LayerFfn::Dense { .. } => None,
        })
        .min();
    for (name, experts) in &cfg.train.domain_experts {
        let key = format!("{DOMAIN_EXPERTS_KEY}.{name}");
        let Some(e) = min_experts else {
            return Err(ConfigError::invalid(
                key,
                "the model has no MoE layer to map domains to; remove train.domain_experts",
            ));
        };
        if experts.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "lists no expert; name at least one, e.g. [0], or remove the entry",
            ));
        }
        if let Some(bad) = experts.iter().find(|&&x| x >= e) {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "expert {bad} does not exist: the MoE layers have {e} experts (0..={})",
                    e - 1
                ),
            ));
        }
    }
    Ok(())
}

/// The run's mapping with domain names resolved to the data's ids, or `None` when neither
/// the loss nor a mapping is configured. A name the data does not have is an error naming the
/// key and the domains there are.
pub fn resolve(
    cfg: &TrainConfig,
    domains: &DomainIndex,
) -> Result<Option<DomainMapping>, ConfigError> {
    let map: &BTreeMap<String, Vec<usize>> = &cfg.train.domain_experts;
    if map.is_empty() {
        return Ok(loss_on(&cfg.model).then_some(DomainMapping { experts: None }));
    }
    let mut experts = vec![Vec::new(); domains.len()];
    for (name, list) in map {
        let id = domains.id(name).ok_or_else(|| {
            ConfigError::invalid(
                format!("{DOMAIN_EXPERTS_KEY}.{name}"),
                format!(
                    "the data has no domain `{name}`; its domains are: {}",
                    domains.names().join(", ")
                ),
            )
        })?;
        experts[id as usize] = list.clone();
    }
    Ok(Some(DomainMapping {
        experts: Some(experts),
    }))
}

/// Routing purity of one MoE layer on the validation set: the share of a mapped domain's
/// tokens whose top-1 expert is one of the domain's experts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerPurity {
    pub layer: usize,
    /// In domain id order; `None` for a domain that maps to no expert.
    pub by_domain: Vec<Option<f64>>,
    /// Over every token of every mapped domain.
    pub overall: f64,
}

/// Accumulates purity counts over evaluation batches.
#[derive(Clone, Debug, Default)]
pub struct PurityAccumulator {
    /// Per MoE layer (in order): its index and `(pure, total)` per domain id.
    layers: Vec<(usize, Vec<(usize, usize)>)>,
}

impl PurityAccumulator {
    /// Adds one forward's reports for tokens labelled `domains`.
    pub fn add(
        &mut self,
        mapping: &DomainMapping,
        reports: &[LayerReport],
        domains: &[u32],
    ) -> switchyard_core::Result<()> {
        let moe = reports.iter().filter(|r| r.is_moe);
        for (i, r) in moe.enumerate() {
            let Some(routing) = &r.routing else { continue };
            let top1 = top1_experts(&routing.plan, &routing.weights)?;
            let counts = purity_counts(&top1, &mapping.targets(domains), routing.plan.num_experts)?;
            if self.layers.len() <= i {
                self.layers.push((r.layer, Vec::new()));
            }
            let acc = &mut self.layers[i].1;
            if acc.len() < counts.len() {
                acc.resize(counts.len(), (0, 0));
            }
            for (a, c) in acc.iter_mut().zip(counts) {
                a.0 += c.0;
                a.1 += c.1;
            }
        }
        Ok(())
    }

    /// The purity of every layer, with one entry per domain of `n_domains`.
    pub fn finish(self, n_domains: usize) -> Vec<LayerPurity> {
        self.layers
            .into_iter()
            .map(|(layer, mut counts)| {
                counts.resize(n_domains.max(counts.len()), (0, 0));
                let (pure, total) = counts.iter().fold((0, 0), |(p, t), c| (p + c.0, t + c.1));
                LayerPurity {
                    layer,
                    by_domain: counts
                        .iter()
                        .map(|&(p, t)| (t > 0).then(|| p as f64 / t as f64))
                        .collect(),
                    overall: pure as f64 / total.max(1) as f64,
                }
            })
            .collect()
    }
}
