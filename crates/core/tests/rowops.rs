//! The routers' and losses' row ops (`switchyard_core::rowops`): the fused CPU forms from
//! `switchyard-kernels` against the composed candle ops, values and gradients, and the
//! gradients against central differences.

use candle_core::{DType, Device, Tensor, Var};
use std::sync::Arc;
use switchyard_core::rowops::*;
use switchyard_core::testing::gradcheck;
use switchyard_core::{DispatchPlan, Result};

mod rows {
    use super::*;

    fn x(dtype: DType) -> Tensor {
        // rows of different scales, one with a large offset and one with ties
        let mut v: Vec<f64> = (0..7 * 13)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.3)
            .collect();
        v[13..26].iter_mut().for_each(|a| *a += 300.0);
        v[26..39].iter_mut().for_each(|a| *a = 0.5);
        Tensor::from_vec(v, (7, 13), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn fused_ops_match_the_composed_ones_with_their_gradients() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            let v = Var::from_tensor(&x(dtype)).unwrap();
            // a weighting so the gradients are not trivial
            let c = (x(dtype) * 0.1).unwrap().cos().unwrap();
            let grads = |f: &dyn Fn(&Tensor) -> Result<Tensor>, out_c: bool| {
                let y = f(v.as_tensor()).unwrap();
                let loss = if out_c {
                    (&y * &c).unwrap().sum_all().unwrap()
                } else {
                    // one weight per row
                    (&y * c.narrow(1, 0, 1).unwrap().squeeze(1).unwrap())
                        .unwrap()
                        .sum_all()
                        .unwrap()
                };
                let g = loss.backward().unwrap();
                (y.clone(), g.get(v.as_tensor()).unwrap().clone())
            };
            let (a, ga) = grads(&softmax_rows, true);
            let (b, gb) = grads(&softmax_composed, true);
            assert!(max_diff(&a, &b) < tol, "softmax {dtype:?}");
            assert!(max_diff(&ga, &gb) < tol, "softmax grad {dtype:?}");
            let (a, ga) = grads(&logsumexp_rows, false);
            let (b, gb) = grads(&logsumexp_composed, false);
            // values up to ~300: relative tolerance
            assert!(max_diff(&a, &b) < tol * 300.0, "lse {dtype:?}");
            assert!(max_diff(&ga, &gb) < tol, "lse grad {dtype:?}");
        }
    }

    #[test]
    fn fused_ops_pass_gradcheck() {
        let v = Var::from_tensor(&x(DType::F64)).unwrap();
        let c = (x(DType::F64) * 0.1).unwrap().sin().unwrap();
        assert_gradcheck(
            &v,
            || Ok((softmax_rows(v.as_tensor())? * &c)?.sum_all()?),
            "softmax",
        );
        let rep = gradcheck(
            std::slice::from_ref(&v),
            || Ok((logsumexp_rows(v.as_tensor())? * c.narrow(1, 0, 1)?.squeeze(1)?)?.sum_all()?),
            1e-6,
            2e-7, // the +300 row makes the loss ~1e3: central differences resolve ~1e-7
            1e-6,
        )
        .unwrap();
        assert!(rep.ok(), "logsumexp: {rep:?}");
    }

    /// A plan over 7 tokens × 13 experts with a dropped token (row 3 has no assignment) and
    /// a row whose kept weights are zero (row 5).
    fn plan() -> Arc<DispatchPlan> {
        let mut pairs = Vec::new();
        for t in 0..7u32 {
            if t == 3 {
                continue;
            }
            for e in [(t * 5) % 13, (t * 5 + 3) % 13, (t * 7 + 1) % 13] {
                if !pairs.contains(&(t, e)) {
                    pairs.push((t, e));
                }
            }
        }
        Arc::new(DispatchPlan::from_assignments(7, 13, &pairs).unwrap())
    }

    /// Dense weights as a router makes them: nonnegative, zero outside the plan, but here
    /// also nonzero outside it in row 6 (the op must treat every column of a row alike).
    fn dense(plan: &DispatchPlan, dtype: DType) -> Tensor {
        let mut v = vec![0f64; 7 * 13];
        for (i, (&t, &e)) in plan.token.iter().zip(&plan.expert).enumerate() {
            if t != 5 {
                v[t as usize * 13 + e as usize] = 0.1 + 0.07 * i as f64;
            }
        }
        v[6 * 13 + 12] += 0.3;
        Tensor::from_vec(v, (7, 13), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn plan_weights_match_the_composed_ops_with_their_gradients() {
        let p = plan();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-6)] {
            for renorm in [true, false] {
                for scale in [1.0, 2.5] {
                    let v = Var::from_tensor(&dense(&p, dtype)).unwrap();
                    let c = weighting(p.len(), |i| (i * 0.37).sin())
                        .to_dtype(dtype)
                        .unwrap();
                    let run = |fused: bool| {
                        let w = if fused {
                            plan_weights(v.as_tensor(), &p, renorm, scale).unwrap()
                        } else {
                            plan_weights_composed(v.as_tensor(), &p, renorm, scale).unwrap()
                        };
                        let g = (&w * &c).unwrap().sum_all().unwrap().backward().unwrap();
                        (w, g.get(v.as_tensor()).unwrap().clone())
                    };
                    let ((a, ga), (b, gb)) = (run(true), run(false));
                    let what = format!("{dtype:?} renorm={renorm} scale={scale}");
                    assert!(max_diff(&a, &b) < tol, "weights {what}");
                    assert!(max_diff(&ga, &gb) < tol, "gradient {what}");
                }
            }
        }
    }

    #[test]
    fn plan_weights_pass_gradcheck() {
        let p = plan();
        // row 5's zero sum is a kink (the divisor jumps from 1 to the sum): fill it here
        let mut fill = vec![0f64; 7 * 13];
        for (&t, &e) in p.token.iter().zip(&p.expert) {
            if t == 5 {
                fill[t as usize * 13 + e as usize] = 0.2;
            }
        }
        let fill = Tensor::from_vec(fill, (7, 13), &Device::Cpu).unwrap();
        let v = Var::from_tensor(&(dense(&p, DType::F64) + fill).unwrap()).unwrap();
        gradcheck_weights(&p, &v, &|x, renorm| plan_weights(x, &p, renorm, 1.7));
    }

    /// `[n]` values `f(0), f(1), …`: a weighting of the per-assignment outputs, so that the
    /// gradients are not trivial.
    fn weighting(n: usize, f: impl Fn(f64) -> f64) -> Tensor {
        Tensor::from_vec(
            (0..n).map(|i| f(i as f64)).collect::<Vec<_>>(),
            n,
            &Device::Cpu,
        )
        .unwrap()
    }

    /// Central differences of `Σ_a c_a · w_a` for the weights `op(x, renormalize)`.
    fn gradcheck_weights(p: &DispatchPlan, v: &Var, op: &dyn Fn(&Tensor, bool) -> Result<Tensor>) {
        let c = weighting(p.len(), |i| (i * 0.61).cos());
        for renorm in [true, false] {
            assert_gradcheck(
                v,
                || Ok((op(v.as_tensor(), renorm)? * &c)?.sum_all()?),
                &format!("renorm={renorm}"),
            );
        }
    }

    /// Central differences in f64 of `loss` with respect to `v` (eps 1e-6, atol 1e-8, rtol 1e-6).
    fn assert_gradcheck(v: &Var, loss: impl Fn() -> Result<Tensor>, what: &str) {
        let rep = gradcheck(std::slice::from_ref(v), loss, 1e-6, 1e-8, 1e-6).unwrap();
        assert!(rep.ok(), "{what}: {rep:?}");
    }

    /// Scores as a router has them before masking: nonzero everywhere (row 5's assigned
    /// entries sum to zero: the divisor-1 case; row 3 has no assignment).
    fn scores(plan: &DispatchPlan, dtype: DType) -> Tensor {
        let mut v: Vec<f64> = (0..7 * 13)
            .map(|i| 0.05 + (i * 29 % 17) as f64 * 0.03)
            .collect();
        for (&t, &e) in plan.token.iter().zip(&plan.expert) {
            if t == 5 {
                v[t as usize * 13 + e as usize] = 0.0;
            }
        }
        Tensor::from_vec(v, (7, 13), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn masked_plan_weights_equal_plan_weights_of_the_masked_scores_with_their_gradients() {
        let p = plan();
        // unassigned entries of rows 2 and 4 NaN and +inf in the second pass: the product
        // turns those rows' weights and gradients into NaN, and so must the masked op
        let unassigned = |t: usize| {
            (0..13)
                .find(|&e| {
                    !p.token
                        .iter()
                        .zip(&p.expert)
                        .any(|(&a, &b)| (a as usize, b as usize) == (t, e))
                })
                .unwrap()
        };
        let (n2, n4) = (unassigned(2), unassigned(4));
        let c = weighting(p.len(), |i| (i * 0.37).sin());
        for (dtype, nonfinite) in [(DType::F64, false), (DType::F32, false), (DType::F32, true)] {
            let c = c.to_dtype(dtype).unwrap();
            for renorm in [true, false] {
                for scale in [1.0, 2.5] {
                    let mut sv = scores(&p, DType::F64)
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap();
                    if nonfinite {
                        sv[2 * 13 + n2] = f64::NAN;
                        sv[4 * 13 + n4] = f64::INFINITY;
                    }
                    let sv = Tensor::from_vec(sv, (7, 13), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let v = Var::from_tensor(&sv).unwrap();
                    let run = |masked: bool| {
                        let w = if masked {
                            plan_weights_masked(v.as_tensor(), &p, renorm, scale).unwrap()
                        } else {
                            let mask =
                                switchyard_core::router::plan_mask(&p, v.as_tensor()).unwrap();
                            let dense = (v.as_tensor() * mask).unwrap();
                            plan_weights(&dense, &p, renorm, scale).unwrap()
                        };
                        let g = (&w * &c).unwrap().sum_all().unwrap().backward().unwrap();
                        let g = g.get(v.as_tensor()).unwrap().clone();
                        let bits = |t: &Tensor| -> Vec<u64> {
                            t.flatten_all()
                                .unwrap()
                                .to_dtype(DType::F64)
                                .unwrap()
                                .to_vec1::<f64>()
                                .unwrap()
                                .iter()
                                // one NaN for all NaNs (their payloads are not compared)
                                .map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() })
                                .collect()
                        };
                        (bits(&w), bits(&g))
                    };
                    let what =
                        format!("{dtype:?} renorm={renorm} scale={scale} nonfinite={nonfinite}");
                    let ((a, ga), (b, gb)) = (run(true), run(false));
                    if nonfinite && renorm {
                        assert!(a.contains(&u64::MAX), "NaN weights expected: {what}");
                    }
                    assert_eq!(a, b, "weights {what}");
                    assert_eq!(ga, gb, "gradient {what}");
                }
            }
        }
    }

    #[test]
    fn masked_plan_weights_pass_gradcheck() {
        let p = plan();
        let v = Var::from_tensor(&(scores(&p, DType::F64) + 0.01).unwrap()).unwrap();
        gradcheck_weights(&p, &v, &|x, renorm| plan_weights_masked(x, &p, renorm, 0.8));
    }

    #[test]
    fn col_means_match_mean_over_rows_with_gradients_and_pass_gradcheck() {
        // 200 rows: several row blocks; one row of large values
        let base: Vec<f64> = (0..200 * 9)
            .map(|i| ((i * 53 % 41) as f64 - 20.0) * 0.07 + if i / 9 == 17 { 300.0 } else { 0.0 })
            .collect();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
            let v = Var::from_tensor(
                &Tensor::from_vec(base.clone(), (200, 9), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let c = Tensor::from_vec(
                (0..9).map(|i| (i as f64).sin()).collect::<Vec<_>>(),
                9,
                &Device::Cpu,
            )
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
            let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
                let m = f(v.as_tensor()).unwrap();
                let g = (&m * &c).unwrap().sum_all().unwrap().backward().unwrap();
                (m, g.get(v.as_tensor()).unwrap().clone())
            };
            let ((a, ga), (b, gb)) = (run(&col_means), run(&col_means_composed));
            assert!(max_diff(&a, &b) < tol, "means {dtype:?}");
            assert!(max_diff(&ga, &gb) < 1e-12, "gradient {dtype:?}");
        }
        let v = Var::from_tensor(&x(DType::F64)).unwrap();
        let c = Tensor::from_vec(
            (0..13).map(|i| (i as f64 * 0.3).cos()).collect::<Vec<_>>(),
            13,
            &Device::Cpu,
        )
        .unwrap();
        assert_gradcheck(
            &v,
            || Ok((col_means(v.as_tensor())? * &c)?.sum_all()?),
            "col_means",
        );
        // the same bits at any thread count
        let big = Tensor::from_vec(
            base.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (200, 9),
            &Device::Cpu,
        )
        .unwrap();
        let at = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| col_means(&big).unwrap().to_vec1::<f32>().unwrap())
        };
        assert_eq!(at(1), at(3));
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let big: Vec<f32> = (0..1000 * 64)
            .map(|i| ((i * 7919 % 1000) as f32) * 0.01)
            .collect();
        let t = Tensor::from_vec(big, (1000, 64), &Device::Cpu).unwrap();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    (
                        softmax_rows(&t).unwrap().to_vec2::<f32>().unwrap(),
                        logsumexp_rows(&t).unwrap().to_vec1::<f32>().unwrap(),
                    )
                })
        };
        assert_eq!(run(1), run(3));
    }
}

mod load_tests {

    use super::*;

    use candle_core::{Device, Var};

    /// `[T, E]` clean logits (a row with ties, a row with an unavailable expert at −1e9),
    /// noise scales above the router's floor, and noisy logits `clean + ε · std` (with a row
    /// of ties if `ties`: the selection's tie-break is not differentiable there).
    fn inputs(t: usize, e: usize, dtype: DType, ties: bool) -> (Var, Var, Var) {
        let f = |i: usize, a: usize, b: usize| ((i * a % b) as f64 - (b / 2) as f64) / b as f64;
        let mut c: Vec<f64> = (0..t * e).map(|i| 2.0 * f(i, 37, 23)).collect();
        if t >= 4 {
            c[e..2 * e].iter_mut().for_each(|x| *x = 0.25);
            c[2 * e + 1] = -1e9;
        }
        let s: Vec<f64> = (0..t * e).map(|i| 0.3 + f(i, 17, 11).abs()).collect();
        let eps: Vec<f64> = (0..t * e).map(|i| 1.5 * f(i, 29, 19)).collect();
        let mut n: Vec<f64> = (0..t * e).map(|i| c[i] + eps[i] * s[i]).collect();
        if ties && t >= 4 {
            n[3 * e..4 * e].iter_mut().for_each(|x| *x = -0.5);
        }
        let v = |x: Vec<f64>| {
            Var::from_tensor(
                &Tensor::from_vec(x, (t, e), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        };
        (v(c), v(n), v(s))
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        let b = b.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f64::max)
    }

    #[test]
    fn fused_sums_match_the_composed_ops_with_their_gradients() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 3e-6)] {
            for (t, e, k) in [(150, 7, 2), (70, 5, 1), (9, 6, 5), (130, 64, 8)] {
                let (c, n, s) = inputs(t, e, dtype, true);
                // a weighting of the columns so that every gradient entry matters
                let wcol: Vec<f64> = (0..e).map(|j| 1.0 + (j as f64 * 0.7).sin()).collect();
                let wcol = Tensor::from_vec(wcol, e, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let run = |f: &dyn Fn(&Tensor, &Tensor, &Tensor, usize) -> Result<Tensor>| {
                    let y = f(c.as_tensor(), n.as_tensor(), s.as_tensor(), k).unwrap();
                    let gs = (&y * &wcol).unwrap().sum_all().unwrap().backward().unwrap();
                    let g = |v: &Var| gs.get(v.as_tensor()).unwrap().clone();
                    (y, [g(&c), g(&n), g(&s)])
                };
                let (a, ga) = run(&load_sums);
                let (b, gb) = run(&load_sums_composed);
                let what = format!("{dtype:?} T={t} E={e} k={k}");
                assert!(max_rel(&a, &b) < tol, "sums {what}");
                for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
                    assert!(max_rel(x, y) < tol, "gradient {i} {what}");
                }
            }
        }
    }

    #[test]
    fn fused_sums_pass_gradcheck() {
        let (c, n, s) = inputs(40, 6, DType::F64, false);
        // (the unavailable expert's −1e9 sits where Φ is flat: a derivative of 0 both ways)
        let wcol = Tensor::new(&[1.0f64, -0.5, 2.0, 0.25, 1.5, -1.0], &Device::Cpu).unwrap();
        let rep = gradcheck(
            &[c.clone(), n.clone(), s.clone()],
            || Ok((load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 2)? * &wcol)?.sum_all()?),
            1e-6,
            1e-7,
            1e-5,
        )
        .unwrap();
        assert!(rep.ok(), "load sums: {rep:?}");
    }

    #[test]
    fn fused_sums_do_not_depend_on_the_thread_count() {
        let (c, n, s) = inputs(1000, 16, DType::F32, true);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 3).unwrap();
                let gs = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let mut bits = y.to_vec1::<f32>().unwrap();
                for v in [&c, &n, &s] {
                    bits.extend(
                        gs.get(v.as_tensor())
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap(),
                    );
                }
                bits.into_iter().map(f32::to_bits).collect::<Vec<_>>()
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn no_rows_give_zero_sums_and_empty_gradients() {
        let (c, n, s) = inputs(0, 5, DType::F32, false);
        let y = load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 2).unwrap();
        let z = load_sums_composed(c.as_tensor(), n.as_tensor(), s.as_tensor(), 2).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0; 5]);
        assert_eq!(z.to_vec1::<f32>().unwrap(), vec![0.0; 5]);
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(c.as_tensor()).unwrap().dims(), &[0, 5]);
    }

    #[test]
    fn bad_shapes_and_k_are_errors() {
        let (c, n, s) = inputs(4, 5, DType::F32, true);
        let short = c.as_tensor().narrow(1, 0, 4).unwrap();
        assert!(load_sums(&short, n.as_tensor(), s.as_tensor(), 2).is_err());
        assert!(load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 0).is_err());
        assert!(load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 5).is_err());
    }
}

mod noisy_tests {

    use super::*;

    use candle_core::{DType, Device, Var};

    /// A gate output `[T, 2E]` with raw noise scales on both sides of 0 (and large ones, where
    /// the softplus is linear), and the noise.
    fn inputs(t: usize, e: usize, dtype: DType) -> (Var, Tensor) {
        let f = |i: usize, a: usize, b: usize| ((i * a % b) as f64 - (b / 2) as f64) / b as f64;
        let mut g: Vec<f64> = (0..t * 2 * e).map(|i| 3.0 * f(i, 37, 23)).collect();
        if t > 0 {
            g[e..2 * e].iter_mut().for_each(|x| *x += 25.0);
        }
        let eps: Vec<f64> = (0..t * e).map(|i| 2.0 * f(i, 29, 19)).collect();
        let dev = &Device::Cpu;
        let g = Tensor::from_vec(g, (t, 2 * e), dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let eps = Tensor::from_vec(eps, (t, e), dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        (Var::from_tensor(&g).unwrap(), eps)
    }

    type Logits = fn(&Tensor, &Tensor, Option<&[bool]>, f64) -> Result<(Tensor, Tensor)>;

    /// Values, and the gate output's gradient under a weighting of both halves.
    fn run(f: Logits, g: &Var, eps: &Tensor, avail: Option<&[bool]>) -> [Vec<f64>; 3] {
        let (n, s) = f(g.as_tensor(), eps, avail, 1e-2).unwrap();
        let w = (eps.cos().unwrap() + 0.5).unwrap();
        let loss = ((&n * &w).unwrap().sum_all().unwrap()
            + (&s * w.sin().unwrap()).unwrap().sum_all().unwrap())
        .unwrap();
        let grad = loss.backward().unwrap();
        let host = |x: &Tensor| {
            x.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        [host(&n), host(&s), host(grad.get(g.as_tensor()).unwrap())]
    }

    #[test]
    fn fused_logits_match_the_composed_ops_with_their_gradient() {
        let mut avail = [true; 9];
        avail[4] = false;
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            for (t, e, a) in [(150, 9, None), (70, 9, Some(&avail[..])), (3, 1, None)] {
                let (g, eps) = inputs(t, e, dtype);
                let fast = run(noisy_logits, &g, &eps, a);
                let slow = run(noisy_logits_composed, &g, &eps, a);
                for (what, x, y) in [0, 1, 2].map(|i| (i, &fast[i], &slow[i])) {
                    let worst = x
                        .iter()
                        .zip(y)
                        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                        .fold(0.0, f64::max);
                    assert!(
                        worst < tol,
                        "{dtype:?} T={t} E={e} output {what}: {worst:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_tracked_noise_gets_the_composed_gradient_and_no_rows_work() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            let (g, eps) = inputs(30, 4, dtype);
            let eps = Var::from_tensor(&eps).unwrap();
            let deps = |f: Logits| {
                let (n, s) = f(g.as_tensor(), eps.as_tensor(), None, 1e-2).unwrap();
                let loss = ((&n * eps.as_tensor().cos().unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    + s.sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let d = grads.get(eps.as_tensor()).unwrap();
                d.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            let (a, b) = (deps(noisy_logits), deps(noisy_logits_composed));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                .fold(0.0, f64::max);
            assert!(worst < tol, "{dtype:?} noise gradient: {worst:e}");
        }
        // T = 0: empty results, as the composed ops give
        let (g, eps) = inputs(0, 3, DType::F32);
        let (n, s) = noisy_logits(g.as_tensor(), &eps, None, 1e-2).unwrap();
        assert_eq!((n.dims(), s.dims()), (&[0, 3][..], &[0, 3][..]));
        let dg = n.sum_all().unwrap().backward().unwrap();
        assert_eq!(dg.get(g.as_tensor()).unwrap().dims(), &[0, 6]);
    }

    #[test]
    fn fused_logits_pass_gradcheck() {
        let (g, eps) = inputs(20, 5, DType::F64);
        let w = (eps.cos().unwrap() + 0.5).unwrap();
        let rep = gradcheck(
            std::slice::from_ref(&g),
            || {
                let (n, s) = noisy_logits(g.as_tensor(), &eps, None, 1e-2)?;
                Ok(((&n * &w)?.sum_all()? + (&s * w.sin()?)?.sum_all()?)?)
            },
            1e-6,
            1e-7,
            1e-6,
        )
        .unwrap();
        assert!(rep.ok(), "noisy logits: {rep:?}");
    }

    #[test]
    fn fused_logits_do_not_depend_on_the_thread_count() {
        let (g, eps) = inputs(1000, 16, DType::F32);
        let at = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| run(noisy_logits, &g, &eps, None))
                .map(|v| v.into_iter().map(f64::to_bits).collect::<Vec<_>>())
        };
        assert_eq!(at(1), at(3));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let (g, eps) = inputs(4, 3, DType::F32);
        let odd = g.as_tensor().narrow(1, 0, 5).unwrap();
        assert!(noisy_logits(&odd, &eps, None, 1e-2).is_err());
        assert!(noisy_logits(g.as_tensor(), &eps.narrow(0, 0, 3).unwrap(), None, 1e-2).is_err());
        assert!(noisy_logits(g.as_tensor(), &eps, Some(&[true, false]), 1e-2).is_err());
    }
}
