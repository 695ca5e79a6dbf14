//! # switchyard-analyze
//!
//! What did the experts learn? Routing traces ([`trace`]), per-layer metrics ([`metrics`]:
//! load and its CV, entropy, dead experts, domain×expert counts and NMI, top tokens and
//! n-grams, co-activation within and across layers), causal ablation ([`ablation`]), plots
//! ([`plots`], PNG + SVG) and a self-contained HTML report ([`report`]).
//!
//! ```no_run
//! # fn demo(model: &switchyard_models::MoeLm, batches: &[switchyard_data::Batch], names: &[String]) -> switchyard_analyze::Result<()> {
//! let trace = switchyard_analyze::trace::record(model, batches, names)?;
//! let metrics = switchyard_analyze::metrics::all_layers(&trace);
//! println!("layer {} NMI {:.3}", metrics[0].layer, metrics[0].nmi);
//! # Ok(()) }
//! ```
//!
//! Neighbours: models come from `switchyard-models`, data from `switchyard-data`; the CLI's
//! `switchyard analyze` and `switchyard demo` call [`analyze`].

pub mod ablation;
pub mod error;
pub mod metrics;
pub mod plots;
pub mod report;
pub mod trace;

pub use error::{AnalyzeError, Result};
pub use report::{analyze, AnalysisSummary, AnalyzeOptions};
