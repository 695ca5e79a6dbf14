//! # switchyard-models
//!
//! Models built on the MoE core (`switchyard-core`):
//! - [`MoeLm`]: a decoder-only transformer LM in the Llama/Mixtral layout — token embedding,
//!   pre-norm blocks `x + attn(norm(x))`, `x + ffn(norm(x))` with RMSNorm, RoPE (rotate-half),
//!   causal multi-head (optionally grouped-query, q/k-normed, q/k/v-biased) attention or
//!   DeepSeek's multi-head latent attention ([`MlaAttention`]) with a [`KvCache`], and per layer a dense SwiGLU or an [`MoeLayer`](switchyard_core::MoeLayer)
//!   chosen by [`FfnConfig`] (`moe_every`, `first_dense`). Parameters carry HF Mixtral names
//!   (`model.layers.{i}.block_sparse_moe.*`, …).
//! - [`LmConfig::dense_equivalent`]: the dense baseline with equal active parameters per token.
//! - [`Sampler`] + [`MoeLm::generate`]: greedy, temperature and nucleus sampling.
//! - [`MoeClassifier`]: an MoE MLP for vector data.
//! - [`memory`]: the limits a config must keep and [`check_memory`], the memory a config needs
//!   for a [`Job`] (load, evaluate, generate, train) against what the machine has, computed
//!   before anything is allocated.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use switchyard_core::{ExpertSpec, MoeConfig, ParamBuilder, ParamStore};
//! use switchyard_models::{FfnConfig, LayerFfn, LmConfig, LmCtx, MoeLm, Sampler};
//!
//! let moe = MoeConfig { d_model: 32, experts: vec![ExpertSpec::swiglu(32); 4], ..Default::default() };
//! let cfg = LmConfig {
//!     vocab_size: 50, d_model: 32, n_layers: 2, n_heads: 4, max_seq_len: 64,
//!     ffn: FfnConfig { sparse: LayerFfn::Moe(moe), ..Default::default() },
//!     ..Default::default()
//! };
//! let store = ParamStore::new();
//! let lm = MoeLm::new(&ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu), &cfg)?;
//!
//! let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu)?;
//! let targets = Tensor::new(&[[2u32, 3, 4, 5]], &Device::Cpu)?;
//! let (ce, out) = lm.loss(&ids, &targets, &mut LmCtx::new(true, 0))?;
//! let objective = (ce + &out.aux_loss)?; // backward() this, step, then lm.after_step()
//! assert_eq!(out.logits.dims(), &[1, 4, 50]);
//!
//! let dense = cfg.dense_equivalent(); // same active parameters per token
//! let new = lm.generate(&[1, 2, 3], 5, &mut Sampler::new(0.8, 0.9, 7), &mut LmCtx::new(false, 0))?;
//! assert_eq!(new.len(), 5);
//! # let _ = (objective, dense);
//! # Ok::<(), switchyard_models::ModelError>(())
//! ```
//!
//! Neighbours: `switchyard-core` below (routers, experts, dispatch, losses); the training,
//! analysis, serving and interop crates above use these models; `switchyard-data` supplies
//! token batches. Notes: routers that look across tokens (expert-choice, switch capacity)
//! route a batch differently from one token at a time, so their cached decode can differ from
//! a full forward; context gates are rejected for the LM because they would see the future.

pub mod attention;
pub mod block;
pub mod classifier;
pub mod config;
pub mod error;
pub mod ffn;
pub mod generate;
pub mod linear;
pub mod lm;
pub mod memory;
pub mod mla;
pub mod norm;
pub mod rope;

pub use attention::{Attention, KvCache, LayerKv};
pub use block::{DecoderBlock, LayerReport, SelfAttention};
pub use classifier::{ClassifierOutput, MoeClassifier, MoeClassifierConfig};
pub use config::{
    FfnConfig, LayerFfn, LayerMoe, LmConfig, MlaConfig, ParamCount, RopeScaling, YarnScaling,
};
pub use error::{ModelError, Result};
pub use ffn::{DenseFfn, Ffn};
pub use generate::Sampler;
pub use lm::{per_token_ce, LayerOverride, LmCtx, LmOutput, MoeLm};
pub use memory::{check_memory, Job, MemoryNeed};
pub use mla::{MlaAttention, MlaQuery};
pub use norm::RmsNorm;
pub use rope::Rope;
