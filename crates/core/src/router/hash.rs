//! Hash routing (Roller et al. 2021, "Hash Layers For Large Sparse Models"): a fixed hash of
//! the token id picks one expert; there is no learned gate and the weight is 1. When expert
//! dropout makes the hashed expert unavailable, the next available expert (cyclically) is used.

use candle_core::Tensor;

use serde::{Deserialize, Serialize};

use super::{Router, RouterConfig, RouterInput, RouterKind, RouterOutput};
use crate::plan::DispatchPlan;
use crate::{MoeError, Result};

/// `{ type = "hash", seed = 0 }`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct HashConfig {
    /// Mixed into every token id before hashing: another seed, another fixed assignment.
    pub seed: u64,
}

impl RouterKind for HashConfig {
    fn k(&self) -> usize {
        1
    }
    fn validate(&self, _experts: usize) -> Result<()> {
        Ok(())
    }
    fn build(&self, experts: usize) -> Box<dyn Router> {
        Box::new(HashRouter::new(self.clone(), experts))
    }
    fn examples(_experts: usize) -> Vec<Self> {
        vec![Self { seed: 3 }]
    }
}

pub struct HashRouter {
    cfg: HashConfig,
    experts: usize,
}

/// SplitMix64 finaliser: a fixed, well-mixed hash (Steele et al. 2014).
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl HashRouter {
    pub fn new(cfg: HashConfig, experts: usize) -> Self {
        Self { cfg, experts }
    }

    /// The expert a token id hashes to (ignoring availability).
    pub fn expert_of(&self, token_id: u32) -> usize {
        (splitmix64(self.cfg.seed ^ token_id as u64) % self.experts as u64) as usize
    }
}

impl Router for HashRouter {
    fn config(&self) -> RouterConfig {
        self.cfg.clone().into()
    }
    fn num_experts(&self) -> usize {
        self.experts
    }
    fn gate_outputs(&self) -> usize {
        0
    }
    fn route(&self, input: RouterInput<'_>) -> Result<RouterOutput> {
        let e = self.experts;
        let t = input.num_tokens();
        let ids = input.token_ids.ok_or_else(|| {
            MoeError::input(
                "hash router",
                "needs token ids; pass them in ForwardCtx::token_ids",
            )
        })?;
        if ids.len() != t {
            return Err(MoeError::input(
                "hash router",
                format!("{} token ids for {t} tokens", ids.len()),
            ));
        }
        let mut pairs = Vec::with_capacity(t);
        for (tok, &id) in ids.iter().enumerate() {
            let h = self.expert_of(id);
            if let Some(x) = (0..e).map(|i| (h + i) % e).find(|&x| input.is_available(x)) {
                pairs.push((tok as u32, x as u32));
            }
        }
        let plan = DispatchPlan::from_assignments(t, e, &pairs)?;
        let dense = super::plan_mask(
            &plan,
            &Tensor::zeros((t, e), input.gate_out.dtype(), input.gate_out.device())?,
        )?;
        Ok(RouterOutput {
            plan,
            probs: dense.clone(),
            dense: super::Dense::Tensor(dense),
            logits: None,
            load_loss: None,
        })
    }
}
