//! # switchyard-train
//!
//! Training building blocks for Switchyard models, over the named `Var`s of a
//! [`ParamStore`](switchyard_core::ParamStore):
//! - [`optim`]: [`AdamW`] with decoupled weight decay, mirroring `torch.optim.AdamW`, whose
//!   moments can be exported and restored (candle-nn's cannot) for exact resume;
//! - [`grads`]: global-norm clipping ([`clip_grad_norm`]) and micro-batch accumulation;
//! - [`schedule`]: [`LrSchedule`], linear warmup then cosine decay;
//! - [`checkpoint`]: crash-safe, checksummed checkpoint directories (DESIGN.md §5; the format
//!   and the run directory are `switchyard-io`'s) with the optimiser state;
//! - [`trainer`]: [`TrainConfig`] (TOML with `key=value` overrides, validated) and the
//!   [`Trainer`] loop for `switchyard-models` LMs on `switchyard-data` corpora: gradient
//!   accumulation, clipping, warmup + cosine LR, evaluation per domain, `metrics.jsonl`,
//!   progress bar, non-finite guard, loss-spike skip, expert-collapse warning, exact resume.
//!
//! Everything is deterministic: parameters are visited in sorted name order and the
//! arithmetic is element-wise or reduced in a fixed order.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use switchyard_core::{Init, ParamBuilder, ParamStore};
//! use switchyard_train::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
//!
//! let store = ParamStore::new();
//! let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
//! let w = pb.var("proj.weight", &[4, 3], Init::Normal(0.1))?;
//! let mut opt = AdamW::new(&store, AdamWConfig::default())?;
//! let sched = LrSchedule { max_lr: 1e-3, min_lr: 1e-4, warmup_steps: 10, total_steps: 100 };
//!
//! let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu)?;
//! for step in 0..3 {
//!     let loss = x.matmul(w.as_tensor())?.sqr()?.sum_all()?;
//!     // switchyard_core::backward, not loss.backward(): the same gradients, with the MoE
//!     // dispatch kernels' expert gradients handed over without candle's zeros-then-add
//!     let mut grads = switchyard_core::backward(&loss)?;
//!     clip_grad_norm(&store, &mut grads, 1.0)?;
//!     opt.step(&grads, sched.lr_at(step))?;
//! }
//! assert_eq!(opt.param_step("proj.weight"), Some(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Models come from `switchyard-models`, data from `switchyard-data`; the `switchyard` CLI
//! (`crates/cli`) drives the [`Trainer`].

pub mod checkpoint;
pub mod error;
pub mod grads;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use checkpoint::{
    check_load_fits, load_checkpoint, mem_available_bytes, restore_into, restore_optimizer,
    save_checkpoint, save_checkpoint_with, Checkpoint, CheckpointContents, CheckpointError,
    RngState, SaveOptions, TrainState,
};
pub use error::{Result, TrainError};
pub use grads::{accumulate_grads, clip_grad_norm, grad_norm, scale_grads};
pub use optim::{default_decay_rule, AdamW, AdamWConfig, DecayRule, ParamSnapshot};
pub use schedule::LrSchedule;
pub use trainer::{RunError, TrainConfig, TrainSummary, Trainer};
