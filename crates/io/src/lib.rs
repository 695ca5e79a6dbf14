//! # switchyard-io
//!
//! Run directories and everything read from or written to them, in one place below the
//! trainer (`switchyard-train`) and the HF converter (`switchyard-interop`), which share
//! checkpoints through this crate rather than through each other:
//! - [`run_dir`]: [`RunDir`], the file names of a run directory (`latest`, `step-*`,
//!   `tokenizer.json`, `hf_source.json`, …), the `latest` pointer and the sidecar files;
//! - [`checkpoint`]: crash-safe, checksummed checkpoint directories (DESIGN.md §5): save,
//!   load, restore into a `ParamStore`, the memory check before loading;
//! - [`finite`]: the scan for NaN and infinity that loaders run on every tensor they read;
//! - [`state`]: `state.json`, [`TrainState`] and [`RngState`];
//! - [`buffers`]: router buffers under their `state.json` keys;
//! - [`load`]: one loader from a run or step directory to a ready [`MoeLm`](switchyard_models::MoeLm)
//!   with its tokenizer and origin ([`LoadedModel`]); `switchyard_interop::load_any` adds HF
//!   directories on top.
//!
//! ```no_run
//! use switchyard_io::{load_checkpoint_model, ModelSource};
//!
//! let m = switchyard_io::load_checkpoint_model("runs/demo/moe".as_ref())?;
//! let ids = m.text_tokenizer().encode("hello");
//! if let ModelSource::Checkpoint { step, .. } = m.source {
//!     println!("step {step}: {} parameters, {} ids", m.model.num_params_total(), ids.len());
//! }
//! # Ok::<(), switchyard_io::LoadError>(())
//! ```
//!
//! File names and formats are stable: checkpoints written by earlier versions load unchanged
//! (`state.json` carries a format version; see [`state::FORMAT_VERSION`]).

pub mod buffers;
pub mod checkpoint;
pub mod error;
pub mod finite;
pub mod fsio;
pub mod load;
pub mod run_dir;
pub mod state;

pub use buffers::{buffer_key, gate_in_key, load_router_buffers, router_buffers};
pub use checkpoint::{
    check_load_fits, load_checkpoint, restore_into, save_checkpoint, save_checkpoint_with,
    Checkpoint, CheckpointContents, SaveOptions,
};
pub use error::{CheckpointError, LoadError};
pub use finite::{non_finite, NonFinite};
pub use fsio::{mem_available_bytes, FileDigest};
pub use load::{
    load_checkpoint_model, model_config, model_from_checkpoint, LoadedModel, ModelSource,
};
pub use run_dir::{
    carried_file, find_step_dir, HfSource, RunDir, CONFIG_FILE, HF_SOURCE_FILE, LATEST_FILE,
    METRICS_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
pub use state::{RngState, TrainState, FORMAT_VERSION};
pub use switchyard_models::memory::MEMORY_LIMIT_VAR;
