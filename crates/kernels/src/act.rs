//! Elementwise parts of the dispatch kernels — activations, their derivatives, the routing-
//! weight dot products — as row loops written to auto-vectorise, compiled three times
//! (AVX-512, AVX2+FMA, baseline) and picked at run time like `gemm`'s kernels.

use crate::layout::{Activation, ExpertKind};

use crate::dispatch::KFloat;
use crate::gemm::{isa, GemmIsa};

/// Which compiled copy of the elementwise kernels runs: 4 = AVX-512, 3 = AVX2+FMA, 0 = baseline.
#[inline]
fn level() -> u8 {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        let avx512 = isa() == GemmIsa::Auto
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        if avx512 {
            return 4;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return 3;
        }
    }
    0
}

/// Defines `fn $name` that runs its body compiled for AVX-512, for AVX2+FMA or for the
/// baseline, picked per call by [`level`] (closures cannot be forced inline, so each hot loop
/// is a named function instantiated three times).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<T: KFloat>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<T: KFloat>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp<T: KFloat>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4<T: KFloat>($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3<T: KFloat>($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                match level() {
                    // SAFETY: `level` checked that the CPU has the enabled features.
                    4 => return unsafe { v4($($arg),*) },
                    // SAFETY: as above.
                    3 => return unsafe { v3($($arg),*) },
                    _ => {}
                }
            }
            imp($($arg),*)
        }
    };
}

multiversion! {
    /// `a = act(u)` (FFN) or `silu(u)·v` (SwiGLU) over the rows of a tile: `uv [m, uw]` holds
    /// each row's `u` (width h) followed, for SwiGLU, by its `v`; `a` is `[m, h]`.
    pub(crate) fn forward_tile<T: KFloat>(kind: ExpertKind, h: usize, uv: &[T], a: &mut [T]) {
        let uw = if kind == ExpertKind::SwiGlu { 2 * h } else { h };
        for (row, a) in uv.chunks_exact(uw).zip(a.chunks_exact_mut(h)) {
            let (u, v) = row.split_at(h);
            forward_rows(kind, u, v, a)
        }
    }
}

multiversion! {
    /// `o_r ← w_r·(o_r + b2)` for each row `r` of `o [m, d]`.
    pub(crate) fn scale_rows<T: KFloat>(o: &mut [T], w: &[T], b2: Option<&[T]>, d: usize) {
        for (row, &wa) in o.chunks_exact_mut(d).zip(w) {
            match b2 {
                Some(b2) => row.iter_mut().zip(b2).for_each(|(x, &b)| *x = wa * (*x + b)),
                None => row.iter_mut().for_each(|x| *x = wa * *x),
            }
        }
    }
}

multiversion! {
    /// `y_t += Σ rows[a − a0]` over token `t`'s next assignments `a < a1`, for the tokens
    /// `t0..` of the block `yb [·, d]`, in plan order: token `t0 + i`'s assignments are
    /// `idx[cur[i]..off[t + 1]]` (ascending), `cur[i]` advances past the ones added. `rows`
    /// holds the rows of assignments `a0..a1`.
    pub(crate) fn sum_rows<T: KFloat>(yb: &mut [T], rows: &[T], off: &[u32], idx: &[u32], cur: &mut [u32], t0: usize, d: usize, a0: usize, a1: usize) {
        for (i, yt) in yb.chunks_exact_mut(d).enumerate() {
            let end = off[t0 + i + 1] as usize;
            let mut c = cur[i] as usize;
            while c < end && (idx[c] as usize) < a1 {
                let a = idx[c] as usize - a0;
                let r = &rows[a * d..(a + 1) * d];
                yt.iter_mut().zip(r).for_each(|(y, &r)| *y = *y + r);
                c += 1;
            }
            cur[i] = c as u32;
        }
    }
}

multiversion! {
    /// The activation backward of a tile of rows: for each row `r`, [`backward_row`] on its
    /// `da [h]`, its `uv` row (`u`, then `v` for SwiGLU) and its weight `w[r]`, writing its
    /// `duv` row (`du`, then `dv`) and `aw` row, and `dw[r] = ⟨da_r, a_r⟩ + ⟨g_r, b2⟩`.
    pub(crate) fn backward_tile<T: KFloat>(
        kind: ExpertKind,
        h: usize,
        d: usize,
        w: &[T],
        da: &[T],
        uv: &[T],
        duv: &mut [T],
        aw: &mut [T],
        ge: &[T],
        b2: Option<&[T]>,
        dw: &mut [T],
    ) {
        let uw = if kind == ExpertKind::SwiGlu { 2 * h } else { h };
        let rows = da.chunks_exact(h).zip(uv.chunks_exact(uw)).zip(duv.chunks_exact_mut(uw)).zip(aw.chunks_exact_mut(h));
        for (r, (((da, uv), duv), aw)) in rows.enumerate() {
            let (u, v) = uv.split_at(h);
            let (du, dv) = duv.split_at_mut(h);
            let mut g = backward_row(kind, w[r], da, u, v, du, dv, aw);
            if let Some(b2) = b2 {
                g = g + dot(&ge[r * d..(r + 1) * d], b2);
            }
            dw[r] = g;
        }
    }
}

#[inline(always)]
fn sigmoid<T: KFloat>(x: T) -> T {
    T::one() / (T::one() + (-x).fast_exp())
}

/// `a = act(u)` (FFN) or `silu(u)·v` (SwiGLU), elementwise over equal-length slices
/// (`v` is ignored for FFN experts).
#[inline(always)]
pub(crate) fn forward_rows<T: KFloat>(kind: ExpertKind, u: &[T], v: &[T], a: &mut [T]) {
    match kind {
        // torch: F.silu(w1(x)) * w3(x)
        ExpertKind::SwiGlu => a
            .iter_mut()
            .zip(u.iter().zip(v))
            .for_each(|(a, (&u, &v))| *a = u * sigmoid(u) * v),
        ExpertKind::Ffn { activation } => match activation {
            Activation::Relu => a
                .iter_mut()
                .zip(u)
                .for_each(|(a, &u)| *a = u.max(T::zero())),
            Activation::Silu => a.iter_mut().zip(u).for_each(|(a, &u)| *a = u * sigmoid(u)),
            Activation::Gelu => a.iter_mut().zip(u).for_each(|(a, &u)| *a = gelu(u)),
        },
    }
}

fn gelu<T: KFloat>(u: T) -> T {
    // u·Φ(u) = u·½(1 + erf(u/√2))
    let half = T::from(0.5).unwrap();
    u * half * (T::one() + (u * T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap()).erf())
}

/// `(gelu(u), gelu'(u))` with one `erf`: d/du u·Φ(u) = Φ(u) + u·φ(u).
fn gelu_and_d<T: KFloat>(u: T) -> (T, T) {
    let half = T::from(0.5).unwrap();
    let cdf = half * (T::one() + (u * T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap()).erf());
    let pdf = (-(u * u) * half).exp() * T::from(0.398_942_280_401_432_7).unwrap();
    (u * cdf, cdf + u * pdf)
}

// ---- row-wise softmax and log-sum-exp (see `crate::rowops`) ---------------------------------

/// `e^x`, exactly 0 below −87 (where the f32 `exp` clamps), so masked logits (−1e9) get
/// probability 0 on every path.
#[inline(always)]
fn exp_or_zero<T: KFloat>(x: T) -> T {
    let e = x.fast_exp();
    if x < T::from(-87.0).unwrap_or_else(T::neg_infinity) {
        T::zero()
    } else {
        e
    }
}

/// `Σ x` with 16 partial sums in a fixed order (vectorises; see [`dot`]).
#[inline(always)]
fn sum<T: KFloat>(x: &[T]) -> T {
    const LANES: usize = 16;
    let mut acc = [T::zero(); LANES];
    let c = x.chunks_exact(LANES);
    let r = c.remainder();
    for v in c {
        for l in 0..LANES {
            acc[l] = acc[l] + v[l];
        }
    }
    acc.iter().fold(T::zero(), |t, &v| t + v) + r.iter().fold(T::zero(), |t, &v| t + v)
}

/// `max x` (−∞ for an empty slice; NaN-free inputs), 16 lanes.
#[inline(always)]
fn max<T: KFloat>(x: &[T]) -> T {
    const LANES: usize = 16;
    let mut acc = [T::neg_infinity(); LANES];
    let c = x.chunks_exact(LANES);
    let r = c.remainder();
    for v in c {
        for l in 0..LANES {
            acc[l] = if v[l] > acc[l] { v[l] } else { acc[l] };
        }
    }
    acc.iter()
        .chain(r)
        .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
}

multiversion! {
    /// `p = softmax(x)` row by row (rows of `cols`).
    pub(crate) fn softmax_tile<T: KFloat>(x: &[T], p: &mut [T], cols: usize) {
        for (x, p) in x.chunks_exact(cols).zip(p.chunks_exact_mut(cols)) {
            let m = max(x);
            p.iter_mut().zip(x).for_each(|(o, &v)| *o = exp_or_zero(v - m));
            let inv = T::one() / sum(p);
            p.iter_mut().for_each(|o| *o = *o * inv);
        }
    }
}

multiversion! {
    /// `dx = p ⊙ (g − ⟨g, p⟩)` row by row: the backward of [`softmax_tile`].
    pub(crate) fn softmax_bwd_tile<T: KFloat>(p: &[T], g: &[T], dx: &mut [T], cols: usize) {
        for ((p, g), dx) in p.chunks_exact(cols).zip(g.chunks_exact(cols)).zip(dx.chunks_exact_mut(cols)) {
            let d = dot(p, g);
            dx.iter_mut().zip(p).zip(g).for_each(|((o, &p), &g)| *o = p * (g - d));
        }
    }
}

multiversion! {
    /// `out[t] = log Σ exp(x[t, ·])` row by row; `scratch` holds one row.
    pub(crate) fn logsumexp_tile<T: KFloat>(x: &[T], out: &mut [T], cols: usize, scratch: &mut [T]) {
        for (x, o) in x.chunks_exact(cols).zip(out.iter_mut()) {
            let m = max(x);
            scratch.iter_mut().zip(x).for_each(|(e, &v)| *e = exp_or_zero(v - m));
            *o = m + sum(scratch).ln();
        }
    }
}

multiversion! {
    /// `dx[t, e] = g[t] · exp(x[t, e] − lse[t])`: the backward of [`logsumexp_tile`].
    pub(crate) fn logsumexp_bwd_tile<T: KFloat>(x: &[T], lse: &[T], g: &[T], dx: &mut [T], cols: usize) {
        for (((x, &l), &g), dx) in x.chunks_exact(cols).zip(lse).zip(g).zip(dx.chunks_exact_mut(cols)) {
            dx.iter_mut().zip(x).for_each(|(o, &v)| *o = g * exp_or_zero(v - l));
        }
    }
}

/// `Σ_i a_i·b_i` with 16 partial sums in a fixed order (vectorises; same bits on every path
/// width because the lanes, not the vector unit, fix the order).
#[inline(always)]
pub(crate) fn dot<T: KFloat>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 16;
    let mut acc = [T::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] = acc[l] + x[l] * y[l];
        }
    }
    let mut s = T::zero();
    for (x, y) in ra.iter().zip(rb) {
        s = s + *x * *y;
    }
    acc.iter().fold(T::zero(), |t, &x| t + x) + s
}

/// Backward of one row of an expert through its activation.
///
/// Given the unscaled upstream gradient `da = g·W2tᵀ` of the row, its saved pre-activations
/// `u` (and `v`) and its routing weight `w`, writes
/// - `du = w·da ⊙ ∂a/∂u`, `dv = w·da ⊙ ∂a/∂v` (SwiGLU only),
/// - `aw = w·a` (the row of `(w ⊙ a)` that `dW2t` needs),
///
/// and returns `⟨da, a⟩`, the row's part of the routing-weight gradient (16 partial sums in
/// a fixed order).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn backward_row<T: KFloat>(
    kind: ExpertKind,
    w: T,
    da: &[T],
    u: &[T],
    v: &[T],
    du: &mut [T],
    dv: &mut [T],
    aw: &mut [T],
) -> T {
    match kind {
        ExpertKind::SwiGlu => swiglu_backward_row(w, da, u, v, du, dv, aw),
        ExpertKind::Ffn { activation } => ffn_backward_row(activation, w, da, u, du, aw),
    }
}

/// One SwiGLU element: `(a, ∂a/∂u, ∂a/∂v)` for `a = silu(u)·v`.
#[inline(always)]
fn swiglu_d<T: KFloat>(u: T, v: T) -> (T, T, T) {
    let s = sigmoid(u);
    let silu = u * s;
    // d/du u·σ(u) = σ(u)·(1 + u·(1 − σ(u)))
    let silu_d = s * (T::one() + u * (T::one() - s));
    (silu * v, silu_d * v, silu)
}

const LANES: usize = 16;

/// [`backward_row`] for SwiGLU, in fixed 16-element blocks so it vectorises.
#[inline(always)]
fn swiglu_backward_row<T: KFloat>(
    w: T,
    da: &[T],
    u: &[T],
    v: &[T],
    du: &mut [T],
    dv: &mut [T],
    aw: &mut [T],
) -> T {
    let h = da.len();
    let (u, v, du, dv, aw) = (&u[..h], &v[..h], &mut du[..h], &mut dv[..h], &mut aw[..h]);
    let mut acc = [T::zero(); LANES];
    let blocks = da
        .chunks_exact(LANES)
        .zip(u.chunks_exact(LANES))
        .zip(v.chunks_exact(LANES))
        .zip(du.chunks_exact_mut(LANES))
        .zip(dv.chunks_exact_mut(LANES))
        .zip(aw.chunks_exact_mut(LANES));
    for (((((da, u), v), du), dv), aw) in blocks {
        let (da, u, v): (&[T; LANES], &[T; LANES], &[T; LANES]) = (
            da.try_into().unwrap(),
            u.try_into().unwrap(),
            v.try_into().unwrap(),
        );
        let (du, dv, aw): (&mut [T; LANES], &mut [T; LANES], &mut [T; LANES]) = (
            du.try_into().unwrap(),
            dv.try_into().unwrap(),
            aw.try_into().unwrap(),
        );
        for l in 0..LANES {
            let (a, a_u, a_v) = swiglu_d(u[l], v[l]);
            let g = w * da[l];
            aw[l] = w * a;
            du[l] = g * a_u;
            dv[l] = g * a_v;
            acc[l] = acc[l] + da[l] * a;
        }
    }
    let mut tail = T::zero();
    for j in h / LANES * LANES..h {
        let (a, a_u, a_v) = swiglu_d(u[j], v[j]);
        let g = w * da[j];
        aw[j] = w * a;
        du[j] = g * a_u;
        dv[j] = g * a_v;
        tail = tail + da[j] * a;
    }
    acc.iter().fold(T::zero(), |t, &x| t + x) + tail
}

/// [`backward_row`] for FFN experts (no `v`); same block structure for the dot product.
#[inline(always)]
fn ffn_backward_row<T: KFloat>(
    act: Activation,
    w: T,
    da: &[T],
    u: &[T],
    du: &mut [T],
    aw: &mut [T],
) -> T {
    let h = da.len();
    let mut acc = [T::zero(); LANES];
    let mut tail = T::zero();
    for j in 0..h {
        let x = u[j];
        let (a, d) = match act {
            Activation::Relu => {
                if x > T::zero() {
                    (x, T::one())
                } else {
                    (T::zero(), T::zero())
                }
            }
            Activation::Silu => {
                let s = sigmoid(x);
                (x * s, s * (T::one() + x * (T::one() - s)))
            }
            Activation::Gelu => gelu_and_d(x),
        };
        aw[j] = w * a;
        du[j] = (w * da[j]) * d;
        if j < h / LANES * LANES {
            acc[j % LANES] = acc[j % LANES] + da[j] * a;
        } else {
            tail = tail + da[j] * a;
        }
    }
    acc.iter().fold(T::zero(), |t, &x| t + x) + tail
}

/// `e^x` for f32 without a libm call, so loops over it vectorise: Cody–Waite range reduction
/// `x = n·ln2 + r`, |r| ≤ ln2/2, a degree-7 Taylor polynomial for `e^r` (truncation error
/// below 1e-8 relative) and `2^n` built in the exponent bits. Inputs are clamped to
/// [-87, 88], where `e^x` stays a normal f32.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO (Cephes' split): LN2_HI = 355/512 has 9 significant bits, so
    // n·LN2_HI is exact for every n reached here
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer (|x·log2e| < 2^22),
    // without a call to floorf on targets lacking SSE4.1
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r = Σ_{i≤7} r^i / i!
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // n sits in t's low mantissa bits: 2^n from integer ops alone (no float→int conversion,
    // whose saturation checks would keep the loop scalar)
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    p * scale
}

/// `dst[..src.len()] = src` by non-temporal stores (x86-64: the 16-byte aligned middle
/// through `movntdq`, the ends by plain copies, then a store fence), which write whole cache
/// lines to memory without first reading them: a plain store to a line not in cache reads it
/// first (docs/PERFORMANCE.md has the measured write rates). For
/// results that are final and too large to stay in cache, e.g. the expert gradient at large E.
///
/// # Safety
/// `dst` is valid for `src.len()` writes and does not overlap `src`.
pub(crate) unsafe fn stream_copy<T: Copy>(dst: *mut T, src: &[T]) {
    let bytes = std::mem::size_of_val(src);
    let (d, s) = (dst as *mut u8, src.as_ptr() as *const u8);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let head = d.align_offset(16).min(bytes);
        std::ptr::copy_nonoverlapping(s, d, head);
        let body = (bytes - head) / 16 * 16;
        let mut i = head;
        while i < head + body {
            // SAFETY: `d + i` is 16-byte aligned and 16 bytes inside `dst`; `s + i` 16 bytes
            // inside `src` (SSE2 is part of x86-64)
            _mm_stream_si128(
                d.add(i) as *mut __m128i,
                _mm_loadu_si128(s.add(i) as *const __m128i),
            );
            i += 16;
        }
        std::ptr::copy_nonoverlapping(s.add(i), d.add(i), bytes - i);
        // the streamed lines are weakly ordered: fence them before anyone else reads them
        _mm_sfence();
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::ptr::copy_nonoverlapping(s, d, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in -86_990..88_000 {
            let x = i as f32 * 1e-3;
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 3e-7, "max rel err {worst}");
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
        assert!(exp_f32(1000.0).is_finite());
    }

    #[test]
    fn dot_matches_plain_sum() {
        let a: Vec<f64> = (0..37).map(|i| i as f64 * 0.5).collect();
        let b: Vec<f64> = (0..37).map(|i| 1.0 - i as f64 * 0.25).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-9);
    }
}
