//! CPU dispatch kernels (the fast path; `switchyard_core::dispatch::dispatch_reference` is the
//! readable one):
//! gather each expert's rows, run its matmuls with `gemm`, fuse the activation, scale by the
//! routing weight and scatter back in a fixed order; plus the explicit backward.
//!
//! # Work split
//! The assignments are processed in waves (see `waves.rs`): consecutive runs of at most
//! `min(n / WAVE_PARTS, WAVE_BYTES / bytes per row)` rows (up to a quarter more to finish an
//! expert), cutting an expert only at a multiple of [`WGRAD_ROWS`]. Within a wave, jobs are
//! sized by load, not by expert: every segment's rows are cut into row tiles of about
//! [`ROW_TILE`] rows (forward and input gradient), and each segment's weight gradients into
//! column blocks of its hidden width so that no job holds more than about
//! 1/[`MIN_WGRAD_JOBS`] of the wave's work. rayon runs the jobs largest first and steals
//! single jobs.
//!
//! # Packing
//! `gemm` packs its weight operand on every call, i.e. once per row tile. Instead, before a
//! wave's tiles run, the weights of each expert whose multi-tile segments hold more row tiles
//! than there are threads are packed once (in parallel, by panels) for `gemm`'s own
//! microkernels ([`crate::packed`]), and kept for the next wave if the expert continues there;
//! the other tiles call `gemm` as before. In the backward, phase A writes each tile's `x` and
//! `gy` rows straight into per-chunk packings that all of phase B's column blocks share
//! (`gemm` would pack them again for every block). Packed and unpacked forward and
//! input-gradient products give the same bits (same microkernels, depth blocks and order of
//! accumulation; only experts of width ≥ 16 and tiles of more than 64 rows are packed, where
//! `gemm` takes its general path too), so the thread-count-dependent choice keeps results
//! independent of the thread count. The weight gradients' packed path does not depend on the
//! thread count; it can differ from `gemm`'s bits for chunks of 1–2 rows, which `gemm` runs
//! through other kernels.
//! [`KernelOptions::packing`](crate::KernelOptions::packing) turns all of it off (A/B measurements; then only `gemm` runs).
//!
//! # Determinism
//! The split depends only on the plan and the shapes, never on the thread count; every job
//! runs single-threaded `gemm` calls of fixed shapes, weight gradients accumulate row chunks
//! of [`WGRAD_ROWS`] in ascending order, and every per-token sum is taken in plan order (waves
//! add into `y` / `dx` in ascending order). So results are bitwise identical for any number of
//! threads.
//!
//! # Memory
//! Only one wave's per-assignment temporaries (forward outputs; `[dU | dV]`, `w ⊙ a`, `dX`
//! rows and the gathered `x` / `gy` rows of the backward, packed or not) are alive at a time,
//! allocated per call, plus the packed weights of the wave's experts (one expert's weights,
//! a few MB at Mixtral's shapes; buffers are reused wave to wave and allocated at exact sizes so
//! that `Recycling` reuses them call to call). Per-row activations live in per-thread workspaces; the saved pre-activations come
//! from a small process-wide pool. Large fresh results ask for transparent huge pages.
//! The expert-weight gradient is a fresh buffer owned by the returned tensor; see
//! [`backward`](crate::backward) (no zeros-then-add in candle) and [`crate::alloc::Recycling`] (reuse
//! of its memory across steps).
//!
//! # Shapes
//! `x [T, d]`, routing weights `w [n]` (one per plan assignment), flat expert parameters
//! `p [layout.total]` (see [`crate::layout`]), output `y [T, d]`.

//!
//! # Files
//! `buffers.rs` (workspaces, the pool, huge pages, the gradient buffer), `waves.rs` (waves, row
//! tiles and weight-gradient column blocks), `packing.rs` (experts' weights packed once per
//! wave), `forward.rs`, `backward.rs`, and `op.rs` (the candle custom op and [`crate::backward`]).

mod backward;
mod buffers;
mod forward;
pub mod op;
mod packing;
mod waves;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use backward::{backward, Grads};
pub use buffers::{clear_pool, pooled_bytes, PoolBuf, Saved, Workspace};
pub use forward::forward;
pub use op::{check_inputs, dispatch, MoeDispatchOp};
pub use waves::up_width;

use crate::act;
use crate::gemm::GemmFloat;

/// Rows in one forward / input-gradient job: at most this many, or up to a quarter more
/// rather than a small last tile (rows are split evenly across a segment's tiles). 256 rows of
/// d = 512 in f32 are 512 KiB, so a tile's operands stay in a core's L2.
pub const ROW_TILE: usize = 256;
/// Rows per accumulation step of a weight-gradient job.
pub const WGRAD_ROWS: usize = 512;
/// Weight gradients are split into column blocks until no job exceeds 1/this of the work.
pub const MIN_WGRAD_JOBS: usize = 16;
/// Column blocks start at multiples of this (one AVX-512 register of f32).
const COL_ALIGN: usize = 16;
/// Tokens per scatter job.
const TOKEN_BLOCK: usize = 64;
/// A wave (see `waves`) holds at most about 1/this of the assignments...
pub const WAVE_PARTS: usize = 8;
/// ...and its per-row temporaries at most about this many bytes (but at least
/// [`WGRAD_ROWS`] rows).
pub const WAVE_BYTES: usize = 8 << 20;
/// Buffers the pool keeps between calls.
const POOL_MAX: usize = 8;

/// Expert gradients of at least this many bytes are written with non-temporal stores where an
/// expert's weight-gradient block is final in one job (the job's segment holds all the
/// expert's rows): computed in a per-thread block that stays in cache, then streamed out
/// (`act::stream_copy`), since a plain store reads every line before writing it. Blocks that a
/// later wave adds to keep the plain stores (streaming would send them to memory only to read
/// them back). The default was chosen by A/B measurement (`kernel_ab`,
/// `SWITCHYARD_AB_STREAM_MIN`; see docs/PERFORMANCE.md).
pub const STREAM_MIN_BYTES: usize = 1 << 30;
/// ...and only blocks of at most this many bytes, which stay in a core's L2 between the
/// product and the copy.
const STREAM_BLOCK_MAX: usize = 1 << 20;

/// Expert-weight operands packed once for several row tiles, and weight-gradient blocks
/// streamed out, since the process started: diagnostics counters (not knobs), for tests.
static PACKINGS: AtomicUsize = AtomicUsize::new(0);
static STREAMED: AtomicUsize = AtomicUsize::new(0);

/// How many expert-weight operands the kernels have packed once for several row tiles since
/// the process started (see [`KernelOptions::packing`](crate::KernelOptions::packing)); for
/// tests and diagnostics.
pub fn packings() -> usize {
    PACKINGS.load(Ordering::Relaxed)
}

/// Weight-gradient blocks streamed out so far (process-wide), for tests.
pub fn streamed_blocks() -> usize {
    STREAMED.load(Ordering::Relaxed)
}

/// The float types the kernels run in (f32 in production, f64 for gradient checks).
pub trait KFloat:
    GemmFloat + num_traits::Float + Send + Sync + Default + std::iter::Sum + 'static
{
    fn erf(self) -> Self;
    /// `e^x`; vectorisable for f32 (see `act::exp_f32`).
    fn fast_exp(self) -> Self;
    /// Runs `f` with this thread's workspace.
    fn with_ws<R>(f: impl FnOnce(&mut Workspace<Self>) -> R) -> R;
    /// The process-wide pool of large buffers.
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

macro_rules! kfloat {
    ($t:ident, $erf:path, $exp:expr) => {
        impl KFloat for $t {
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn fast_exp(self) -> Self {
                $exp(self)
            }
            fn with_ws<R>(f: impl FnOnce(&mut Workspace<Self>) -> R) -> R {
                thread_local! {
                    static WS: RefCell<Workspace<$t>> = RefCell::new(Workspace::default());
                }
                WS.with(|w| f(&mut w.borrow_mut()))
            }
            fn pool() -> &'static Mutex<Vec<Vec<Self>>> {
                static POOL: Mutex<Vec<Vec<$t>>> = Mutex::new(Vec::new());
                &POOL
            }
        }
    };
}
kfloat!(f32, libm::erff, act::exp_f32);
kfloat!(f64, libm::erf, f64::exp);

#[cfg(test)]
/// A plan of `tokens` tokens where expert `e` gets `rows[e]` of them (one assignment per
/// token).
fn plan_of(rows: &[usize]) -> crate::DispatchPlan {
    let mut pairs = Vec::new();
    let mut t = 0u32;
    for (e, &n) in rows.iter().enumerate() {
        for _ in 0..n {
            pairs.push((t, e as u32));
            t += 1;
        }
    }
    crate::DispatchPlan::from_assignments(t as usize, rows.len(), &pairs).unwrap()
}
