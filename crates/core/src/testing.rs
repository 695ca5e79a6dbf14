//! Test utilities shared by this crate's tests and its neighbours': central-difference
//! gradient checks in f64.

use candle_core::{DType, Tensor, Var};

use crate::{MoeError, Result};

/// Largest disagreement found by [`gradcheck`].
#[derive(Clone, Debug, Default)]
pub struct GradReport {
    /// max |analytic − numeric|
    pub max_abs: f64,
    /// max |analytic − numeric| / max(|numeric|, 1e-12) over entries failing `atol` alone
    pub max_rel: f64,
    /// entries compared
    pub checked: usize,
    /// first failing entry, if any: (var index, element, analytic, numeric)
    pub worst: Option<(usize, usize, f64, f64)>,
}

impl GradReport {
    pub fn ok(&self) -> bool {
        self.worst.is_none()
    }
}

/// Compares the gradients of `f` (a scalar) w.r.t. every element of `vars` (f64) with
/// central differences `(f(x+ε) − f(x−ε)) / 2ε`. An entry passes when
/// `|a − n| ≤ atol + rtol·|n|` (numpy's `allclose`).
pub fn gradcheck(
    vars: &[Var],
    f: impl Fn() -> Result<Tensor>,
    eps: f64,
    atol: f64,
    rtol: f64,
) -> Result<GradReport> {
    for v in vars {
        if v.dtype() != DType::F64 {
            return Err(MoeError::input(
                "gradcheck",
                "gradcheck needs f64 variables",
            ));
        }
    }
    let loss = f()?;
    let grads = loss.backward()?;
    let mut rep = GradReport::default();
    for (vi, v) in vars.iter().enumerate() {
        let analytic = match grads.get(v.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
            None => vec![0.0; v.elem_count()],
        };
        let orig = v.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let shape = v.shape().clone();
        let eval = |vals: &[f64]| -> Result<f64> {
            v.set(&Tensor::from_slice(vals, shape.clone(), v.device())?)?;
            Ok(f()?.to_scalar::<f64>()?)
        };
        let mut work = orig.clone();
        for i in 0..orig.len() {
            work[i] = orig[i] + eps;
            let plus = eval(&work)?;
            work[i] = orig[i] - eps;
            let minus = eval(&work)?;
            work[i] = orig[i];
            let numeric = (plus - minus) / (2.0 * eps);
            let diff = (analytic[i] - numeric).abs();
            rep.max_abs = rep.max_abs.max(diff);
            rep.checked += 1;
            if diff > atol {
                rep.max_rel = rep.max_rel.max(diff / numeric.abs().max(1e-12));
            }
            if diff > atol + rtol * numeric.abs() && rep.worst.is_none() {
                rep.worst = Some((vi, i, analytic[i], numeric));
            }
        }
        v.set(&Tensor::from_slice(&orig, shape, v.device())?)?;
    }
    Ok(rep)
}
