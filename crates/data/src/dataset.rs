//! Domain-labelled token streams: train/validation split by document, packing into
//! fixed-length windows, and per-domain validation sets.
//!
//! Packing follows the GPT-2 / nanoGPT recipe: every document is encoded and followed by EOS,
//! the results are concatenated into one stream, and window `i` is
//! `stream[i * seq_len .. i * seq_len + seq_len + 1]` — inputs are its first `seq_len` tokens,
//! targets its last `seq_len`. Consecutive windows share one token, so every token of the
//! stream except the first is a target exactly once per epoch.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, BatchIter, Cursor};
use crate::corpus::Document;
use crate::error::DataError;
use crate::mix_seed;
use crate::tokenizer::Tokenizer;

pub const DEFAULT_SEQ_LEN: usize = 128;
pub const DEFAULT_VALID_FRACTION: f64 = 0.1;

/// Domain names in id order. Ids are `u32` because that is the integer dtype tensors take.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainIndex {
    names: Vec<String>,
}

impl DomainIndex {
    /// Domains in order of first appearance; for [`crate::generate`] that is [`crate::Domain::ALL`]
    /// order, for [`crate::load_domain_dir`] sorted directory order.
    pub fn from_documents(docs: &[Document]) -> Self {
        Self::from_names(docs.iter().map(|d| d.domain.as_str()))
    }

    /// Duplicates keep their first position.
    pub fn from_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut index = DomainIndex::default();
        for name in names {
            let name = name.as_ref();
            if index.id(name).is_none() {
                index.names.push(name.to_string());
            }
        }
        index
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.names.iter().position(|n| n == name).map(|i| i as u32)
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Indices into the document list, each side in the original document order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

/// Splits by whole documents, per domain: `round(n * valid_fraction)` of each domain's `n`
/// documents, clamped to `1..=n-1`, go to validation, so every domain is on both sides.
pub fn split_documents(
    docs: &[Document],
    valid_fraction: f64,
    seed: u64,
) -> Result<Split, DataError> {
    check_fraction(valid_fraction)?;
    if docs.is_empty() {
        return Err(DataError::NoDocuments);
    }
    let mut is_valid = vec![false; docs.len()];
    for name in DomainIndex::from_documents(docs).names() {
        let mut members: Vec<usize> = (0..docs.len())
            .filter(|&i| &docs[i].domain == name)
            .collect();
        let n = members.len();
        if n < 2 {
            return Err(DataError::TooFewDocuments {
                domain: name.clone(),
                count: n,
            });
        }
        let n_valid = ((n as f64 * valid_fraction).round() as usize).clamp(1, n - 1);
        // Seeded by the name, not the position, so adding a domain leaves the others' split alone.
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, fnv1a(name)));
        members.shuffle(&mut rng);
        for &i in &members[..n_valid] {
            is_valid[i] = true;
        }
    }
    let (valid, train): (Vec<usize>, Vec<usize>) = (0..docs.len()).partition(|&i| is_valid[i]);
    Ok(Split { train, valid })
}

fn check_fraction(value: f64) -> Result<(), DataError> {
    // Written so that NaN fails too.
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(DataError::InvalidFraction { value })
    }
}

/// FNV-1a: a stable string hash (std's `DefaultHasher` may change between Rust releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A packed token stream with the domain id of every token, cut into `seq_len + 1` windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedSequences {
    seq_len: usize,
    tokens: Vec<u32>,
    domains: Vec<u32>,
}

impl PackedSequences {
    /// Each document's tokens then EOS; the EOS carries the domain of the document it ends.
    pub fn pack<'a, T: Tokenizer + ?Sized>(
        docs: impl IntoIterator<Item = &'a Document>,
        tokenizer: &T,
        index: &DomainIndex,
        seq_len: usize,
    ) -> Result<Self, DataError> {
        if seq_len == 0 {
            return Err(DataError::ZeroSize { name: "seq_len" });
        }
        let (mut tokens, mut domains) = (Vec::new(), Vec::new());
        for doc in docs {
            let id = index
                .id(&doc.domain)
                .ok_or_else(|| DataError::UnknownDomain {
                    domain: doc.domain.clone(),
                })?;
            tokens.extend(tokenizer.encode(&doc.text));
            tokens.push(tokenizer.eos());
            domains.resize(tokens.len(), id);
        }
        Ok(PackedSequences {
            seq_len,
            tokens,
            domains,
        })
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The whole stream, EOS separators included.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Domain id of each token of [`Self::tokens`].
    pub fn domains(&self) -> &[u32] {
        &self.domains
    }

    /// The tail that does not fill a window is dropped.
    pub fn num_windows(&self) -> usize {
        if self.tokens.len() <= self.seq_len {
            0
        } else {
            (self.tokens.len() - 1) / self.seq_len
        }
    }

    /// Tokens and domain ids of window `i`, `seq_len + 1` of each.
    ///
    /// # Panics
    /// If `i >= self.num_windows()`.
    pub fn window(&self, i: usize) -> (&[u32], &[u32]) {
        assert!(
            i < self.num_windows(),
            "window {i} of {}",
            self.num_windows()
        );
        let range = i * self.seq_len..(i + 1) * self.seq_len + 1;
        (&self.tokens[range.clone()], &self.domains[range])
    }

    /// All windows in stream order, as one batch (for evaluation).
    pub fn all_windows(&self) -> Batch {
        let order: Vec<usize> = (0..self.num_windows()).collect();
        Batch::from_windows(self, &order)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetConfig {
    pub seq_len: usize,
    /// Share of each domain's documents held out for validation, in (0, 1).
    pub valid_fraction: f64,
    /// Seeds the choice of validation documents; batch order has its own seed.
    pub split_seed: u64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            seq_len: DEFAULT_SEQ_LEN,
            valid_fraction: DEFAULT_VALID_FRACTION,
            split_seed: 0,
        }
    }
}

impl DatasetConfig {
    pub fn validate(&self) -> Result<(), DataError> {
        if self.seq_len == 0 {
            return Err(DataError::ZeroSize { name: "seq_len" });
        }
        check_fraction(self.valid_fraction)
    }
}

/// Training stream plus one validation stream per domain. Validation is packed per domain so
/// that every validation window belongs to a single domain; training documents stay in their
/// given order and only the windows are shuffled, by [`BatchIter`].
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub domains: DomainIndex,
    pub split: Split,
    pub train: PackedSequences,
    /// Indexed by domain id.
    pub valid: Vec<PackedSequences>,
}

impl Dataset {
    pub fn build<T: Tokenizer + ?Sized>(
        docs: &[Document],
        tokenizer: &T,
        cfg: &DatasetConfig,
    ) -> Result<Self, DataError> {
        cfg.validate()?;
        let domains = DomainIndex::from_documents(docs);
        let split = split_documents(docs, cfg.valid_fraction, cfg.split_seed)?;
        let needed = cfg.seq_len + 1;

        let train_docs = split.train.iter().map(|&i| &docs[i]);
        let train = PackedSequences::pack(train_docs, tokenizer, &domains, cfg.seq_len)?;
        if train.num_windows() == 0 {
            let tokens = train.tokens.len();
            return Err(DataError::TooFewTokens {
                what: "the training set".into(),
                tokens,
                needed,
            });
        }

        let mut valid = Vec::with_capacity(domains.len());
        for name in domains.names() {
            let docs = split
                .valid
                .iter()
                .map(|&i| &docs[i])
                .filter(|d| &d.domain == name);
            let packed = PackedSequences::pack(docs, tokenizer, &domains, cfg.seq_len)?;
            if packed.num_windows() == 0 {
                let what = format!("the validation set of domain `{name}`");
                return Err(DataError::TooFewTokens {
                    what,
                    tokens: packed.tokens.len(),
                    needed,
                });
            }
            valid.push(packed);
        }
        Ok(Dataset {
            domains,
            split,
            train,
            valid,
        })
    }

    pub fn seq_len(&self) -> usize {
        self.train.seq_len()
    }

    /// This dataset with `domain`'s documents left out of the training stream, built from
    /// the `docs` it was built from: validation, the split and domain ids unchanged. The data
    /// a run trains on before a new domain appears (`data.new_domain`). `None` when no
    /// domain has that name.
    pub fn without_training_domain<T: Tokenizer + ?Sized>(
        &self,
        docs: &[Document],
        tokenizer: &T,
        domain: &str,
    ) -> Result<Option<Dataset>, DataError> {
        if !self.domains.names().iter().any(|n| n == domain) {
            return Ok(None);
        }
        let train_docs = self
            .split
            .train
            .iter()
            .map(|&i| &docs[i])
            .filter(|d| d.domain != domain);
        let train = PackedSequences::pack(train_docs, tokenizer, &self.domains, self.seq_len())?;
        if train.num_windows() == 0 {
            return Err(DataError::TooFewTokens {
                what: format!("the training set without domain `{domain}`"),
                tokens: train.tokens.len(),
                needed: self.seq_len() + 1,
            });
        }
        Ok(Some(Dataset {
            train,
            ..self.clone()
        }))
    }

    /// Endless shuffled training batches from epoch 0.
    pub fn train_batches(&self, batch_size: usize, seed: u64) -> Result<BatchIter<'_>, DataError> {
        BatchIter::new(&self.train, batch_size, seed)
    }

    /// Continues from a cursor saved by [`BatchIter::cursor`] with the same data and settings.
    pub fn train_batches_from(
        &self,
        batch_size: usize,
        seed: u64,
        cursor: Cursor,
    ) -> Result<BatchIter<'_>, DataError> {
        BatchIter::resume(&self.train, batch_size, seed, cursor)
    }

    /// Every validation window of one domain, in order.
    ///
    /// # Panics
    /// If `domain` is not an id of [`Self::domains`].
    pub fn valid_batch(&self, domain: u32) -> Batch {
        self.valid[domain as usize].all_windows()
    }

    /// `(domain name, all its validation windows)` for every domain, in id order.
    pub fn valid_batches(&self) -> impl Iterator<Item = (&str, Batch)> + '_ {
        self.domains
            .names()
            .iter()
            .zip(&self.valid)
            .map(|(name, packed)| (name.as_str(), packed.all_windows()))
    }
}
