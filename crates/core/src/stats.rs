//! Routing statistics of one forward, computed on the host from the router's output.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::plan::DispatchPlan;
use crate::Result;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingStats {
    pub tokens_per_expert: Vec<usize>,
    /// Fraction of tokens that no expert processed.
    pub dropped_fraction: f64,
    /// Mean over tokens of the entropy (nats) of the router's distribution over experts.
    pub entropy: f64,
    /// Largest router logit in the batch (watch it with the z-loss); NaN when any logit is NaN.
    pub max_logit: f64,
    /// Experts that received no token.
    pub dead_experts: Vec<usize>,
}

/// Entries per rayon job of [`reduce`].
const REDUCE_BLOCK: usize = 1 << 16;

/// Folds every entry of `t` (as f64) with `f` from `init`, in fixed blocks of
/// [`REDUCE_BLOCK`] entries over the pool, and the blocks' results in order with `merge`: the
/// same value at any thread count. An f32 / f64 CPU tensor is read in place; others go through
/// a host copy. At E=1024 the `[T, E]` copies in f64 were 32 MiB each.
fn reduce(
    t: &Tensor,
    init: f64,
    f: impl Fn(f64, f64) -> f64 + Sync,
    merge: impl Fn(f64, f64) -> f64,
) -> Result<f64> {
    fn run<V: Copy + Into<f64> + Sync>(
        v: &[V],
        init: f64,
        f: &(impl Fn(f64, f64) -> f64 + Sync),
        merge: impl Fn(f64, f64) -> f64,
    ) -> f64 {
        use rayon::prelude::*;
        let parts: Vec<f64> = v
            .par_chunks(REDUCE_BLOCK)
            .map(|c| c.iter().fold(init, |a, &x| f(a, x.into())))
            .collect();
        parts.into_iter().fold(init, merge)
    }
    let (storage, layout) = t.storage_and_layout();
    Ok(match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
            run(&v[a..b], init, &f, merge)
        }
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F64(v)), Some((a, b))) => {
            run(&v[a..b], init, &f, merge)
        }
        _ => {
            drop(storage);
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            run(&v, init, &f, merge)
        }
    })
}

impl RoutingStats {
    pub fn compute(plan: &DispatchPlan, probs: &Tensor, logits: Option<&Tensor>) -> Result<Self> {
        let tokens_per_expert = plan.tokens_per_expert();
        let t = plan.num_tokens.max(1) as f64;
        let dropped_fraction = plan.dropped.iter().filter(|&&d| d).count() as f64 / t;
        let entropy = -reduce(
            probs,
            0.0,
            |a, x| if x > 0.0 { a + x * x.ln() } else { a },
            |a, b| a + b,
        )? / t;
        // NaN wins: a NaN logit must show in the statistic (f64::max would skip it)
        let nan_max = |a: f64, x: f64| {
            if a.is_nan() || x.is_nan() {
                f64::NAN
            } else {
                a.max(x)
            }
        };
        let max_logit = match logits {
            Some(l) if l.elem_count() > 0 => reduce(l, f64::NEG_INFINITY, nan_max, nan_max)?,
            _ => 0.0,
        };
        let dead_experts = tokens_per_expert
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == 0)
            .map(|(e, _)| e)
            .collect();
        Ok(Self {
            tokens_per_expert,
            dropped_fraction,
            entropy,
            max_logit,
            dead_experts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn entropy_and_max_logit_read_in_place_match_a_plain_pass_at_any_thread_count() {
        // 5000 × 64 entries: several reduction blocks
        let (t, e) = (5000, 64);
        let logits: Vec<f64> = (0..t * e)
            .map(|i| ((i * 7919 % 997) as f64 - 500.0) * 0.01)
            .collect();
        let plan = DispatchPlan::from_assignments(t, e, &[(0, 1)]).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let l = Tensor::from_vec(logits.clone(), (t, e), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let p = crate::rowops::softmax_rows(&l).unwrap();
            let host = |t: &Tensor| -> Vec<f64> {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let pv = host(&p);
            let h = -pv
                .iter()
                .filter(|&&x| x > 0.0)
                .map(|&x| x * x.ln())
                .sum::<f64>()
                / t as f64;
            let lv = host(&l);
            let ml = lv.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let at = |threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| RoutingStats::compute(&plan, &p, Some(&l)).unwrap())
            };
            let one = at(1);
            assert!(
                (one.entropy - h).abs() < 1e-9 * h.abs(),
                "{dtype:?}: {} vs {h}",
                one.entropy
            );
            assert_eq!(one.max_logit, ml, "{dtype:?}");
            assert_eq!(one, at(3), "{dtype:?}");
            // one NaN logit anywhere: the max is NaN, at any thread count
            let mut lv = lv.clone();
            lv[3 * 64 + 7] = f64::NAN;
            let l = Tensor::from_vec(lv, (t, e), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for threads in [1, 3] {
                let s = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| RoutingStats::compute(&plan, &p, Some(&l)).unwrap());
                assert!(s.max_logit.is_nan(), "{dtype:?}, {threads} threads");
            }
        }
    }
}
