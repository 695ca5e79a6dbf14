//! Batches of windows and the seeded, resumable batch iterator.
//!
//! Each epoch visits the windows in a permutation drawn from `(seed, epoch)` alone, so the
//! iterator's whole state is the [`Cursor`] `(epoch, position)`: save it with a checkpoint and
//! [`BatchIter::resume`] yields exactly the batches the interrupted run would have seen next.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::PackedSequences;
use crate::error::DataError;
use crate::mix_seed;

/// Flat row-major arrays, ready for `Tensor::from_vec(v, (batch_size, seq_len), &dev)`.
///
/// # Shapes
/// `inputs`, `targets`, `domains`: `[batch_size, seq_len]`, with
/// `targets[b, t] == window_b[t + 1]` and `inputs[b, t] == window_b[t]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// Domain id of each input token: what the router saw at that position and whose text
    /// the prediction continues. It differs from the target's domain only where the input is
    /// the EOS ending one document and the target starts the next.
    pub domains: Vec<u32>,
}

impl Batch {
    /// The given windows of `data`, in the given order.
    ///
    /// # Panics
    /// If an index is not below `data.num_windows()`.
    pub fn from_windows(data: &PackedSequences, windows: &[usize]) -> Batch {
        let seq_len = data.seq_len();
        let n = windows.len() * seq_len;
        let mut batch = Batch {
            batch_size: windows.len(),
            seq_len,
            inputs: Vec::with_capacity(n),
            targets: Vec::with_capacity(n),
            domains: Vec::with_capacity(n),
        };
        for &w in windows {
            let (tokens, domains) = data.window(w);
            batch.inputs.extend_from_slice(&tokens[..seq_len]);
            batch.targets.extend_from_slice(&tokens[1..]);
            batch.domains.extend_from_slice(&domains[..seq_len]);
        }
        batch
    }

    pub fn num_tokens(&self) -> usize {
        self.batch_size * self.seq_len
    }
}

/// Where a [`BatchIter`] stands: the next batch starts at `order(epoch)[position]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub position: usize,
}

/// Endless iterator of full batches of shuffled windows. An epoch's last, partial batch is
/// skipped (its windows come around again in later epochs in other orders), so every batch
/// has the same shape.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    data: &'a PackedSequences,
    batch_size: usize,
    seed: u64,
    cursor: Cursor,
    order: Vec<usize>,
}

impl<'a> BatchIter<'a> {
    pub fn new(data: &'a PackedSequences, batch_size: usize, seed: u64) -> Result<Self, DataError> {
        Self::resume(data, batch_size, seed, Cursor::default())
    }

    /// Resuming is exact only with the same data, `seq_len`, `batch_size` and `seed`; the
    /// cursor cannot check that, so store them alongside it.
    pub fn resume(
        data: &'a PackedSequences,
        batch_size: usize,
        seed: u64,
        cursor: Cursor,
    ) -> Result<Self, DataError> {
        let windows = data.num_windows();
        if batch_size == 0 {
            return Err(DataError::ZeroSize { name: "batch_size" });
        }
        if batch_size > windows {
            return Err(DataError::BatchTooLarge {
                batch_size,
                windows,
            });
        }
        if cursor.position > windows {
            return Err(DataError::CursorOutOfRange {
                position: cursor.position,
                windows,
            });
        }
        let mut iter = BatchIter {
            data,
            batch_size,
            seed,
            cursor,
            order: epoch_order(windows, seed, cursor.epoch),
        };
        iter.roll_if_epoch_done();
        Ok(iter)
    }

    /// Save this after a step; resuming from it yields the batch `next_batch` would return.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.order.len() / self.batch_size
    }

    pub fn next_batch(&mut self) -> Batch {
        let start = self.cursor.position;
        let batch = Batch::from_windows(self.data, &self.order[start..start + self.batch_size]);
        self.cursor.position += self.batch_size;
        self.roll_if_epoch_done();
        batch
    }

    /// Moves to the next epoch as soon as no full batch is left, so the cursor reads
    /// `(epoch + 1, 0)` right after an epoch's last batch.
    fn roll_if_epoch_done(&mut self) {
        if self.cursor.position + self.batch_size > self.order.len() {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                position: 0,
            };
            self.order = epoch_order(self.order.len(), self.seed, self.cursor.epoch);
        }
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        Some(self.next_batch())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// The window permutation of one epoch; depends only on its arguments.
pub fn epoch_order(num_windows: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..num_windows).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(seed, epoch)));
    order
}
