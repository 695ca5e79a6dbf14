//! The built-in multi-domain synthetic corpus, generated in code from a seed.
//!
//! Each domain has its own generator with learnable structure (grammar agreement, correct sums,
//! balanced braces, recurring motifs, monotone timestamps) and clearly different byte
//! statistics, so that a router's expert × domain table can be read against ground truth.
//!
//! Every document has its own generator seeded from `(seed, domain, index)`: generating one
//! domain alone gives the same documents as generating all of them, and changing
//! `docs_per_domain` only appends or truncates.

mod cjk;
mod code;
mod dna;
mod prose;
mod records;

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::mix_seed;

/// The motifs planted in `dna` documents; exposed so tests and reports can look for them.
pub use dna::MOTIFS as DNA_MOTIFS;

pub const DEFAULT_SEED: u64 = 0x5717_c4ad;
pub const DEFAULT_DOCS_PER_DOMAIN: usize = 64;
/// Approximate; a document stops at the first unit (sentence, line, record) that reaches it.
pub const DEFAULT_DOC_BYTES: usize = 2048;

/// The domains of the built-in corpus. The declaration order is the domain id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// English-like sentences from a small grammar with subject–verb agreement.
    Prose,
    /// `a+b=c;` with correct results.
    Arith,
    /// One JSON record per line, three schemas, order totals that add up.
    Json,
    /// Rust- and C-like functions with nested blocks and balanced braces.
    Code,
    /// ACGT lines with recurring motifs, tandem repeats and open reading frames.
    Dna,
    /// Timestamped service logs with levels, IPs, requests and status codes.
    Logs,
    /// Chinese sentences from a small lexicon; almost every byte is >= 0x80.
    Cjk,
}

impl Domain {
    pub const ALL: [Domain; 7] = [
        Domain::Prose,
        Domain::Arith,
        Domain::Json,
        Domain::Code,
        Domain::Dna,
        Domain::Logs,
        Domain::Cjk,
    ];

    pub fn all() -> &'static [Domain] {
        &Self::ALL
    }

    pub fn name(self) -> &'static str {
        match self {
            Domain::Prose => "prose",
            Domain::Arith => "arith",
            Domain::Json => "json",
            Domain::Code => "code",
            Domain::Dna => "dna",
            Domain::Logs => "logs",
            Domain::Cjk => "cjk",
        }
    }

    pub fn from_name(name: &str) -> Option<Domain> {
        Self::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Position in [`Domain::ALL`], also the domain id when a dataset is built from
    /// [`generate`]'s output.
    pub fn index(self) -> usize {
        self as usize
    }

    fn document(self, rng: &mut ChaCha8Rng, target_bytes: usize) -> String {
        match self {
            Domain::Prose => prose::document(rng, target_bytes),
            Domain::Arith => records::arith(rng, target_bytes),
            Domain::Json => records::json(rng, target_bytes),
            Domain::Code => code::document(rng, target_bytes),
            Domain::Dna => dna::document(rng, target_bytes),
            Domain::Logs => records::logs(rng, target_bytes),
            Domain::Cjk => cjk::document(rng, target_bytes),
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusConfig {
    pub seed: u64,
    pub docs_per_domain: usize,
    /// Approximate size of each document in bytes (UTF-8), see [`DEFAULT_DOC_BYTES`].
    pub doc_bytes: usize,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        CorpusConfig {
            seed: DEFAULT_SEED,
            docs_per_domain: DEFAULT_DOCS_PER_DOMAIN,
            doc_bytes: DEFAULT_DOC_BYTES,
        }
    }
}

/// One labelled unit of text; the train/validation split never cuts through a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub domain: String,
    pub text: String,
}

/// All domains in [`Domain::ALL`] order, `docs_per_domain` documents each.
pub fn generate(cfg: &CorpusConfig) -> Vec<Document> {
    Domain::ALL
        .iter()
        .flat_map(|&d| generate_domain(d, cfg))
        .collect()
}

/// The documents of one domain, identical to that domain's part of [`generate`].
pub fn generate_domain(domain: Domain, cfg: &CorpusConfig) -> Vec<Document> {
    (0..cfg.docs_per_domain)
        .map(|i| {
            let seed = mix_seed(mix_seed(cfg.seed, domain.index() as u64), i as u64);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            Document {
                domain: domain.name().to_string(),
                text: domain.document(&mut rng, cfg.doc_bytes),
            }
        })
        .collect()
}

fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// True with probability `percent / 100`; integer draws keep generation free of float rounding.
fn chance(rng: &mut impl Rng, percent: u32) -> bool {
    rng.random_range(0..100) < percent
}
