//! [`KernelOptions`]: the dispatch kernels' tuning knobs, passed in with each call (held by the
//! layer that runs the kernels) rather than set process-wide. None of them changes the
//! independence of the results from the thread count; some change rounding (the wave size,
//! the row tile), the others only speed and memory.

use crate::dispatch::{MIN_WGRAD_JOBS, ROW_TILE, STREAM_MIN_BYTES};

/// How the dispatch kernels cut and run their work. `KernelOptions::default()` is what
/// production runs use; the other settings exist for A/B measurements (`kernel_ab`,
/// `switchyard bench`) and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOptions {
    /// Rows per wave: `0` for the default rule (see the `dispatch` module docs),
    /// `usize::MAX` for one wave (every per-assignment temporary alive at once). Waves change
    /// memory and speed, and may change how weight-gradient GEMMs are blocked.
    pub wave_rows: usize,
    /// Rows per forward / input-gradient job: `0` for [`ROW_TILE`].
    pub row_tile: usize,
    /// Weight gradients are split into column blocks until no job exceeds 1/this of a wave's
    /// work: `0` for [`MIN_WGRAD_JOBS`].
    pub wgrad_jobs: usize,
    /// Expert gradients of at least this many bytes write their final blocks with
    /// non-temporal stores ([`STREAM_MIN_BYTES`] by default; `usize::MAX`: never, `0`: always).
    /// The same bits either way.
    pub stream_min_bytes: usize,
    /// Pack experts' weights once per wave for all their row tiles, and the backward's rows
    /// once per chunk for all column blocks (default on; off: only `gemm`, which packs per
    /// call).
    pub packing: bool,
    /// Waves finish an expert when that overfills their budget by at most a quarter, and row
    /// tiles take up to a quarter more rather than leave a small last tile (default on; off:
    /// waves of at most the budget, tiles of at most the row tile).
    pub overfill: bool,
    /// Large fresh results ask for transparent huge pages (default on; Linux only).
    pub huge_pages: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self {
            wave_rows: 0,
            row_tile: 0,
            wgrad_jobs: 0,
            stream_min_bytes: STREAM_MIN_BYTES,
            packing: true,
            overfill: true,
            huge_pages: true,
        }
    }
}

impl KernelOptions {
    /// The row tile in effect ([`Self::row_tile`], or [`ROW_TILE`] for `0`).
    pub fn row_tile(&self) -> usize {
        match self.row_tile {
            0 => ROW_TILE,
            r => r,
        }
    }

    /// The weight-gradient job count in effect ([`Self::wgrad_jobs`], or [`MIN_WGRAD_JOBS`]
    /// for `0`).
    pub fn wgrad_jobs(&self) -> usize {
        match self.wgrad_jobs {
            0 => MIN_WGRAD_JOBS,
            j => j,
        }
    }
}
