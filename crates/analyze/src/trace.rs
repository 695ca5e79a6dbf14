//! Routing traces: per MoE layer and per token, the chosen experts, their weights, the gate
//! entropy, whether the token was dropped, and the token's domain. Written as safetensors
//! (format in `docs/TRACE_FORMAT.md`) and replayable: [`replay_logits`] forces the recorded
//! routing into a forward pass and reproduces the logits bit for bit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use switchyard_core::{DispatchPlan, ForcedRouting};
use switchyard_data::Batch;
use switchyard_models::{LayerOverride, LmCtx, MoeLm};

use crate::{AnalyzeError, Result};

/// The format tag stored in the file's metadata.
pub const TRACE_FORMAT: &str = "switchyard-trace/1";

/// One MoE layer's routing of every traced token. Rows are tokens; each row holds up to `k`
/// assignments in plan order (ascending expert), padded with expert −1 and weight 0.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTrace {
    pub layer: usize,
    pub num_experts: usize,
    pub k: usize,
    pub experts: Vec<i32>,
    pub weights: Vec<f32>,
    /// Entropy (nats) of the router's distribution for each token.
    pub entropy: Vec<f32>,
    pub dropped: Vec<bool>,
}

impl LayerTrace {
    /// Experts of token `n` (without padding).
    pub fn experts_of(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        self.experts[n * self.k..(n + 1) * self.k]
            .iter()
            .filter(|&&e| e >= 0)
            .map(|&e| e as usize)
    }
    /// `(expert, weight)` pairs of token `n`.
    pub fn assignments_of(&self, n: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let r = n * self.k..(n + 1) * self.k;
        self.experts[r.clone()]
            .iter()
            .zip(&self.weights[r])
            .filter(|(&e, _)| e >= 0)
            .map(|(&e, &w)| (e as usize, w))
    }
    /// The expert with the largest weight (lowest index on ties), if any.
    pub fn top_expert(&self, n: usize) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for (e, w) in self.assignments_of(n) {
            if best.is_none_or(|(_, bw)| w > bw) {
                best = Some((e, w));
            }
        }
        best.map(|(e, _)| e)
    }
}

/// A trace of a model run over a sequence of equally shaped batches.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingTrace {
    pub batch_size: usize,
    pub seq_len: usize,
    /// `[N]` with `N = batches · batch_size · seq_len`, batch-major.
    pub token_ids: Vec<u32>,
    pub domains: Vec<u32>,
    pub domain_names: Vec<String>,
    pub layers: Vec<LayerTrace>,
}

impl RoutingTrace {
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }
    pub fn num_batches(&self) -> usize {
        self.token_ids.len() / (self.batch_size * self.seq_len).max(1)
    }
    /// The previous token in the same sequence, if any.
    pub fn prev(&self, n: usize) -> Option<usize> {
        (!n.is_multiple_of(self.seq_len)).then(|| n - 1)
    }
}

/// Runs `model` (evaluation mode) over `batches` and records every MoE layer's routing.
pub fn record(model: &MoeLm, batches: &[Batch], domain_names: &[String]) -> Result<RoutingTrace> {
    let first = batches
        .first()
        .ok_or_else(|| AnalyzeError::input("record", "no batches to trace"))?;
    let (b, l) = (first.batch_size, first.seq_len);
    let mut trace = RoutingTrace {
        batch_size: b,
        seq_len: l,
        token_ids: Vec::new(),
        domains: Vec::new(),
        domain_names: domain_names.to_vec(),
        layers: Vec::new(),
    };
    let mut ctx = LmCtx::new(false, 0);
    for (bi, batch) in batches.iter().enumerate() {
        if batch.batch_size != b || batch.seq_len != l {
            return Err(AnalyzeError::input(
                "record",
                format!(
                    "batch {bi} is {}×{}, the first is {b}×{l}",
                    batch.batch_size, batch.seq_len
                ),
            ));
        }
        let ids = Tensor::from_slice(&batch.inputs, (b, l), &Device::Cpu)?;
        let out = model.forward(&ids, &mut ctx)?;
        let moe: Vec<_> = out.layers.iter().filter(|r| r.is_moe).collect();
        if bi == 0 {
            trace.layers = moe
                .iter()
                .map(|r| {
                    let plan = &r.routing.as_ref().expect("MoE layers report routing").plan;
                    LayerTrace {
                        layer: r.layer,
                        num_experts: plan.num_experts,
                        k: 0,
                        experts: vec![],
                        weights: vec![],
                        entropy: vec![],
                        dropped: vec![],
                    }
                })
                .collect();
        }
        for (lt, r) in trace.layers.iter_mut().zip(&moe) {
            let routing = r.routing.as_ref().expect("MoE layers report routing");
            append_layer(lt, routing)?;
        }
        trace.token_ids.extend_from_slice(&batch.inputs);
        trace.domains.extend_from_slice(&batch.domains);
    }
    Ok(trace)
}

/// Appends one batch's routing to a layer trace, widening `k` if this batch needs more.
fn append_layer(lt: &mut LayerTrace, routing: &switchyard_core::Routing) -> Result<()> {
    let plan = &routing.plan;
    let w = routing.weights.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let probs = routing.probs.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let (off, idx) = plan.by_token();
    let k_batch = (0..plan.num_tokens)
        .map(|t| (off[t + 1] - off[t]) as usize)
        .max()
        .unwrap_or(0);
    if k_batch > lt.k {
        // re-pad what is already recorded to the wider k
        let old_k = lt.k;
        let rows = lt.entropy.len();
        let (mut e2, mut w2) = (vec![-1; rows * k_batch], vec![0.0; rows * k_batch]);
        for n in 0..rows {
            e2[n * k_batch..n * k_batch + old_k]
                .copy_from_slice(&lt.experts[n * old_k..(n + 1) * old_k]);
            w2[n * k_batch..n * k_batch + old_k]
                .copy_from_slice(&lt.weights[n * old_k..(n + 1) * old_k]);
        }
        lt.experts = e2;
        lt.weights = w2;
        lt.k = k_batch;
    }
    for t in 0..plan.num_tokens {
        let mut row_e = vec![-1i32; lt.k];
        let mut row_w = vec![0f32; lt.k];
        for (j, &a) in idx[off[t] as usize..off[t + 1] as usize].iter().enumerate() {
            row_e[j] = plan.expert[a as usize] as i32;
            row_w[j] = w[a as usize];
        }
        lt.experts.extend(row_e);
        lt.weights.extend(row_w);
        let h: f64 = -probs[t]
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| p * p.ln())
            .sum::<f64>();
        lt.entropy.push(h as f32);
        lt.dropped.push(plan.dropped[t]);
    }
    Ok(())
}

/// The routing of batch `bi` in layer `lt`, as a forced plan with its weights in plan order.
pub fn forced_routing(trace: &RoutingTrace, lt: &LayerTrace, bi: usize) -> Result<ForcedRouting> {
    let n0 = bi * trace.batch_size * trace.seq_len;
    let t = trace.batch_size * trace.seq_len;
    let mut pairs = Vec::new();
    let mut weight_of = HashMap::new();
    for tok in 0..t {
        for (e, w) in lt.assignments_of(n0 + tok) {
            pairs.push((tok as u32, e as u32));
            weight_of.insert((tok as u32, e as u32), w);
        }
    }
    let plan = DispatchPlan::from_assignments(t, lt.num_experts, &pairs)
        .map_err(switchyard_core::MoeError::from)?;
    let w: Vec<f32> = plan
        .token
        .iter()
        .zip(&plan.expert)
        .map(|(&tok, &e)| weight_of[&(tok, e)])
        .collect();
    let weights = Tensor::from_vec(w, plan.len(), &Device::Cpu)?;
    Ok(ForcedRouting {
        plan: Arc::new(plan),
        weights,
    })
}

/// Forward of every traced batch with the recorded routing forced into each MoE layer.
/// Returns the logits of each batch (`[B, L, V]`).
pub fn replay_logits(model: &MoeLm, trace: &RoutingTrace) -> Result<Vec<Tensor>> {
    let (b, l) = (trace.batch_size, trace.seq_len);
    let mut out = Vec::with_capacity(trace.num_batches());
    for bi in 0..trace.num_batches() {
        let mut ctx = LmCtx::new(false, 0);
        for lt in &trace.layers {
            let forced = forced_routing(trace, lt, bi)?;
            ctx.overrides.insert(
                lt.layer,
                LayerOverride {
                    forced: Some(forced),
                    available: None,
                },
            );
        }
        let ids = Tensor::from_slice(
            &trace.token_ids[bi * b * l..(bi + 1) * b * l],
            (b, l),
            &Device::Cpu,
        )?;
        out.push(model.forward(&ids, &mut ctx)?.logits);
    }
    Ok(out)
}

/// Writes the trace as safetensors (see `docs/TRACE_FORMAT.md`).
pub fn save(trace: &RoutingTrace, path: &Path) -> Result<()> {
    let dev = Device::Cpu;
    let n = trace.num_tokens();
    let mut tensors: Vec<(String, Tensor)> = vec![
        (
            "token_ids".into(),
            Tensor::from_slice(&trace.token_ids, n, &dev)?,
        ),
        (
            "domains".into(),
            Tensor::from_slice(&trace.domains, n, &dev)?,
        ),
    ];
    for lt in &trace.layers {
        let p = format!("layer.{}", lt.layer);
        let experts: Vec<i64> = lt.experts.iter().map(|&e| e as i64).collect();
        tensors.push((
            format!("{p}.experts"),
            Tensor::from_vec(experts, (n, lt.k), &dev)?,
        ));
        tensors.push((
            format!("{p}.weights"),
            Tensor::from_slice(&lt.weights, (n, lt.k), &dev)?,
        ));
        tensors.push((
            format!("{p}.entropy"),
            Tensor::from_slice(&lt.entropy, n, &dev)?,
        ));
        let dropped: Vec<u8> = lt.dropped.iter().map(|&d| d as u8).collect();
        tensors.push((format!("{p}.dropped"), Tensor::from_vec(dropped, n, &dev)?));
    }
    let layers: Vec<serde_json::Value> = trace
        .layers
        .iter()
        .map(|l| serde_json::json!({"layer": l.layer, "num_experts": l.num_experts, "k": l.k}))
        .collect();
    let meta = HashMap::from([
        ("format".to_string(), TRACE_FORMAT.to_string()),
        ("batch_size".to_string(), trace.batch_size.to_string()),
        ("seq_len".to_string(), trace.seq_len.to_string()),
        (
            "domains".to_string(),
            serde_json::to_string(&trace.domain_names).expect("strings serialise"),
        ),
        (
            "layers".to_string(),
            serde_json::Value::Array(layers).to_string(),
        ),
    ]);
    safetensors::serialize_to_file(tensors, Some(meta), path)
        .map_err(|e| AnalyzeError::file(path, format!("cannot write trace: {e}")))
}

/// Reads a trace written by [`save`], checking its format tag and shapes.
pub fn load(path: &Path) -> Result<RoutingTrace> {
    let bytes = std::fs::read(path)
        .map_err(|e| AnalyzeError::file(path, format!("cannot read trace: {e}")))?;
    let bad = |why: String| AnalyzeError::file(path, why);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(TRACE_FORMAT) {
        return Err(bad(format!(
            "not a Switchyard routing trace (format tag {:?}, expected {TRACE_FORMAT})",
            meta.get("format")
        )));
    }
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("metadata key `{k}` missing")))
    };
    let num = |k: &str| -> Result<usize> {
        get(k)?
            .parse()
            .map_err(|_| bad(format!("metadata `{k}` is not a number")))
    };
    let domain_names: Vec<String> = serde_json::from_str(&get("domains")?)
        .map_err(|e| bad(format!("metadata `domains`: {e}")))?;
    let layers_meta: Vec<serde_json::Value> = serde_json::from_str(&get("layers")?)
        .map_err(|e| bad(format!("metadata `layers`: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| bad(format!("cannot decode tensors: {e}")))?;
    let take = |name: &str| {
        tensors
            .get(name)
            .cloned()
            .ok_or_else(|| bad(format!("tensor `{name}` missing")))
    };
    let token_ids = take("token_ids")?.to_vec1::<u32>()?;
    let n = token_ids.len();
    let domains = take("domains")?.to_vec1::<u32>()?;
    let mut layers = Vec::new();
    for m in layers_meta {
        let (Some(layer), Some(ne)) = (m["layer"].as_u64(), m["num_experts"].as_u64()) else {
            return Err(bad(
                "metadata `layers` entries need `layer` and `num_experts`".into(),
            ));
        };
        let p = format!("layer.{layer}");
        let experts = take(&format!("{p}.experts"))?;
        let k = experts.dims2()?.1;
        let experts: Vec<i32> = experts
            .flatten_all()?
            .to_vec1::<i64>()?
            .iter()
            .map(|&e| e as i32)
            .collect();
        if experts.len() != n * k || experts.iter().any(|&e| e >= ne as i32 || e < -1) {
            return Err(bad(format!(
                "`{p}.experts` has the wrong shape or out-of-range experts"
            )));
        }
        let weights = take(&format!("{p}.weights"))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let entropy = take(&format!("{p}.entropy"))?.to_vec1::<f32>()?;
        let dropped = take(&format!("{p}.dropped"))?
            .to_vec1::<u8>()?
            .iter()
            .map(|&d| d != 0)
            .collect::<Vec<_>>();
        if weights.len() != n * k || entropy.len() != n || dropped.len() != n {
            return Err(bad(format!(
                "layer {layer}: tensors disagree on the number of tokens ({n})"
            )));
        }
        layers.push(LayerTrace {
            layer: layer as usize,
            num_experts: ne as usize,
            k,
            experts,
            weights,
            entropy,
            dropped,
        });
    }
    let trace = RoutingTrace {
        batch_size: num("batch_size")?,
        seq_len: num("seq_len")?,
        token_ids,
        domains,
        domain_names,
        layers,
    };
    if domains_len_ok(&trace) {
        Ok(trace)
    } else {
        Err(bad(
            "`domains` length differs from `token_ids`, or a domain id has no name".into(),
        ))
    }
}

fn domains_len_ok(t: &RoutingTrace) -> bool {
    t.domains.len() == t.token_ids.len()
        && t.domains
            .iter()
            .all(|&d| (d as usize) < t.domain_names.len().max(1))
}
