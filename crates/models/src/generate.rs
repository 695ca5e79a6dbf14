//! Autoregressive generation with a KV cache: greedy, temperature and nucleus (top-p)
//! sampling from a seeded stream.

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attention::KvCache;
use crate::lm::{LmCtx, MoeLm};
use crate::{ModelError, Result};

/// How the next token is picked from the logits.
#[derive(Clone, Debug)]
pub struct Sampler {
    /// 0 picks the arg-max (ties to the lower id); otherwise logits are divided by it.
    pub temperature: f64,
    /// Nucleus sampling (Holtzman et al. 2019): draw from the smallest set of most likely
    /// tokens whose probability reaches `top_p`; 1 keeps every token.
    pub top_p: f64,
    pub seed: u64,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(temperature: f64, top_p: f64, seed: u64) -> Self {
        Self {
            temperature,
            top_p,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn greedy() -> Self {
        Self::new(0.0, 1.0, 0)
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ModelError::config(
                "temperature",
                format!("must be finite and >= 0, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::config(
                "top_p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        Ok(())
    }

    /// Picks a token id from one row of logits.
    pub fn sample(&mut self, logits: &[f64]) -> u32 {
        if self.temperature == 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // softmax(logits / T), shifted by the max for stability
        let mut probs: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, ((l - m) / self.temperature).exp()))
            .collect();
        let z: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= z);
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut keep = 0;
        let mut mass = 0.0;
        while keep < probs.len() && (keep == 0 || mass < self.top_p) {
            mass += probs[keep].1;
            keep += 1;
        }
        let u = self.rng.random::<f64>() * mass;
        let mut acc = 0.0;
        for &(i, p) in &probs[..keep] {
            acc += p;
            if u < acc {
                return i as u32;
            }
        }
        probs[keep - 1].0 as u32
    }
}

fn argmax(xs: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

impl MoeLm {
    /// Continues `prompt` by up to `max_new` tokens and returns the new tokens only. Runs the
    /// prompt once, then one position per step through a fresh [`KvCache`]; stops early at
    /// `max_seq_len`. Routing runs in eval mode whatever `ctx.train` says.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        sampler: &mut Sampler,
        ctx: &mut LmCtx,
    ) -> Result<Vec<u32>> {
        sampler.validate()?;
        if prompt.is_empty() {
            return Err(ModelError::input(
                "MoeLm::generate",
                "the prompt must hold at least one token",
            ));
        }
        if prompt.len() > self.cfg.max_seq_len {
            return Err(ModelError::input(
                "MoeLm::generate",
                format!(
                    "prompt of {} tokens exceeds max_seq_len = {}",
                    prompt.len(),
                    self.cfg.max_seq_len
                ),
            ));
        }
        let was_train = std::mem::replace(&mut ctx.train, false);
        let out = self.generate_inner(prompt, max_new, sampler, ctx);
        ctx.train = was_train;
        out
    }

    fn generate_inner(
        &self,
        prompt: &[u32],
        max_new: usize,
        sampler: &mut Sampler,
        ctx: &mut LmCtx,
    ) -> Result<Vec<u32>> {
        let device = self.embed_tokens.device();
        let mut cache = KvCache::new(self.layers.len());
        let mut new = Vec::with_capacity(max_new);
        let mut input = Tensor::from_slice(prompt, (1, prompt.len()), device)?;
        while new.len() < max_new {
            let out = self.forward_cached(&input, &mut cache, ctx)?;
            let l = out.logits.dims()[1];
            let last = out
                .logits
                .narrow(1, l - 1, 1)?
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            let next = sampler.sample(&last);
            new.push(next);
            if cache.len() >= self.cfg.max_seq_len {
                break;
            }
            input = Tensor::from_slice(&[next], (1, 1), device)?;
        }
        Ok(new)
    }
}
