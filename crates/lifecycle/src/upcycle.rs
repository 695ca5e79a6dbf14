//! Sparse upcycling (Komatsuzaki et al. 2023): a dense model's FFNs become MoE layers whose
//! experts all start as copies of the dense FFN.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchyard_core::{ExpertSpec, MoeConfig, RouterConfig};
use switchyard_models::LayerFfn;

use crate::layer::host;
use crate::{moe_prefix, LifecycleError, ModelState, Result};

/// What [`upcycle`] builds.
#[derive(Clone, Debug, PartialEq)]
pub struct UpcycleOptions {
    /// Experts per MoE layer.
    pub experts: usize,
    /// Experts per token (a top-k router).
    pub k: usize,
    /// Relative noise on each copy's weight matrices (std = `noise` × the matrix's RMS);
    /// 0: exact copies.
    pub noise: f64,
    /// Seeds the noise and the gate.
    pub seed: u64,
}

/// Turns every sparse slot of a dense model (`ffn.sparse` a dense SwiGLU, as in
/// `LmConfig::dense_equivalent`) into an MoE layer of `experts` SwiGLU experts of the same
/// width, each a copy of the layer's FFN (`w1 = gate_proj`, `w3 = up_proj`,
/// `w2t = down_projᵀ`) plus noise, with a fresh linear gate (`U(±1/√d)`) and a top-k router.
/// The FFN's AdamW moments go to every copy (same step count); the gate's start at zero with
/// step 0. With `k = experts` and no noise every token's weights sum to 1 over identical
/// experts, so the model computes what the dense one did (up to summation order).
pub fn upcycle(state: &mut ModelState, opts: &UpcycleOptions) -> Result<MoeConfig> {
    let hidden =
        match &state.model.ffn.sparse {
            LayerFfn::Dense { hidden } => *hidden,
            LayerFfn::Moe(_) => return Err(LifecycleError::input(
                "ckpt",
                "this model already has MoE layers; upcycle takes a dense checkpoint (e.g. the \
                 demo's dense run); to grow an MoE use `switchyard experts add`",
            )),
        };
    if opts.experts == 0 || opts.k == 0 || opts.k > opts.experts {
        return Err(LifecycleError::input(
            "k",
            format!(
                "need 1 <= k <= experts, got k = {} and experts = {}",
                opts.k, opts.experts
            ),
        ));
    }
    if !(opts.noise.is_finite() && opts.noise >= 0.0) {
        return Err(LifecycleError::input(
            "noise",
            format!("must be finite and >= 0, got {}", opts.noise),
        ));
    }
    let d = state.model.d_model;
    let router: RouterConfig = serde_json::from_value(serde_json::json!({
        "type": "top_k", "k": opts.k
    }))
    .map_err(|e| LifecycleError::Inconsistent(e.to_string()))?;
    let moe = MoeConfig {
        d_model: d,
        experts: vec![ExpertSpec::swiglu(hidden); opts.experts],
        router,
        ..MoeConfig::default()
    };
    let mut model = state.model.clone();
    model.ffn.sparse = LayerFfn::Moe(moe.clone());
    model.layer_moe.clear();
    model.validate()?;
    let layers = model.moe_layers();
    if layers.is_empty() {
        return Err(LifecycleError::input(
            "ckpt",
            "the model has no sparse slots to upcycle (every layer is forced dense)",
        ));
    }
    let hd = hidden * d;
    for &i in &layers {
        let mlp = format!("model.layers.{i}.mlp");
        let moe_p = moe_prefix(i);
        let take = |map: &mut std::collections::BTreeMap<String, Tensor>,
                    name: &str|
         -> Result<Vec<f32>> {
            let t = map.remove(name).ok_or_else(|| {
                LifecycleError::Inconsistent(format!("tensor `{name}` is missing"))
            })?;
            let v = host(&t)?;
            if v.len() != hd {
                return Err(LifecycleError::Inconsistent(format!(
                    "`{name}` has {} values, expected {hidden} x {d}",
                    v.len()
                )));
            }
            Ok(v)
        };
        // one expert segment: w1, w3, w2t (down_proj [d, h] transposed to [h, d])
        let segment = |g: &[f32], u: &[f32], down: &[f32]| -> Vec<f32> {
            let mut s = Vec::with_capacity(3 * hd);
            s.extend_from_slice(g);
            s.extend_from_slice(u);
            for r in 0..hidden {
                s.extend((0..d).map(|c| down[c * hidden + r]));
            }
            s
        };
        let names = ["gate_proj", "up_proj", "down_proj"].map(|n| format!("{mlp}.{n}.weight"));
        let g = take(&mut state.params, &names[0])?;
        let u = take(&mut state.params, &names[1])?;
        let dn = take(&mut state.params, &names[2])?;
        let base = segment(&g, &u, &dn);
        let mut packed = Vec::with_capacity(opts.experts * base.len());
        for e in 0..opts.experts {
            let mut seg = base.clone();
            if opts.noise > 0.0 {
                let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ ((i * 7919 + e) as u64) << 8);
                for m in seg.chunks_mut(hd) {
                    let rms =
                        (m.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / hd as f64).sqrt();
                    for x in m {
                        let z: f64 = rng.sample(rand_distr::StandardNormal);
                        *x += (opts.noise * rms * z) as f32;
                    }
                }
            }
            packed.extend(seg);
        }
        let n = packed.len();
        state.params.insert(
            format!("{moe_p}.experts.packed"),
            Tensor::from_vec(packed, n, &Device::Cpu)?,
        );
        let bound = 1.0 / (d as f64).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(i as u64 + 1));
        let gate: Vec<f32> = (0..opts.experts * d)
            .map(|_| rng.random_range(-bound..=bound) as f32)
            .collect();
        let gate_name = format!("{moe_p}.gate.weight");
        state.params.insert(
            gate_name.clone(),
            Tensor::from_vec(gate, (opts.experts, d), &Device::Cpu)?,
        );
        if !state.optimizer.is_empty() {
            let mut moments = Vec::new();
            for suffix in ["exp_avg", "exp_avg_sq"] {
                let g = take(&mut state.optimizer, &format!("{}.{suffix}", names[0]))?;
                let u = take(&mut state.optimizer, &format!("{}.{suffix}", names[1]))?;
                let dn = take(&mut state.optimizer, &format!("{}.{suffix}", names[2]))?;
                let seg = segment(&g, &u, &dn);
                moments.push((suffix, seg.repeat(opts.experts)));
            }
            let step = state
                .optimizer
                .get(&format!("{}.step", names[0]))
                .cloned()
                .ok_or_else(|| {
                    LifecycleError::Inconsistent(format!("`{}.step` is missing", names[0]))
                })?;
            for nm in &names {
                state.optimizer.remove(&format!("{nm}.step"));
            }
            for (suffix, m) in moments {
                let n = m.len();
                state.optimizer.insert(
                    format!("{moe_p}.experts.packed.{suffix}"),
                    Tensor::from_vec(m, n, &Device::Cpu)?,
                );
                state.optimizer.insert(
                    format!("{gate_name}.{suffix}"),
                    Tensor::zeros((opts.experts, d), candle_core::DType::F32, &Device::Cpu)?,
                );
            }
            state
                .optimizer
                .insert(format!("{moe_p}.experts.packed.step"), step);
            state.optimizer.insert(
                format!("{gate_name}.step"),
                Tensor::new(0i64, &Device::Cpu)?,
            );
        }
    }
    state.model = model;
    Ok(moe)
}
