//! Plain-data description of a layer's experts, the contract between the readable MoE
//! (`switchyard-core`, which builds and initialises the parameters) and the kernels here.
//!
//! Per expert `e` with width `h` the layer's ONE flat parameter vector holds, in order:
//! `w1 [h, d]`, `w3 [h, d]` (SwiGLU only), `w2t [h, d]` (the down projection, transposed so
//! each expert's block is contiguous), `b1 [h]`, `b2 [d]` (FFN only).

use serde::{Deserialize, Serialize};

/// Elementwise non-linearity of an FFN expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// Exact GELU, `x·Φ(x)` (PyTorch's default `gelu`).
    Gelu,
    Silu,
}

/// The architecture of one expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ExpertKind {
    /// `act(x·W1ᵀ + b1)·W2ᵀ + b2`.
    Ffn { activation: Activation },
    /// `(silu(x·W1ᵀ) ⊙ x·W3ᵀ)·W2ᵀ`, as in Mixtral; no biases.
    SwiGlu,
}

/// One expert: its kind and its own hidden width (experts in a layer may differ in both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertSpec {
    #[serde(flatten)]
    pub kind: ExpertKind,
    pub hidden: usize,
}

impl ExpertSpec {
    pub fn swiglu(hidden: usize) -> Self {
        Self {
            kind: ExpertKind::SwiGlu,
            hidden,
        }
    }
    pub fn ffn(activation: Activation, hidden: usize) -> Self {
        Self {
            kind: ExpertKind::Ffn { activation },
            hidden,
        }
    }
    /// Multiply-adds per token, used for FLOP counts and "equal active compute" baselines.
    pub fn params(&self, d_model: usize) -> usize {
        match self.kind {
            ExpertKind::SwiGlu => 3 * d_model * self.hidden,
            ExpertKind::Ffn { .. } => 2 * d_model * self.hidden + self.hidden + d_model,
        }
    }
}

/// Where one expert's tensors start inside the flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertSlot {
    pub spec: ExpertSpec,
    pub w1: usize,
    pub w3: Option<usize>,
    pub w2t: usize,
    pub b1: Option<usize>,
    pub b2: Option<usize>,
}

/// Plain-data description of a layer's experts; the kernels read only this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertLayout {
    pub d_model: usize,
    pub slots: Vec<ExpertSlot>,
    pub total: usize,
}

impl ExpertLayout {
    pub fn new(d_model: usize, specs: &[ExpertSpec]) -> Self {
        let mut at = 0;
        let mut take = |n: usize| {
            let s = at;
            at += n;
            s
        };
        let slots = specs
            .iter()
            .map(|&spec| {
                let (h, d) = (spec.hidden, d_model);
                let glu = spec.kind == ExpertKind::SwiGlu;
                let w1 = take(h * d);
                let w3 = glu.then(|| take(h * d));
                let w2t = take(h * d);
                let b1 = (!glu).then(|| take(h));
                let b2 = (!glu).then(|| take(d));
                ExpertSlot {
                    spec,
                    w1,
                    w3,
                    w2t,
                    b1,
                    b2,
                }
            })
            .collect();
        Self {
            d_model,
            slots,
            total: at,
        }
    }

    pub fn num_experts(&self) -> usize {
        self.slots.len()
    }

    pub fn max_hidden(&self) -> usize {
        self.slots.iter().map(|s| s.spec.hidden).max().unwrap_or(0)
    }
}
