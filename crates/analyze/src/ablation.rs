//! Causal ablation: validation loss per domain with one expert of one layer removed, routing
//! renormalised over the remaining experts (the expert-dropout mechanism with a fixed mask).

use candle_core::{Device, Tensor};
use serde::Serialize;
use switchyard_data::Batch;
use switchyard_models::{per_token_ce, LayerOverride, LmCtx, MoeLm};

use crate::Result;

#[derive(Clone, Debug, Serialize)]
pub struct Ablation {
    pub domain_names: Vec<String>,
    /// Per-domain loss of the intact model.
    pub base: Vec<f64>,
    pub layers: Vec<LayerAblation>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerAblation {
    pub layer: usize,
    /// `[expert][domain]`: loss with the expert removed, minus the intact loss.
    pub delta: Vec<Vec<f64>>,
}

/// Mean next-token loss per domain (by each input token's domain) over `batches`.
pub fn domain_losses(
    model: &MoeLm,
    batches: &[Batch],
    num_domains: usize,
    ctx: &mut LmCtx,
) -> Result<Vec<f64>> {
    let (mut sum, mut count) = (vec![0f64; num_domains], vec![0u64; num_domains]);
    for b in batches {
        let ids = Tensor::from_slice(&b.inputs, (b.batch_size, b.seq_len), &Device::Cpu)?;
        let tg = Tensor::from_slice(&b.targets, (b.batch_size, b.seq_len), &Device::Cpu)?;
        let out = model.forward(&ids, ctx)?;
        let ce = per_token_ce(&out.logits, &tg)?
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        for (c, &d) in ce.iter().zip(&b.domains) {
            sum[d as usize] += c;
            count[d as usize] += 1;
        }
    }
    Ok(sum
        .iter()
        .zip(&count)
        .map(|(s, &c)| if c == 0 { f64::NAN } else { s / c as f64 })
        .collect())
}

/// Removes each expert of each MoE layer in turn. Costs `Σ_layers E` passes over `batches`.
pub fn ablate(model: &MoeLm, batches: &[Batch], domain_names: &[String]) -> Result<Ablation> {
    let nd = domain_names.len();
    let base = domain_losses(model, batches, nd, &mut LmCtx::new(false, 0))?;
    let mut layers = Vec::new();
    for (li, block) in model.layers.iter().enumerate() {
        let switchyard_models::Ffn::Moe(moe) = &block.ffn else {
            continue;
        };
        let e = moe.num_experts();
        let mut delta = Vec::with_capacity(e);
        for x in 0..e {
            let mut ctx = LmCtx::new(false, 0);
            let mut available = vec![true; e];
            available[x] = false;
            ctx.overrides.insert(
                li,
                LayerOverride {
                    forced: None,
                    available: Some(available),
                },
            );
            let l = domain_losses(model, batches, nd, &mut ctx)?;
            delta.push(l.iter().zip(&base).map(|(a, b)| a - b).collect());
        }
        layers.push(LayerAblation { layer: li, delta });
    }
    Ok(Ablation {
        domain_names: domain_names.to_vec(),
        base,
        layers,
    })
}
