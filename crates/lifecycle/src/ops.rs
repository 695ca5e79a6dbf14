//! The surgeries, each a list of [`NewExpert`]s for [`remap_layer`] plus the router
//! adjustments the new expert count needs.

use serde::Serialize;
use switchyard_core::{MoeConfig, RouterConfig};

use crate::layer::{moe_config, remap_layer, NewExpert, Source};
use crate::{LifecycleError, ModelState, Result};

/// What a surgery did, per layer touched (parallel vectors), and what the user should know.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SurgeryReport {
    pub layers: Vec<usize>,
    pub experts_before: Vec<usize>,
    pub experts_after: Vec<usize>,
    /// Adjustments the user did not ask for (a clamped `k`, a rescaled capacity factor).
    pub warnings: Vec<String>,
}

impl SurgeryReport {
    fn push(&mut self, layer: usize, before: usize, after: usize) {
        self.layers.push(layer);
        self.experts_before.push(before);
        self.experts_after.push(after);
    }
}

/// How [`add_experts`] initialises the new experts.
#[derive(Clone, Debug, PartialEq)]
pub enum AddInit {
    /// Freshly initialised, with the architecture of expert `like`.
    Fresh { like: usize },
    /// Copies of expert `from` (plus the relative noise given to [`add_experts`]).
    Copy { from: usize },
}

fn router_json(r: &RouterConfig) -> serde_json::Value {
    serde_json::to_value(r).expect("router configs serialise")
}

fn router_from(v: serde_json::Value) -> Result<RouterConfig> {
    serde_json::from_value(v).map_err(|e| LifecycleError::Inconsistent(e.to_string()))
}

/// The router with `k` lowered to `experts` when it is above (routers with a plain `k`),
/// and a warning saying so.
fn clamp_k(
    r: &RouterConfig,
    experts: usize,
    layer: usize,
    warnings: &mut Vec<String>,
) -> Result<RouterConfig> {
    let mut v = router_json(r);
    match v.get("k").and_then(|k| k.as_u64()) {
        Some(k) if k as usize > experts => {
            warnings.push(format!(
                "layer {layer}: router.k lowered from {k} to {experts}, the experts left"
            ));
            v["k"] = experts.into();
            router_from(v)
        }
        _ => Ok(r.clone()),
    }
}

/// Refuses routers whose routing a change of expert count would scramble.
fn check_router(r: &RouterConfig, op: &str) -> Result<()> {
    if r.name() == "hash" {
        return Err(LifecycleError::input(
            "router",
            format!(
                "cannot {op} experts of a hash router: it assigns tokens by their id modulo \
                 the expert count, so any new count reassigns every token and loses what the \
                 experts learned"
            ),
        ));
    }
    Ok(())
}

/// The layers to act on: `layers`, or every MoE layer when empty; each checked.
fn target_layers(state: &ModelState, layers: &[usize]) -> Result<Vec<usize>> {
    if layers.is_empty() {
        return Ok(state.model.moe_layers());
    }
    for &l in layers {
        moe_config(state, l)?;
    }
    let mut v = layers.to_vec();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Adds `count` experts at the end of each of `layers` (all MoE layers when empty). They
/// start with gate-in 0, so the model's outputs are bitwise unchanged until training
/// raises it (over `gate_in_steps` optimiser steps). Routers: top-k, noisy top-k,
/// sigmoid-bias, and switch (whose capacity factor is scaled by `E'/E` so that each
/// expert's capacity stays the same); the others are refused, naming why.
pub fn add_experts(
    state: &mut ModelState,
    layers: &[usize],
    count: usize,
    init: &AddInit,
    noise: f64,
    seed: u64,
) -> Result<SurgeryReport> {
    if count == 0 {
        return Err(LifecycleError::input("count", "add at least one expert"));
    }
    if !(noise.is_finite() && noise >= 0.0) {
        return Err(LifecycleError::input(
            "noise",
            format!("must be finite and >= 0, got {noise}"),
        ));
    }
    let mut report = SurgeryReport::default();
    for layer in target_layers(state, layers)? {
        let cfg = moe_config(state, layer)?;
        let e = cfg.experts.len();
        let mut router = cfg.router.clone();
        match cfg.router.name() {
            "top_k" | "noisy_top_k" | "sigmoid_bias" => {}
            "switch" => {
                let mut v = router_json(&router);
                let scale = (e + count) as f64 / e as f64;
                for key in ["capacity_factor", "eval_capacity_factor"] {
                    if let Some(f) = v.get(key).and_then(|x| x.as_f64()) {
                        v[key] = (f * scale).into();
                    }
                }
                router = router_from(v)?;
                report.warnings.push(format!(
                    "layer {layer}: switch capacity_factor scaled by {e}+{count}/{e} so each expert keeps its capacity"
                ));
            }
            other => {
                return Err(LifecycleError::input(
                    "router",
                    format!(
                        "cannot add experts to layer {layer}'s `{other}` router without changing \
                         the model's outputs (supported: top_k, noisy_top_k, switch, \
                         sigmoid_bias); {}",
                        match other {
                            "hash" => "the hash router assigns tokens by id modulo the expert count",
                            "expert_choice" => "in expert-choice routing every expert picks tokens, so a new one would take some at once",
                            "sinkhorn" => "Sinkhorn balancing spreads tokens over every expert, so a new one would take some at once",
                            _ => "this router forms groups from contiguous expert indices, which new experts would regroup",
                        }
                    ),
                ))
            }
        }
        let (source_of, like) = match *init {
            AddInit::Fresh { like } => (None, like),
            AddInit::Copy { from } => (Some(from), from),
        };
        if like >= e {
            return Err(LifecycleError::input(
                "from",
                format!("expert {like} does not exist; layer {layer} has experts 0..{e}"),
            ));
        }
        let mut new: Vec<NewExpert> = (0..e).map(NewExpert::keep).collect();
        for _ in 0..count {
            new.push(NewExpert {
                source: match source_of {
                    Some(from) => Source::Copy { from, noise },
                    None => Source::Fresh(cfg.experts[like]),
                },
                gate_in: Some(0.0),
            });
        }
        let new_cfg = MoeConfig { router, ..cfg };
        remap_layer(state, layer, &new, new_cfg, seed)?;
        report.push(layer, e, e + count);
    }
    Ok(report)
}

/// Splits expert `expert` of `layer` into itself and a copy (appended as the last expert)
/// with relative noise `noise` on its weights and gate row. Each of the two gets half the
/// expert's gate-in value (a logit offset of −ln 2), so the pair starts with the routing
/// mass the expert had; both gates reopen over `gate_in_steps` steps. Moments are copied.
pub fn split_expert(
    state: &mut ModelState,
    layer: usize,
    expert: usize,
    noise: f64,
    seed: u64,
) -> Result<SurgeryReport> {
    let cfg = moe_config(state, layer)?;
    check_router(&cfg.router, "split")?;
    let e = cfg.experts.len();
    if expert >= e {
        return Err(LifecycleError::input(
            "expert",
            format!("expert {expert} does not exist; layer {layer} has experts 0..{e}"),
        ));
    }
    if !(noise.is_finite() && noise >= 0.0) {
        return Err(LifecycleError::input(
            "noise",
            format!("must be finite and >= 0, got {noise}"),
        ));
    }
    let alpha = state
        .buffers
        .get(&switchyard_io::gate_in_key(layer))
        .map_or(1.0, |a| a[expert]);
    let mut new: Vec<NewExpert> = (0..e).map(NewExpert::keep).collect();
    new[expert].gate_in = Some(0.5 * alpha);
    new.push(NewExpert {
        source: Source::Copy {
            from: expert,
            noise,
        },
        gate_in: Some(0.5 * alpha),
    });
    remap_layer(state, layer, &new, cfg, seed)?;
    let mut report = SurgeryReport::default();
    report.push(layer, e, e + 1);
    Ok(report)
}

/// Merges `experts` of `layer` into one, at the lowest of their indices: weights, gate
/// rows, router-buffer entries and moments averaged with weights `usage[e] / Σ usage`
/// (equal weights when none was used). `usage` has one entry per expert of the layer
/// (tokens routed to each, e.g. from `analyze`). `k` is clamped if it exceeds what is left.
pub fn merge_experts(
    state: &mut ModelState,
    layer: usize,
    experts: &[usize],
    usage: &[f64],
) -> Result<SurgeryReport> {
    let cfg = moe_config(state, layer)?;
    check_router(&cfg.router, "merge")?;
    let e = cfg.experts.len();
    let mut set = experts.to_vec();
    set.sort_unstable();
    set.dedup();
    if set.len() < 2 {
        return Err(LifecycleError::input(
            "experts",
            "name at least two different experts to merge, e.g. --experts 2,5",
        ));
    }
    if let Some(&bad) = set.iter().find(|&&x| x >= e) {
        return Err(LifecycleError::input(
            "experts",
            format!("expert {bad} does not exist; layer {layer} has experts 0..{e}"),
        ));
    }
    if usage.len() != e || usage.iter().any(|u| !(u.is_finite() && *u >= 0.0)) {
        return Err(LifecycleError::input(
            "usage",
            format!(
                "need one finite, non-negative usage per expert ({e}), got {}",
                usage.len()
            ),
        ));
    }
    let total: f64 = set.iter().map(|&x| usage[x]).sum();
    let weights: Vec<(usize, f64)> = set
        .iter()
        .map(|&x| {
            let w = if total > 0.0 {
                usage[x] / total
            } else {
                1.0 / set.len() as f64
            };
            (x, w)
        })
        .collect();
    let new: Vec<NewExpert> = (0..e)
        .filter(|x| *x == set[0] || !set.contains(x))
        .map(|x| {
            if x == set[0] {
                NewExpert {
                    source: Source::Mix(weights.clone()),
                    gate_in: None,
                }
            } else {
                NewExpert::keep(x)
            }
        })
        .collect();
    let mut report = SurgeryReport::default();
    let router = clamp_k(&cfg.router, new.len(), layer, &mut report.warnings)?;
    let after = new.len();
    remap_layer(state, layer, &new, MoeConfig { router, ..cfg }, 0)?;
    report.push(layer, e, after);
    Ok(report)
}

/// Removes experts: `remove` lists `(layer, expert)` pairs (indices before removal). Each
/// layer keeps at least one expert; `k` is clamped (with a warning) to what is left.
pub fn prune_experts(state: &mut ModelState, remove: &[(usize, usize)]) -> Result<SurgeryReport> {
    if remove.is_empty() {
        return Err(LifecycleError::input("experts", "nothing to prune"));
    }
    let mut by_layer: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &(l, x) in remove {
        by_layer.entry(l).or_default().push(x);
    }
    let mut report = SurgeryReport::default();
    for (layer, mut gone) in by_layer {
        let cfg = moe_config(state, layer)?;
        check_router(&cfg.router, "prune")?;
        let e = cfg.experts.len();
        gone.sort_unstable();
        gone.dedup();
        if let Some(&bad) = gone.iter().find(|&&x| x >= e) {
            return Err(LifecycleError::input(
                "experts",
                format!("expert {bad} does not exist; layer {layer} has experts 0..{e}"),
            ));
        }
        if gone.len() >= e {
            return Err(LifecycleError::input(
                "experts",
                format!("pruning all {e} experts of layer {layer} leaves none; keep at least one"),
            ));
        }
        let new: Vec<NewExpert> = (0..e)
            .filter(|x| !gone.contains(x))
            .map(NewExpert::keep)
            .collect();
        let router = clamp_k(&cfg.router, new.len(), layer, &mut report.warnings)?;
        let after = new.len();
        remap_layer(state, layer, &new, MoeConfig { router, ..cfg }, 0)?;
        report.push(layer, e, after);
    }
    Ok(report)
}
