//! Logits and routing of a model on given token ids, in the format of the parity fixtures'
//! `expected.safetensors` (see `scripts/reference/README.md`), so that Switchyard can be
//! compared with any other implementation tensor by tensor.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use switchyard_models::{LmCtx, MoeLm, Sampler};

use crate::error::{InteropError, Result};

/// Expert slots of a token that chose fewer experts than the widest row (expert-choice
/// routers) hold this id and weight 0.
pub const NO_EXPERT: i64 = -1;

/// The routing of one MoE layer.
#[derive(Clone, Debug)]
pub struct LayerRouting {
    /// Absolute decoder-layer index.
    pub layer: usize,
    /// `[L, E]` raw gate output, before softmax or sigmoid (absent for gate-less routers).
    pub router_logits: Option<Tensor>,
    /// Per token, the chosen experts in ascending id order.
    pub chosen: Vec<Vec<u32>>,
    /// Per token, the weight applied to each chosen expert (after renormalisation and
    /// scaling), in the order of `chosen`.
    pub weights: Vec<Vec<f32>>,
}

/// What [`logits`] returns.
#[derive(Clone, Debug)]
pub struct LogitsReport {
    pub input_ids: Vec<u32>,
    /// `[1, L, V]`, f32.
    pub logits: Tensor,
    /// One entry per MoE layer, in layer order.
    pub layers: Vec<LayerRouting>,
}

/// Runs `model` once over `ids` (one sequence, no cache, eval mode).
pub fn logits(model: &MoeLm, ids: &[u32]) -> Result<LogitsReport> {
    if ids.is_empty() {
        return Err(InteropError::Model(switchyard_models::ModelError::input(
            "logits",
            "no token ids given",
        )));
    }
    let input = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu)?;
    let out = model.forward(&input, &mut LmCtx::new(false, 0))?;
    let mut layers = Vec::new();
    for report in out.layers.iter().filter(|r| r.is_moe) {
        let Some(routing) = &report.routing else {
            continue;
        };
        let plan = &routing.plan;
        let w = routing.weights.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut rows: Vec<Vec<(u32, f32)>> = vec![Vec::new(); plan.num_tokens];
        for ((&t, &e), &wt) in plan.token.iter().zip(&plan.expert).zip(&w) {
            rows[t as usize].push((e, wt));
        }
        rows.iter_mut().for_each(|r| r.sort_by_key(|&(e, _)| e));
        layers.push(LayerRouting {
            layer: report.layer,
            router_logits: routing
                .logits
                .as_ref()
                .map(|l| l.to_dtype(DType::F32))
                .transpose()?,
            chosen: rows
                .iter()
                .map(|r| r.iter().map(|&(e, _)| e).collect())
                .collect(),
            weights: rows
                .iter()
                .map(|r| r.iter().map(|&(_, w)| w).collect())
                .collect(),
        });
    }
    Ok(LogitsReport {
        input_ids: ids.to_vec(),
        logits: out.logits.to_dtype(DType::F32)?,
        layers,
    })
}

/// `n` greedily decoded tokens after `prompt`, with the KV cache.
pub fn greedy(model: &MoeLm, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    Ok(model.generate(prompt, n, &mut Sampler::greedy(), &mut LmCtx::new(false, 0))?)
}

impl LogitsReport {
    /// The tensors of the fixtures' `expected.safetensors`: `input_ids` (i64 `[1, L]`),
    /// `logits`, and per MoE layer `i`: `router_logits.{i}` (f32 `[L, E]`),
    /// `chosen_experts.{i}` (i64 `[L, k]`, ascending per row) and `routing_weights.{i}`
    /// (f32 `[L, k]`, same order).
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let dev = Device::Cpu;
        let l = self.input_ids.len();
        let mut out = BTreeMap::new();
        let ids: Vec<i64> = self.input_ids.iter().map(|&t| t as i64).collect();
        out.insert(
            "input_ids".to_string(),
            Tensor::from_vec(ids, (1, l), &dev)?,
        );
        out.insert("logits".to_string(), self.logits.clone());
        for r in &self.layers {
            let k = r.chosen.iter().map(Vec::len).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(l * k);
            let mut ws = Vec::with_capacity(l * k);
            for (c, w) in r.chosen.iter().zip(&r.weights) {
                ids.extend(
                    c.iter()
                        .map(|&e| e as i64)
                        .chain(std::iter::repeat_n(NO_EXPERT, k - c.len())),
                );
                ws.extend(
                    w.iter()
                        .copied()
                        .chain(std::iter::repeat_n(0.0, k - w.len())),
                );
            }
            out.insert(
                format!("chosen_experts.{}", r.layer),
                Tensor::from_vec(ids, (l, k), &dev)?,
            );
            out.insert(
                format!("routing_weights.{}", r.layer),
                Tensor::from_vec(ws, (l, k), &dev)?,
            );
            if let Some(rl) = &r.router_logits {
                out.insert(format!("router_logits.{}", r.layer), rl.clone());
            }
        }
        Ok(out)
    }

    /// Writes [`LogitsReport::tensors`] (plus `greedy` when given) to a safetensors file.
    pub fn save(&self, path: impl AsRef<Path>, greedy: Option<&[u32]>) -> Result<()> {
        let path = path.as_ref();
        let mut t = self.tensors()?;
        if let Some(g) = greedy {
            let g: Vec<i64> = g.iter().map(|&x| x as i64).collect();
            let n = g.len();
            t.insert("greedy".into(), Tensor::from_vec(g, n, &Device::Cpu)?);
        }
        let data: Vec<(String, Tensor)> = t.into_iter().collect();
        safetensors::serialize_to_file(data, None, path).map_err(|e| InteropError::Safetensors {
            path: path.into(),
            reason: e.to_string(),
        })
    }
}
