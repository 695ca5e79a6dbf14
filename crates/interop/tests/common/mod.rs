//! Fixture access shared by the interop tests. The fixtures and their expected outputs come
//! from `scripts/reference/make_hf_fixtures.py` (transformers 5.24, see that script).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// Every fixture: one per architecture, and DeepSeek-V3 with YaRN RoPE scaling.
pub const FIXTURES: [&str; 7] = [
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "deepseek_v2",
    "deepseek_v3",
    "deepseek_v3_yarn",
];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh, empty scratch directory under the system temp dir.
pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-interop-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies every file of a fixture into a scratch directory.
pub fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let d = scratch(tag);
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
    }
    d
}

/// One MoE layer's expected (router logits `[L, E]`, chosen `[L][k]`, weights `[L][k]`).
pub type ExpectedLayer = (Tensor, Vec<Vec<i64>>, Vec<Vec<f32>>);

/// `expected.safetensors` of a fixture.
pub struct Expected {
    pub ids: Vec<u32>,
    /// `[L, V]`
    pub logits: Tensor,
    pub layers: BTreeMap<usize, ExpectedLayer>,
    pub greedy: Vec<u32>,
}

pub fn expected(name: &str) -> Expected {
    let t =
        candle_core::safetensors::load(fixture(name).join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let ids = t["input_ids"]
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect();
    let greedy = t["greedy"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect();
    let mut layers = BTreeMap::new();
    for k in t.keys() {
        if let Some(i) = k.strip_prefix("router_logits.") {
            let chosen = t[&format!("chosen_experts.{i}")].to_vec2::<i64>().unwrap();
            let w = t[&format!("routing_weights.{i}")]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            layers.insert(i.parse().unwrap(), (t[k].clone(), chosen, w));
        }
    }
    Expected {
        ids,
        logits: t["logits"].squeeze(0).unwrap(),
        layers,
        greedy,
    }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
