//! The dispatch backward, wave by wave: phase A (per row tile: the activation's backward and
//! the input-gradient rows), phase B (per column block: the weight gradients), phase C (the
//! input-gradient rows added into `dx` in plan order). The terms are numbered as in the
//! derivation: `dA`, `dw`, `dW2t`, `[dU | dV]`, `[dW1; dW3]`, `dX`.

use std::sync::atomic::Ordering;

use super::buffers::{gather, grown, split_lens, take_spare, zeroed, GradBuf, Saved, Workspace};
use super::forward::Scatter;
use super::packing::WavePacks;
use super::waves::{
    block_offsets, col_blocks, run_jobs, up_width, waves, ColBlock, Part, Tile, Wave,
};
use super::{KFloat, STREAMED, STREAM_BLOCK_MAX, WGRAD_ROWS};
use crate::act;
use crate::gemm::mm;
use crate::layout::{ExpertLayout, ExpertSlot};
use crate::packed::{mm_packed_strided_raw, PackedB, RowWriter};
use crate::plan::DispatchPlan;
use crate::profile::{timed, Phase};
use crate::KernelOptions;

/// Gradients of a dispatch: `(dx [T, d], dw [n], dp [total])`.
pub struct Grads<T> {
    pub dx: Vec<T>,
    pub dw: Vec<T>,
    pub dp: Vec<T>,
}
/// The rows phase B multiplies by (`x` rows for `[dW1; dW3]`, `gy` rows for `dW2t`), kept
/// from phase A: packed as `gemm`'s left operand, one packing per 512-row chunk of each
/// segment (written row by row by phase A's jobs, shared by all of the chunk's column
/// blocks), or — without microkernels (see [`KernelOptions::packing`]) — plain row-major copies read by
/// `gemm`, which packs them again for every column block.
enum WaveRows<T: 'static> {
    /// `[segment][chunk]` → `[x rows, gy rows]`
    Packed(Vec<Vec<[PackedB<T>; 2]>>),
    /// `[wave rows, d]` copies of the `x` and `gy` rows, in wave order.
    Plain { xw: Vec<T>, gw: Vec<T> },
}
/// Backward of [`forward`](super::forward) given the upstream gradient `gy [T, d]`.
///
/// Runs wave by wave (see the module docs): phase A (per row tile: the activation's backward and
/// the input-gradient rows), phase B (per column block: the weight gradients) and phase C
/// (adding the wave's input-gradient rows into `dx`), so the per-assignment temporaries
/// (`[dU | dV]`, `w ⊙ a`, `dX` rows) exist for one wave at a time.
#[allow(clippy::too_many_arguments)] // the forward's inputs, its saved state, the upstream gradient, the options
pub fn backward<T: KFloat>(
    x: &[T],
    w: &[T],
    p: &[T],
    layout: &ExpertLayout,
    plan: &DispatchPlan,
    saved: &Saved<T>,
    gy: &[T],
    opts: &KernelOptions,
) -> Grads<T> {
    let d = layout.d_model;
    let uvoff = block_offsets(layout, plan, up_width);
    let waves = waves::<T>(layout, plan, opts);
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
    let ukr = if opts.packing {
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
    let mut dp = GradBuf::<T>::new(layout, plan, ukr.is_none() || !canonical, opts.huge_pages);
    let mut dx = zeroed::<T>(plan.num_tokens * d, opts.huge_pages);
    let mut scatter = Scatter::new(plan);
    let uvlen = |t: &Tile| (t.r1 - t.r0) * up_width(&layout.slots[t.e]);
    let mut packs = WavePacks::new(layout, &waves, opts);
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
                            PackedB::new(buf, mr, d, opts.row_tile(), ukr)
                        })
                    })
                    .collect();
                chunks.push(seg);
            }
        }

        // phase A, per row tile: dA, the activation's backward ([dU | dV], w⊙a, dw), dX rows
        let tiles = wave.tiles(opts);
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
        let stream = layout.total * std::mem::size_of::<T>() >= opts.stream_min_bytes;
        let dps = dp.disjoint();
        let (duv, aw, rows) = (&duv[..], &aw[..], &rows);
        run_jobs(
            col_blocks(layout, &wave, opts),
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
