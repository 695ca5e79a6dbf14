//! Auxiliary losses of routed layers. Each is checked against `scripts/reference/losses.py`
//! (PyTorch) and by central differences.

use candle_core::Tensor;

use crate::{MoeError, Result};

/// Switch Transformer load-balancing loss (Fedus et al. 2021, eq. 4):
/// `E · Σ_i f_i · P_i`, with `f_i` the fraction of the `T·k` assignments that went to expert
/// `i` (a constant) and `P_i` the mean router probability of expert `i`.
///
/// # Shapes
/// `probs [T, E]`, `counts [E]` → scalar.
pub fn switch_balance(probs: &Tensor, counts: &[usize], k: usize) -> Result<Tensor> {
    let (t, e) = probs.dims2()?;
    if counts.len() != e {
        return Err(MoeError::input(
            "switch_balance",
            format!("{} counts for {e} experts", counts.len()),
        ));
    }
    let denom = (t * k.max(1)).max(1) as f64;
    let f: Vec<f64> = counts.iter().map(|&c| c as f64 / denom).collect();
    let f = Tensor::from_vec(f, e, probs.device())?.to_dtype(probs.dtype())?;
    // torch: E * (f * probs.mean(0)).sum()
    Ok(((crate::rowops::col_means(probs)? * f)?.sum_all()? * e as f64)?)
}

/// Router z-loss (Zoph et al. 2022, ST-MoE eq. 5): `mean_t (logsumexp_e logits[t, e])²`.
pub fn z_loss(logits: &Tensor) -> Result<Tensor> {
    Ok(log_sum_exp(logits)?.sqr()?.mean_all()?)
}

/// Row-wise `log Σ exp`, shifted by the row max for stability (fused on the CPU, see
/// [`crate::rowops`]).
pub fn log_sum_exp(x: &Tensor) -> Result<Tensor> {
    crate::rowops::logsumexp_rows(x)
}

/// Squared coefficient of variation, `Var(x) / (mean(x)² + 1e-10)` with the population
/// variance (tensor2tensor's `cv_squared`).
pub fn cv_squared(x: &Tensor) -> Result<Tensor> {
    const EPS: f64 = 1e-10;
    let mean = x.mean_all()?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_all()?;
    Ok(var.broadcast_div(&(mean.sqr()? + EPS)?)?)
}

/// Shazeer et al. 2017 importance loss: `CV(Σ_t gates[t, :])²`.
///
/// # Shapes
/// `gates [T, E]` (zero outside the kept experts) → scalar.
pub fn importance(gates: &Tensor) -> Result<Tensor> {
    cv_squared(&gates.sum(0)?)
}

/// Shazeer et al. 2017 smooth load loss: `CV(Σ_t P(t, i))²`, with `P(t, i)` the probability
/// that expert `i` stays in token `t`'s top-k under a fresh draw of its noise alone.
///
/// `P(t, i) = Φ((clean[t,i] − thr) / std[t,i])`, where `thr` is the (k+1)-th largest noisy
/// logit of the row if `i` is in the top-k, else the k-th largest.
///
/// # Shapes
/// `clean`, `noisy`, `std`: `[T, E]` → scalar; `k ≥ 1` (an error otherwise).
pub fn load(clean: &Tensor, noisy: &Tensor, std: &Tensor, k: usize) -> Result<Tensor> {
    let (_, e) = noisy.dims2()?;
    if k >= e {
        // every expert is always in the top-k: the load is exactly balanced
        return Ok(Tensor::zeros((), clean.dtype(), clean.device())?);
    }
    // Σ_t P(t, i), fused on the CPU (`rowops::load_sums_composed` is the readable form)
    cv_squared(&crate::rowops::load_sums(clean, noisy, std, k)?)
}

/// Standard normal CDF `Φ(x) = ½(1 + erf(x/√2))`.
pub fn normal_cdf(x: &Tensor) -> Result<Tensor> {
    Ok((((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5)?)
}

/// The values of every auxiliary loss for one forward, for logging.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossValues {
    pub switch_balance: f64,
    pub importance: f64,
    pub load: f64,
    pub z: f64,
    /// The domain-map loss (0 when it is off or the batch has no domain labels).
    #[serde(default)]
    pub domain_map: f64,
}
