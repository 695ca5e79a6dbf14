//! The dispatch forward: per row tile, gather the expert's rows, `[u | v] = x·[W1; W3]ᵀ`, the
//! activation, `o = a·W2t`, scaled by the routing weight; then a scatter-add in plan order.

use rayon::prelude::*;

use super::buffers::{gather, grown, split_lens, zeroed, PoolBuf, Saved};
use super::packing::WavePacks;
use super::waves::{block_offsets, run_jobs, up_width, waves, Tile, Wave};
use super::{KFloat, TOKEN_BLOCK};
use crate::act;
use crate::layout::ExpertLayout;
use crate::plan::DispatchPlan;
use crate::profile::{timed, Phase};
use crate::KernelOptions;

/// Token-major view of a plan for the scatters: `(off, idx)` of [`DispatchPlan::by_token`]
/// and, per token, the first of its assignments not yet added.
pub(super) struct Scatter {
    off: Vec<u32>,
    idx: Vec<u32>,
    cur: Vec<u32>,
}

impl Scatter {
    pub(super) fn new(plan: &DispatchPlan) -> Self {
        let (off, idx) = plan.by_token();
        let cur = off[..plan.num_tokens].to_vec();
        Self { off, idx, cur }
    }

    /// `y[t] += Σ rows[a − a0]` over token `t`'s assignments `a ∈ a0..a1`, in plan order;
    /// rows are already scaled. Waves call this in ascending order, so every token's sum runs
    /// in plan order from zero, as one pass over all assignments would.
    pub(super) fn add<T: KFloat>(
        &mut self,
        y: &mut [T],
        rows: &[T],
        d: usize,
        a0: usize,
        a1: usize,
    ) {
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
/// Forward: `y [T, d]` and the activations to save for the backward.
pub fn forward<T: KFloat>(
    x: &[T],
    w: &[T],
    p: &[T],
    layout: &ExpertLayout,
    plan: &DispatchPlan,
    opts: &KernelOptions,
) -> (Vec<T>, Saved<T>) {
    let d = layout.d_model;
    let uvoff = block_offsets(layout, plan, up_width);
    let mut uv = PoolBuf::take(uvoff[layout.num_experts()]);
    let waves = waves::<T>(layout, plan, opts);
    // wave-sized buffers are small: allocated per call and freed, not pooled (idle pooled
    // memory would count against the peak of the next backward)
    let mut o = vec![T::zero(); waves.iter().map(Wave::rows).max().unwrap_or(0) * d];
    let mut scatter = Scatter::new(plan);
    let mut y = zeroed(plan.num_tokens * d, opts.huge_pages);
    let uvlen = |t: &Tile| (t.r1 - t.r0) * up_width(&layout.slots[t.e]);
    let mut packs = WavePacks::new(layout, &waves, opts);
    for wave in waves {
        let (a0, a1) = (wave.a0, wave.a1);
        packs.prepare(layout, &wave, p, false);
        let packs = &packs;
        let tiles = wave.tiles(opts);
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
