//! Expert weights packed once for `gemm`'s microkernels, and the GEMM driver that reads them.
//!
//! `gemm` packs its weight operand on every call. The dispatch kernels call it once per row
//! tile (≤ 256 rows), so an expert's weights were packed once per tile: ~15 % of the kernels'
//! time at mixtral8's shapes (perf), and the reason a 256-row tile ran its GEMM ~14 % slower
//! than a 1024-row one (`pack_probe`). Here an expert's weights are packed once per pass and
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

use super::gemm::GemmFloat;

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
    /// An empty packing that reuses `buf`'s memory; fill it with [`Self::pack_panels`].
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
        let align = ALIGN / std::mem::size_of::<T>();
        // every element a product reads is written by the packing: no need to clear
        if buf.len() < npad * k + align {
            buf.resize(npad * k + align, T::zero());
        }
        let off = buf.as_ptr().align_offset(ALIGN).min(align);
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
        for k0 in (0..self.k).step_by(self.kc) {
            let kb = self.kc.min(self.k - k0);
            for p in p0..p1 {
                let out = std::slice::from_raw_parts_mut(dst.add(self.at(k0, kb, p)), kb * mr);
                let c0 = p * mr;
                let cols = mr.min(self.n - c0);
                if cs == 1 {
                    // rows of B are contiguous: copy MR-wide slices
                    for kk in 0..kb {
                        let src = &b[(k0 + kk) * rs + c0..][..cols];
                        let o = &mut out[kk * mr..(kk + 1) * mr];
                        o[..cols].copy_from_slice(src);
                        o[cols..].iter_mut().for_each(|x| *x = T::zero());
                    }
                } else {
                    // transpose, in blocks of 16 depths so that the 16 output rows being
                    // written stay in L1 while each column of B is read down 16 depths
                    for kk0 in (0..kb).step_by(16) {
                        let kk1 = (kk0 + 16).min(kb);
                        for r in 0..mr {
                            if r < cols {
                                let src = &b[(c0 + r) * cs + (k0 + kk0) * rs..];
                                for kk in kk0..kk1 {
                                    out[kk * mr + r] = src[(kk - kk0) * rs];
                                }
                            } else {
                                for kk in kk0..kk1 {
                                    out[kk * mr + r] = T::zero();
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Packs every panel on this thread.
    pub fn pack(&mut self, b: &[T], strides: (usize, usize)) {
        self.check(b, strides);
        let dst = self.buf.as_mut_ptr();
        // SAFETY: `dst` is our own buffer, borrowed mutably; `check` bounds `b`.
        unsafe { self.pack_raw(dst, b, strides, 0, self.panels()) }
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

/// Shared access for packing panel ranges in parallel (see [`PackedB::packer`]).
pub struct Packer<'a, T: 'static> {
    dst: *mut T,
    pb: &'a PackedB<T>,
    b: &'a [T],
    strides: (usize, usize),
}
// SAFETY: each call of `pack` writes the panels it is given only; callers give disjoint ranges.
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
}

/// `C[m, n] (+)= A[m, k] · B[k, n]` with `B` packed, `C` row-major with row stride `n` and
/// `A`'s rows `a_rs` apart (unit column stride). Single-threaded.
pub fn mm_packed<T: GemmFloat + num_traits::Float>(
    m: usize,
    c: &mut [T],
    accumulate: bool,
    a: &[T],
    a_rs: usize,
    pb: &PackedB<T>,
) {
    let (k, n) = (pb.k, pb.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= m * n, "packed gemm: C too small");
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|x| *x = T::zero());
        }
        return;
    }
    assert!(a.len() >= (m - 1) * a_rs + k, "packed gemm: A too small");
    let u = pb.ukr;
    let mr = u.mr();
    let (c_ptr, a_ptr, b_ptr) = (c.as_mut_ptr(), a.as_ptr(), pb.buf.as_ptr());
    for k0 in (0..k).step_by(pb.kc) {
        let kb = pb.kc.min(k - k0);
        let status = if k0 == 0 && !accumulate { 0 } else { 1 };
        for m0 in (0..n).step_by(pb.mc) {
            let p_end = (m0 + pb.mc).min(n).div_ceil(mr);
            for j0 in (0..m).step_by(u.nr) {
                let nr = u.nr.min(m - j0);
                for p in m0 / mr..p_end {
                    let rows = mr.min(n - p * mr);
                    let lhs = b_ptr.wrapping_add(pb.at(k0, kb, p));
                    // SAFETY: the microkernel reads `kb` columns of `MR` packed values at
                    // `lhs` (inside the panel), `kb` values of `nr` rows of A from
                    // `a[j0·a_rs + k0..]` (inside A, asserted above), and writes `rows × nr`
                    // entries of C from `(j0, p·MR)` (inside C); its CPU features were checked
                    // when `ukr` was chosen.
                    unsafe {
                        (u.kernel)(rows.div_ceil(u.lanes) - 1, nr - 1)(
                            rows,
                            nr,
                            kb,
                            c_ptr.add(j0 * n + p * mr),
                            lhs,
                            a_ptr.add(j0 * a_rs + k0),
                            n as isize,
                            1,
                            mr as isize,
                            1,
                            a_rs as isize,
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

/// The plain triple loop of [`mm_packed`] with `B` unpacked (for tests).
#[allow(clippy::too_many_arguments)]
pub fn mm_ref<T: num_traits::Float>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    accumulate: bool,
    a: &[T],
    a_rs: usize,
    b: &[T],
    (rs, cs): (usize, usize),
) {
    for i in 0..m {
        for j in 0..n {
            let s = (0..k).fold(T::zero(), |s, l| s + a[i * a_rs + l] * b[l * rs + j * cs]);
            let c = &mut c[i * n + j];
            *c = if accumulate { *c + s } else { s };
        }
    }
}
