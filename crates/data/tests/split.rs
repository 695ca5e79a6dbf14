//! Train/validation split by whole documents, per domain.

use std::collections::BTreeSet;

use switchyard_data::{generate, split_documents, CorpusConfig, DataError, Document, Domain};

fn docs() -> Vec<Document> {
    generate(&CorpusConfig {
        seed: 8,
        docs_per_domain: 20,
        doc_bytes: 256,
    })
}

#[test]
fn every_domain_on_both_sides_and_no_document_in_both() {
    let docs = docs();
    for fraction in [0.01, 0.1, 0.5, 0.99] {
        let split = split_documents(&docs, fraction, 3).unwrap();
        let train: BTreeSet<usize> = split.train.iter().copied().collect();
        let valid: BTreeSet<usize> = split.valid.iter().copied().collect();
        assert!(train.is_disjoint(&valid), "fraction {fraction}");
        assert_eq!(
            train.len() + valid.len(),
            docs.len(),
            "every document is used"
        );
        for &d in Domain::all() {
            assert!(
                split.train.iter().any(|&i| docs[i].domain == d.name()),
                "{d} not in train at {fraction}"
            );
            assert!(
                split.valid.iter().any(|&i| docs[i].domain == d.name()),
                "{d} not in valid at {fraction}"
            );
        }
        // Sides keep document order.
        assert!(split.train.windows(2).all(|w| w[0] < w[1]));
        assert!(split.valid.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn validation_share_per_domain_follows_the_fraction() {
    let docs = docs();
    let split = split_documents(&docs, 0.25, 0).unwrap();
    for &d in Domain::all() {
        let n = split
            .valid
            .iter()
            .filter(|&&i| docs[i].domain == d.name())
            .count();
        assert_eq!(n, 5, "{d}: round(20 * 0.25)");
    }
}

#[test]
fn adding_a_domain_leaves_the_others_split_alone() {
    let docs = docs();
    let mut more = docs.clone();
    more.extend((0..4).map(|i| Document {
        domain: "extra".into(),
        text: format!("doc {i}"),
    }));
    let a = split_documents(&docs, 0.2, 1).unwrap();
    let b = split_documents(&more, 0.2, 1).unwrap();
    let b_valid: Vec<usize> = b.valid.into_iter().filter(|&i| i < docs.len()).collect();
    assert_eq!(a.valid, b_valid);
}

#[test]
fn bad_fractions_and_single_document_domains_are_errors() {
    let docs = docs();
    for bad in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
        let err = split_documents(&docs, bad, 0).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidFraction { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("strictly between 0 and 1"));
    }
    let mut lonely = docs.clone();
    lonely.push(Document {
        domain: "solo".into(),
        text: "just one".into(),
    });
    let err = split_documents(&lonely, 0.1, 0).unwrap_err();
    assert!(
        matches!(&err, DataError::TooFewDocuments { domain, count: 1 } if domain == "solo"),
        "{err}"
    );
    assert!(err.to_string().contains("at least 2"), "{err}");
    assert!(matches!(
        split_documents(&[], 0.1, 0),
        Err(DataError::NoDocuments)
    ));
}
