//! The benchmarked layer shapes and their FLOP counts.

/// Tokens per batch in the full benchmark.
pub const TOKENS: usize = 4096;
/// Tokens per batch with `--quick`.
pub const QUICK_TOKENS: usize = 128;
/// Model width of every benchmarked layer.
pub const D_MODEL: usize = 512;
/// `k·h`, held fixed along the E sweep so active FLOPs per token stay equal.
pub const SWEEP_ACTIVE_HIDDEN: usize = 2048;
/// Experts per layer along the sweep.
pub const SWEEP_EXPERTS: [usize; 8] = [8, 16, 32, 64, 128, 256, 512, 1024];
/// The sweep with `--quick`.
pub const QUICK_SWEEP_EXPERTS: [usize; 3] = [8, 16, 32];

/// An MoE layer of `experts` SwiGLU experts of width `h`, top-`k` routing, on `tokens` tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerShape {
    pub name: String,
    pub experts: usize,
    pub k: usize,
    pub d: usize,
    pub h: usize,
    pub tokens: usize,
}

impl LayerShape {
    /// Active FLOPs of one forward: the experts' three matmuls per assignment,
    /// `T·k·3·2·d·h`, plus the gate `T·d·E·2`.
    pub fn fwd_flops(&self) -> f64 {
        let (t, k, d, h, e) = (
            self.tokens as f64,
            self.k as f64,
            self.d as f64,
            self.h as f64,
            self.experts as f64,
        );
        t * k * 3.0 * 2.0 * d * h + t * d * e * 2.0
    }

    /// Forward+backward: the backward is counted as twice the forward.
    pub fn fwd_bwd_flops(&self) -> f64 {
        3.0 * self.fwd_flops()
    }

    pub fn flops(&self, mode: &str) -> f64 {
        if mode == "fwd" {
            self.fwd_flops()
        } else {
            self.fwd_bwd_flops()
        }
    }
}

/// `mixtral8` (E=8, k=2, h=1024), `fine64` (E=64, k=8, h=256), d=512; or one point of the
/// sweep, `sweep_e<E>` (see [`sweep`]).
pub fn named(name: &str, quick: bool) -> Option<LayerShape> {
    let tokens = if quick { QUICK_TOKENS } else { TOKENS };
    if let Some(e) = name
        .strip_prefix("sweep_e")
        .and_then(|e| e.parse::<usize>().ok())
        .filter(|&e| e >= 2)
    {
        return Some(sweep_point(e, tokens));
    }
    let (experts, k, h) = match name {
        "mixtral8" => (8, 2, 1024),
        "fine64" => (64, 8, 256),
        _ => return None,
    };
    Some(LayerShape {
        name: name.into(),
        experts,
        k,
        d: D_MODEL,
        h,
        tokens,
    })
}

/// The E sweep at equal active FLOPs: `k = clamp(E/4, 2, 8)`, `h = 2048 / k`, so `k·h` stays
/// 2048 — E=8 is `mixtral8` and E=64 is `fine64`; from E=32 on, experts keep k=8, h=256 and
/// only their number (the parameter count) grows. The gate's `T·d·E·2` grows with E and is
/// counted in the active FLOPs.
pub fn sweep(quick: bool) -> Vec<LayerShape> {
    let tokens = if quick { QUICK_TOKENS } else { TOKENS };
    let es: &[usize] = if quick {
        &QUICK_SWEEP_EXPERTS
    } else {
        &SWEEP_EXPERTS
    };
    es.iter().map(|&e| sweep_point(e, tokens)).collect()
}

fn sweep_point(e: usize, tokens: usize) -> LayerShape {
    let k = (e / 4).clamp(2, 8);
    LayerShape {
        name: format!("sweep_e{e}"),
        experts: e,
        k,
        d: D_MODEL,
        h: SWEEP_ACTIVE_HIDDEN / k,
        tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_holds_active_hidden_and_contains_the_named_configs() {
        let s = sweep(false);
        assert!(s.iter().all(|x| x.k * x.h == SWEEP_ACTIVE_HIDDEN));
        let strip = |mut x: LayerShape| {
            x.name.clear();
            x
        };
        assert!(s
            .iter()
            .any(|x| strip(x.clone()) == strip(named("mixtral8", false).unwrap())));
        assert!(s
            .iter()
            .any(|x| strip(x.clone()) == strip(named("fine64", false).unwrap())));
    }
}
