//! Expert weights packed once for `gemm`'s microkernels, and the GEMM driver that reads them.
//!
//! `gemm` packs its weight operand on every call. The dispatch kernels call it once per row
//! tile (≤ 256 rows), so an expert's weights were packed once per tile, a measurable share of
//! the kernels' time (docs/PERFORMANCE.md, "What was tried"). Here an expert's weights are packed once per pass and
//! wave and every tile of that expert runs `gemm`'s own microkernels (`gemm-f32` / `gemm-f64`,
//! AVX-512 or AVX2+FMA as [`super::gemm::isa`] says) on them, through a plain driver that
//! blocks the product the way `gemm`'s does (depth blocks and row blocks from
//! `gemm_common::cache::kernel_params`).
//!
//! # The product
//! Row-major `C[m, n] (+)= A[m, k] · B[k, n]`, where `A` holds the tile's rows (unit column
//! stride, row stride `a_rs`) and `B` the weights, read through any `(row, column)` strides.
//! In `gemm`'s column-major view this is `Cᵀ = Bᵀ · Aᵀ`: `Bᵀ` is the packed left operand
//! (`MR`-row panels, one per `MR` columns of `B`, each a `kc × MR` block per depth block),
//! `Aᵀ` the right operand read in place (unit row stride), `Cᵀ` the destination with unit row
//! stride — the layout the microkernels store with full vectors.
//!
//! [`mm_ref`] is the plain triple loop the tests hold the driver to.

use gemm_common::microkernel::MicroKernelFn;

use crate::gemm::GemmFloat;

/// One family of `gemm`'s microkernels: `MR = lanes · mr_div_n` rows by `NR` columns, and
/// the kernel for a partial block of `⌈m / lanes⌉` vectors by `n` columns.
#[derive(Clone, Copy)]
pub struct Ukr<T: 'static> {
    pub lanes: usize,
    pub mr_div_n: usize,
    pub nr: usize,
    pub kernel: fn(usize, usize) -> MicroKernelFn<T>,
}

impl<T> Ukr<T> {
    pub fn mr(&self) -> usize {
        self.lanes * self.mr_div_n
    }
}

/// `dst.copy_from_slice(src)` for the few short lengths the packing copies (a group of `NR`
/// values, a panel row of `MR`) as fixed-size moves: `copy_from_slice` calls `memmove` for
/// them, which at 6 values costs more than the copy.
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    #[inline(always)]
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) {
        let s: &[T; N] = src.try_into().expect("copy_short: lengths differ");
        let d: &mut [T; N] = dst.try_into().expect("copy_short: lengths differ");
        *d = *s;
    }
    match src.len() {
        4 => fixed::<T, 4>(dst, src),
        6 => fixed::<T, 6>(dst, src),
        8 => fixed::<T, 8>(dst, src),
        // longer rows in 16-value pieces (a whole 64-value array is copied through memcpy too)
        n if n % 16 == 0 && n <= 64 => {
            for (d, s) in dst.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
                fixed::<T, 16>(d, s)
            }
        }
        _ => dst.copy_from_slice(src),
    }
}

/// `dst[j·ds + i] = src[i·ss + j]` for `i, j < 16`: a 16×16 f32 transpose in registers
/// (interleave 32-bit pairs, then 64-bit pairs, then 128-bit lanes twice).
///
/// # Safety
/// The CPU has AVX-512F; the 16 rows at `src` and at `dst` are valid for 16 values each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16_f32(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * ss)));
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved (per 128-bit lane: columns 4L, 4L+1 /
    // 4L+2, 4L+3)
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c], lane L: column 4L + c of rows 4g..4g+4
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let pd = |x: __m512| _mm512_castps_pd(x);
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    for c in 0..4 {
        // lanes 0/2 and 1/3 of rows 0..8, and of rows 8..16
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        let x0 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let x1 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
        // column 4L + c for L = 0, 2, 1, 3
        _mm512_storeu_ps(dst.add(c * ds), _mm512_shuffle_f32x4::<0x88>(v0, x0));
        _mm512_storeu_ps(dst.add((8 + c) * ds), _mm512_shuffle_f32x4::<0xdd>(v0, x0));
        _mm512_storeu_ps(dst.add((4 + c) * ds), _mm512_shuffle_f32x4::<0x88>(v1, x1));
        _mm512_storeu_ps(dst.add((12 + c) * ds), _mm512_shuffle_f32x4::<0xdd>(v1, x1));
    }
}

/// Alignment of the packed panels, in bytes.
const ALIGN: usize = 64;

/// `B [k, n]` packed for [`mm_packed`].
pub struct PackedB<T: 'static> {
    buf: Vec<T>,
    /// Elements before the first panel, so that panels start on a 64-byte boundary (a
    /// misaligned panel splits every vector load across two cache lines).
    off: usize,
    k: usize,
    n: usize,
    /// Columns of `B` rounded up to whole panels.
    npad: usize,
    kc: usize,
    mc: usize,
    ukr: Ukr<T>,
}

impl<T: GemmFloat + num_traits::Float> PackedB<T> {
    /// An empty packing that reuses `buf`'s memory; fill it with [`Self::pack`] or, over several threads, [`Self::packer`].
    /// `rows_hint`: the typical row count of `A` (blocks the product like `gemm` would).
    pub fn new(mut buf: Vec<T>, k: usize, n: usize, rows_hint: usize, ukr: Ukr<T>) -> Self {
        let mr = ukr.mr();
        let npad = n.div_ceil(mr) * mr;
        let p = gemm_common::cache::kernel_params(
            n,
            rows_hint.max(1),
            k,
            mr,
            ukr.nr,
            std::mem::size_of::<T>(),
        );
        let kc = p.kc.clamp(1, k.max(1));
        let mc = (p.mc / mr).max(1) * mr;
        // every element a product reads is written by the packing: no need to clear. A
        // buffer too small is replaced by one of exactly the size needed (not grown by
        // doubling), so the same shapes ask the allocator for the same sizes step after step
        // and `alloc::Recycling` can hand back the previous step's memory.
        let len = Self::buffer_len(k, n, ukr);
        if buf.capacity() < len {
            buf = Vec::with_capacity(len);
        }
        if buf.len() < len {
            buf.resize(len, T::zero());
        }
        let off = buf.as_ptr().align_offset(ALIGN);
        // the microkernels load panels as whole vectors
        assert!(
            off <= ALIGN / std::mem::size_of::<T>(),
            "packed gemm: cannot align the panels"
        );
        Self {
            buf,
            off,
            k,
            n,
            npad,
            kc,
            mc,
            ukr,
        }
    }

    /// Elements of the buffer a packing of `B [k, n]` needs (panels padded to `MR` columns,
    /// plus room to align them).
    pub fn buffer_len(k: usize, n: usize, ukr: Ukr<T>) -> usize {
        n.div_ceil(ukr.mr()) * ukr.mr() * k + ALIGN / std::mem::size_of::<T>()
    }

    /// Panels (groups of `MR` columns of `B`).
    pub fn panels(&self) -> usize {
        self.npad / self.ukr.mr()
    }

    /// The memory, for reuse.
    pub fn into_buf(self) -> Vec<T> {
        self.buf
    }

    /// Offset of panel `p`'s block at depth `k0` (block depth `kb`).
    fn at(&self, k0: usize, kb: usize, p: usize) -> usize {
        self.off + k0 * self.npad + p * self.ukr.mr() * kb
    }

    /// Packs panels `p0..p1` of `b` (element `(i, j)` at `b[i·rs + j·cs]`).
    ///
    /// # Safety
    /// `dst` must be this packing's buffer (`self.buf`), and no other thread may write the
    /// same panels at the same time; `b` must hold every element of `[k, n]`.
    unsafe fn pack_raw(
        &self,
        dst: *mut T,
        b: &[T],
        (rs, cs): (usize, usize),
        p0: usize,
        p1: usize,
    ) {
        let mr = self.ukr.mr();
        // the panel `p`'s block at depth block `k0` (block depth `kb`)
        let panel = |k0: usize, kb: usize, p: usize| {
            std::slice::from_raw_parts_mut(dst.add(self.at(k0, kb, p)), kb * mr)
        };
        for k0 in (0..self.k).step_by(self.kc) {
            let kb = self.kc.min(self.k - k0);
            if cs == 1 {
                // rows of B are contiguous: walk them in order (one sequential read stream;
                // panel by panel it would be a stream of 2 KiB strides, which the hardware
                // prefetchers follow badly), copying each row's MR-wide slices into the
                // panels
                for kk in 0..kb {
                    let row = &b[(k0 + kk) * rs..];
                    for p in p0..p1 {
                        let c0 = p * mr;
                        let cols = mr.min(self.n - c0);
                        let o = &mut panel(k0, kb, p)[kk * mr..(kk + 1) * mr];
                        copy_short(&mut o[..cols], &row[c0..c0 + cols]);
                        o[cols..].iter_mut().for_each(|x| *x = T::zero());
                    }
                }
                continue;
            }
            for p in p0..p1 {
                let out = panel(k0, kb, p);
                let c0 = p * mr;
                let cols = mr.min(self.n - c0);
                // transpose: B's columns are rows of its storage (`cs` apart); 16 of them
                // at a time, each read along the whole depth block (16 sequential streams)
                // through 16×16 register transposes on AVX-512 for f32
                let mut r_fast = 0;
                #[cfg(target_arch = "x86_64")]
                if rs == 1
                    && self.ukr.lanes == 16
                    && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
                {
                    // (16 lanes of T: f32 on AVX-512, whose presence `ukr` says)
                    while r_fast + 16 <= cols {
                        for kk0 in (0..kb / 16 * 16).step_by(16) {
                            let src = b[(c0 + r_fast) * cs + k0 + kk0..].as_ptr();
                            // SAFETY: 16 rows of B's transposed storage, 16 values each,
                            // `cs` apart (inside `b`, checked by the caller); 16 rows of
                            // 16 values of `out`, `mr` apart (inside the panel); T is f32.
                            transpose16_f32(
                                src as *const f32,
                                cs,
                                out[kk0 * mr + r_fast..].as_mut_ptr() as *mut f32,
                                mr,
                            );
                        }
                        // the depths after the last whole 16
                        for r in r_fast..r_fast + 16 {
                            let src = &b[(c0 + r) * cs + k0 * rs..];
                            for kk in kb / 16 * 16..kb {
                                out[kk * mr + r] = src[kk * rs];
                            }
                        }
                        r_fast += 16;
                    }
                }
                for r in r_fast..mr {
                    if r < cols {
                        let src = &b[(c0 + r) * cs + k0 * rs..];
                        for kk in 0..kb {
                            out[kk * mr + r] = src[kk * rs];
                        }
                    } else {
                        for kk in 0..kb {
                            out[kk * mr + r] = T::zero();
                        }
                    }
                }
            }
        }
    }

    /// Packs every panel on this thread.
    pub fn pack(&mut self, b: &[T], strides: (usize, usize)) {
        let packer = self.packer(b, strides);
        // SAFETY: one call covering every panel, on this thread
        unsafe { packer.pack(0, packer.panels()) }
    }

    fn check(&self, b: &[T], (rs, cs): (usize, usize)) {
        if self.k > 0 && self.n > 0 {
            assert!(
                b.len() > (self.k - 1) * rs + (self.n - 1) * cs,
                "packed gemm: B too small"
            );
        }
    }

    /// A handle through which several threads pack disjoint panel ranges.
    pub fn packer<'a>(&'a mut self, b: &'a [T], strides: (usize, usize)) -> Packer<'a, T> {
        self.check(b, strides);
        Packer {
            dst: self.buf.as_mut_ptr(),
            pb: self,
            b,
            strides,
        }
    }
}

impl<T: GemmFloat + num_traits::Float> PackedB<T> {
    /// Start of row `kk` of `B` in the panel of columns `p·MR..`.
    fn row_at(&self, kk: usize, p: usize) -> usize {
        let k0 = kk / self.kc * self.kc;
        self.at(k0, self.kc.min(self.k - k0), p) + (kk - k0) * self.ukr.mr()
    }

    /// A handle through which several threads write whole rows of `B` (rows instead of
    /// panels: the kernels gather the rows of a weight gradient's operand straight into its
    /// packing).
    pub fn row_writer(&mut self) -> RowWriter<'_, T> {
        RowWriter {
            dst: self.buf.as_mut_ptr(),
            pb: self,
        }
    }

    /// Copies row `kk` of `B` out of the packing.
    pub fn row(&self, kk: usize, out: &mut [T]) {
        assert!(
            kk < self.k && out.len() == self.n,
            "packed row out of bounds"
        );
        let mr = self.ukr.mr();
        for (p, o) in out.chunks_mut(mr).enumerate() {
            let at = self.row_at(kk, p);
            o.copy_from_slice(&self.buf[at..at + o.len()]);
        }
    }
}

/// Shared access for writing rows of `B` in parallel (see [`PackedB::row_writer`]).
pub struct RowWriter<'a, T: 'static> {
    dst: *mut T,
    pb: &'a PackedB<T>,
}
// SAFETY: each call of `put` writes the entries of its own row only; callers give
// distinct rows.
unsafe impl<T: Send + Sync> Send for RowWriter<'_, T> {}
unsafe impl<T: Send + Sync> Sync for RowWriter<'_, T> {}

impl<T: GemmFloat + num_traits::Float> RowWriter<'_, T> {
    /// Writes row `kk` of `B` (`row.len() == n`; the padding columns of the last panel are
    /// zeroed).
    ///
    /// # Safety
    /// No two concurrent calls may write the same row.
    pub unsafe fn put(&self, kk: usize, row: &[T]) {
        self.pb.write_row(self.dst, kk, row)
    }
}

impl<T: GemmFloat + num_traits::Float> PackedB<T> {
    /// Writes row `kk` of `B` into every panel of the packing at `dst` (the padding columns
    /// of the last panel zeroed).
    ///
    /// # Safety
    /// `dst` is this packing's buffer, and no other thread writes row `kk` at the same time.
    unsafe fn write_row(&self, dst: *mut T, kk: usize, row: &[T]) {
        assert!(
            kk < self.k && row.len() == self.n,
            "packed row out of bounds"
        );
        let mr = self.ukr.mr();
        for p in 0..self.panels() {
            let out = std::slice::from_raw_parts_mut(dst.add(self.row_at(kk, p)), mr);
            let src = &row[p * mr..row.len().min((p + 1) * mr)];
            copy_short(&mut out[..src.len()], src);
            out[src.len()..].iter_mut().for_each(|x| *x = T::zero());
        }
    }
}

/// Shared access for packing panel ranges in parallel (see [`PackedB::packer`]).
pub struct Packer<'a, T: 'static> {
    dst: *mut T,
    pb: &'a PackedB<T>,
    b: &'a [T],
    strides: (usize, usize),
}
// SAFETY: each call of `pack` / `pack_rows` writes the panels / rows it is given only; callers
// give disjoint ranges (and do not mix the two on one packing).
unsafe impl<T: Send + Sync> Send for Packer<'_, T> {}
unsafe impl<T: Send + Sync> Sync for Packer<'_, T> {}

impl<T: GemmFloat + num_traits::Float> Packer<'_, T> {
    /// Panels of the packing.
    pub fn panels(&self) -> usize {
        self.pb.panels()
    }

    /// Packs panels `p0..p1`.
    ///
    /// # Safety
    /// No two concurrent calls may cover the same panel.
    pub unsafe fn pack(&self, p0: usize, p1: usize) {
        assert!(
            p0 <= p1 && p1 <= self.pb.panels(),
            "panel range out of bounds"
        );
        self.pb.pack_raw(self.dst, self.b, self.strides, p0, p1)
    }

    /// Rows of `B`: whether they are contiguous in its storage (then [`Self::pack_rows`] reads
    /// it in order).
    pub fn rows_contiguous(&self) -> bool {
        self.strides.1 == 1
    }

    /// Rows of `B` in the packing.
    pub fn rows(&self) -> usize {
        self.pb.k
    }

    /// Packs rows `r0..r1` of `B` into every panel: for contiguous rows, one sequential read
    /// (by panels, a job reads `MR`-wide pieces of every row, 2 KiB apart at d=512, which the
    /// hardware prefetchers follow badly). The same packing as [`Self::pack`].
    ///
    /// # Safety
    /// No two concurrent calls may cover the same row.
    pub unsafe fn pack_rows(&self, r0: usize, r1: usize) {
        let pb = self.pb;
        assert!(r0 <= r1 && r1 <= pb.k, "row range out of bounds");
        let (rs, cs) = self.strides;
        let mut strided = Vec::new();
        for kk in r0..r1 {
            let row = if cs == 1 {
                &self.b[kk * rs..kk * rs + pb.n]
            } else {
                strided.clear();
                strided.extend((0..pb.n).map(|j| self.b[kk * rs + j * cs]));
                &strided[..]
            };
            pb.write_row(self.dst, kk, row);
        }
    }
}

/// `C[m, n] (+)= A[m, k] · B[k, n]` with `B` packed, `C` row-major with row stride `n` and
/// `A`'s rows `a_rs` apart (unit column stride), read in place. Single-threaded.
pub fn mm_packed<T: GemmFloat + num_traits::Float>(
    m: usize,
    c: &mut [T],
    accumulate: bool,
    a: &[T],
    a_rs: usize,
    pb: &PackedB<T>,
) {
    assert!(c.len() >= m * pb.n, "packed gemm: C too small");
    // SAFETY: `c` is a live, initialised, exclusively borrowed slice of at least m·n entries
    unsafe { drive(m, c.as_mut_ptr(), accumulate, a, (a_rs, 1), pb, None) }
}

/// [`mm_packed`] with `A` read through any strides `(a_rs, a_cs)`: each depth block of `A` is
/// first packed into `scratch` in groups of `NR` rows (as `gemm` packs its right operand), so
/// the microkernel reads it contiguously whatever the strides.
pub fn mm_packed_strided<T: GemmFloat + num_traits::Float>(
    m: usize,
    c: &mut [T],
    accumulate: bool,
    a: &[T],
    a_strides: (usize, usize),
    pb: &PackedB<T>,
    scratch: &mut Vec<T>,
) {
    assert!(c.len() >= m * pb.n, "packed gemm: C too small");
    // SAFETY: `c` is a live, initialised, exclusively borrowed slice of at least m·n entries
    unsafe {
        drive(
            m,
            c.as_mut_ptr(),
            accumulate,
            a,
            a_strides,
            pb,
            Some(scratch),
        )
    }
}

/// [`mm_packed_strided`] writing `C` through a raw pointer, so that `C` may start
/// uninitialised when `accumulate` is false: every entry is then written before any is read.
///
/// # Safety
/// `c` must be valid for writes (and, when `accumulate`, reads of initialised values) of
/// `m·n` entries, row stride `n`, that nothing else accesses during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn mm_packed_strided_raw<T: GemmFloat + num_traits::Float>(
    m: usize,
    c: *mut T,
    accumulate: bool,
    a: &[T],
    a_strides: (usize, usize),
    pb: &PackedB<T>,
    scratch: &mut Vec<T>,
) {
    drive(m, c, accumulate, a, a_strides, pb, Some(scratch))
}

/// # Safety
/// `c_ptr` is valid as for [`mm_packed_strided_raw`].
unsafe fn drive<T: GemmFloat + num_traits::Float>(
    m: usize,
    c_ptr: *mut T,
    accumulate: bool,
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    pb: &PackedB<T>,
    mut scratch: Option<&mut Vec<T>>,
) {
    let (k, n) = (pb.k, pb.n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m * n {
                c_ptr.add(i).write(T::zero());
            }
        }
        return;
    }
    assert!(
        a.len() > (m - 1) * a_rs + (k - 1) * a_cs,
        "packed gemm: A too small"
    );
    let u = pb.ukr;
    let (mr, nr_full) = (u.mr(), u.nr);
    if let Some(buf) = scratch.as_deref_mut() {
        let len = m.div_ceil(nr_full) * nr_full * pb.kc.min(k);
        if buf.len() < len {
            buf.resize(len, T::zero());
        }
    }
    let b_ptr = pb.buf.as_ptr();
    for k0 in (0..k).step_by(pb.kc) {
        let kb = pb.kc.min(k - k0);
        // where the microkernel reads A at depth k0: (start, its strides, the distance
        // between groups of NR rows)
        let (a_ptr, rhs_rs, rhs_cs, group): (*const T, usize, usize, usize) =
            match scratch.as_deref_mut() {
                None => (a[k0 * a_cs..].as_ptr(), a_cs, a_rs, nr_full * a_rs),
                Some(buf) => {
                    // groups of NR rows of A, each `kb × NR` with the NR values of a depth
                    // adjacent (unused slots of the last group are never read); depth by
                    // depth, so that A is read along its rows once (a group at a time would
                    // read `kb` lines `a_cs` apart per group, which for the weight gradients'
                    // kilobyte strides fall into the same L1 sets)
                    let groups = m.div_ceil(nr_full);
                    for kk in 0..kb {
                        let src = (k0 + kk) * a_cs;
                        for g in 0..groups {
                            let j0 = g * nr_full;
                            let nr = nr_full.min(m - j0);
                            let out = &mut buf[g * kb * nr_full + kk * nr_full..][..nr];
                            if a_rs == 1 {
                                copy_short(out, &a[src + j0..src + j0 + nr]);
                            } else {
                                for (jj, o) in out.iter_mut().enumerate() {
                                    *o = a[src + (j0 + jj) * a_rs];
                                }
                            }
                        }
                    }
                    (buf.as_ptr(), nr_full, 1, kb * nr_full)
                }
            };
        let status = if k0 == 0 && !accumulate { 0 } else { 1 };
        for m0 in (0..n).step_by(pb.mc) {
            let p_end = (m0 + pb.mc).min(n).div_ceil(mr);
            for j0 in (0..m).step_by(nr_full) {
                let nr = nr_full.min(m - j0);
                for p in m0 / mr..p_end {
                    let rows = mr.min(n - p * mr);
                    let lhs = b_ptr.wrapping_add(pb.at(k0, kb, p));
                    // SAFETY: the microkernel reads `kb` columns of `MR` packed values at
                    // `lhs` (inside the panel); `kb` depths of `nr` rows of A from `a_ptr` at
                    // group `j0 / NR` (`j0` is a multiple of NR; in place: inside A, asserted above; packed: inside
                    // `scratch`, sized above); and writes `rows × nr` entries of C from
                    // `(j0, p·MR)` (inside C). Its CPU features were checked when `ukr` was
                    // chosen.
                    unsafe {
                        (u.kernel)(rows.div_ceil(u.lanes) - 1, nr - 1)(
                            rows,
                            nr,
                            kb,
                            c_ptr.add(j0 * n + p * mr),
                            lhs,
                            a_ptr.add(j0 / nr_full * group),
                            n as isize,
                            1,
                            mr as isize,
                            rhs_rs as isize,
                            rhs_cs as isize,
                            T::one(),
                            T::one(),
                            status,
                            false,
                            false,
                            false,
                            lhs,
                        )
                    }
                }
            }
        }
    }
}

/// The plain triple loop of [`mm_packed`] / [`mm_packed_strided`] with `B` unpacked (for
/// tests): `A` through `(a_rs, a_cs)`, `B` through `(rs, cs)`.
#[allow(clippy::too_many_arguments)]
pub fn mm_ref<T: num_traits::Float>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    accumulate: bool,
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (rs, cs): (usize, usize),
) {
    for i in 0..m {
        for j in 0..n {
            let s = (0..k).fold(T::zero(), |s, l| {
                s + a[i * a_rs + l * a_cs] * b[l * rs + j * cs]
            });
            let c = &mut c[i * n + j];
            *c = if accumulate { *c + s } else { s };
        }
    }
}
