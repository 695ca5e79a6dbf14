//! Experts' weights packed once per wave for all their row tiles (for `gemm`'s own
//! microkernels, see [`crate::packed`]), instead of once per `gemm` call.

use std::sync::atomic::Ordering;

use super::buffers::take_spare;
use super::waves::{run_jobs, tile_count, tile_count_for, up_width, Wave};
use super::{KFloat, PACKINGS};
use crate::gemm::mm;
use crate::layout::{ExpertLayout, ExpertSlot};
use crate::packed::{mm_packed, PackedB, Ukr};
use crate::KernelOptions;

/// One way the kernels read an expert's weights as the `B` of `C = A · B`: `B [k, n]` at
/// `p[at..]` with `(row, column)` strides.
#[derive(Clone, Copy)]
pub(super) struct Form {
    at: usize,
    k: usize,
    n: usize,
    strides: (usize, usize),
}

/// The two weight operands of a pass: forward `[W1; W3]ᵀ` (up) and `W2t` (down); backward
/// `W2tᵀ` (for `dA`) and `[W1; W3]` (for `dX`).
pub(super) fn forms(s: &ExpertSlot, d: usize, backward: bool) -> [Form; 2] {
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
/// Experts whose hidden width or model width is below this keep `gemm` (see `WavePacks::new`).
const MIN_PACK_WIDTH: usize = 16;

/// Whether a segment of `n` rows may use packed weights: it has several tiles' worth of rows,
/// and its tiles have more than 64 rows, so that `gemm` would run them through its general
/// path too (for ≤ 64 rows and a narrow output it picks other depth blocks, which sum in
/// another order; see `WavePacks::new`) — whatever [`KernelOptions::row_tile`] says.
fn packable(n: usize, opts: &KernelOptions) -> bool {
    packable_for(n, opts.row_tile(), opts.overfill)
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
pub(super) struct WavePacks<T: 'static> {
    ukr: Option<Ukr<T>>,
    opts: KernelOptions,
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
    pub(super) fn new(layout: &ExpertLayout, waves: &[Wave], opts: &KernelOptions) -> Self {
        let ukr = if opts.packing {
            T::microkernels()
        } else {
            None
        };
        let mut tiles = vec![0; layout.num_experts()];
        for g in waves.iter().flat_map(|w| &w.segs) {
            if packable(g.r1 - g.r0, opts) {
                tiles[g.e] += tile_count(g.r1 - g.r0, opts);
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
            opts: *opts,
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
    pub(super) fn prepare(&mut self, layout: &ExpertLayout, wave: &Wave, p: &[T], backward: bool) {
        let Some(ukr) = self.ukr else { return };
        let want: Vec<usize> = wave
            .segs
            .iter()
            .filter(|g| packable(g.r1 - g.r0, &self.opts) && self.pack_expert[g.e])
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
                PackedB::new(buf, f.k, f.n, self.opts.row_tile(), ukr)
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
    pub(super) fn mm(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_segments_of_several_tiles_over_64_rows_use_packed_weights() {
        // default tiles: more than one tile's worth of rows
        assert!(!packable_for(256, 256, true));
        assert!(packable_for(257, 256, true));
        assert!(packable_for(2000, 256, false));
        // small row tiles (`KernelOptions::row_tile`) never give packed tiles of 64 rows or fewer,
        // where `gemm` would sum in another order
        assert!(!packable_for(300, 32, true));
        assert!(!packable_for(1000, 64, false));
        assert!(packable_for(1000, 80, false));
    }
}
