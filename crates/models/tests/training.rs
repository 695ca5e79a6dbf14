//! Tiny models learn: the LM memorises a small batch, the classifier a simple rule.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchyard_core::router::SigmoidBiasConfig;
use switchyard_core::{ParamBuilder, ParamStore, RouterConfig};
use switchyard_models::{LayerFfn, LmConfig, LmCtx, MoeClassifier, MoeClassifierConfig};

const LM_STEPS: usize = 120;
const LM_TARGET_LOSS: f32 = 0.3;

fn random_ids(rng: &mut ChaCha8Rng, b: usize, l: usize) -> Tensor {
    let v: Vec<u32> = (0..b * l)
        .map(|_| rng.random_range(0..VOCAB as u32))
        .collect();
    Tensor::from_vec(v, (b, l), &Device::Cpu).unwrap()
}

fn overfit(cfg: &LmConfig) -> (f32, f32) {
    let (_, mut lm) = build(cfg, 11, DType::F32);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let seq = random_ids(&mut rng, 4, 9);
    let (x, y) = (seq.narrow(1, 0, 8).unwrap(), seq.narrow(1, 1, 8).unwrap());
    let mut opt = AdamW::new(
        lm.vars(),
        ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ctx = LmCtx::new(true, 0);
    let (mut first, mut last) = (None, 0.0);
    for _ in 0..LM_STEPS {
        let (ce, out) = lm.loss(&x, &y, &mut ctx).unwrap();
        last = ce.to_scalar::<f32>().unwrap();
        first.get_or_insert(last);
        opt.backward_step(&(ce + out.aux_loss).unwrap()).unwrap();
        lm.after_step();
    }
    (first.unwrap(), last)
}

#[test]
fn moe_lm_overfits_a_tiny_batch() {
    let (first, last) = overfit(&tiny_cfg());
    println!("top-2 MoE LM: loss {first:.3} -> {last:.3} in {LM_STEPS} steps");
    assert!(last < LM_TARGET_LOSS, "loss {first} -> {last}");
}

#[test]
fn aux_loss_free_lm_overfits_a_tiny_batch() {
    let mut cfg = tiny_cfg();
    if let LayerFfn::Moe(m) = &mut cfg.ffn.sparse {
        m.router = RouterConfig::SigmoidBias(SigmoidBiasConfig {
            k: 2,
            bias_update_rate: 1e-3,
            scaling: 1.0,
        });
    }
    let (first, last) = overfit(&cfg);
    println!("sigmoid+bias MoE LM: loss {first:.3} -> {last:.3}");
    assert!(last < LM_TARGET_LOSS, "loss {first} -> {last}");
}

#[test]
fn dense_equivalent_lm_overfits_a_tiny_batch() {
    let (first, last) = overfit(&tiny_cfg().dense_equivalent());
    println!("dense LM: loss {first:.3} -> {last:.3}");
    assert!(last < LM_TARGET_LOSS, "loss {first} -> {last}");
}

#[test]
fn moe_classifier_learns_the_largest_feature() {
    const N: usize = 96;
    const IN: usize = 6;
    const CLASSES: usize = 3;
    let cfg = MoeClassifierConfig {
        in_dim: IN,
        d_model: D,
        n_classes: CLASSES,
        moe: tiny_moe(D),
        n_layers: 2,
        norm_eps: 1e-5,
    };
    let store = ParamStore::new();
    let mut clf = MoeClassifier::new(
        &ParamBuilder::new(&store, 1, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let xs: Vec<f32> = (0..N * IN).map(|_| rng.random_range(-1.0..1.0)).collect();
    // label: which of the first three features is largest
    let labels: Vec<u32> = xs
        .chunks(IN)
        .map(|r| (0..CLASSES).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() as u32)
        .collect();
    let x = Tensor::from_vec(xs, (N, IN), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(labels.clone(), N, &Device::Cpu).unwrap();
    let mut opt = AdamW::new(
        clf.vars(),
        ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ctx = LmCtx::new(true, 0);
    for _ in 0..150 {
        let (ce, out) = clf.loss(&x, &y, &mut ctx).unwrap();
        opt.backward_step(&(ce + out.aux_loss).unwrap()).unwrap();
        clf.after_step();
    }
    let logits = clf.forward(&x, &mut LmCtx::new(false, 0)).unwrap().logits;
    let pred = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let acc = pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / N as f64;
    println!("classifier train accuracy {acc:.3}");
    assert!(acc > 0.9, "accuracy {acc}");
}
