//! CPU dispatch kernels (the fast path; [`super::dispatch_reference`] is the readable one):
//! gather each expert's rows, run its matmuls with `gemm`, fuse the activation, scale by the
//! routing weight and scatter back in a fixed order; plus the explicit backward.
//!
//! # Work split
//! The assignments are processed in waves (see `waves`): consecutive runs of at most
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
//! microkernels (`super::packed`), and kept for the next wave if the expert continues there;
//! the other tiles call `gemm` as before. In the backward, phase A writes each tile's `x` and
//! `gy` rows straight into per-chunk packings that all of phase B's column blocks share
//! (`gemm` would pack them again for every block). Packed and unpacked forward and
//! input-gradient products give the same bits (same microkernels, depth blocks and order of
//! accumulation; only experts of width ≥ 16 and tiles of more than 64 rows are packed, where
//! `gemm` takes its general path too), so the thread-count-dependent choice keeps results
//! independent of the thread count. The weight gradients' packed path does not depend on the
//! thread count; it can differ from `gemm`'s bits for chunks of 1–2 rows, which `gemm` runs
//! through other kernels.
//! [`set_packing`] turns all of it off (A/B measurements; then only `gemm` runs).
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
//! 6 MB at mixtral8's shapes; buffers are reused wave to wave and allocated at exact sizes so
//! that `Recycling` reuses them call to call). Per-row activations live in per-thread workspaces; the saved pre-activations come
//! from a small process-wide pool. Large fresh results ask for transparent huge pages.
//! The expert-weight gradient is a fresh buffer owned by the returned tensor; see
//! [`super::backward`] (no zeros-then-add in candle) and [`super::alloc::Recycling`] (reuse
//! of its memory across steps).
//!
//! # Shapes
//! `x [T, d]`, routing weights `w [n]` (one per plan assignment), flat expert parameters
//! `p [layout.total]` (see `expert.rs`), output `y [T, d]`.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use super::act;
use super::gemm::{mm, GemmFloat};
use super::packed::{mm_packed, mm_packed_strided_raw, PackedB, RowWriter, Ukr};
use super::profile::{timed, Phase};
use crate::expert::{ExpertLayout, ExpertSlot};
use crate::plan::DispatchPlan;

/// Rows in one forward / input-gradient job: at most this many, or up to a quarter more
/// rather than a small last tile (rows are split evenly across a segment's tiles). 256 rows of d=512 f32 is 512 KiB: a tile's operands stay in L2.
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

/// Per-thread scratch: gathered rows and activations of the job at hand.
#[derive(Default)]
pub struct Workspace<T> {
    xe: Vec<T>,
    a: Vec<T>,
    /// A weight-gradient job's block of `[dU | dV]` or `w ⊙ a`, packed for the microkernel.
    apack: Vec<T>,
    /// A weight-gradient job's result block, when it is streamed to the gradient afterwards
    /// (see [`STREAM_MIN_BYTES`]).
    wblock: Vec<T>,
}

fn grown<T: KFloat>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::zero());
    }
    &mut v[..len]
}

/// A large buffer borrowed from the pool; its contents start stale, so every user writes
/// each element before reading it. Returns to the pool when dropped.
pub struct PoolBuf<T: KFloat>(Vec<T>);

impl<T: KFloat> PoolBuf<T> {
    fn take(len: usize) -> Self {
        let mut pool = T::pool().lock().expect("buffer pool poisoned");
        // the smallest buffer that fits, else the largest (grown below)
        let pick = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
        let mut v = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, T::zero());
        }
        Self(v)
    }
}

impl<T: KFloat> Drop for PoolBuf<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        if let Ok(mut pool) = T::pool().lock() {
            if pool.len() < POOL_MAX {
                pool.push(v);
            }
        }
    }
}

impl<T: KFloat> Deref for PoolBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: KFloat> DerefMut for PoolBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

/// Bytes held by the buffer pools between calls (per-thread workspaces not included).
pub fn pooled_bytes() -> usize {
    fn of<T: KFloat>() -> usize {
        T::pool().lock().map_or(0, |p| {
            p.iter()
                .map(|v| v.capacity() * std::mem::size_of::<T>())
                .sum()
        })
    }
    of::<f32>() + of::<f64>()
}

/// Frees the pooled buffers (for memory measurements that start cold).
pub fn clear_pool() {
    fn of<T: KFloat>() {
        if let Ok(mut p) = T::pool().lock() {
            p.clear();
        }
    }
    of::<f32>();
    of::<f64>();
}

/// Activations saved by the forward for the backward: per assignment, the row of
/// pre-activations `[u | v]` (`v` for SwiGLU only), each expert's block `[n_e, uw_e]` one
/// after the other (`uw_e` = [`up_width`]).
pub struct Saved<T: KFloat> {
    pub uv: PoolBuf<T>,
}

/// Columns of an expert's up projection: `h` (FFN: `W1`) or `2h` (SwiGLU: `W1` and `W3`,
/// adjacent in the packed parameters, so one GEMM computes `[u | v] = x·[W1; W3]ᵀ`).
pub fn up_width(s: &ExpertSlot) -> usize {
    s.spec.hidden * if s.w3.is_some() { 2 } else { 1 }
}

/// Rows `r0..r1` (counted inside expert `e`'s range) of one job.
#[derive(Clone, Copy, Debug)]
struct Tile {
    e: usize,
    r0: usize,
    r1: usize,
}

/// Rows of some experts processed together: segments `(e, r0..r1)` in plan order, covering the
/// assignments `a0..a1` without gaps. An expert appears at most once per wave; a segment
/// that does not end its expert ends at a multiple of [`WGRAD_ROWS`], so the weight-gradient
/// row chunks are the same whatever the waves.
struct Wave {
    segs: Vec<Tile>,
    a0: usize,
    a1: usize,
}

impl Wave {
    /// The wave's segments cut into near-equal row tiles of at most [`ROW_TILE`] rows.
    fn tiles(&self) -> Vec<Tile> {
        let mut tiles = Vec::new();
        for g in &self.segs {
            let n = g.r1 - g.r0;
            let parts = tile_count(n);
            tiles.extend((0..parts).map(|i| Tile {
                e: g.e,
                r0: g.r0 + i * n / parts,
                r1: g.r0 + (i + 1) * n / parts,
            }));
        }
        tiles
    }

    fn rows(&self) -> usize {
        self.a1 - self.a0
    }
}

/// Row tiles of a segment of `n` rows: tiles of at most [`ROW_TILE`] rows, except that up to
/// a quarter more is taken rather than a small last tile (530 rows: two tiles of 265, not
/// three of 177, which two threads would run in two rounds).
fn tile_count(n: usize) -> usize {
    tile_count_for(n, row_tile(), OVERFILL.load(Ordering::Relaxed))
}

fn tile_count_for(n: usize, tile: usize, overfill: bool) -> usize {
    n.div_ceil(tile + tile / 4 * usize::from(overfill))
}

impl Wave {
    /// Elements of a per-row buffer of `width(e)` columns over the wave.
    fn len(&self, layout: &ExpertLayout, width: impl Fn(&ExpertSlot) -> usize) -> usize {
        self.segs
            .iter()
            .map(|g| (g.r1 - g.r0) * width(&layout.slots[g.e]))
            .sum()
    }
}

/// The waves processed one after the other: consecutive assignments, at most `budget` rows
/// each (`min(n / WAVE_PARTS, WAVE_BYTES / bytes per row)`, rounded down to a multiple of
/// [`WGRAD_ROWS`], at least one), or up to a quarter more to finish an expert. Only the
/// current wave's per-assignment temporaries are alive at a time. Depends on the plan and the
/// shapes only.
fn waves<T>(layout: &ExpertLayout, plan: &DispatchPlan) -> Vec<Wave> {
    let row_bytes = layout
        .slots
        .iter()
        .map(|s| up_width(s) + s.spec.hidden + 3 * layout.d_model)
        .max()
        .unwrap_or(1)
        * std::mem::size_of::<T>();
    let budget = match WAVE_ROWS.load(Ordering::Relaxed) {
        0 => (WAVE_BYTES / row_bytes).min(plan.len().div_ceil(WAVE_PARTS)),
        rows => rows,
    };
    let budget = if budget >= plan.len() {
        plan.len().max(1)
    } else {
        budget.max(WGRAD_ROWS) / WGRAD_ROWS * WGRAD_ROWS
    };
    let mut out = Vec::new();
    let mut segs = Vec::new();
    let mut rows = 0;
    let close = |segs: &mut Vec<Tile>, rows: &mut usize, out: &mut Vec<Wave>| {
        if let (Some(f), Some(l)) = (segs.first(), segs.last()) {
            let (f, l): (&Tile, &Tile) = (f, l);
            out.push(Wave {
                a0: plan.offsets[f.e] as usize + f.r0,
                a1: plan.offsets[l.e] as usize + l.r1,
                segs: std::mem::take(segs),
            });
        }
        *rows = 0;
    };
    // a wave takes the rest of an expert whole when it overfills the budget by at most a
    // quarter, rather than leaving a wave of a few remainder rows (one small job, the other
    // threads idle)
    let slack = if budget >= plan.len() || !OVERFILL.load(Ordering::Relaxed) {
        0
    } else {
        budget / 4
    };
    for e in 0..plan.num_experts {
        let n = plan.range(e).len();
        let mut r = 0;
        while r < n {
            let mut end = n.min(r + (budget - rows));
            if end < n && n - r <= budget + slack - rows {
                end = n;
            }
            if end < n {
                end = end / WGRAD_ROWS * WGRAD_ROWS;
                if end <= r {
                    close(&mut segs, &mut rows, &mut out);
                    continue;
                }
            }
            segs.push(Tile { e, r0: r, r1: end });
            rows += end - r;
            r = end;
            if rows >= budget {
                close(&mut segs, &mut rows, &mut out);
            }
        }
    }
    close(&mut segs, &mut rows, &mut out);
    out
}

/// Start of each expert's `[n_e, width(e)]` block in a per-assignment buffer, and the total.
fn block_offsets(
    layout: &ExpertLayout,
    plan: &DispatchPlan,
    width: impl Fn(&ExpertSlot) -> usize,
) -> Vec<usize> {
    let mut off = Vec::with_capacity(layout.num_experts() + 1);
    off.push(0);
    for (e, s) in layout.slots.iter().enumerate() {
        off.push(off[e] + plan.range(e).len() * width(s));
    }
    off
}

/// Splits `buf` into consecutive mutable chunks of the given lengths.
fn split_lens<T>(mut buf: &mut [T], lens: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for len in lens {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(len);
        out.push(head);
        buf = tail;
    }
    out
}

fn gather<T: KFloat>(src: &[T], d: usize, tokens: &[u32], dst: &mut [T]) {
    for (row, &t) in dst.chunks_exact_mut(d).zip(tokens) {
        row.copy_from_slice(&src[t as usize * d..(t as usize + 1) * d]);
    }
}

/// Runs the jobs on the rayon pool, largest `work` first, each stealable on its own.
fn run_jobs<J: Send>(mut jobs: Vec<J>, work: impl Fn(&J) -> usize, f: impl Fn(J) + Sync + Send) {
    jobs.sort_by_key(|j| std::cmp::Reverse(work(j)));
    jobs.into_par_iter()
        .with_max_len(1)
        .for_each(|j| timed(Phase::Total, || f(j)));
}

/// One way the kernels read an expert's weights as the `B` of `C = A · B`: `B [k, n]` at
/// `p[at..]` with `(row, column)` strides.
#[derive(Clone, Copy)]
struct Form {
    at: usize,
    k: usize,
    n: usize,
    strides: (usize, usize),
}

/// The two weight operands of a pass: forward `[W1; W3]ᵀ` (up) and `W2t` (down); backward
/// `W2tᵀ` (for `dA`) and `[W1; W3]` (for `dX`).
fn forms(s: &ExpertSlot, d: usize, backward: bool) -> [Form; 2] {
    let (h, uw) = (s.spec.hidden, up_width(s));
    if backward {
        [
            Form {
                at: s.w2t,
                k: d,
                n: h,
                strides: (1, d),
            },
            Form {
                at: s.w1,
                k: uw,
                n: d,
                strides: (d, 1),
            },
        ]
    } else {
        [
            Form {
                at: s.w1,
                k: d,
                n: uw,
                strides: (1, d),
            },
            Form {
                at: s.w2t,
                k: h,
                n: d,
                strides: (d, 1),
            },
        ]
    }
}

/// The smallest spare buffer of at least `len` elements, else a new empty one (which
/// `PackedB::new` allocates at its exact size).
fn take_spare<T>(spare: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let best = (0..spare.len())
        .filter(|&i| spare[i].capacity() >= len)
        .min_by_key(|&i| spare[i].capacity());
    best.map(|i| spare.swap_remove(i)).unwrap_or_default()
}

/// Experts whose hidden width or model width is below this keep `gemm` (see `WavePacks::new`).
const MIN_PACK_WIDTH: usize = 16;

/// Whether a segment of `n` rows may use packed weights: it has several tiles' worth of rows,
/// and its tiles have more than 64 rows, so that `gemm` would run them through its general
/// path too (for ≤ 64 rows and a narrow output it picks other depth blocks, which sum in
/// another order; see `WavePacks::new`) — whatever `set_row_tile` says.
fn packable(n: usize) -> bool {
    packable_for(n, row_tile(), OVERFILL.load(Ordering::Relaxed))
}

fn packable_for(n: usize, tile: usize, overfill: bool) -> bool {
    n > tile && n / tile_count_for(n, tile, overfill) > 64
}

/// Panels per packing job (of `MR` columns each), for weights read transposed...
const PACK_PANELS: usize = 4;
/// ...and rows per packing job for weights whose rows are contiguous.
const PACK_ROWS: usize = 64;

/// The weights of the current wave's experts, packed once for all their row tiles (see
/// [`super::packed`]); segments of at most one row tile keep calling `gemm`, which packs
/// per call anyway. An expert that continues into the next wave keeps its packing.
struct WavePacks<T: 'static> {
    ukr: Option<Ukr<T>>,
    /// `(expert, its two packed forms)`, ascending by expert.
    cur: Vec<(usize, [PackedB<T>; 2])>,
    spare: Vec<Vec<T>>,
    /// Which experts get packed (see [`Self::new`]).
    pack_expert: Vec<bool>,
}

impl<T: KFloat> WavePacks<T> {
    /// Packing an expert once pays when the row tiles that would share the packing (those of
    /// its segments of more than one tile, over all waves) outnumber the threads; otherwise
    /// its tiles run side by side, each `gemm` call packing in parallel with the others, and
    /// a shared packing only adds a synchronisation.
    fn new(layout: &ExpertLayout, waves: &[Wave]) -> Self {
        let ukr = if PACKING.load(Ordering::Relaxed) {
            T::microkernels()
        } else {
            None
        };
        let mut tiles = vec![0; layout.num_experts()];
        for g in waves.iter().flat_map(|w| &w.segs) {
            if packable(g.r1 - g.r0) {
                tiles[g.e] += tile_count(g.r1 - g.r0);
            }
        }
        let threads = rayon::current_num_threads();
        // `gemm` runs products with a side of 1 or a depth of 1–2 (and some of at most 256
        // entries) through gemv / dot-product kernels that sum in another order; the packed
        // path must give `gemm`'s bits, so tiny experts keep `gemm`
        let wide =
            |s: &ExpertSlot| s.spec.hidden >= MIN_PACK_WIDTH && layout.d_model >= MIN_PACK_WIDTH;
        Self {
            ukr,
            cur: Vec::new(),
            spare: Vec::new(),
            pack_expert: tiles
                .into_iter()
                .zip(&layout.slots)
                .map(|(t, s)| t > threads && wide(s))
                .collect(),
        }
    }

    /// Packs the wave's experts that need it (in parallel, by panel ranges).
    fn prepare(&mut self, layout: &ExpertLayout, wave: &Wave, p: &[T], backward: bool) {
        let Some(ukr) = self.ukr else { return };
        let want: Vec<usize> = wave
            .segs
            .iter()
            .filter(|g| packable(g.r1 - g.r0) && self.pack_expert[g.e])
            .map(|g| g.e)
            .collect();
        let (keep, drop): (Vec<_>, Vec<_>) = std::mem::take(&mut self.cur)
            .into_iter()
            .partition(|(e, _)| want.contains(e));
        for (_, packs) in drop {
            self.spare.extend(packs.into_iter().map(PackedB::into_buf));
        }
        let d = layout.d_model;
        let mut fresh = Vec::new();
        for &e in &want {
            if keep.iter().any(|(k, _)| *k == e) {
                continue;
            }
            let f = forms(&layout.slots[e], d, backward);
            let packs = f.map(|f| {
                let buf = take_spare(&mut self.spare, PackedB::buffer_len(f.k, f.n, ukr));
                PackedB::new(buf, f.k, f.n, row_tile(), ukr)
            });
            fresh.push((e, packs, f));
        }
        {
            let packers: Vec<_> = fresh
                .iter_mut()
                .flat_map(|(_, packs, f)| {
                    packs
                        .iter_mut()
                        .zip(f.iter())
                        .map(|(pb, f)| pb.packer(&p[f.at..], f.strides))
                })
                .collect();
            // weights whose packed rows are rows of their storage: jobs of whole rows (read in
            // order); transposed ones: jobs of panels (each reads its rows of the storage)
            let mut jobs = Vec::new();
            for (i, pk) in packers.iter().enumerate() {
                if pk.rows_contiguous() {
                    let rows = pk.rows();
                    jobs.extend(
                        (0..rows)
                            .step_by(PACK_ROWS)
                            .map(|r0| (i, true, r0, (r0 + PACK_ROWS).min(rows))),
                    );
                } else {
                    let panels = pk.panels();
                    jobs.extend(
                        (0..panels)
                            .step_by(PACK_PANELS)
                            .map(|p0| (i, false, p0, (p0 + PACK_PANELS).min(panels))),
                    );
                }
            }
            // SAFETY: every job packs its own row or panel range of its own packing, and a
            // packing gets only one kind of range
            run_jobs(
                jobs,
                |j| (j.3 - j.2) * if j.1 { 1 } else { PACK_ROWS / PACK_PANELS },
                |(i, by_rows, a, b)| unsafe {
                    if by_rows {
                        packers[i].pack_rows(a, b)
                    } else {
                        packers[i].pack(a, b)
                    }
                },
            );
        }
        PACKINGS.fetch_add(2 * fresh.len(), Ordering::Relaxed);
        self.cur = keep;
        self.cur
            .extend(fresh.into_iter().map(|(e, packs, _)| (e, packs)));
        self.cur.sort_by_key(|(e, _)| *e);
    }

    /// `C[m, n] (+)= A · B` for form `which` of expert `e`'s weights: from the packing when
    /// the wave has one, else through `gemm`.
    #[allow(clippy::too_many_arguments)]
    fn mm(
        &self,
        layout: &ExpertLayout,
        p: &[T],
        e: usize,
        which: usize,
        backward: bool,
        m: usize,
        c: &mut [T],
        a: &[T],
        a_rs: usize,
    ) {
        match self.cur.binary_search_by_key(&e, |(x, _)| *x) {
            Ok(i) => mm_packed(m, c, false, a, a_rs, &self.cur[i].1[which]),
            Err(_) => {
                let f = forms(&layout.slots[e], layout.d_model, backward)[which];
                mm(
                    m,
                    f.n,
                    f.k,
                    c,
                    false,
                    a,
                    (a_rs, 1),
                    &p[f.at..],
                    f.strides,
                    false,
                )
            }
        }
    }
}

/// Token-major view of a plan for the scatters: `(off, idx)` of [`DispatchPlan::by_token`]
/// and, per token, the first of its assignments not yet added.
struct Scatter {
    off: Vec<u32>,
    idx: Vec<u32>,
    cur: Vec<u32>,
}

impl Scatter {
    fn new(plan: &DispatchPlan) -> Self {
        let (off, idx) = plan.by_token();
        let cur = off[..plan.num_tokens].to_vec();
        Self { off, idx, cur }
    }

    /// `y[t] += Σ rows[a − a0]` over token `t`'s assignments `a ∈ a0..a1`, in plan order;
    /// rows are already scaled. Waves call this in ascending order, so every token's sum runs
    /// in plan order from zero, as one pass over all assignments would.
    fn add<T: KFloat>(&mut self, y: &mut [T], rows: &[T], d: usize, a0: usize, a1: usize) {
        let (off, idx) = (&self.off, &self.idx);
        y.par_chunks_mut(TOKEN_BLOCK * d)
            .zip(self.cur.par_chunks_mut(TOKEN_BLOCK))
            .enumerate()
            .for_each(|(b, (yb, cb))| {
                timed(Phase::Total, || {
                    timed(Phase::GatherScatter, || {
                        act::sum_rows(yb, rows, off, idx, cb, b * TOKEN_BLOCK, d, a0, a1)
                    })
                })
            });
    }
}

static WAVE_ROWS: AtomicUsize = AtomicUsize::new(0);
static ROW_TILE_OVERRIDE: AtomicUsize = AtomicUsize::new(0);
static WGRAD_JOBS_OVERRIDE: AtomicUsize = AtomicUsize::new(0);

/// Overrides [`MIN_WGRAD_JOBS`] for the whole process (`0`: the default), for A/B
/// measurements; like the other knobs it never makes results depend on the thread count.
pub fn set_wgrad_jobs(jobs: usize) {
    WGRAD_JOBS_OVERRIDE.store(jobs, Ordering::Relaxed);
}

fn row_tile() -> usize {
    match ROW_TILE_OVERRIDE.load(Ordering::Relaxed) {
        0 => ROW_TILE,
        r => r,
    }
}

/// Overrides [`ROW_TILE`] for the whole process (`0`: the default), for A/B measurements.
/// Like the wave size, it changes speed and possibly rounding, never the independence of the
/// results from the thread count.
pub fn set_row_tile(rows: usize) {
    ROW_TILE_OVERRIDE.store(rows, Ordering::Relaxed);
}
static HUGE_PAGES: AtomicBool = AtomicBool::new(true);
static PACKING: AtomicBool = AtomicBool::new(true);
static PACKINGS: AtomicUsize = AtomicUsize::new(0);
static OVERFILL: AtomicBool = AtomicBool::new(true);
static STREAM_MIN: AtomicUsize = AtomicUsize::new(STREAM_MIN_BYTES);
static STREAMED: AtomicUsize = AtomicUsize::new(0);

/// Expert gradients of at least this many bytes are written with non-temporal stores where an
/// expert's weight-gradient block is final in one job (the job's segment holds all the
/// expert's rows): computed in a per-thread block that stays in cache, then streamed out
/// (`act::stream_copy`), since a plain store reads every line before writing it. Blocks that a
/// later wave adds to keep the plain stores (streaming would send them to memory only to read
/// them back). The size is where it paid on the development VM (`kernel_ab`,
/// `SWITCHYARD_AB_STREAM_MIN`, 1 thread): 1.03–1.06× at E=1024 (a 1.6 GB gradient),
/// 0.94–1.00× at E=256–512 (0.4–0.8 GB, which a 480 MiB last-level cache partly holds),
/// 1.00–1.02× at fine64 (0.1 GB).
pub const STREAM_MIN_BYTES: usize = 1 << 30;
/// ...and only blocks of at most this many bytes, which stay in a core's L2 between the
/// product and the copy (E=1024's largest, the up projection of one expert, is 1 MiB).
const STREAM_BLOCK_MAX: usize = 1 << 20;

/// Overrides [`STREAM_MIN_BYTES`] for the whole process (`usize::MAX`: never stream, `0`:
/// always), for A/B measurements and tests; the results are the same bits either way.
pub fn set_stream_min_bytes(bytes: usize) {
    STREAM_MIN.store(bytes, Ordering::Relaxed);
}

/// Weight-gradient blocks streamed out so far (process-wide), for tests.
pub fn streamed_blocks() -> usize {
    STREAMED.load(Ordering::Relaxed)
}

/// Whether waves finish an expert when that overfills their budget by at most a quarter, and
/// row tiles take up to a quarter more rather than leave a small last tile (default on); off:
/// waves of at most the budget, tiles of at most [`ROW_TILE`] rows. For A/B measurements;
/// either way the results do not depend on the thread count.
pub fn set_overfill(on: bool) {
    OVERFILL.store(on, Ordering::Relaxed);
}

/// How many expert-weight operands the kernels have packed once for several row tiles since
/// the process started (see `set_packing`); for tests and diagnostics.
pub fn packings() -> usize {
    PACKINGS.load(Ordering::Relaxed)
}

/// Whether experts' weights are packed once per wave for all their row tiles (default on;
/// off: every row tile's `gemm` call packs them), for A/B measurements.
pub fn set_packing(on: bool) {
    PACKING.store(on, Ordering::Relaxed);
}

/// Overrides the rows per wave for the whole process (`0`: the default rule, `usize::MAX`:
/// one wave, i.e. every per-assignment temporary alive at once), for A/B measurements. Waves
/// change memory and speed, and may change how weight-gradient GEMMs are blocked; the results
/// stay independent of the thread count for any setting.
pub fn set_wave_rows(rows: usize) {
    WAVE_ROWS.store(rows, Ordering::Relaxed);
}

/// Whether large fresh results ask for transparent huge pages (default on), for A/B
/// measurements.
pub fn set_huge_pages(on: bool) {
    HUGE_PAGES.store(on, Ordering::Relaxed);
}

/// A zeroed vector for a large result. Fresh memory is faulted in page by page as it is first
/// written; on Linux, ask for transparent huge pages so that costs one fault per 2 MiB.
fn zeroed<T: KFloat>(len: usize) -> Vec<T> {
    let v = vec![T::zero(); len];
    advise_huge(v.as_ptr() as *const u8, len * std::mem::size_of::<T>());
    v
}

/// `madvise(MADV_HUGEPAGE)` over the 2 MiB-aligned interior of a buffer (a hint; failures
/// are ignored).
fn advise_huge(ptr: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes < 2 * HUGE || !HUGE_PAGES.load(Ordering::Relaxed) {
            return;
        }
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const MADV_HUGEPAGE: i32 = 14;
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside the live allocation; MADV_HUGEPAGE changes no
            // contents, only how the kernel backs the pages.
            unsafe {
                madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// Forward: `y [T, d]` and the activations to save for the backward.
pub fn forward<T: KFloat>(
    x: &[T],
    w: &[T],
    p: &[T],
    layout: &ExpertLayout,
    plan: &DispatchPlan,
) -> (Vec<T>, Saved<T>) {
    let d = layout.d_model;
    let uvoff = block_offsets(layout, plan, up_width);
    let mut uv = PoolBuf::take(uvoff[layout.num_experts()]);
    let waves = waves::<T>(layout, plan);
    // wave-sized buffers are small: allocated per call and freed, not pooled (idle pooled
    // memory would count against the peak of the next backward)
    let mut o = vec![T::zero(); waves.iter().map(Wave::rows).max().unwrap_or(0) * d];
    let mut scatter = Scatter::new(plan);
    let mut y = zeroed(plan.num_tokens * d);
    let uvlen = |t: &Tile| (t.r1 - t.r0) * up_width(&layout.slots[t.e]);
    let mut packs = WavePacks::new(layout, &waves);
    for wave in waves {
        let (a0, a1) = (wave.a0, wave.a1);
        packs.prepare(layout, &wave, p, false);
        let packs = &packs;
        let tiles = wave.tiles();
        let f = &wave.segs[0];
        let at = uvoff[f.e] + f.r0 * up_width(&layout.slots[f.e]);
        let uvs = split_lens(&mut uv[at..], tiles.iter().map(uvlen));
        let os = split_lens(&mut o[..], tiles.iter().map(|t| (t.r1 - t.r0) * d));
        let jobs: Vec<_> = tiles
            .into_iter()
            .zip(uvs)
            .zip(os)
            .map(|((t, uv), o)| (t, uv, o))
            .collect();
        run_jobs(
            jobs,
            |j| uvlen(&j.0),
            |(t, uv, o)| {
                let s = &layout.slots[t.e];
                let (h, uw, m) = (s.spec.hidden, up_width(s), t.r1 - t.r0);
                let a0 = plan.offsets[t.e] as usize + t.r0;
                T::with_ws(|ws| {
                    let xe = grown(&mut ws.xe, m * d);
                    timed(Phase::GatherScatter, || {
                        gather(x, d, &plan.token[a0..a0 + m], xe)
                    });
                    // [u | v] = xe · [W1; W3]ᵀ   (the up weights are [uw, d], read transposed)
                    packs.mm(layout, p, t.e, 0, false, m, uv, xe, d);
                    if let Some(b1) = s.b1 {
                        let b1 = &p[b1..b1 + h];
                        uv.chunks_exact_mut(uw)
                            .for_each(|row| row.iter_mut().zip(b1).for_each(|(x, &b)| *x = *x + b));
                    }
                    let a = grown(&mut ws.a, m * h);
                    act::forward_tile(s.spec.kind, h, uv, a);
                    // o = a · W2t, then w·(o + b2): the scatter only adds
                    packs.mm(layout, p, t.e, 1, false, m, o, a, h);
                    act::scale_rows(o, &w[a0..a0 + m], s.b2.map(|b2| &p[b2..b2 + d]), d);
                })
            },
        );
        scatter.add(&mut y, &o[..(a1 - a0) * d], d, a0, a1);
    }
    (y, Saved { uv })
}

/// Gradients of a dispatch: `(dx [T, d], dw [n], dp [total])`.
pub struct Grads<T> {
    pub dx: Vec<T>,
    pub dw: Vec<T>,
    pub dp: Vec<T>,
}

/// Which weights a weight-gradient job covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Rows of `[W1; W3]` (and `b1`).
    Up,
    /// Rows of `W2t` (and `b2`).
    Down,
}

/// One weight-gradient job: columns `c0..c1` of one part of `seg`'s expert, over the
/// segment's rows, which start at `uv_at` / `h_at` in the wave's `[dU | dV]` / `w ⊙ a`.
#[derive(Clone, Copy, Debug)]
struct ColBlock {
    seg: Tile,
    /// The segment's index in its wave.
    si: usize,
    part: Part,
    c0: usize,
    c1: usize,
    uv_at: usize,
    h_at: usize,
    /// The segment's first row in the wave.
    row_at: usize,
}

/// The weight-gradient jobs of a wave: each segment's parts cut into column blocks so that no
/// job holds more than about 1/[`MIN_WGRAD_JOBS`] of the wave's work.
fn col_blocks(layout: &ExpertLayout, wave: &Wave) -> Vec<ColBlock> {
    let width = |e: usize, part: Part| match part {
        Part::Up => up_width(&layout.slots[e]),
        Part::Down => layout.slots[e].spec.hidden,
    };
    let work = |g: &Tile, part: Part| (g.r1 - g.r0) * width(g.e, part);
    let total: usize = wave
        .segs
        .iter()
        .map(|g| work(g, Part::Up) + work(g, Part::Down))
        .sum();
    let jobs = match WGRAD_JOBS_OVERRIDE.load(Ordering::Relaxed) {
        0 => MIN_WGRAD_JOBS,
        j => j,
    };
    let target = total.div_ceil(jobs).max(1);
    let mut blocks = Vec::new();
    let (mut uv_at, mut h_at, mut row_at) = (0, 0, 0);
    for (si, g) in wave.segs.iter().enumerate() {
        for part in [Part::Up, Part::Down] {
            let w = width(g.e, part);
            let parts = work(g, part)
                .div_ceil(target)
                .clamp(1, w.div_ceil(COL_ALIGN));
            let mut c0 = 0;
            for i in 1..=parts {
                let c1 = if i == parts {
                    w
                } else {
                    (i * w / parts) / COL_ALIGN * COL_ALIGN
                };
                if c1 > c0 {
                    blocks.push(ColBlock {
                        seg: *g,
                        si,
                        part,
                        c0,
                        c1,
                        uv_at,
                        h_at,
                        row_at,
                    });
                    c0 = c1;
                }
            }
        }
        uv_at += work(g, Part::Up);
        h_at += work(g, Part::Down);
        row_at += g.r1 - g.r0;
    }
    blocks
}

/// A buffer that jobs write in disjoint ranges.
struct Disjoint<T>(*mut T, usize);
// SAFETY: jobs only touch ranges that no other job touches (see the call sites).
unsafe impl<T: Send> Send for Disjoint<T> {}
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    /// # Safety
    /// No two live slices from this buffer may overlap, and the range must be initialised.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.ptr(start, len), len)
    }

    /// The start of a range, bounds-checked (for writes into memory not yet initialised).
    fn ptr(&self, start: usize, len: usize) -> *mut T {
        assert!(start + len <= self.1, "disjoint range out of bounds");
        self.0.wrapping_add(start)
    }
}

/// The expert-weight gradient before it is complete: with packing, the weight rows of each
/// expert with rows are written (not added to) by the first row chunk's weight-gradient
/// products, so only biases and the parameters of experts without rows are zeroed first —
/// not the whole buffer (1.6 GB at E=1024, 10 % of its step when zeroed; `alloc::Recycling`
/// hands back used memory, which has to be cleared explicitly).
struct GradBuf<T>(Vec<std::mem::MaybeUninit<T>>);

impl<T: KFloat> GradBuf<T> {
    /// `zero_all`: zero everything (the `gemm` path adds every chunk into the buffer).
    fn new(layout: &ExpertLayout, plan: &DispatchPlan, zero_all: bool) -> Self {
        let mut v = Vec::with_capacity(layout.total);
        // SAFETY: MaybeUninit needs no initialisation
        unsafe { v.set_len(layout.total) };
        advise_huge(
            v.as_ptr() as *const u8,
            layout.total * std::mem::size_of::<T>(),
        );
        let zero = |v: &mut [std::mem::MaybeUninit<T>]| {
            v.iter_mut().for_each(|x| {
                x.write(T::zero());
            })
        };
        if zero_all {
            zero(&mut v);
        } else {
            let d = layout.d_model;
            for (e, s) in layout.slots.iter().enumerate() {
                let (h, uw) = (s.spec.hidden, up_width(s));
                let mut parts = vec![(s.b1, h), (s.b2, d)];
                if plan.range(e).is_empty() {
                    parts.extend([(Some(s.w1), uw * d), (Some(s.w2t), h * d)]);
                }
                for (at, len) in parts {
                    if let Some(at) = at {
                        zero(&mut v[at..at + len]);
                    }
                }
            }
        }
        Self(v)
    }

    fn disjoint(&mut self) -> Disjoint<T> {
        Disjoint(self.0.as_mut_ptr() as *mut T, self.0.len())
    }

    /// # Safety
    /// Every entry has been written.
    unsafe fn assume_init(self) -> Vec<T> {
        let mut v = std::mem::ManuallyDrop::new(self.0);
        Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity())
    }
}

/// The rows phase B multiplies by (`x` rows for `[dW1; dW3]`, `gy` rows for `dW2t`), kept
/// from phase A: packed as `gemm`'s left operand, one packing per 512-row chunk of each
/// segment (written row by row by phase A's jobs, shared by all of the chunk's column
/// blocks), or — without microkernels (see `set_packing`) — plain row-major copies read by
/// `gemm`, which packs them again for every column block.
enum WaveRows<T: 'static> {
    /// `[segment][chunk]` → `[x rows, gy rows]`
    Packed(Vec<Vec<[PackedB<T>; 2]>>),
    /// `[wave rows, d]` copies of the `x` and `gy` rows, in wave order.
    Plain { xw: Vec<T>, gw: Vec<T> },
}

/// Backward of [`forward`] given the upstream gradient `gy [T, d]`.
///
/// Runs wave by wave (see the module docs): phase A (per row tile: the activation's backward and
/// the input-gradient rows), phase B (per column block: the weight gradients) and phase C
/// (adding the wave's input-gradient rows into `dx`), so the per-assignment temporaries
/// (`[dU | dV]`, `w ⊙ a`, `dX` rows) exist for one wave at a time.
pub fn backward<T: KFloat>(
    x: &[T],
    w: &[T],
    p: &[T],
    layout: &ExpertLayout,
    plan: &DispatchPlan,
    saved: &Saved<T>,
    gy: &[T],
) -> Grads<T> {
    let d = layout.d_model;
    let uvoff = block_offsets(layout, plan, up_width);
    let waves = waves::<T>(layout, plan);
    let max_len = |width: &dyn Fn(&ExpertSlot) -> usize| {
        waves
            .iter()
            .map(|w| w.len(layout, width))
            .max()
            .unwrap_or(0)
    };
    let mut duv = vec![T::zero(); max_len(&up_width)];
    let mut aw = vec![T::zero(); max_len(&|s| s.spec.hidden)];
    let wave_rows = waves.iter().map(Wave::rows).max().unwrap_or(0);
    let mut dxa = vec![T::zero(); wave_rows * d];
    let ukr = if PACKING.load(Ordering::Relaxed) {
        T::microkernels()
    } else {
        None
    };
    // the wave's rows of x and gy for phase B (see `WaveRows`)
    let mut rows = match ukr {
        Some(_) => WaveRows::Packed(Vec::new()),
        None => WaveRows::Plain {
            xw: vec![T::zero(); wave_rows * d],
            gw: vec![T::zero(); wave_rows * d],
        },
    };
    let mut spare: Vec<Vec<T>> = Vec::new();
    let mut dw = vec![T::zero(); plan.len()];
    // the expert gradient is left unzeroed only when the layout and the plan are the ones the
    // write-coverage argument assumes (`GradBuf`): experts packed one after the other as
    // `ExpertLayout::new` lays them out, and one plan range per expert
    let specs: Vec<_> = layout.slots.iter().map(|s| s.spec).collect();
    let canonical = *layout == ExpertLayout::new(d, &specs)
        && plan.num_experts == layout.num_experts()
        && plan.offsets.len() == plan.num_experts + 1;
    let mut dp = GradBuf::<T>::new(layout, plan, ukr.is_none() || !canonical);
    let mut dx = zeroed::<T>(plan.num_tokens * d);
    let mut scatter = Scatter::new(plan);
    let uvlen = |t: &Tile| (t.r1 - t.r0) * up_width(&layout.slots[t.e]);
    let mut packs = WavePacks::new(layout, &waves);
    for wave in waves {
        let (a0w, a1w) = (wave.a0, wave.a1);
        packs.prepare(layout, &wave, p, true);
        let packs = &packs;
        if let (WaveRows::Packed(chunks), Some(ukr)) = (&mut rows, ukr) {
            spare.extend(
                chunks
                    .drain(..)
                    .flatten()
                    .flat_map(|c| c.map(PackedB::into_buf)),
            );
            for g in &wave.segs {
                let seg = (g.r0..g.r1)
                    .step_by(WGRAD_ROWS)
                    .map(|r0| {
                        let mr = WGRAD_ROWS.min(g.r1 - r0);
                        [(); 2].map(|_| {
                            let buf = take_spare(&mut spare, PackedB::buffer_len(mr, d, ukr));
                            PackedB::new(buf, mr, d, row_tile(), ukr)
                        })
                    })
                    .collect();
                chunks.push(seg);
            }
        }

        // phase A, per row tile: dA, the activation's backward ([dU | dV], w⊙a, dw), dX rows
        let tiles = wave.tiles();
        let duvs = split_lens(&mut duv[..], tiles.iter().map(uvlen));
        let aws = split_lens(
            &mut aw[..],
            tiles
                .iter()
                .map(|t| (t.r1 - t.r0) * layout.slots[t.e].spec.hidden),
        );
        let rows_d = |t: &Tile| (t.r1 - t.r0) * d;
        let dxs = split_lens(&mut dxa[..], tiles.iter().map(rows_d));
        let dws = split_lens(&mut dw[a0w..a1w], tiles.iter().map(|t| t.r1 - t.r0));
        // where each tile keeps its x and gy rows for phase B
        enum Keep<'a, T: 'static> {
            Plain(&'a mut [T], &'a mut [T]),
            Packed(usize),
        }
        // per segment, per chunk: writers of the x rows' and the gy rows' packings
        type Writers<'a, T> = Vec<Vec<[RowWriter<'a, T>; 2]>>;
        let (keeps, writers): (Vec<Keep<T>>, Writers<T>) = match &mut rows {
            WaveRows::Plain { xw, gw } => {
                let xs = split_lens(&mut xw[..], tiles.iter().map(rows_d));
                let gs = split_lens(&mut gw[..], tiles.iter().map(rows_d));
                (
                    xs.into_iter()
                        .zip(gs)
                        .map(|(x, g)| Keep::Plain(x, g))
                        .collect(),
                    Vec::new(),
                )
            }
            WaveRows::Packed(chunks) => (
                tiles
                    .iter()
                    .map(|t| Keep::Packed(wave.segs.iter().position(|g| g.e == t.e).unwrap()))
                    .collect(),
                chunks
                    .iter_mut()
                    .map(|seg| {
                        seg.iter_mut()
                            .map(|[px, pg]| [px.row_writer(), pg.row_writer()])
                            .collect()
                    })
                    .collect(),
            ),
        };
        let jobs: Vec<_> = tiles
            .into_iter()
            .zip(duvs)
            .zip(aws)
            .zip(dxs.into_iter().zip(dws))
            .zip(keeps)
            .map(|((((t, duv), aw), (dx, dw)), keep)| (t, duv, aw, dx, dw, keep))
            .collect();
        let writers = &writers;
        let segs = &wave.segs;
        run_jobs(
            jobs,
            |j| uvlen(&j.0),
            |(t, duv, aw, dxe, dwe, keep)| {
                let s = &layout.slots[t.e];
                let (h, uw, m) = (s.spec.hidden, up_width(s), t.r1 - t.r0);
                let a0 = plan.offsets[t.e] as usize + t.r0;
                let at = uvoff[t.e] + t.r0 * uw;
                let uv = &saved.uv[at..at + m * uw];
                let tokens = &plan.token[a0..a0 + m];
                T::with_ws(|ws| {
                    let Workspace {
                        xe: gbuf, a: dabuf, ..
                    } = ws;
                    let ge: &[T] = match keep {
                        Keep::Plain(xe, ge) => {
                            timed(Phase::GatherScatter, || {
                                gather(gy, d, tokens, ge);
                                gather(x, d, tokens, xe);
                            });
                            ge
                        }
                        Keep::Packed(si) => {
                            let ge = grown(gbuf, m * d);
                            let g = &segs[si];
                            timed(Phase::GatherScatter, || {
                                gather(gy, d, tokens, ge);
                                for (r, &tok) in tokens.iter().enumerate() {
                                    let er = t.r0 + r - g.r0;
                                    let [wx, wg] = &writers[si][er / WGRAD_ROWS];
                                    let tok = tok as usize;
                                    // SAFETY: row `er` of the segment belongs to this tile
                                    unsafe {
                                        wx.put(er % WGRAD_ROWS, &x[tok * d..(tok + 1) * d]);
                                        wg.put(er % WGRAD_ROWS, &ge[r * d..(r + 1) * d]);
                                    }
                                }
                            });
                            ge
                        }
                    };
                    // term 1: dA_unscaled = G · W2tᵀ  [m, h]
                    let da = grown(dabuf, m * h);
                    packs.mm(layout, p, t.e, 0, true, m, da, ge, d);
                    // term 2: dw_a = <g_t, o_a> = <dA_unscaled_a, a_a> + <g_t, b2>
                    // term 4: [dU | dV] through the activation with dA = w ⊙ dA_unscaled; w ⊙ a
                    let b2 = s.b2.map(|b2| &p[b2..b2 + d]);
                    act::backward_tile(
                        s.spec.kind,
                        h,
                        d,
                        &w[a0..a0 + m],
                        da,
                        uv,
                        duv,
                        aw,
                        ge,
                        b2,
                        dwe,
                    );
                    // term 6: dX = [dU | dV] · [W1; W3]   [m, d]
                    packs.mm(layout, p, t.e, 1, true, m, dxe, duv, uw);
                })
            },
        );

        // phase B, per column block of each expert's weights: weight (and bias) gradients
        let stream = layout.total * std::mem::size_of::<T>() >= STREAM_MIN.load(Ordering::Relaxed);
        let dps = dp.disjoint();
        let (duv, aw, rows) = (&duv[..], &aw[..], &rows);
        run_jobs(
            col_blocks(layout, &wave),
            |b| (b.seg.r1 - b.seg.r0) * (b.c1 - b.c0),
            |ColBlock {
                 seg,
                 si,
                 part,
                 c0,
                 c1,
                 uv_at,
                 h_at,
                 row_at,
             }| {
                let e = seg.e;
                let s = &layout.slots[e];
                let (cb, first) = (c1 - c0, plan.offsets[e] as usize);
                let (src, width, off, w_at) = match part {
                    Part::Up => (duv, up_width(s), uv_at, s.w1),
                    Part::Down => (aw, s.spec.hidden, h_at, s.w2t),
                };
                // SAFETY: rows c0..c1 of this part's weights, entries c0..c1 of b1 (Up) and b2
                // (Down, c0 = 0 only) belong to this job alone; the biases were zeroed.
                let mut db = unsafe {
                    match part {
                        Part::Up => s.b1.map(|b1| dps.range(b1 + c0, cb)),
                        Part::Down => s.b2.filter(|_| c0 == 0).map(|b2| dps.range(b2, d)),
                    }
                };
                let dwt = dps.ptr(w_at + c0 * d, cb * d);
                let expert_rows = plan.range(e).len();
                T::with_ws(|ws| {
                    // a block this job writes whole and final: computed in cache, then streamed
                    let streamed = stream
                        && cb * d * std::mem::size_of::<T>() <= STREAM_BLOCK_MAX
                        && seg.r0 == 0
                        && seg.r1 == expert_rows
                        && matches!(rows, WaveRows::Packed(_));
                    let out = if streamed {
                        grown(&mut ws.wblock, cb * d).as_mut_ptr()
                    } else {
                        dwt
                    };
                    for r0 in (seg.r0..seg.r1).step_by(WGRAD_ROWS) {
                        let mr = WGRAD_ROWS.min(seg.r1 - r0);
                        let at = off + (r0 - seg.r0) * width + c0;
                        // term 5: [dW1; dW3] = [dU | dV]ᵀ · X;  term 3: dW2t = (w ⊙ a)ᵀ · G
                        // (X or G: the rows gathered in phase A)
                        let which = if part == Part::Up { 0 } else { 1 };
                        match rows {
                            WaveRows::Packed(chunks) => {
                                let pb = &chunks[si][(r0 - seg.r0) / WGRAD_ROWS][which];
                                // SAFETY: the job's own cb × d block (or its copy in the
                                // workspace); the expert's first chunk (r0 = 0) writes it whole
                                // before later chunks add to it
                                unsafe {
                                    mm_packed_strided_raw(
                                        cb,
                                        out,
                                        r0 > 0,
                                        &src[at..],
                                        (1, width),
                                        pb,
                                        &mut ws.apack,
                                    )
                                };
                            }
                            WaveRows::Plain { xw, gw } => {
                                let ra = (row_at + r0 - seg.r0) * d;
                                let rows = &[xw, gw][which][ra..ra + mr * d];
                                // SAFETY: the job's own block, zeroed at the start (plain path)
                                let dwt = unsafe { std::slice::from_raw_parts_mut(dwt, cb * d) };
                                mm(
                                    cb,
                                    d,
                                    mr,
                                    dwt,
                                    r0 > 0,
                                    &src[at..],
                                    (1, width),
                                    rows,
                                    (d, 1),
                                    false,
                                );
                            }
                        }
                        match (part, db.as_deref_mut()) {
                            // db1 = Σ_rows dU
                            (Part::Up, Some(db1)) => {
                                for r in 0..mr {
                                    let row = &src[at + r * width..at + r * width + cb];
                                    db1.iter_mut().zip(row).for_each(|(b, &g)| *b = *b + g);
                                }
                            }
                            // db2 = Σ_a w_a g_t
                            (Part::Down, Some(db2)) => {
                                let g = grown(&mut ws.xe, d);
                                for r in 0..mr {
                                    match rows {
                                        WaveRows::Packed(chunks) => {
                                            chunks[si][(r0 - seg.r0) / WGRAD_ROWS][1].row(r, g)
                                        }
                                        WaveRows::Plain { gw, .. } => {
                                            let ra = (row_at + r0 - seg.r0 + r) * d;
                                            g.copy_from_slice(&gw[ra..ra + d]);
                                        }
                                    }
                                    let wa = w[first + r0 + r];
                                    db2.iter_mut()
                                        .zip(g.iter())
                                        .for_each(|(b, &g)| *b = *b + wa * g);
                                }
                            }
                            _ => {}
                        }
                    }
                    if streamed {
                        // SAFETY: the job's own cb × d block of the gradient, written whole
                        unsafe { act::stream_copy(dwt, &ws.wblock[..cb * d]) };
                        STREAMED.fetch_add(1, Ordering::Relaxed);
                    }
                })
            },
        );

        // phase C: dx[t] += the wave's dX rows of token t, in plan order
        scatter.add(&mut dx, &dxa[..(a1w - a0w) * d], d, a0w, a1w);
    }
    // SAFETY: biases and experts without rows were zeroed; every other weight row was written
    // by its expert's first row chunk (the plain path zeroed everything)
    let dp = unsafe { dp.assume_init() };
    Grads { dx, dw, dp }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExpertSpec;

    /// A plan of `tokens` tokens where expert `e` gets `rows[e]` of them (one assignment per
    /// token).
    fn plan_of(rows: &[usize]) -> DispatchPlan {
        let mut pairs = Vec::new();
        let mut t = 0u32;
        for (e, &n) in rows.iter().enumerate() {
            for _ in 0..n {
                pairs.push((t, e as u32));
                t += 1;
            }
        }
        DispatchPlan::from_assignments(t as usize, rows.len(), &pairs).unwrap()
    }

    fn shape(waves: &[Wave]) -> Vec<Vec<(usize, usize, usize)>> {
        waves
            .iter()
            .map(|w| w.segs.iter().map(|g| (g.e, g.r0, g.r1)).collect())
            .collect()
    }

    #[test]
    fn waves_finish_an_expert_within_a_quarter_over_budget_and_cut_at_chunk_multiples() {
        // d = 512, SwiGLU h = 256: 9216 bytes per row; the budget min(910, 1780 / 8) rounds
        // to one weight-gradient chunk, 512 rows, with a slack of 128
        let layout = ExpertLayout::new(512, &[ExpertSpec::swiglu(256); 4]);
        let plan = plan_of(&[530, 700, 100, 450]);
        let waves = waves::<f32>(&layout, &plan);
        assert_eq!(
            shape(&waves),
            vec![
                // 530 ≤ 512 + 128: whole
                vec![(0, 0, 530)],
                // 700 > 640: cut at 512, then the rest (188) with the next expert (100)
                vec![(1, 0, 512)],
                vec![(1, 512, 700), (2, 0, 100)],
                // 288 rows in the wave; 450 would overfill by 226 > 128: a wave of its own
                vec![(3, 0, 450)],
            ]
        );
        // every segment starts at a multiple of the weight-gradient chunk
        assert!(waves
            .iter()
            .flat_map(|w| &w.segs)
            .all(|g| g.r0 % WGRAD_ROWS == 0));
    }

    #[test]
    fn tiles_take_up_to_a_quarter_more_rather_than_a_small_last_tile() {
        for (n, with, without) in [
            (256, 1, 1),
            (320, 1, 2),
            (321, 2, 2),
            (530, 2, 3),
            (640, 2, 3),
            (641, 3, 3),
        ] {
            assert_eq!(tile_count_for(n, 256, true), with, "{n} rows");
            assert_eq!(tile_count_for(n, 256, false), without, "{n} rows");
        }
    }

    /// A layout that is not `ExpertLayout::new`'s (here: room left after the experts) gets
    /// a fully zeroed expert gradient, not just the biases and empty experts.
    #[test]
    fn an_unusual_layout_gets_a_zeroed_gradient() {
        let mut layout = ExpertLayout::new(32, &[ExpertSpec::swiglu(32); 2]);
        layout.total += 7;
        let plan = plan_of(&[300, 400]);
        let val = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7 + s) % 13) as f32 / 13.0 - 0.5)
                .collect()
        };
        let (x, w, p, gy) = (
            val(plan.num_tokens * 32, 1),
            val(plan.len(), 2),
            val(layout.total, 3),
            val(plan.num_tokens * 32, 4),
        );
        for _ in 0..3 {
            // leave large values in freed memory of the gradient's size
            drop(vec![1e30f32; layout.total]);
            let (_, saved) = forward(&x, &w, &p, &layout, &plan);
            let g = backward(&x, &w, &p, &layout, &plan, &saved, &gy);
            assert_eq!(g.dp.len(), layout.total);
            assert!(g.dp[layout.total - 7..].iter().all(|&v| v == 0.0));
            assert!(g.dp.iter().all(|v| v.abs() < 1e6));
        }
    }

    #[test]
    fn only_segments_of_several_tiles_over_64_rows_use_packed_weights() {
        // default tiles: more than one tile's worth of rows
        assert!(!packable_for(256, 256, true));
        assert!(packable_for(257, 256, true));
        assert!(packable_for(2000, 256, false));
        // small row tiles (`set_row_tile`) never give packed tiles of 64 rows or fewer,
        // where `gemm` would sum in another order
        assert!(!packable_for(300, 32, true));
        assert!(!packable_for(1000, 64, false));
        assert!(packable_for(1000, 80, false));
    }
}
