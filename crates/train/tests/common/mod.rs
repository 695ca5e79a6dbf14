//! Shared test helpers: unique temp directories and a small trained model.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{backprop::GradStore, DType, Device, Tensor};
use switchyard_core::{Init, ParamBuilder, ParamStore};
use switchyard_train::{AdamW, AdamWConfig};

/// A fresh directory under `std::env::temp_dir()`, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-train-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A model with a matrix, a 3-D expert weight, a norm gain and a bias.
pub fn small_model(seed: u64) -> ParamStore {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, seed, DType::F32, &Device::Cpu);
    pb.var("blocks.0.moe.gate.weight", &[4, 6], Init::Normal(0.2))
        .unwrap();
    pb.var("blocks.0.moe.experts.w1", &[3, 6, 5], Init::Uniform(0.3))
        .unwrap();
    pb.var("blocks.0.attn_norm.weight", &[6], Init::Ones)
        .unwrap();
    pb.var("head.bias", &[4], Init::Normal(0.1)).unwrap();
    store
}

/// Deterministic pseudo-gradients for every parameter: `sin(0.37 i + 1.3 k + step)`.
pub fn fake_grads(store: &ParamStore, step: usize) -> GradStore {
    let mut grads = GradStore::default();
    for (k, (_, var)) in store.all().into_iter().enumerate() {
        let n = var.elem_count();
        let vals: Vec<f32> = (0..n)
            .map(|i| (0.37 * i as f32 + 1.3 * k as f32 + step as f32).sin())
            .collect();
        grads.insert(
            var.as_tensor(),
            Tensor::from_vec(vals, var.dims(), &Device::Cpu).unwrap(),
        );
    }
    grads
}

/// `small_model` after `steps` AdamW updates on `fake_grads`.
pub fn trained(seed: u64, steps: usize) -> (ParamStore, AdamW) {
    let store = small_model(seed);
    let mut opt = AdamW::new(
        &store,
        AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    for s in 0..steps {
        opt.step(&fake_grads(&store, s), 1e-2).unwrap();
    }
    (store, opt)
}

/// Every element of every tensor as raw bits, for bitwise comparison.
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

pub fn store_bits(store: &ParamStore) -> Vec<(String, Vec<u32>)> {
    store
        .all()
        .into_iter()
        .map(|(n, v)| (n, bits(v.as_tensor())))
        .collect()
}

/// A training run small enough for a test: a 1-layer MoE LM (d = 16, 4 SwiGLU experts of
/// 16, top-2) on a few tiny documents per domain of the built-in corpus, 16-token windows.
pub fn tiny_run(run_dir: &Path) -> switchyard_train::TrainConfig {
    let cfg = switchyard_train::TrainConfig::from_overrides(&[
        format!(
            "run_dir={}",
            toml::Value::String(run_dir.display().to_string())
        ),
        "model.d_model=16".into(),
        "model.n_layers=1".into(),
        "model.n_heads=2".into(),
        "model.max_seq_len=16".into(),
        "model.ffn.sparse.d_model=16".into(),
        r#"model.ffn.sparse.experts={ count = 4, kind = "swiglu", hidden = 16 }"#.into(),
        "data.docs_per_domain=4".into(),
        "data.doc_bytes=256".into(),
        "data.seq_len=16".into(),
        "data.valid_fraction=0.25".into(),
        "data.max_valid_windows=2".into(),
        "optim.warmup_steps=2".into(),
        "train.steps=10".into(),
        "train.batch_size=4".into(),
        "train.eval_every=0".into(),
        "train.checkpoint_every=0".into(),
        "log.progress=false".into(),
    ]);
    cfg.expect("the tiny test config is valid")
}

pub fn model_bits(store: &ParamStore) -> Vec<(String, Vec<u32>)> {
    store_bits(store)
}

/// A trainer's parameters as f32 bits and optimiser state as f64 bits, by name: equal
/// exactly when two runs are bitwise the same.
pub type TrainerBits = (Vec<(String, Vec<u32>)>, Vec<(String, Vec<u64>)>);

pub fn trainer_bits(t: &switchyard_train::trainer::Trainer) -> TrainerBits {
    let opt = t
        .optimizer()
        .state_tensors()
        .unwrap()
        .into_iter()
        .map(|(n, v)| {
            let x = v
                .flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            (n, x.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    (store_bits(&t.store), opt)
}
