//! The batch cursor: resuming from a saved cursor yields exactly the batches an uninterrupted
//! run would have produced, across epoch boundaries too.

use switchyard_data::{
    generate, Batch, BatchIter, ByteTokenizer, CorpusConfig, Cursor, DataError, Dataset,
    DatasetConfig,
};

fn dataset() -> Dataset {
    let docs = generate(&CorpusConfig {
        seed: 21,
        docs_per_domain: 4,
        doc_bytes: 512,
    });
    Dataset::build(
        &docs,
        &ByteTokenizer,
        &DatasetConfig {
            seq_len: 24,
            valid_fraction: 0.25,
            split_seed: 0,
        },
    )
    .unwrap()
}

const BATCH: usize = 7;
const SEED: u64 = 99;

#[test]
fn resume_from_any_step_matches_the_uninterrupted_run() {
    let data = dataset();
    let per_epoch = data.train_batches(BATCH, SEED).unwrap().batches_per_epoch();
    let steps = 2 * per_epoch + 3; // crosses two epoch boundaries
    let mut reference = data.train_batches(BATCH, SEED).unwrap();
    let mut cursors = vec![reference.cursor()];
    let mut batches: Vec<Batch> = Vec::new();
    for _ in 0..steps {
        batches.push(reference.next_batch());
        cursors.push(reference.cursor());
    }
    for stop in [0, 1, per_epoch - 1, per_epoch, per_epoch + 1, steps - 1] {
        // Round-trip through JSON as a checkpoint would.
        let saved = serde_json::to_string(&cursors[stop]).unwrap();
        let cursor: Cursor = serde_json::from_str(&saved).unwrap();
        let resumed: Vec<Batch> = data
            .train_batches_from(BATCH, SEED, cursor)
            .unwrap()
            .take(steps - stop)
            .collect();
        assert_eq!(
            resumed,
            batches[stop..],
            "resumed at step {stop} from {cursor:?}"
        );
    }
}

#[test]
fn cursor_rolls_to_the_next_epoch_after_its_last_full_batch() {
    let data = dataset();
    let mut it = data.train_batches(BATCH, SEED).unwrap();
    let per_epoch = it.batches_per_epoch();
    assert_eq!(per_epoch, data.train.num_windows() / BATCH);
    for _ in 0..per_epoch - 1 {
        it.next_batch();
    }
    assert_eq!(
        it.cursor(),
        Cursor {
            epoch: 0,
            position: (per_epoch - 1) * BATCH
        }
    );
    it.next_batch();
    assert_eq!(
        it.cursor(),
        Cursor {
            epoch: 1,
            position: 0
        }
    );
}

#[test]
fn an_epoch_visits_each_window_at_most_once_and_epochs_differ() {
    let data = dataset();
    let mut it = data.train_batches(BATCH, SEED).unwrap();
    let n = it.batches_per_epoch();
    let epoch0: Vec<Batch> = (0..n).map(|_| it.next_batch()).collect();
    let epoch1: Vec<Batch> = (0..n).map(|_| it.next_batch()).collect();
    let rows = |bs: &[Batch]| -> Vec<Vec<u32>> {
        bs.iter()
            .flat_map(|b| {
                b.inputs
                    .chunks(b.seq_len)
                    .map(<[u32]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (r0, r1) = (rows(&epoch0), rows(&epoch1));
    let mut distinct = r0.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        r0.len(),
        "a window repeated within an epoch"
    );
    assert_ne!(r0, r1, "two epochs in the same order");
}

#[test]
fn other_seeds_shuffle_differently() {
    let data = dataset();
    let a = data.train_batches(BATCH, 1).unwrap().next_batch();
    let b = data.train_batches(BATCH, 2).unwrap().next_batch();
    assert_ne!(a, b);
}

#[test]
fn impossible_iterators_are_errors() {
    let data = dataset();
    let windows = data.train.num_windows();
    let err = data.train_batches(windows + 1, 0).unwrap_err();
    assert!(matches!(err, DataError::BatchTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("lower batch_size"), "{err}");
    assert!(matches!(
        data.train_batches(0, 0),
        Err(DataError::ZeroSize { name: "batch_size" })
    ));
    let past = Cursor {
        epoch: 0,
        position: windows + 1,
    };
    let err = BatchIter::resume(&data.train, 1, 0, past).unwrap_err();
    assert!(
        err.to_string()
            .contains("same data, seq_len and batch size"),
        "{err}"
    );
}
