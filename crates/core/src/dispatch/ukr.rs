//! Switchyard's own f32 AVX-512 GEMM for the dispatch kernels: `C (+)= A · B` where the rows
//! of `A` are read **through an index** (so the kernels need not gather rows into a copy
//! first) and `B` is packed once into column panels that every row tile of an expert reuses
//! (`gemm` re-packs its operands on every call, i.e. for every row tile).
//!
//! Readable reference: [`gemm_ref`]; the fast path [`gemm_ind`] is tested against it (and
//! against `gemm`) in this file's tests. Only f32 on CPUs with AVX-512F takes this path; f64
//! (gradient checks) and the AVX2 path keep `gemm` (see `kernel.rs`).
//!
//! # Layouts
//! - `A`: row `i` of the `[m, k]` operand starts at `a_rows[i]`, element `(i, kk)` at
//!   `a_rows[i] + kk · a_step` (`a_step` = 1 for row-major rows; a column stride to read a
//!   transposed operand).
//! - `B`: packed ([`pack_rows`], [`pack_transposed`]): `[k, n]` cut into panels of [`NR`] columns, each `[k, NR]` row-major,
//!   zero-padded past `n`.
//! - `C`: row-major `[m, n]` with row stride `ldc`.

/// Columns of a packed panel (four AVX-512 registers of f32; divides the usual widths).
pub const NR: usize = 64;
/// Rows per microkernel call.
pub const MR: usize = 6;
/// Depth of one pass over a panel: a `[KC, NR]` slice of `B` (32 KiB) stays in L1 while
/// every row block of the tile runs over it.
pub const KC: usize = 96;
/// Columns of `C` accumulated over all of `k` before moving on (a 256-row tile's block of
/// them, 512 KiB, stays in L2).
pub const NC: usize = 256;

/// Elements of a packed `[k, n]` operand: `ceil(n / NR)` panels of `[k, NR]`.
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k * NR
}

/// Panels of a packed `[k, n]` operand.
pub fn panels(n: usize) -> usize {
    n.div_ceil(NR)
}

/// Packs panels `panels` of `B[kk, j] = row(kk)[j]` (rows of `n` contiguous floats, found
/// through `row`: a row-major matrix, or rows picked by an index) into `dst`, which holds all
/// panels (`dst[p·k·NR..]` is panel `p`).
///
/// # Safety
/// `row(kk)` must point at `n` readable floats for every `kk < k`.
pub unsafe fn pack_rows(
    dst: &mut [f32],
    k: usize,
    n: usize,
    row: impl Fn(usize) -> *const f32,
    panels: std::ops::Range<usize>,
) {
    for p in panels {
        let panel = &mut dst[p * k * NR..(p + 1) * k * NR];
        let j0 = p * NR;
        let w = NR.min(n - j0);
        for kk in 0..k {
            let out = &mut panel[kk * NR..(kk + 1) * NR];
            out[..w].copy_from_slice(std::slice::from_raw_parts(row(kk).add(j0), w));
            out[w..].fill(0.0);
        }
    }
}

/// Packs panels `panels` of `B[kk, j] = src[j · ld + kk]` (`B` stored transposed, as
/// `[n, k]` rows of stride `ld`) into `dst`, laid out as in [`pack_rows`].
pub fn pack_transposed(
    dst: &mut [f32],
    src: &[f32],
    ld: usize,
    k: usize,
    n: usize,
    panels: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && n % 16 == 0 {
        assert!(
            src.len() >= (n - 1) * ld + k,
            "pack_transposed: source too small"
        );
        // SAFETY: the CPU has AVX-512F; every gathered index (j0 + j)·ld + kk with j0 + j < n
        // and kk < k lies inside `src` (asserted above).
        unsafe { x86::pack_transposed(dst, src, ld, k, n, panels) };
        return;
    }
    // blocks of 16 steps of kk: each source row gives one contiguous piece (a cache line)
    const KB: usize = 16;
    for p in panels {
        let panel = &mut dst[p * k * NR..(p + 1) * k * NR];
        let j0 = p * NR;
        let w = NR.min(n - j0);
        for kb in (0..k).step_by(KB) {
            let kn = KB.min(k - kb);
            let blk = &mut panel[kb * NR..(kb + kn) * NR];
            for j in 0..NR {
                if j < w {
                    let col = &src[(j0 + j) * ld + kb..(j0 + j) * ld + kb + kn];
                    for (q, &v) in col.iter().enumerate() {
                        blk[q * NR + j] = v;
                    }
                } else {
                    for q in 0..kn {
                        blk[q * NR + j] = 0.0;
                    }
                }
            }
        }
    }
}

/// Whether [`gemm_ind`] can run here (f32 AVX-512F, and nothing forces the AVX2 path).
pub fn available() -> bool {
    super::gemm::uses_avx512()
}

/// The plain reference: `C[i, j] (+)= Σ_kk A(i, kk) · B[kk, j]` with `B` unpacked
/// (`b[kk · b_rs + j · b_cs]`).
///
/// # Safety
/// Every `a_rows[i] + kk · a_step` for `kk < k` must be readable.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ref(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a_rows: &[*const f32],
    a_step: usize,
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for kk in 0..k {
                s += *a_rows[i].add(kk * a_step) * b[kk * b_rs + j * b_cs];
            }
            let cij = &mut c[i * ldc + j];
            *cij = if accumulate { *cij + s } else { s };
        }
    }
}

/// `C[m, n] (+)= A · B` with `A`'s rows through `a_rows` and `B` packed (see the module docs).
/// Single-threaded; callers split the work.
///
/// # Safety
/// Every `a_rows[i] + kk · a_step` for `i < m`, `kk < k` must be readable; `b` is a packed
/// `[k, n]` operand.
/// Panics when the CPU lacks AVX-512F (check [`available`]).
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ind(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a_rows: &[*const f32],
    a_step: usize,
    b: &[f32],
) {
    assert!(
        b.len() >= packed_len(k, n),
        "gemm_ind: packed B too small for [{k}, {n}]"
    );
    assert!(
        a_rows.len() >= m,
        "gemm_ind: {} row pointers for {m} rows",
        a_rows.len()
    );
    assert!(
        m == 0 || c.len() >= (m - 1) * ldc + n,
        "gemm_ind: C too small"
    );
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            std::arch::is_x86_feature_detected!("avx512f"),
            "gemm_ind needs AVX-512F"
        );
        if a_step == 1 {
            x86::driver::<true>(m, n, k, c, ldc, accumulate, a_rows, 1, b);
        } else {
            x86::driver::<false>(m, n, k, c, ldc, accumulate, a_rows, a_step, b);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, c, ldc, accumulate, a_rows, a_step, b);
        panic!("gemm_ind needs x86_64 with AVX-512F");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{KC, MR, NC, NR};
    use std::arch::x86_64::*;

    /// `acc[r] = Σ_kk A(r, kk) · Bp[kk]` over `kc` steps for [`MR`] rows and one panel.
    #[inline(always)]
    unsafe fn ukr<const UNIT: bool>(
        kc: usize,
        a: &[*const f32; MR],
        a_step: usize,
        bp: *const f32,
    ) -> [[__m512; 4]; MR] {
        let mut acc = [[_mm512_setzero_ps(); 4]; MR];
        for kk in 0..kc {
            let b0 = _mm512_loadu_ps(bp.add(kk * NR));
            let b1 = _mm512_loadu_ps(bp.add(kk * NR + 16));
            let b2 = _mm512_loadu_ps(bp.add(kk * NR + 32));
            let b3 = _mm512_loadu_ps(bp.add(kk * NR + 48));
            let off = if UNIT { kk } else { kk * a_step };
            for r in 0..MR {
                let av = _mm512_set1_ps(*a[r].add(off));
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
                acc[r][2] = _mm512_fmadd_ps(av, b2, acc[r][2]);
                acc[r][3] = _mm512_fmadd_ps(av, b3, acc[r][3]);
            }
        }
        acc
    }

    /// [`super::pack_transposed`] for `n` a multiple of 16: one 16-lane gather per
    /// (kk, 16 columns).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_transposed(
        dst: &mut [f32],
        src: &[f32],
        ld: usize,
        k: usize,
        n: usize,
        panels: std::ops::Range<usize>,
    ) {
        let lanes = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(ld as i32),
        );
        for p in panels {
            let panel = &mut dst[p * k * NR..(p + 1) * k * NR];
            let j0 = p * NR;
            let w = NR.min(n - j0);
            for q in 0..NR / 16 {
                if 16 * q < w {
                    let base = src.as_ptr().add((j0 + 16 * q) * ld);
                    for kk in 0..k {
                        let v = _mm512_i32gather_ps::<4>(lanes, base.add(kk));
                        _mm512_storeu_ps(panel.as_mut_ptr().add(kk * NR + 16 * q), v);
                    }
                } else {
                    for kk in 0..k {
                        _mm512_storeu_ps(
                            panel.as_mut_ptr().add(kk * NR + 16 * q),
                            _mm512_setzero_ps(),
                        );
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn driver<const UNIT: bool>(
        m: usize,
        n: usize,
        k: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
        a_rows: &[*const f32],
        a_step: usize,
        bdata: &[f32],
    ) {
        let panels = n.div_ceil(NR);
        let cp = c.as_mut_ptr();
        let mut tmp = [0f32; MR * NR];
        // column chunks of NC: the C block a chunk accumulates stays in L2 over all of k
        for pc in (0..panels).step_by(NC / NR) {
            let mut kb = 0;
            while kb < k {
                let kc = KC.min(k - kb);
                let add = accumulate || kb > 0;
                for p in pc..panels.min(pc + NC / NR) {
                    let bp = bdata.as_ptr().add((p * k + kb) * NR);
                    let j0 = p * NR;
                    let w = NR.min(n - j0);
                    let mut i0 = 0;
                    while i0 < m {
                        let rows = MR.min(m - i0);
                        let mut a = [a_rows[i0].add(kb * a_step); MR];
                        for r in 1..rows {
                            a[r] = a_rows[i0 + r].add(kb * a_step);
                        }
                        if UNIT && p == pc && i0 + MR < m {
                            // the next row block's slice of A, which comes from memory on the
                            // first panel of a depth step
                            for r in i0 + MR..m.min(i0 + 2 * MR) {
                                let row = a_rows[r].add(kb) as *const i8;
                                for line in (0..kc * 4).step_by(64) {
                                    _mm_prefetch::<_MM_HINT_T0>(row.add(line));
                                }
                            }
                        }
                        let acc = ukr::<UNIT>(kc, &a, a_step, bp);
                        if rows == MR && w == NR {
                            for (r, acc) in acc.iter().enumerate() {
                                let row = cp.add((i0 + r) * ldc + j0);
                                for (q, &v) in acc.iter().enumerate() {
                                    let dst = row.add(16 * q);
                                    let v = if add {
                                        _mm512_add_ps(_mm512_loadu_ps(dst), v)
                                    } else {
                                        v
                                    };
                                    _mm512_storeu_ps(dst, v);
                                }
                            }
                        } else {
                            for (r, acc) in acc.iter().enumerate() {
                                for (q, &v) in acc.iter().enumerate() {
                                    _mm512_storeu_ps(tmp.as_mut_ptr().add(r * NR + 16 * q), v);
                                }
                            }
                            for r in 0..rows {
                                let at = (i0 + r) * ldc + j0;
                                let row = &mut c[at..at + w];
                                let t = &tmp[r * NR..r * NR + w];
                                if add {
                                    row.iter_mut().zip(t).for_each(|(x, &y)| *x += y);
                                } else {
                                    row.copy_from_slice(t);
                                }
                            }
                        }
                        i0 += MR;
                    }
                }
                kb += kc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_reference_on_ragged_shapes_strides_and_indices() {
        if !available() {
            eprintln!("no AVX-512F: gemm_ind not tested here");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 47, 3),
            (8, 48, 128),
            (9, 49, 129),
            (37, 100, 300),
            (64, 512, 256),
        ] {
            let src_rows = m + 5;
            let x = data(src_rows * k, 1);
            // rows through an index (reversed, skipping some), row-major
            let idx: Vec<usize> = (0..m).map(|i| (i * 3 + 2) % src_rows).collect();
            let rows: Vec<*const f32> = idx.iter().map(|&t| x[t * k..].as_ptr()).collect();
            // the same A read transposed: A(i, kk) = xt[kk * m + i]
            let xt: Vec<f32> = (0..k * m).map(|z| x[idx[z % m] * k + z / m]).collect();
            let cols: Vec<*const f32> = (0..m).map(|i| xt[i..].as_ptr()).collect();
            for (b_rs, b_cs) in [(n, 1), (1, k)] {
                let b = data(k * n, 2);
                let mut packed = vec![f32::NAN; packed_len(k, n)];
                if b_cs == 1 {
                    unsafe {
                        pack_rows(&mut packed, k, n, |kk| b[kk * n..].as_ptr(), 0..panels(n))
                    };
                } else {
                    pack_transposed(&mut packed, &b, k, k, n, 0..panels(n));
                }
                for accumulate in [false, true] {
                    let ldc = n + 3;
                    let c0 = data(m * ldc, 3);
                    let (mut want, mut got, mut got_t) = (c0.clone(), c0.clone(), c0.clone());
                    unsafe {
                        gemm_ref(
                            m,
                            n,
                            k,
                            &mut want,
                            ldc,
                            accumulate,
                            &rows,
                            1,
                            &b,
                            (b_rs, b_cs),
                        );
                        gemm_ind(m, n, k, &mut got, ldc, accumulate, &rows, 1, &packed);
                        gemm_ind(m, n, k, &mut got_t, ldc, accumulate, &cols, m, &packed);
                    }
                    for (i, ((w, g), gt)) in want.iter().zip(&got).zip(&got_t).enumerate() {
                        let tol = 1e-4 * (1.0 + w.abs()) * (k as f32).sqrt();
                        assert!(
                            (w - g).abs() <= tol,
                            "{m}x{n}x{k} acc={accumulate} at {i}: {g} vs {w}"
                        );
                        assert!(
                            (w - gt).abs() <= tol,
                            "transposed A, {m}x{n}x{k} at {i}: {gt} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
