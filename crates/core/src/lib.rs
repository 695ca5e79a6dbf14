//! # switchyard-core
//!
//! The heart of Switchyard: routed Mixture-of-Experts layers on candle.
//!
//! `gate → router → dispatch plan → experts → combine`, each a small piece with a plain-data
//! interface (see `../shared/DESIGN.md` §3 and `ARCHITECTURE.md`):
//! - [`config`]: [`MoeConfig`] and friends, validated once with clear errors;
//! - [`gate`]: linear or MLP gates, optionally with a sequence context vector;
//! - [`router`]: the [`Router`] trait and the zoo (top-k, noisy top-k, switch, expert-choice,
//!   hash, sigmoid+bias, group-limited, hierarchical, Sinkhorn), each producing a [`DispatchPlan`];
//! - [`expert`]: FFN and SwiGLU experts of any width, packed into one parameter per layer;
//! - [`plan`]: the [`DispatchPlan`] every router produces;
//! - [`dispatch`]: the readable reference dispatch, and the choice of it or the CPU kernels;
//! - [`losses`], [`stats`]: balancing losses, z-loss and routing statistics;
//! - [`domain_map`]: the domain → expert mapping loss and routing purity;
//! - [`rowops`]: the routers' and losses' `[T, E]` ops (softmax, log-sum-exp, column means,
//!   plan weights, the noisy router's logits and load sums) composed from candle ops, and the
//!   choice of them or their fused CPU forms;
//! - [`layer`]: [`MoeLayer`]; [`soft_moe`]: [`SoftMoeLayer`], both behind [`MoeBlock`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use rand::SeedableRng;
//! use switchyard_core::{ForwardCtx, MoeBlock, MoeConfig, MoeLayer, ParamBuilder, ParamStore};
//!
//! let store = ParamStore::new();
//! let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
//! let layer = MoeLayer::new(&pb.pp("moe"), &MoeConfig { d_model: 16, ..Default::default() })?;
//! let x = Tensor::ones((4, 16), DType::F32, &Device::Cpu)?;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let out = layer.forward(&x, &mut ForwardCtx::new(false, &mut rng))?;
//! assert_eq!(out.y.dims(), &[4, 16]);
//! # Ok::<(), switchyard_core::MoeError>(())
//! ```
//!
//! Training calls [`backward`] (not `loss.backward()`): the same gradients, with the dispatch
//! kernels' expert-weight gradients handed to the store without candle's zeros-then-add.
//!
//! Below this crate: `switchyard-kernels`, the CPU fast path (dispatch kernels, packed GEMM,
//! fused row ops, noise, the allocator), tuned by [`KernelOptions`]. No I/O, no async, no CLI
//! here: models, training and tools live in the crates above.

pub mod config;
pub mod dispatch;
pub mod domain_map;
pub mod error;
pub mod expert;
pub mod gate;
pub mod layer;
pub mod losses;
pub mod params;
pub mod plan;
pub mod router;
pub mod rowops;
pub mod soft_moe;
pub mod stats;
pub mod testing;

pub use config::{
    Activation, DropPolicy, ExpertKind, ExpertSpec, GateConfig, GroupScore, LossWeights, MoeConfig,
    RouterConfig, ScoreFn,
};
pub use dispatch::{backward, DispatchImpl, KernelOptions};
pub use domain_map::DomainTargets;
pub use error::{MoeError, Result};
pub use layer::{ForcedRouting, ForwardCtx, MoeBlock, MoeLayer, MoeOutput, Routing, GATE_IN_FLOOR};
pub use params::{Init, ParamBuilder, ParamStore};
pub use plan::DispatchPlan;
pub use router::Router;
pub use soft_moe::SoftMoeLayer;
pub use stats::RoutingStats;
