//! # switchyard-bench
//!
//! The benchmark suite behind `switchyard bench`: Switchyard's MoE layers and kernels measured
//! against the machine's dense-GEMM ceiling, in one process, so every ratio compares numbers
//! taken minutes apart on the same machine under the same load.
//!
//! What it measures (see `docs/PERFORMANCE.md` for results and the exact commands):
//! - `gemm_1024` / `candle_matmul_1024`: a 1024³ f32 GEMM through `gemm` directly and through
//!   candle's `Tensor::matmul` (both on the AVX-512 path through cargo's feature unification),
//!   and `gemm_1024_avx2` forced onto the AVX2 kernels for comparison;
//! - `<config>:dense_ceiling`: the dense GEMMs of a layer with the same active FLOPs (a dense
//!   SwiGLU FFN of width `k·h` plus the gate, forward and backward) — the ceiling;
//! - `<config>`: the MoE layer (gate, top-k router, plan, dispatch kernel, auxiliary losses),
//!   forward and forward+backward through candle's autodiff, i.e. what training runs;
//!   each row carries its ratio to the ceiling, and the fwd+bwd rows the share of time spent
//!   outside the experts' matmuls (gate, routing, plan, gather/scatter);
//! - an E sweep from 8 to 1024 experts at equal active FLOPs ([`shapes::sweep`]).
//!
//! ```no_run
//! use switchyard_bench::{run, BenchOpts};
//! let rows = run(&BenchOpts { quick: true, ..Default::default() })?;
//! print!("{}", switchyard_bench::format_table(&rows));
//! # Ok::<(), switchyard_bench::BenchError>(())
//! ```
//!
//! Neighbours: `switchyard-core` holds the kernels measured here; `switchyard-cli` exposes this
//! crate as `switchyard bench`; `scripts/peers/moe_peers.py` runs the same shapes in PyTorch.

pub mod ceiling;
pub mod layer;
pub mod report;
pub mod shapes;
pub mod timing;

use std::path::PathBuf;

use serde::Serialize;

pub use report::{format_table, to_json_lines, write_json};
pub use shapes::LayerShape;

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("unknown benchmark config `{0}` (known: mixtral8, fine64, sweep_e<E>)")]
    UnknownConfig(String),
    #[error("thread count must be at least 1")]
    ZeroThreads,
    #[error("building a rayon pool of {threads} threads: {source}")]
    Pool {
        threads: usize,
        source: rayon::ThreadPoolBuildError,
    },
    #[error("benchmark `{what}`: {source}")]
    Moe {
        what: String,
        source: switchyard_core::MoeError,
    },
    #[error("benchmark `{what}`: {source}")]
    Candle {
        what: String,
        source: candle_core::Error,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, BenchError>;

/// Live and peak heap bytes, supplied by a binary that installs a counting global allocator
/// (the library itself never replaces the allocator).
pub trait MemProbe: Sync {
    fn live_bytes(&self) -> usize;
    fn peak_bytes(&self) -> usize;
    /// Sets the peak to the current live bytes.
    fn reset_peak(&self);
    /// Turns the binary's recycling of large freed blocks on or off
    /// (`switchyard_kernels::alloc::Recycling`), where it has one.
    fn set_recycling(&self, _on: bool) {}
}

/// What to run.
#[derive(Clone)]
pub struct BenchOpts {
    /// Small token counts and few repetitions: seconds, for tests and smoke runs.
    pub quick: bool,
    /// Thread counts; each runs every measurement inside a rayon pool of that size, with
    /// `RAYON_NUM_THREADS` set so candle's own matmuls use the same count.
    pub threads: Vec<usize>,
    /// Named layer configs ([`shapes::named`]).
    pub configs: Vec<String>,
    /// Also run the E sweep (at the largest thread count).
    pub sweep: bool,
    /// Timed repetitions per measurement (median reported); `None`: 5, or 2 with `quick`.
    pub reps: Option<usize>,
    /// Peak-memory measurement of fwd+bwd, when the binary has a counting allocator.
    pub mem: Option<&'static dyn MemProbe>,
}

impl Default for BenchOpts {
    fn default() -> Self {
        Self {
            quick: false,
            threads: vec![1, 2],
            configs: vec!["mixtral8".into(), "fine64".into()],
            sweep: false,
            reps: None,
            mem: None,
        }
    }
}

impl BenchOpts {
    fn reps(&self) -> usize {
        self.reps.unwrap_or(if self.quick { 2 } else { 5 }).max(1)
    }
}

/// One measurement.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchRow {
    /// `mixtral8`, `fine64`, `sweep_e256`, `<config>:dense_ceiling`, `gemm_1024`, ...
    pub config: String,
    /// `fwd`, `fwd_bwd`, or `matmul` for the 1024³ rows.
    pub mode: String,
    pub threads: usize,
    pub experts: usize,
    pub k: usize,
    pub d: usize,
    pub h: usize,
    pub tokens: usize,
    /// Median wall time of one call.
    pub seconds: f64,
    /// Active FLOPs per second (see [`LayerShape::flops`]), in 1e9.
    pub gflops: f64,
    /// This row's GFLOP/s over the dense ceiling's for the same config, mode and threads
    /// (`gemm_1024` for the matmul rows).
    pub ratio_to_ceiling: f64,
    pub ceiling_gflops: f64,
    pub ns_per_token: f64,
    /// fwd+bwd layer rows: share of layer time outside the experts' matmuls and activations:
    /// gate, router (top-k, plan, weights, losses, stats), gather and scatter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_share: Option<f64>,
    /// The part of `routing_share` outside the dispatch op: gate, router, plan, routing
    /// weights, auxiliary losses and statistics, forward and backward, timed directly
    /// (`MoeLayer::route_only`) alternately with the layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_router_share: Option<f64>,
    /// The part of `routing_share` inside the dispatch op (gathering rows, scattering outputs):
    /// their share of the kernels' thread time (phase timers) times the layer's non-routing
    /// share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gather_scatter_share: Option<f64>,
    /// Bytes alive after the forward beyond those before it: output, saved activations and
    /// the routing tensors the backward needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_bytes: Option<usize>,
    /// Peak bytes during forward+backward beyond those before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_bytes: Option<usize>,
    /// Bytes of the gradients the backward returns (input and parameters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_bytes: Option<usize>,
    /// `(peak − gradients) / kept`: transient memory over what must be kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_mem_ratio: Option<f64>,
}

/// What `switchyard bench` does: [`run`], then the table as a string, and the JSON rows
/// written to `json` when given.
pub fn run_and_report(opts: &BenchOpts, json: Option<&std::path::Path>) -> Result<String> {
    let rows = run(opts)?;
    if let Some(path) = json {
        write_json(path, &rows)?;
    }
    Ok(format_table(&rows))
}

/// Runs the suite and returns one row per measurement.
pub fn run(opts: &BenchOpts) -> Result<Vec<BenchRow>> {
    let mut shapes = Vec::new();
    for name in &opts.configs {
        shapes.push(
            shapes::named(name, opts.quick)
                .ok_or_else(|| BenchError::UnknownConfig(name.clone()))?,
        );
    }
    if opts.threads.contains(&0) {
        return Err(BenchError::ZeroThreads);
    }
    let reps = opts.reps();
    let mut rows = Vec::new();
    let max_threads = opts.threads.iter().copied().max().unwrap_or(1);
    for (ti, &threads) in opts.threads.iter().enumerate() {
        timing::with_threads(threads, || -> Result<()> {
            rows.extend(ceiling::matmul_1024_rows(threads, reps)?);
            for s in &shapes {
                let mem = if ti == 0 { opts.mem } else { None };
                rows.extend(layer::measure(
                    s,
                    threads,
                    reps,
                    mem,
                    true,
                    &["fwd", "fwd_bwd"],
                )?);
            }
            if opts.sweep && threads == max_threads {
                for s in shapes::sweep(opts.quick) {
                    rows.extend(layer::measure(
                        &s,
                        threads,
                        reps,
                        None,
                        false,
                        &["fwd_bwd"],
                    )?);
                }
            }
            Ok(())
        })??;
    }
    Ok(rows)
}
