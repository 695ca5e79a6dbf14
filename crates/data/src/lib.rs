//! Training data for Switchyard: a built-in multi-domain synthetic corpus, a byte-level
//! tokenizer, and domain-labelled packed datasets with resumable batch iteration.
//!
//! Every token carries the id of the domain it came from, so per-domain loss and
//! expert × domain routing statistics can be measured against ground truth (DESIGN.md §6).
//!
//! - [`corpus`]: seven seeded generators (`prose`, `arith`, `json`, `code`, `dna`, `logs`,
//!   `cjk`) with clearly different byte statistics; same seed, same bytes.
//! - [`hf_tokenizer`]: [`HfTokenizer`], a HuggingFace `tokenizer.json` behind the same trait.
//! - [`tokenizer`]: the [`Tokenizer`] trait and the default [`ByteTokenizer`] (256 bytes +
//!   BOS/EOS/PAD = 259 ids).
//! - [`dataset`]: train/validation split by document, packing into `seq_len + 1` windows,
//!   per-domain validation sets.
//! - [`batch`]: [`Batch`] and the shuffled, seeded [`BatchIter`] whose [`Cursor`] is saved with a
//!   checkpoint to resume on exactly the next batch.
//! - [`load`]: users' own text, one file ([`load_text_file`]) or `<dir>/<domain>/*.txt`
//!   ([`load_domain_dir`]).
//!
//! ```
//! use switchyard_data::{generate, ByteTokenizer, CorpusConfig, Dataset, DatasetConfig};
//!
//! let docs = generate(&CorpusConfig { docs_per_domain: 8, doc_bytes: 512, ..Default::default() });
//! let cfg = DatasetConfig { seq_len: 64, ..Default::default() };
//! let data = Dataset::build(&docs, &ByteTokenizer, &cfg)?;
//!
//! let mut batches = data.train_batches(4, /* seed */ 7)?;
//! let batch = batches.next_batch();
//! assert_eq!(batch.inputs.len(), 4 * 64); // row-major [batch, seq_len]
//! assert_eq!(batch.inputs[1..64], batch.targets[..63]); // targets are inputs shifted by one
//!
//! // Save `cursor` with the checkpoint; resuming from it yields the same next batch.
//! let cursor = batches.cursor();
//! let mut resumed = data.train_batches_from(4, 7, cursor)?;
//! assert_eq!(resumed.next_batch(), batches.next_batch());
//!
//! // Validation, one domain at a time: every window is pure `arith`.
//! let arith = data.domains.id("arith").unwrap();
//! assert!(data.valid_batch(arith).domains.iter().all(|&d| d == arith));
//! # Ok::<(), switchyard_data::DataError>(())
//! ```
//!
//! Neighbours: `switchyard-core` (`crates/core`) holds routers, experts and losses and knows
//! nothing of data; the model and training crates turn a [`Batch`] into tensors
//! (`Tensor::from_vec(batch.inputs, (batch.batch_size, batch.seq_len), &device)`).
//! This crate depends on neither and does no I/O beyond reading the user's files.

pub mod batch;
pub mod corpus;
pub mod dataset;
pub mod error;
pub mod hf_tokenizer;
pub mod load;
pub mod tokenizer;

pub use batch::{epoch_order, Batch, BatchIter, Cursor};
pub use corpus::{generate, generate_domain, CorpusConfig, Document, Domain};
pub use dataset::{split_documents, Dataset, DatasetConfig, DomainIndex, PackedSequences, Split};
pub use error::DataError;
pub use hf_tokenizer::{HfTokenizer, SpecialIds};
pub use load::{chunk_text, load_domain_dir, load_text_file, DOC_CHUNK_BYTES};
pub use tokenizer::{ByteTokenizer, Tokenizer};

/// Derives an independent seed from a parent seed and a salt (SplitMix64 finaliser), so that
/// streams for different documents, domains or epochs never share a generator state.
pub(crate) fn mix_seed(seed: u64, salt: u64) -> u64 {
    // SplitMix64: z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) * 0x94d049bb133111eb
    let mut z = seed
        ^ salt
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
