//! # switchyard-kernels
//!
//! The CPU fast path under Switchyard's readable MoE (`switchyard-core`): everything here is
//! tuned for speed and tested against a plain reference that lives in `core`.
//!
//! - [`dispatch`]: the MoE dispatch kernels — gather each expert's rows, run its matmuls on
//!   pre-packed weights, fuse the activation, scale and scatter-add in a fixed order — with
//!   their explicit backward (slice-level [`dispatch::forward`] / [`dispatch::backward`]), as a
//!   candle custom op ([`dispatch::dispatch`]); [`backward`] is the `loss.backward()` to call
//!   in training;
//! - [`KernelOptions`]: the kernels' tuning knobs, one value passed in (no process-global
//!   setters);
//! - [`gemm`] (matmuls through the `gemm` crate, AVX-512 or AVX2) and [`packed`] (weights
//!   packed once for `gemm`'s microkernels); [`act`]: activations and row loops per ISA;
//! - [`rowops`]: the routers' and losses' `[T, E]` row ops fused (softmax, log-sum-exp, column
//!   means, plan weights, noisy logits, load sums);
//! - [`noise`]: seeded noise tensors filled in parallel; [`alloc`]: a recycling global
//!   allocator for binaries; [`profile`]: per-phase timers.
//!
//! The plain data they read is defined here: [`DispatchPlan`] (which token goes to which
//! expert, CSR by expert) and [`ExpertLayout`] (where each expert's weights lie in a layer's
//! flat parameter vector).
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::{Device, Tensor};
//! use switchyard_kernels::{dispatch, DispatchPlan, ExpertLayout, ExpertSpec, KernelOptions};
//!
//! // two tokens, two SwiGLU experts of width 8 over d = 4; token 0 → expert 1, token 1 → 0
//! let layout = Arc::new(ExpertLayout::new(4, &[ExpertSpec::swiglu(8); 2]));
//! let plan = Arc::new(DispatchPlan::from_assignments(2, 2, &[(0, 1), (1, 0)])?);
//! let x = Tensor::ones((2, 4), candle_core::DType::F32, &Device::Cpu)?;
//! let w = Tensor::ones(2, candle_core::DType::F32, &Device::Cpu)?;
//! let p = Tensor::full(0.1f32, layout.total, &Device::Cpu)?;
//! let y = dispatch::dispatch(&x, &w, &p, &layout, &plan, &KernelOptions::default())?;
//! assert_eq!(y.dims(), &[2, 4]);
//! # Ok::<(), switchyard_kernels::KernelError>(())
//! ```
//!
//! Above this crate: `switchyard-core` (config, gates, routers, experts, the layer, losses,
//! and the readable reference of every op here).

pub mod act;
pub mod alloc;
pub mod dispatch;
pub mod error;
pub mod gemm;
pub mod layout;
pub mod noise;
pub mod options;
pub mod packed;
pub mod plan;
pub mod profile;
pub mod rowops;

pub use dispatch::op::backward;
pub use error::{KernelError, Result};
pub use layout::{Activation, ExpertKind, ExpertLayout, ExpertSlot, ExpertSpec};
pub use options::KernelOptions;
pub use plan::DispatchPlan;
