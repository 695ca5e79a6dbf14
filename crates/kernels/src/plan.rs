//! The dispatch plan: which token goes to which expert, in CSR form sorted by expert.
//!
//! Every router produces one, and everything downstream (kernels, losses, statistics, traces)
//! reads only this plain struct. Assignments of expert `e` are `offsets[e]..offsets[e+1]`;
//! inside an expert they are in ascending token order, so results do not depend on the order
//! in which a router happened to emit them.

use crate::{KernelError, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchPlan {
    pub num_tokens: usize,
    pub num_experts: usize,
    /// `E + 1` monotone offsets into `token`/`expert`.
    pub offsets: Vec<u32>,
    /// Token of each assignment.
    pub token: Vec<u32>,
    /// Expert of each assignment (derivable from `offsets`; kept for direct indexing).
    pub expert: Vec<u32>,
    /// `true` for tokens that no expert processes; their MoE output is zero.
    pub dropped: Vec<bool>,
}

impl DispatchPlan {
    /// Builds a plan from `(token, expert)` pairs by a counting sort on the expert, then on
    /// the token. Duplicate pairs are an error: each kept assignment must appear once.
    pub fn from_assignments(
        num_tokens: usize,
        num_experts: usize,
        pairs: &[(u32, u32)],
    ) -> Result<Self> {
        let mut counts = vec![0u32; num_experts + 1];
        for &(t, e) in pairs {
            if t as usize >= num_tokens || e as usize >= num_experts {
                return Err(KernelError::input(
                    "DispatchPlan::from_assignments",
                    format!("assignment (token {t}, expert {e}) is outside {num_tokens} tokens × {num_experts} experts"),
                ));
            }
            counts[e as usize + 1] += 1;
        }
        for e in 0..num_experts {
            counts[e + 1] += counts[e];
        }
        let offsets = counts.clone();
        let mut cursor = counts;
        let mut token = vec![0u32; pairs.len()];
        let mut expert = vec![0u32; pairs.len()];
        for &(t, e) in pairs {
            let slot = &mut cursor[e as usize];
            token[*slot as usize] = t;
            expert[*slot as usize] = e;
            *slot += 1;
        }
        for e in 0..num_experts {
            let (a, b) = (offsets[e] as usize, offsets[e + 1] as usize);
            // the counting sort is stable: pairs emitted in token order (every router's usual
            // order) are already sorted, and checking is O(n)
            if !token[a..b].is_sorted() {
                token[a..b].sort_unstable();
            }
            if token[a..b].windows(2).any(|w| w[0] == w[1]) {
                return Err(KernelError::input(
                    "DispatchPlan::from_assignments",
                    format!("expert {e} was assigned the same token twice"),
                ));
            }
        }
        let mut dropped = vec![true; num_tokens];
        for &t in &token {
            dropped[t as usize] = false;
        }
        Ok(Self {
            num_tokens,
            num_experts,
            offsets,
            token,
            expert,
            dropped,
        })
    }

    /// Every token to every one of `num_experts` experts (shared experts, dense baselines).
    pub fn dense(num_tokens: usize, num_experts: usize) -> Self {
        let pairs: Vec<(u32, u32)> = (0..num_experts as u32)
            .flat_map(|e| (0..num_tokens as u32).map(move |t| (t, e)))
            .collect();
        Self::from_assignments(num_tokens, num_experts, &pairs).expect("dense plan is valid")
    }

    pub fn len(&self) -> usize {
        self.token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token.is_empty()
    }

    /// Assignments `a..b` of expert `e`.
    pub fn range(&self, e: usize) -> std::ops::Range<usize> {
        self.offsets[e] as usize..self.offsets[e + 1] as usize
    }

    pub fn tokens_per_expert(&self) -> Vec<usize> {
        (0..self.num_experts).map(|e| self.range(e).len()).collect()
    }

    /// Index of each assignment in a row-major `[T, E]` matrix (`t·E + e`), for gathering
    /// per-assignment weights out of a dense weight matrix.
    pub fn flat_indices(&self) -> Vec<u32> {
        self.token
            .iter()
            .zip(&self.expert)
            .map(|(&t, &e)| t * self.num_experts as u32 + e)
            .collect()
    }

    /// The inverse index: for each token, its assignments in plan order (CSR by token).
    /// Scatter kernels walk this so every token's sum has a fixed order.
    pub fn by_token(&self) -> (Vec<u32>, Vec<u32>) {
        let mut off = vec![0u32; self.num_tokens + 1];
        for &t in &self.token {
            off[t as usize + 1] += 1;
        }
        for t in 0..self.num_tokens {
            off[t + 1] += off[t];
        }
        let mut cur = off.clone();
        let mut idx = vec![0u32; self.token.len()];
        for (a, &t) in self.token.iter().enumerate() {
            idx[cur[t as usize] as usize] = a as u32;
            cur[t as usize] += 1;
        }
        (off, idx)
    }

    /// Checks the invariants every consumer relies on; used by tests and by forced routing.
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| Err(KernelError::input("DispatchPlan::check", why));
        if self.offsets.len() != self.num_experts + 1 || self.offsets[0] != 0 {
            return bad(format!(
                "offsets must have E+1 = {} entries starting at 0",
                self.num_experts + 1
            ));
        }
        if self.offsets.windows(2).any(|w| w[0] > w[1]) {
            return bad("offsets are not monotone".into());
        }
        if *self.offsets.last().unwrap() as usize != self.token.len()
            || self.expert.len() != self.token.len()
        {
            return bad("offsets[E] must equal the number of assignments".into());
        }
        for e in 0..self.num_experts {
            let r = self.range(e);
            if self.expert[r.clone()].iter().any(|&x| x as usize != e) {
                return bad(format!(
                    "expert ids inside expert {e}'s range disagree with offsets"
                ));
            }
            if self.token[r].windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!(
                    "tokens of expert {e} are not strictly ascending (duplicate or unsorted)"
                ));
            }
        }
        if self.token.iter().any(|&t| t as usize >= self.num_tokens) {
            return bad("token index out of range".into());
        }
        let mut seen = vec![false; self.num_tokens];
        for &t in &self.token {
            seen[t as usize] = true;
        }
        if seen.iter().zip(&self.dropped).any(|(s, d)| *s == *d) {
            return bad("dropped mask disagrees with the assignments".into());
        }
        Ok(())
    }
}
