//! The GEMM under the dispatch kernels, and the switch that forces it off AVX-512.
//!
//! Normally every call goes through `gemm` 0.19's front door, which picks its kernels once at
//! run time: AVX-512 (our `x86-v4` feature, unified into candle's `gemm` too) when the CPU has
//! it, else AVX2+FMA. std's feature detection cannot be overridden, so to run the AVX2 path
//! on an AVX-512 machine — what a machine without AVX-512 executes — [`GemmIsa::Avx2`] calls
//! `gemm-common`'s generic driver with `gemm-f32`/`gemm-f64`'s FMA microkernels directly:
//! the same code `gemm` itself selects when `avx512f` is absent. The elementwise kernels
//! (activations) follow the same switch.
//!
//! Set it with [`set_isa`], or for a whole process with `SWITCHYARD_GEMM_ISA=avx2`.
//! It applies to Switchyard's kernels only; candle's own matmuls keep `gemm`'s choice.

use std::sync::atomic::{AtomicU8, Ordering};

use gemm::Parallelism;

use crate::packed::Ukr;

/// Environment variable read once, at the first kernel call: `avx2` forces the AVX2 path.
pub const ISA_ENV: &str = "SWITCHYARD_GEMM_ISA";

/// Which kernels the dispatch GEMMs and activations run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmIsa {
    /// The best the CPU supports (AVX-512 where available).
    Auto,
    /// AVX2+FMA even where AVX-512 is available (panics on a CPU without AVX2 and FMA).
    Avx2,
}

const UNSET: u8 = 0;
const AUTO: u8 = 1;
const AVX2: u8 = 2;
static ISA: AtomicU8 = AtomicU8::new(UNSET);

/// The current choice (first call: from [`ISA_ENV`]).
pub fn isa() -> GemmIsa {
    match ISA.load(Ordering::Relaxed) {
        AUTO => GemmIsa::Auto,
        AVX2 => GemmIsa::Avx2,
        _ => {
            let forced = std::env::var(ISA_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("avx2"));
            let isa = if forced { GemmIsa::Avx2 } else { GemmIsa::Auto };
            set_isa(isa);
            isa
        }
    }
}

/// Sets the choice for the whole process (all threads).
pub fn set_isa(isa: GemmIsa) {
    ISA.store(
        if isa == GemmIsa::Avx2 { AVX2 } else { AUTO },
        Ordering::Relaxed,
    );
}

/// Runs `f` with `isa` forced, restoring the previous choice afterwards. Process-wide: do
/// not race it against another `with_isa` on another thread.
pub fn with_isa<R>(isa_: GemmIsa, f: impl FnOnce() -> R) -> R {
    let before = isa();
    set_isa(isa_);
    let r = f();
    set_isa(before);
    r
}

/// Whether the AVX-512 kernels run: the CPU has `avx512f` and nothing forces AVX2.
pub fn uses_avx512() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        isa() == GemmIsa::Auto && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        false
    }
}

/// Float types with a GEMM on both paths.
pub trait GemmFloat: Copy + Send + Sync + 'static {
    /// `gemm::gemm`'s arguments (column stride before row stride), forced onto AVX2+FMA.
    ///
    /// # Safety
    /// As `gemm::gemm`: every access implied by the sizes and strides must be in bounds.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_avx2(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut Self,
        dst_cs: isize,
        dst_rs: isize,
        read_dst: bool,
        lhs: *const Self,
        lhs_cs: isize,
        lhs_rs: isize,
        rhs: *const Self,
        rhs_cs: isize,
        rhs_rs: isize,
        alpha: Self,
        beta: Self,
        par: Parallelism,
    );

    /// `gemm`'s microkernels for the current [`isa`] (AVX-512 or AVX2+FMA), for
    /// [`super::packed`]; `None` where neither runs (then the kernels call `gemm` itself).
    fn microkernels() -> Option<Ukr<Self>>;
}

macro_rules! gemm_float {
    ($t:ident, $n:expr, $ukr:path, $n512:expr, $ukr512:path) => {
        impl GemmFloat for $t {
            fn microkernels() -> Option<Ukr<Self>> {
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                {
                    // one of gemm's microkernel families: `$lanes` lanes per vector
                    macro_rules! family {
                        ($lanes:expr, $m:path) => {{
                            use $m as u;
                            Some(Ukr {
                                lanes: $lanes,
                                mr_div_n: u::MR_DIV_N,
                                nr: u::NR,
                                kernel: |i, j| u::UKR[i][j],
                            })
                        }};
                    }
                    if uses_avx512() {
                        return family!($n512, $ukr512);
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        return family!($n, $ukr);
                    }
                    None
                }
                #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
                None
            }

            #[allow(clippy::too_many_arguments)]
            unsafe fn gemm_avx2(
                m: usize,
                n: usize,
                k: usize,
                dst: *mut Self,
                dst_cs: isize,
                dst_rs: isize,
                read_dst: bool,
                lhs: *const Self,
                lhs_cs: isize,
                lhs_rs: isize,
                rhs: *const Self,
                rhs_cs: isize,
                rhs_rs: isize,
                alpha: Self,
                beta: Self,
                par: Parallelism,
            ) {
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                {
                    use gemm_common::simd::{MixedSimd, V3};
                    use $ukr as u;
                    let simd = <V3 as MixedSimd<$t, $t, $t, $t>>::try_new()
                        .expect("the AVX2 path needs a CPU with AVX2 and FMA");
                    // the body of gemm's own `fma::gemm_basic` (gemm-common's `__inject_mod!`),
                    // which `gemm` selects when the CPU lacks avx512f
                    gemm_common::gemm::gemm_basic_generic::<
                        _,
                        $t,
                        $n,
                        { u::MR_DIV_N * $n },
                        { u::NR },
                        { u::MR_DIV_N },
                        { u::H_M },
                        { u::H_N },
                    >(
                        simd,
                        m,
                        n,
                        k,
                        dst,
                        dst_cs,
                        dst_rs,
                        read_dst,
                        lhs,
                        lhs_cs,
                        lhs_rs,
                        rhs,
                        rhs_cs,
                        rhs_rs,
                        alpha,
                        beta,
                        false,
                        false,
                        false,
                        |a, b, c| a * b + c,
                        &u::UKR,
                        &u::H_UKR,
                        false,
                        par,
                    )
                }
                #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
                gemm::gemm(
                    m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs,
                    rhs_rs, alpha, beta, false, false, false, par,
                )
            }
        }
    };
}
// N: f32 lanes of a 256-bit register; gemm-f32 instantiates its FMA path with `4 * 2`
gemm_float!(
    f32,
    8,
    gemm_f32::microkernel::fma::f32,
    16,
    gemm_f32::microkernel::avx512f::f32
);
// gemm-f64: `4 * 1`
gemm_float!(
    f64,
    4,
    gemm_f64::microkernel::fma::f64,
    8,
    gemm_f64::microkernel::avx512f::f64
);

/// `C[m,n] (+)= A[m,k] · B[k,n]` with `C` row-major and `A`, `B` read through
/// `(row stride, column stride)`; `par` lets `gemm` split the product over the rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn mm<T: GemmFloat + num_traits::Float>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    accumulate: bool,
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
    par: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|x| *x = T::zero());
        }
        return;
    }
    assert!(c.len() >= m * n, "gemm: C too small");
    assert!(
        a.len() > (m - 1) * a_rs + (k - 1) * a_cs,
        "gemm: A too small"
    );
    assert!(
        b.len() > (k - 1) * b_rs + (n - 1) * b_cs,
        "gemm: B too small"
    );
    let par = if par {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    let (c_ptr, a_ptr, b_ptr) = (c.as_mut_ptr(), a.as_ptr(), b.as_ptr());
    let (n_, a_rs, a_cs, b_rs, b_cs) = (
        n as isize,
        a_rs as isize,
        a_cs as isize,
        b_rs as isize,
        b_cs as isize,
    );
    // SAFETY: the asserts above keep every access inside the three slices; `c` is written
    // with row stride n, column stride 1.
    unsafe {
        match isa() {
            GemmIsa::Auto => gemm::gemm(
                m,
                n,
                k,
                c_ptr,
                1,
                n_,
                accumulate,
                a_ptr,
                a_cs,
                a_rs,
                b_ptr,
                b_cs,
                b_rs,
                T::one(),
                T::one(),
                false,
                false,
                false,
                par,
            ),
            GemmIsa::Avx2 => T::gemm_avx2(
                m,
                n,
                k,
                c_ptr,
                1,
                n_,
                accumulate,
                a_ptr,
                a_cs,
                a_rs,
                b_ptr,
                b_cs,
                b_rs,
                T::one(),
                T::one(),
                par,
            ),
        }
    }
}

/// Row-major `C[m,n] = A[m,k] · B[k,n]` on the current [`isa`] (for benchmarks and tests).
pub fn matmul<T: GemmFloat + num_traits::Float>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    a: &[T],
    b: &[T],
    parallel: bool,
) {
    mm(m, n, k, c, false, a, (k, 1), b, (n, 1), parallel)
}
