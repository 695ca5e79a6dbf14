//! The one primitive every surgery uses: [`remap_layer`] rebuilds an MoE layer's experts from
//! a list of [`NewExpert`]s, carrying each expert's weights, gate rows, router-buffer
//! entries, gate-in value and AdamW moments along.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use switchyard_core::expert::{init_values, ExpertLayout};
use switchyard_core::{
    router, ExpertKind, ExpertSpec, GateConfig, MoeConfig, ParamBuilder, ParamStore,
};

use crate::{moe_prefix, LifecycleError, ModelState, Result};

/// Where one expert of the rebuilt layer comes from (indices are the old layer's).
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Expert `e` as it is.
    Keep(usize),
    /// A copy of expert `from`: each weight matrix (not the biases) gets Gaussian noise of
    /// standard deviation `noise` × that matrix's RMS, and so does its gate row. Moments are
    /// copied exactly.
    Copy { from: usize, noise: f64 },
    /// `Σ wᵢ · expertᵢ` (the weights sum to 1) of experts of one architecture: weights, gate
    /// rows, router-buffer entries and both moments alike.
    Mix(Vec<(usize, f64)>),
    /// A new expert of this architecture, initialised as a new layer's would be
    /// (`U(±1/√fan_in)`, biases zero), with a fresh gate row; first moment zero, second the
    /// mean of the old experts of the same architecture.
    Fresh(ExpertSpec),
}

/// One expert of the rebuilt layer.
#[derive(Clone, Debug, PartialEq)]
pub struct NewExpert {
    pub source: Source,
    /// Its gate-in value (see the crate docs); `None`: the source's (1 for a mix, 0 for a
    /// fresh expert).
    pub gate_in: Option<f32>,
}

impl NewExpert {
    pub fn keep(e: usize) -> Self {
        Self {
            source: Source::Keep(e),
            gate_in: None,
        }
    }
}

/// Rows of a gate tensor that belong to experts: `prefix` rows first (the hierarchical
/// router's group logits), then `blocks` blocks of one row per expert (noisy top-k: logits,
/// then noise scales).
#[derive(Clone, Debug)]
struct GateRows {
    name: String,
    prefix: usize,
    blocks: usize,
}

/// The old layer's parts surgery reads.
struct LayerView {
    cfg: MoeConfig,
    layout: ExpertLayout,
    packed: String,
    gate: Option<GateRows>,
}

fn view(layer: usize, cfg: &MoeConfig) -> Result<LayerView> {
    let p = moe_prefix(layer);
    let e = cfg.experts.len();
    let r = router::build(&cfg.router, e)?;
    let gate = match r.expert_columns() {
        None => None,
        Some(cols) => {
            let name = match cfg.gate {
                GateConfig::Linear { .. } => format!("{p}.gate.weight"),
                GateConfig::Mlp { .. } => format!("{p}.gate.w2"),
            };
            Some(GateRows {
                name,
                prefix: cols.start,
                blocks: (r.gate_outputs() - cols.start) / e.max(1),
            })
        }
    };
    Ok(LayerView {
        layout: ExpertLayout::new(cfg.d_model, &cfg.experts),
        packed: format!("{p}.experts.packed"),
        cfg: cfg.clone(),
        gate,
    })
}

/// The MoE config of `layer`, or an error naming the MoE layers there are.
pub(crate) fn moe_config(state: &ModelState, layer: usize) -> Result<MoeConfig> {
    let known = state.model.moe_layers().contains(&layer);
    known
        .then(|| state.model.layer_moe_config(layer))
        .flatten()
        .ok_or_else(|| {
            LifecycleError::input(
                "layer",
                format!(
                    "layer {layer} is not an MoE layer; the MoE layers are {:?}",
                    state.model.moe_layers()
                ),
            )
        })
}

pub(crate) fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn get<'a>(map: &'a std::collections::BTreeMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    map.get(name)
        .ok_or_else(|| LifecycleError::Inconsistent(format!("tensor `{name}` is missing")))
}

/// Number of values of one expert's segment in the packed vector.
fn seg_len(spec: &ExpertSpec, d: usize) -> usize {
    spec.params(d)
}

/// `(offset, len)` of the weight matrices inside an expert's segment (noise goes there).
fn matrices(spec: &ExpertSpec, d: usize) -> Vec<(usize, usize)> {
    let hd = spec.hidden * d;
    match spec.kind {
        ExpertKind::SwiGlu => vec![(0, hd), (hd, hd), (2 * hd, hd)],
        ExpertKind::Ffn { .. } => vec![(0, hd), (hd, hd)],
    }
}

/// What is being remapped: the weights (noise applies, fresh experts are initialised),
/// the first moment (fresh: zero) or the second moment (fresh: the mean of its kind).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Weights,
    FirstMoment,
    SecondMoment,
}

fn noisy(v: &mut [f32], rel: f64, rng: &mut ChaCha8Rng) {
    if rel == 0.0 || v.is_empty() {
        return;
    }
    let rms = (v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / v.len() as f64).sqrt();
    let std = rel * rms;
    for x in v {
        let z: f64 = StandardNormal.sample(rng);
        *x += (std * z) as f32;
    }
}

fn rng_for(seed: u64, layer: usize, j: usize, what: u64) -> ChaCha8Rng {
    let mixed = seed
        ^ (layer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ what.wrapping_mul(0x1656_67B1_9E37_79F9);
    ChaCha8Rng::seed_from_u64(mixed)
}

/// The packed experts vector (weights or a moment) of the new layer.
fn remap_packed(
    old: &[f32],
    view: &LayerView,
    new: &[NewExpert],
    specs: &[ExpertSpec],
    part: Part,
    layer: usize,
    seed: u64,
) -> Vec<f32> {
    let d = view.cfg.d_model;
    let old_seg = |e: usize| {
        let s = view.layout.slots[e].w1;
        &old[s..s + seg_len(&view.layout.slots[e].spec, d)]
    };
    let mut out = Vec::new();
    for (j, (n, spec)) in new.iter().zip(specs).enumerate() {
        let len = seg_len(spec, d);
        match &n.source {
            Source::Keep(e) => out.extend_from_slice(old_seg(*e)),
            Source::Copy { from, noise } => {
                let mut seg = old_seg(*from).to_vec();
                if part == Part::Weights {
                    let mut rng = rng_for(seed, layer, j, 1);
                    for (o, l) in matrices(spec, d) {
                        noisy(&mut seg[o..o + l], *noise, &mut rng);
                    }
                }
                out.extend(seg);
            }
            Source::Mix(ws) => {
                let mut acc = vec![0f64; len];
                for &(e, w) in ws {
                    for (a, &x) in acc.iter_mut().zip(old_seg(e)) {
                        *a += w * x as f64;
                    }
                }
                out.extend(acc.into_iter().map(|x| x as f32));
            }
            Source::Fresh(spec) => match part {
                Part::Weights => {
                    let store = ParamStore::new();
                    let init_seed = rand::Rng::random::<u64>(&mut rng_for(seed, layer, j, 2));
                    let pb = ParamBuilder::new(&store, init_seed, DType::F32, &Device::Cpu);
                    let one = ExpertLayout::new(d, &[*spec]);
                    out.extend(init_values(&one, &pb).into_iter().map(|x| x as f32));
                }
                Part::FirstMoment => out.extend(std::iter::repeat_n(0.0, len)),
                Part::SecondMoment => {
                    let same: Vec<usize> = (0..view.layout.num_experts())
                        .filter(|&e| view.layout.slots[e].spec == *spec)
                        .collect();
                    let mut acc = vec![0f64; len];
                    for &e in &same {
                        for (a, &x) in acc.iter_mut().zip(old_seg(e)) {
                            *a += x as f64 / same.len() as f64;
                        }
                    }
                    out.extend(acc.into_iter().map(|x| x as f32));
                }
            },
        }
    }
    out
}

/// The gate tensor (weights or a moment) of the new layer: `[prefix + blocks·E', width]`.
#[allow(clippy::too_many_arguments)]
fn remap_gate(
    old: &[f32],
    width: usize,
    rows: &GateRows,
    old_e: usize,
    new: &[NewExpert],
    part: Part,
    layer: usize,
    seed: u64,
) -> Vec<f32> {
    let row = |r: usize| &old[r * width..(r + 1) * width];
    let mut out: Vec<f32> = old[..rows.prefix * width].to_vec();
    for b in 0..rows.blocks {
        let at = |e: usize| row(rows.prefix + b * old_e + e);
        for (j, n) in new.iter().enumerate() {
            match &n.source {
                Source::Keep(e) => out.extend_from_slice(at(*e)),
                Source::Copy { from, noise } => {
                    let mut r = at(*from).to_vec();
                    if part == Part::Weights {
                        noisy(&mut r, *noise, &mut rng_for(seed, layer, j, 3 + b as u64));
                    }
                    out.extend(r);
                }
                Source::Mix(ws) => {
                    let mut acc = vec![0f64; width];
                    for &(e, w) in ws {
                        for (a, &x) in acc.iter_mut().zip(at(e)) {
                            *a += w * x as f64;
                        }
                    }
                    out.extend(acc.into_iter().map(|x| x as f32));
                }
                Source::Fresh(_) => match part {
                    // as a new gate's rows: U(±1/√fan_in)
                    Part::Weights => {
                        let bound = 1.0 / (width as f64).sqrt();
                        let mut rng = rng_for(seed, layer, j, 100 + b as u64);
                        out.extend(
                            (0..width)
                                .map(|_| rand::Rng::random_range(&mut rng, -bound..=bound) as f32),
                        );
                    }
                    Part::FirstMoment => out.extend(std::iter::repeat_n(0.0, width)),
                    Part::SecondMoment => {
                        let mut acc = vec![0f64; width];
                        for e in 0..old_e {
                            for (a, &x) in acc.iter_mut().zip(at(e)) {
                                *a += x as f64 / old_e as f64;
                            }
                        }
                        out.extend(acc.into_iter().map(|x| x as f32));
                    }
                },
            }
        }
    }
    out
}

/// A per-expert buffer (selection biases) of the new layer. A fresh expert gets the lowest
/// old value: with a zero score (gate-in 0) its selection key `0 + bias` is below every old
/// expert's `score + bias`, so it is not selected until the gate opens.
fn remap_buffer(old: &[f32], new: &[NewExpert]) -> Vec<f32> {
    let low = old.iter().copied().fold(f32::INFINITY, f32::min);
    new.iter()
        .map(|n| match &n.source {
            Source::Keep(e) | Source::Copy { from: e, .. } => old[*e],
            Source::Mix(ws) => ws.iter().map(|&(e, w)| w * old[e] as f64).sum::<f64>() as f32,
            Source::Fresh(_) => {
                if low.is_finite() {
                    low
                } else {
                    0.0
                }
            }
        })
        .collect()
}

/// Checks the sources against the old layer and returns each new expert's architecture.
fn new_specs(view: &LayerView, new: &[NewExpert]) -> Result<Vec<ExpertSpec>> {
    let n = view.layout.num_experts();
    let check = |e: usize| {
        if e >= n {
            Err(LifecycleError::input(
                "expert",
                format!("expert {e} does not exist; this layer has experts 0..{n}"),
            ))
        } else {
            Ok(view.layout.slots[e].spec)
        }
    };
    new.iter()
        .map(|x| match &x.source {
            Source::Keep(e) | Source::Copy { from: e, .. } => check(*e),
            Source::Mix(ws) => {
                let first = check(ws.first().map(|w| w.0).ok_or_else(|| {
                    LifecycleError::input("experts", "a mix needs at least one expert")
                })?)?;
                for &(e, w) in ws {
                    if check(e)? != first {
                        return Err(LifecycleError::input(
                            "experts",
                            format!(
                                "experts {} and {e} differ in architecture ({first:?} vs {:?}); only experts of one kind and width can be merged",
                                ws[0].0,
                                view.layout.slots[e].spec
                            ),
                        ));
                    }
                    if !(w.is_finite() && w >= 0.0) {
                        return Err(LifecycleError::input(
                            "weights",
                            format!("mix weights must be finite and >= 0, got {w}"),
                        ));
                    }
                }
                Ok(first)
            }
            Source::Fresh(spec) => Ok(*spec),
        })
        .collect()
}

/// Rebuilds MoE layer `layer` with the experts `new` describes, and sets its config to
/// `new_cfg` (whose `experts` are replaced by the new experts' architectures). Touches the
/// packed experts, the gate rows that score experts (noisy top-k's noise rows too; the
/// hierarchical router's group rows stay), per-expert router buffers, gate-in values, and
/// the optimiser's moments of all of these; parameter step counts stay.
///
/// `seed` makes the noise and fresh initialisations reproducible. The model config is
/// validated afterwards, so a new expert count the router cannot take (groups that do not
/// divide it, `k` above it) is refused with the config key named.
pub fn remap_layer(
    state: &mut ModelState,
    layer: usize,
    new: &[NewExpert],
    new_cfg: MoeConfig,
    seed: u64,
) -> Result<()> {
    let old_cfg = moe_config(state, layer)?;
    let v = view(layer, &old_cfg)?;
    if new.is_empty() {
        return Err(LifecycleError::input(
            "experts",
            "a layer needs at least one routed expert",
        ));
    }
    let specs = new_specs(&v, new)?;
    let old_e = v.layout.num_experts();
    let mut cfg = new_cfg;
    cfg.experts = specs.clone();
    cfg.validate()
        .map_err(|e| LifecycleError::input(format!("layer {layer}"), e.to_string()))?;

    // packed experts and their moments
    let packed = host(get(&state.params, &v.packed)?)?;
    if packed.len() != v.layout.total {
        return Err(LifecycleError::Inconsistent(format!(
            "`{}` has {} values; the config's experts need {}",
            v.packed,
            packed.len(),
            v.layout.total
        )));
    }
    let new_packed = remap_packed(&packed, &v, new, &specs, Part::Weights, layer, seed);
    let n = new_packed.len();
    state.params.insert(
        v.packed.clone(),
        Tensor::from_vec(new_packed, n, &Device::Cpu)?,
    );
    for (suffix, part) in [
        ("exp_avg", Part::FirstMoment),
        ("exp_avg_sq", Part::SecondMoment),
    ] {
        let key = format!("{}.{suffix}", v.packed);
        if let Some(t) = state.optimizer.get(&key) {
            let m = remap_packed(&host(t)?, &v, new, &specs, part, layer, seed);
            state
                .optimizer
                .insert(key, Tensor::from_vec(m, n, &Device::Cpu)?);
        }
    }

    // gate rows and their moments
    if let Some(rows) = &v.gate {
        let t = get(&state.params, &rows.name)?;
        let (out_rows, width) = t.dims2()?;
        if out_rows != rows.prefix + rows.blocks * old_e {
            return Err(LifecycleError::Inconsistent(format!(
                "`{}` has {out_rows} rows; the router needs {}",
                rows.name,
                rows.prefix + rows.blocks * old_e
            )));
        }
        let new_rows = rows.prefix + rows.blocks * new.len();
        let g = remap_gate(
            &host(t)?,
            width,
            rows,
            old_e,
            new,
            Part::Weights,
            layer,
            seed,
        );
        state.params.insert(
            rows.name.clone(),
            Tensor::from_vec(g, (new_rows, width), &Device::Cpu)?,
        );
        for (suffix, part) in [
            ("exp_avg", Part::FirstMoment),
            ("exp_avg_sq", Part::SecondMoment),
        ] {
            let key = format!("{}.{suffix}", rows.name);
            if let Some(t) = state.optimizer.get(&key) {
                let m = remap_gate(&host(t)?, width, rows, old_e, new, part, layer, seed);
                state
                    .optimizer
                    .insert(key, Tensor::from_vec(m, (new_rows, width), &Device::Cpu)?);
            }
        }
    }

    // per-expert router buffers (selection biases)
    let router_prefix = switchyard_io::buffer_key(layer, "");
    let keys: Vec<String> = state
        .buffers
        .keys()
        .filter(|k| k.starts_with(&router_prefix))
        .cloned()
        .collect();
    for k in keys {
        let old = &state.buffers[&k];
        if old.len() == old_e {
            let b = remap_buffer(old, new);
            state.buffers.insert(k, b);
        }
    }

    // gate-in values
    let gate_key = switchyard_io::gate_in_key(layer);
    let old_alpha = state
        .buffers
        .get(&gate_key)
        .cloned()
        .unwrap_or_else(|| vec![1.0; old_e]);
    let alpha: Vec<f32> = new
        .iter()
        .map(|x| {
            x.gate_in.unwrap_or(match &x.source {
                Source::Keep(e) | Source::Copy { from: e, .. } => old_alpha[*e],
                Source::Mix(_) => 1.0,
                Source::Fresh(_) => 0.0,
            })
        })
        .collect();
    if alpha.iter().any(|&a| a < 1.0) && v.gate.is_some() {
        state.buffers.insert(gate_key, alpha);
    } else {
        state.buffers.remove(&gate_key);
    }

    state.model.set_layer_moe(layer, cfg);
    uniform_if_possible(&mut state.model);
    state.model.validate()?;
    Ok(())
}

/// When every MoE layer has one config again, it becomes `ffn.sparse` and `layer_moe` is
/// emptied (a uniform model exports to HF).
pub(crate) fn uniform_if_possible(cfg: &mut switchyard_models::LmConfig) {
    let layers = cfg.moe_layers();
    let Some(first) = layers.first().and_then(|&i| cfg.layer_moe_config(i)) else {
        return;
    };
    if layers
        .iter()
        .all(|&i| cfg.layer_moe_config(i).as_ref() == Some(&first))
    {
        cfg.ffn.sparse = switchyard_models::LayerFfn::Moe(first);
        cfg.layer_moe.clear();
    }
}
