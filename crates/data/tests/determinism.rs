//! Same seed, same bytes; other seeds, other bytes — for the corpus, the split and batch order.

use switchyard_data::{
    epoch_order, generate, generate_domain, split_documents, ByteTokenizer, CorpusConfig, Dataset,
    DatasetConfig, Domain,
};

fn cfg(seed: u64) -> CorpusConfig {
    CorpusConfig {
        seed,
        docs_per_domain: 6,
        doc_bytes: 1024,
    }
}

#[test]
fn same_seed_gives_identical_corpus() {
    assert_eq!(generate(&cfg(1)), generate(&cfg(1)));
    assert_eq!(
        generate(&CorpusConfig::default()),
        generate(&CorpusConfig::default())
    );
}

#[test]
fn different_seeds_give_different_documents_in_every_domain() {
    let (a, b) = (generate(&cfg(1)), generate(&cfg(2)));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.domain, y.domain);
        assert_ne!(
            x.text, y.text,
            "{} document repeated across seeds",
            x.domain
        );
    }
}

#[test]
fn documents_within_a_domain_differ() {
    for doc_pair in generate(&cfg(1)).windows(2) {
        assert_ne!(doc_pair[0].text, doc_pair[1].text);
    }
}

#[test]
fn one_domain_alone_matches_its_part_of_the_whole() {
    let all = generate(&cfg(9));
    for &d in Domain::all() {
        let alone = generate_domain(d, &cfg(9));
        let part: Vec<_> = all
            .iter()
            .filter(|doc| doc.domain == d.name())
            .cloned()
            .collect();
        assert_eq!(alone, part, "{d}");
    }
}

#[test]
fn more_documents_only_appends() {
    let few = generate_domain(Domain::Logs, &cfg(4));
    let many = generate_domain(
        Domain::Logs,
        &CorpusConfig {
            docs_per_domain: 10,
            ..cfg(4)
        },
    );
    assert_eq!(few[..], many[..few.len()]);
}

#[test]
fn split_and_dataset_are_reproducible() {
    let docs = generate(&cfg(1));
    assert_eq!(
        split_documents(&docs, 0.3, 5).unwrap(),
        split_documents(&docs, 0.3, 5).unwrap()
    );
    assert_ne!(
        split_documents(&docs, 0.3, 5).unwrap(),
        split_documents(&docs, 0.3, 6).unwrap()
    );
    let dc = DatasetConfig {
        seq_len: 32,
        valid_fraction: 0.3,
        split_seed: 5,
    };
    let a = Dataset::build(&docs, &ByteTokenizer, &dc).unwrap();
    let b = Dataset::build(&docs, &ByteTokenizer, &dc).unwrap();
    assert_eq!(a, b);
}

#[test]
fn epoch_orders_are_permutations_fixed_by_seed_and_epoch() {
    let o = epoch_order(100, 3, 0);
    let mut sorted = o.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_eq!(o, epoch_order(100, 3, 0));
    assert_ne!(o, epoch_order(100, 3, 1));
    assert_ne!(o, epoch_order(100, 4, 0));
}
