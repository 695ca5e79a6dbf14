//! Optional phase timers of the dispatch kernels, for `switchyard bench`'s routing share.
//! Off by default; when on, each job adds its thread time to process-wide counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static GATHER_SCATTER_NS: AtomicU64 = AtomicU64::new(0);
static TOTAL_NS: AtomicU64 = AtomicU64::new(0);

/// Thread time summed over the kernels' jobs since the last [`take`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchProfile {
    /// Gathering token rows into expert blocks and scattering outputs back to tokens.
    pub gather_scatter_ns: u64,
    /// Everything the kernels' jobs did (matmuls, activations, gather, scatter).
    pub total_ns: u64,
}

impl DispatchProfile {
    pub fn gather_scatter_share(&self) -> f64 {
        self.gather_scatter_ns as f64 / self.total_ns.max(1) as f64
    }
}

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Returns the counters and resets them.
pub fn take() -> DispatchProfile {
    DispatchProfile {
        gather_scatter_ns: GATHER_SCATTER_NS.swap(0, Ordering::Relaxed),
        total_ns: TOTAL_NS.swap(0, Ordering::Relaxed),
    }
}

/// Which counter a timed section adds to.
#[derive(Clone, Copy)]
pub(crate) enum Phase {
    GatherScatter,
    Total,
}

/// Runs `f`, adding its duration to `phase` when profiling is on.
#[inline]
pub(crate) fn timed<R>(phase: Phase, f: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let r = f();
    let ns = start.elapsed().as_nanos() as u64;
    match phase {
        Phase::GatherScatter => GATHER_SCATTER_NS.fetch_add(ns, Ordering::Relaxed),
        Phase::Total => TOTAL_NS.fetch_add(ns, Ordering::Relaxed),
    };
    r
}
