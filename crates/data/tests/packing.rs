//! Packing documents into `seq_len + 1` windows: shapes, the one-token shift, EOS separators
//! and per-token domain ids.

use switchyard_data::tokenizer::EOS;
use switchyard_data::{
    generate, Batch, ByteTokenizer, CorpusConfig, DataError, Dataset, DatasetConfig, Document,
    DomainIndex, PackedSequences, Tokenizer,
};

fn doc(domain: &str, text: &str) -> Document {
    Document {
        domain: domain.into(),
        text: text.into(),
    }
}

#[test]
fn stream_is_documents_joined_by_eos_with_domain_per_token() {
    let docs = [doc("a", "xy"), doc("b", "中"), doc("a", "z")];
    let index = DomainIndex::from_documents(&docs);
    let p = PackedSequences::pack(&docs, &ByteTokenizer, &index, 4).unwrap();
    assert_eq!(
        p.tokens(),
        &[120, 121, EOS, 0xE4, 0xB8, 0xAD, EOS, 122, EOS]
    );
    assert_eq!(p.domains(), &[0, 0, 0, 1, 1, 1, 1, 0, 0]);
    // 9 tokens, windows of 5 overlapping by one: [0..5], [4..9].
    assert_eq!(p.num_windows(), 2);
    assert_eq!(p.window(1).0, &[0xB8, 0xAD, EOS, 122, EOS]);
}

#[test]
fn window_count_follows_stride_seq_len() {
    let index = DomainIndex::from_names(["d"]);
    for len in 0..40 {
        let text = "x".repeat(len);
        // Stream length is len + 1 (the EOS).
        let p = PackedSequences::pack(&[doc("d", &text)], &ByteTokenizer, &index, 8).unwrap();
        let expected = if len + 1 > 8 { len / 8 } else { 0 };
        assert_eq!(p.num_windows(), expected, "len {len}");
        for w in 0..p.num_windows() {
            assert_eq!(p.window(w).0.len(), 9);
        }
    }
}

#[test]
fn batch_shapes_and_targets_shifted_by_one() {
    let docs = generate(&CorpusConfig {
        seed: 1,
        docs_per_domain: 4,
        doc_bytes: 700,
    });
    let data = Dataset::build(
        &docs,
        &ByteTokenizer,
        &DatasetConfig {
            seq_len: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let windows = [3, 0, 7];
    let b = Batch::from_windows(&data.train, &windows);
    assert_eq!((b.batch_size, b.seq_len, b.num_tokens()), (3, 16, 48));
    assert_eq!(b.inputs.len(), 48);
    assert_eq!(b.targets.len(), 48);
    assert_eq!(b.domains.len(), 48);
    for (row, &w) in windows.iter().enumerate() {
        let (tokens, domains) = data.train.window(w);
        let r = row * 16..(row + 1) * 16;
        assert_eq!(b.inputs[r.clone()], tokens[..16]);
        assert_eq!(b.targets[r.clone()], tokens[1..]);
        assert_eq!(b.domains[r], domains[..16]);
    }
    let mut it = data.train_batches(5, 0).unwrap();
    let b = it.next_batch();
    assert_eq!((b.batch_size, b.seq_len, b.inputs.len()), (5, 16, 80));
}

#[test]
fn every_stream_token_but_the_first_is_a_target_once_per_epoch() {
    let docs = generate(&CorpusConfig {
        seed: 2,
        docs_per_domain: 3,
        doc_bytes: 300,
    });
    let index = DomainIndex::from_documents(&docs);
    let p = PackedSequences::pack(&docs, &ByteTokenizer, &index, 10).unwrap();
    let all = p.all_windows();
    let covered = p.num_windows() * 10;
    assert_eq!(all.targets[..], p.tokens()[1..=covered]);
    assert_eq!(all.inputs[..], p.tokens()[..covered]);
}

#[test]
fn validation_windows_are_pure_per_domain_and_decode_to_its_text() {
    let docs = generate(&CorpusConfig {
        seed: 4,
        docs_per_domain: 5,
        doc_bytes: 600,
    });
    let data = Dataset::build(
        &docs,
        &ByteTokenizer,
        &DatasetConfig {
            seq_len: 32,
            valid_fraction: 0.2,
            split_seed: 1,
        },
    )
    .unwrap();
    assert_eq!(data.valid.len(), 7);
    for (name, batch) in data.valid_batches() {
        let id = data.domains.id(name).unwrap();
        assert!(batch.batch_size > 0, "{name}");
        assert!(batch.domains.iter().all(|&d| d == id), "{name}");
        assert_eq!(batch, data.valid_batch(id));
        // The first window starts the first validation document of the domain.
        let first = data
            .split
            .valid
            .iter()
            .map(|&i| &docs[i])
            .find(|d| d.domain == name)
            .unwrap();
        let head = ByteTokenizer.decode(&batch.inputs[..32]);
        // A window may end inside a multi-byte character, which decodes to U+FFFD.
        let head = head.trim_end_matches(char::REPLACEMENT_CHARACTER);
        assert!(first.text.starts_with(head), "{name}: {head:?}");
    }
}

#[test]
fn train_tokens_carry_the_domain_of_their_document() {
    let docs = generate(&CorpusConfig {
        seed: 4,
        docs_per_domain: 4,
        doc_bytes: 400,
    });
    let data = Dataset::build(
        &docs,
        &ByteTokenizer,
        &DatasetConfig {
            seq_len: 16,
            valid_fraction: 0.25,
            split_seed: 0,
        },
    )
    .unwrap();
    let mut at = 0;
    for &i in &data.split.train {
        let n = docs[i].text.len() + 1;
        let id = data.domains.id(&docs[i].domain).unwrap();
        assert!(data.train.domains()[at..at + n].iter().all(|&d| d == id));
        at += n;
    }
    assert_eq!(at, data.train.tokens().len());
}

#[test]
fn too_little_text_for_one_window_is_an_error_naming_the_set() {
    let docs = [doc("a", "tiny"), doc("a", "also tiny but longer than that")];
    let err = Dataset::build(
        &docs,
        &ByteTokenizer,
        &DatasetConfig {
            seq_len: 16,
            valid_fraction: 0.5,
            split_seed: 0,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::TooFewTokens { needed: 17, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("lower seq_len"), "{err}");

    let err = PackedSequences::pack(
        &[doc("zz", "x")],
        &ByteTokenizer,
        &DomainIndex::from_names(["a"]),
        4,
    )
    .unwrap_err();
    assert!(err.to_string().contains("`zz`"), "{err}");
    let err = PackedSequences::pack(&docs, &ByteTokenizer, &DomainIndex::from_names(["a"]), 0)
        .unwrap_err();
    assert!(matches!(err, DataError::ZeroSize { name: "seq_len" }));
}
