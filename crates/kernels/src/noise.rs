//! Random noise for training-time regularisation (router jitter, noisy gating), drawn in
//! parallel and reproducibly: `n` values from one `seed`, block `b` of [`BLOCK`] values from
//! its own ChaCha8 stream (stream `b`), so the values depend on the seed only, not on the
//! thread count. Callers draw the seed from their own generator (`ForwardCtx::rng`), which
//! keeps runs reproducible and resumable. (Drawing `T·d` values one by one from the caller's
//! generator was a visible share of a step; docs/PERFORMANCE.md, "What was tried".)

use candle_core::{DType, Tensor, WithDType};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::Result;

/// Values per generator stream.
pub const BLOCK: usize = 1 << 14;

/// The distribution of [`fill`]'s values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Uniform on `[lo, hi)`: 24 random bits per f32 value, 53 per f64.
    Uniform(f64, f64),
    /// Standard normal (`rand_distr`'s ziggurat), drawn in f64 and rounded to the dtype.
    Normal,
}

/// `n` values of `dist` from `seed` (see the module docs).
pub fn fill<F: WithDType>(n: usize, seed: u64, dist: Dist) -> Vec<F> {
    let mut out = vec![F::from_f64(0.0); n];
    let bits = if std::mem::size_of::<F>() <= 4 {
        24
    } else {
        53
    };
    out.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, block)| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(b as u64);
            match dist {
                Dist::Uniform(lo, hi) => {
                    let scale = (hi - lo) / (1u64 << bits) as f64;
                    for v in block {
                        *v = F::from_f64(lo + (r.next_u64() >> (64 - bits)) as f64 * scale);
                    }
                }
                Dist::Normal => {
                    for v in block {
                        let z: f64 = StandardNormal.sample(&mut r);
                        *v = F::from_f64(z);
                    }
                }
            }
        });
    out
}

/// A tensor of `like`'s shape, dtype and device filled by [`fill`].
pub fn tensor_like(like: &Tensor, seed: u64, dist: Dist) -> Result<Tensor> {
    let (n, shape, dev) = (like.elem_count(), like.shape(), like.device());
    Ok(match like.dtype() {
        DType::F32 => Tensor::from_vec(fill::<f32>(n, seed, dist), shape, dev)?,
        DType::F64 => Tensor::from_vec(fill::<f64>(n, seed, dist), shape, dev)?,
        dt => Tensor::from_vec(fill::<f64>(n, seed, dist), shape, dev)?.to_dtype(dt)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<F: WithDType + Send>(threads: usize, n: usize, seed: u64, dist: Dist) -> Vec<F> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| fill::<F>(n, seed, dist))
    }

    fn moments(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
    }

    #[test]
    fn uniform_noise_is_in_range_with_the_right_moments_at_any_thread_count() {
        let n = 5 * BLOCK + 123;
        let d = Dist::Uniform(0.9, 1.1);
        let a: Vec<f32> = at(1, n, 7, d);
        assert_eq!(a, at::<f32>(3, n, 7, d));
        assert_ne!(a, at::<f32>(1, n, 8, d));
        assert!(a.iter().all(|&v| (0.9..=1.1).contains(&v)));
        // mean 1 and variance 0.2²/12 of U(0.9, 1.1), within a few standard errors
        let (mean, var) = moments(&a.iter().map(|&v| v as f64).collect::<Vec<_>>());
        assert!(
            (mean - 1.0).abs() < 4.0 * (0.04 / 12.0 / n as f64).sqrt(),
            "mean {mean}"
        );
        assert!((var / (0.04 / 12.0) - 1.0).abs() < 0.02, "variance {var}");
        // blocks are distinct streams, not copies of one another
        assert_ne!(a[..BLOCK], a[BLOCK..2 * BLOCK]);
        let b: Vec<f64> = at(2, n, 7, d);
        assert!(b.iter().all(|&v| (0.9..1.1).contains(&v)));
    }

    #[test]
    fn normal_noise_has_the_right_moments_at_any_thread_count() {
        let n = 4 * BLOCK + 5;
        let a: Vec<f64> = at(1, n, 3, Dist::Normal);
        assert_eq!(a, at::<f64>(3, n, 3, Dist::Normal));
        let (mean, var) = moments(&a);
        assert!(mean.abs() < 4.0 / (n as f64).sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
        let f: Vec<f32> = at(2, n, 3, Dist::Normal);
        assert!(f.iter().zip(&a).all(|(&x, &y)| x == y as f32));
    }
}
