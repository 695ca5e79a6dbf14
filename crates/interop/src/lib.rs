//! # switchyard-interop
//!
//! HuggingFace MoE checkpoints in and out of Switchyard, computing exactly what transformers
//! computes: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2 and DeepSeek-V3 (multi-head
//! latent attention, group-limited routing, V3's sigmoid scores with
//! `e_score_correction_bias`).
//!
//! - [`import`](mod@import): `config.json` (both the Hub and the transformers-5 layout) → [`LmConfig`],
//!   memory-mapped safetensors shards → a [`MoeLm`] whose experts are packed the Switchyard
//!   way, `tokenizer.json` → [`HfTokenizer`] (a [`switchyard_data::Tokenizer`]);
//! - [`export`](mod@export): a [`MoeLm`] → a directory transformers loads (Hub tensor names, one tensor
//!   per expert), for an imported model or a native one whose config an HF architecture
//!   can express ([`hf_config::infer_arch`]);
//! - [`logits()`]: logits, router logits, chosen experts and routing weights on given ids,
//!   saved in the same format as the parity fixtures;
//! - [`ckpt`]: imported models as Switchyard run directories, and [`load_any`], the one
//!   loader for a run, step or HF directory;
//! - [`commands`]: what `switchyard import | export | logits` do, as library functions;
//! - [`family`]: one file per architecture family behind [`HfFamily`], and the registry that
//!   every list of supported architectures comes from ([`supported_architectures`]).
//!
//! ```no_run
//! use switchyard_interop::{export_imported, import, logits};
//!
//! let m = import("crates/interop/tests/fixtures/mixtral")?;
//! let report = logits(&m.model, &[1, 42, 7])?;
//! report.save("out.safetensors", None)?;
//! export_imported(&m, "/tmp/mixtral-roundtrip")?; // transformers loads this directory
//! # Ok::<(), switchyard_interop::InteropError>(())
//! ```
//!
//! What each architecture computes is documented, with the reference formulas, in
//! `scripts/reference/README.md`; `tests/parity.rs` checks every fixture against
//! transformers' own outputs. Neighbours: `switchyard-models` (the LM, incl. MLA) and
//! `switchyard-core` (routers) below, `switchyard-io` for run directories and checkpoints, the CLI
//! (`switchyard import | export | logits`) above.
//!
//! Not supported (refused with an error that says so): RoPE scaling other than linear and
//! YaRN (which the Hub's DeepSeek-V2/V3 use), biases on every attention projection
//! (`attention_bias = true`), activations other than SiLU. Sliding-window attention is not implemented; a model with a
//! window gets `max_seq_len` capped at the window, where full attention is exact.

pub mod arch;
pub mod ckpt;
pub mod commands;
pub mod error;
pub mod export;
pub mod family;
pub mod hf_config;
mod hf_rope;
pub mod import;
pub mod logits;
pub mod names;
pub mod tokenizer;

pub use arch::HfArch;
pub use ckpt::{load_any, save_checkpoint_dir, LoadedModel};
pub use error::{InteropError, Result};
pub use export::{export, export_imported, export_with, ExportOptions, ExportReport};
pub use family::{supported_architectures, HfFamily, FAMILIES};
pub use hf_config::SpecialIds;
pub use import::{import, import_with, ImportOptions, ImportedModel};
pub use logits::{greedy, logits, LayerRouting, LogitsReport};
pub use tokenizer::HfTokenizer;

#[doc(no_inline)]
pub use switchyard_models::{LmConfig, MoeLm};
