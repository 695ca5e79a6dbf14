//! How a plan's assignments are cut into work: waves of consecutive assignments (only one
//! wave's temporaries are alive at a time), row tiles inside a wave (forward and input
//! gradient), and column blocks of the weight gradients. Depends on the plan, the shapes and
//! the [`KernelOptions`] only, never on the thread count.

use rayon::prelude::*;

use super::{COL_ALIGN, WAVE_BYTES, WAVE_PARTS, WGRAD_ROWS};
use crate::layout::{ExpertLayout, ExpertSlot};
use crate::plan::DispatchPlan;
use crate::profile::{timed, Phase};
use crate::KernelOptions;

/// Columns of an expert's up projection: `h` (FFN: `W1`) or `2h` (SwiGLU: `W1` and `W3`,
/// adjacent in the packed parameters, so one GEMM computes `[u | v] = x·[W1; W3]ᵀ`).
pub fn up_width(s: &ExpertSlot) -> usize {
    s.spec.hidden * if s.w3.is_some() { 2 } else { 1 }
}
/// Rows `r0..r1` (counted inside expert `e`'s range) of one job.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tile {
    pub(super) e: usize,
    pub(super) r0: usize,
    pub(super) r1: usize,
}

/// Rows of some experts processed together: segments `(e, r0..r1)` in plan order, covering the
/// assignments `a0..a1` without gaps. An expert appears at most once per wave; a segment
/// that does not end its expert ends at a multiple of [`WGRAD_ROWS`], so the weight-gradient
/// row chunks are the same whatever the waves.
pub(super) struct Wave {
    pub(super) segs: Vec<Tile>,
    pub(super) a0: usize,
    pub(super) a1: usize,
}

impl Wave {
    /// The wave's segments cut into near-equal row tiles of at most [`ROW_TILE`] rows.
    pub(super) fn tiles(&self, opts: &KernelOptions) -> Vec<Tile> {
        let mut tiles = Vec::new();
        for g in &self.segs {
            let n = g.r1 - g.r0;
            let parts = tile_count(n, opts);
            tiles.extend((0..parts).map(|i| Tile {
                e: g.e,
                r0: g.r0 + i * n / parts,
                r1: g.r0 + (i + 1) * n / parts,
            }));
        }
        tiles
    }

    pub(super) fn rows(&self) -> usize {
        self.a1 - self.a0
    }
}

/// Row tiles of a segment of `n` rows: tiles of at most [`ROW_TILE`] rows, except that up to
/// a quarter more is taken rather than a small last tile (530 rows: two tiles of 265, not
/// three of 177, which two threads would run in two rounds).
pub(super) fn tile_count(n: usize, opts: &KernelOptions) -> usize {
    tile_count_for(n, opts.row_tile(), opts.overfill)
}

pub(super) fn tile_count_for(n: usize, tile: usize, overfill: bool) -> usize {
    n.div_ceil(tile + tile / 4 * usize::from(overfill))
}

impl Wave {
    /// Elements of a per-row buffer of `width(e)` columns over the wave.
    pub(super) fn len(&self, layout: &ExpertLayout, width: impl Fn(&ExpertSlot) -> usize) -> usize {
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
pub(super) fn waves<T>(
    layout: &ExpertLayout,
    plan: &DispatchPlan,
    opts: &KernelOptions,
) -> Vec<Wave> {
    let row_bytes = layout
        .slots
        .iter()
        .map(|s| up_width(s) + s.spec.hidden + 3 * layout.d_model)
        .max()
        .unwrap_or(1)
        * std::mem::size_of::<T>();
    let budget = match opts.wave_rows {
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
    let slack = if budget >= plan.len() || !opts.overfill {
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
pub(super) fn block_offsets(
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
/// Runs the jobs on the rayon pool, largest `work` first, each stealable on its own.
pub(super) fn run_jobs<J: Send>(
    mut jobs: Vec<J>,
    work: impl Fn(&J) -> usize,
    f: impl Fn(J) + Sync + Send,
) {
    jobs.sort_by_key(|j| std::cmp::Reverse(work(j)));
    jobs.into_par_iter()
        .with_max_len(1)
        .for_each(|j| timed(Phase::Total, || f(j)));
}
/// Which weights a weight-gradient job covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// Rows of `[W1; W3]` (and `b1`).
    Up,
    /// Rows of `W2t` (and `b2`).
    Down,
}

/// One weight-gradient job: columns `c0..c1` of one part of `seg`'s expert, over the
/// segment's rows, which start at `uv_at` / `h_at` in the wave's `[dU | dV]` / `w ⊙ a`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ColBlock {
    pub(super) seg: Tile,
    /// The segment's index in its wave.
    pub(super) si: usize,
    pub(super) part: Part,
    pub(super) c0: usize,
    pub(super) c1: usize,
    pub(super) uv_at: usize,
    pub(super) h_at: usize,
    /// The segment's first row in the wave.
    pub(super) row_at: usize,
}

/// The weight-gradient jobs of a wave: each segment's parts cut into column blocks so that no
/// job holds more than about 1/[`MIN_WGRAD_JOBS`] of the wave's work.
pub(super) fn col_blocks(
    layout: &ExpertLayout,
    wave: &Wave,
    opts: &KernelOptions,
) -> Vec<ColBlock> {
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
    let jobs = opts.wgrad_jobs();
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

#[cfg(test)]
mod tests {
    use super::super::plan_of;
    use super::*;
    use crate::ExpertSpec;

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
        let waves = waves::<f32>(&layout, &plan, &KernelOptions::default());
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
}
