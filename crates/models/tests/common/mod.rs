//! Tiny models shared by the models tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use switchyard_core::router::TopKConfig;
use switchyard_core::{ExpertSpec, MoeConfig, ParamBuilder, ParamStore, RouterConfig};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, MoeLm};

pub const VOCAB: usize = 32;
pub const D: usize = 16;

pub fn tiny_moe(d: usize) -> MoeConfig {
    MoeConfig {
        d_model: d,
        experts: vec![ExpertSpec::swiglu(16); 4],
        router: RouterConfig::TopK(TopKConfig { k: 2 }),
        ..Default::default()
    }
}

/// 2 layers, 2 heads of 8, every FFN an MoE of 4 SwiGLU experts (top-2).
pub fn tiny_cfg() -> LmConfig {
    LmConfig {
        vocab_size: VOCAB,
        d_model: D,
        n_layers: 2,
        n_heads: 2,
        max_seq_len: 32,
        ffn: FfnConfig {
            dense_hidden: 24,
            sparse: LayerFfn::Moe(tiny_moe(D)),
            moe_every: 1,
            first_dense: 0,
        },
        ..Default::default()
    }
}

pub fn build(cfg: &LmConfig, seed: u64, dtype: DType) -> (ParamStore, MoeLm) {
    let store = ParamStore::new();
    let lm = MoeLm::new(&ParamBuilder::new(&store, seed, dtype, &Device::Cpu), cfg)
        .expect("valid config");
    (store, lm)
}

/// `[B, L]` ids from a fixed arithmetic pattern.
pub fn ids(b: usize, l: usize) -> Tensor {
    let v: Vec<u32> = (0..b * l).map(|i| ((i * 7 + 3) % VOCAB) as u32).collect();
    Tensor::from_vec(v, (b, l), &Device::Cpu).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}
