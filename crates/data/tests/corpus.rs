//! The built-in corpus: domains differ clearly in byte statistics, and each generator's
//! structure (correct sums, valid JSON, balanced braces, motifs, ...) is really there.

use switchyard_data::corpus::DNA_MOTIFS;
use switchyard_data::{generate, generate_domain, CorpusConfig, Document, Domain};

fn corpus() -> Vec<Document> {
    generate(&CorpusConfig {
        seed: 11,
        docs_per_domain: 16,
        doc_bytes: 2048,
    })
}

fn domain_text(domain: Domain) -> String {
    let cfg = CorpusConfig {
        seed: 11,
        docs_per_domain: 16,
        doc_bytes: 2048,
    };
    generate_domain(domain, &cfg)
        .into_iter()
        .map(|d| d.text)
        .collect()
}

fn byte_histogram(text: &str) -> [f64; 256] {
    let mut h = [0f64; 256];
    for b in text.bytes() {
        h[b as usize] += 1.0;
    }
    let n = text.len() as f64;
    h.map(|c| c / n)
}

/// Total variation distance: half the L1 distance, 0 for equal, 1 for disjoint supports.
fn total_variation(a: &[f64; 256], b: &[f64; 256]) -> f64 {
    0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>()
}

/// Measured at 16 docs x 2 KiB: one domain under seeds 11 and 12 differs by at most 0.03; the
/// closest pair of domains (prose, code) by 0.44. A test with these margins fails if two domains
/// were produced by the same (or a near-identical) generator.
const MIN_DOMAIN_DISTANCE: f64 = 0.3;
const MAX_SAME_DOMAIN_DISTANCE: f64 = 0.1;

#[test]
fn byte_histograms_differ_pairwise_by_a_clear_margin() {
    let hists: Vec<(Domain, [f64; 256])> = Domain::ALL
        .iter()
        .map(|&d| (d, byte_histogram(&domain_text(d))))
        .collect();
    let mut closest = (f64::MAX, "");
    for (i, (da, ha)) in hists.iter().enumerate() {
        for (db, hb) in &hists[i + 1..] {
            let tv = total_variation(ha, hb);
            assert!(
                tv > MIN_DOMAIN_DISTANCE,
                "{da} vs {db}: total variation {tv:.3}"
            );
            if tv < closest.0 {
                closest = (tv, da.name());
            }
        }
    }
    eprintln!(
        "closest pair distance {:.3} (involving {})",
        closest.0, closest.1
    );
}

#[test]
fn same_domain_under_another_seed_is_close() {
    for &d in Domain::all() {
        let other = CorpusConfig {
            seed: 12,
            docs_per_domain: 16,
            doc_bytes: 2048,
        };
        let b: String = generate_domain(d, &other)
            .into_iter()
            .map(|d| d.text)
            .collect();
        let tv = total_variation(&byte_histogram(&domain_text(d)), &byte_histogram(&b));
        assert!(
            tv < MAX_SAME_DOMAIN_DISTANCE,
            "{d}: seeds 11 and 12 differ by {tv:.3}"
        );
    }
}

#[test]
fn every_domain_is_present_labelled_and_sized() {
    let docs = corpus();
    assert_eq!(docs.len(), 16 * Domain::ALL.len());
    for &d in Domain::all() {
        let mine: Vec<_> = docs.iter().filter(|doc| doc.domain == d.name()).collect();
        assert_eq!(mine.len(), 16, "{d}");
        for doc in mine {
            // Generators stop at the first unit past the target; units are well under 1 KiB.
            assert!(
                doc.text.len() >= 2048 && doc.text.len() < 2048 + 1024,
                "{d}: {}",
                doc.text.len()
            );
        }
    }
}

#[test]
fn domain_names_round_trip() {
    assert_eq!(Domain::all().len(), 7);
    for (i, &d) in Domain::all().iter().enumerate() {
        assert_eq!(Domain::from_name(d.name()), Some(d));
        assert_eq!(d.index(), i);
    }
    assert_eq!(Domain::from_name("klingon"), None);
}

#[test]
fn arithmetic_results_are_correct() {
    let text = domain_text(Domain::Arith);
    let mut checked = 0;
    for expr in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (lhs, rhs) = expr
            .split_once('=')
            .unwrap_or_else(|| panic!("no '=' in {expr:?}"));
        let op_at = lhs
            .find(['+', '-', '*'])
            .unwrap_or_else(|| panic!("no operator in {expr:?}"));
        let a: i64 = lhs[..op_at].parse().unwrap();
        let b: i64 = lhs[op_at + 1..].parse().unwrap();
        let c: i64 = rhs.parse().unwrap();
        let expected = match &lhs[op_at..op_at + 1] {
            "+" => a + b,
            "-" => a - b,
            _ => a * b,
        };
        assert_eq!(c, expected, "{expr}");
        checked += 1;
    }
    assert!(checked > 1000, "only {checked} expressions");
}

#[test]
fn json_lines_parse_and_order_totals_add_up() {
    let text = domain_text(Domain::Json);
    let mut orders = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(items) = v.get("items").and_then(|i| i.as_array()) {
            let cents: i64 = items
                .iter()
                .map(|it| {
                    it["qty"].as_i64().unwrap()
                        * (it["price"].as_f64().unwrap() * 100.0).round() as i64
                })
                .sum();
            let total = (v["total"].as_f64().unwrap() * 100.0).round() as i64;
            assert_eq!(cents, total, "{line}");
            orders += 1;
        }
    }
    assert!(orders > 20, "only {orders} orders");
}

#[test]
fn code_braces_balance_and_indent_follows_nesting() {
    for doc in generate_domain(
        Domain::Code,
        &CorpusConfig {
            seed: 3,
            docs_per_domain: 16,
            doc_bytes: 2048,
        },
    ) {
        let mut depth: i64 = 0;
        for line in doc.text.lines() {
            let indent = line.len() - line.trim_start().len();
            let closes_first = line.trim_start().starts_with('}');
            let expected = if closes_first { depth - 1 } else { depth };
            if !line.trim().is_empty() {
                assert_eq!(indent as i64, 4 * expected, "line {line:?}");
            }
            for c in line.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                assert!(depth >= 0, "unbalanced at {line:?}");
            }
        }
        assert_eq!(depth, 0, "document ends inside a block");
        let parens = doc.text.matches('(').count();
        assert_eq!(parens, doc.text.matches(')').count());
    }
}

#[test]
fn dna_is_acgt_with_motifs_far_above_chance() {
    let text = domain_text(Domain::Dna);
    assert!(text.bytes().all(|b| b"ACGT\n".contains(&b)));
    let seq: String = text.chars().filter(|&c| c != '\n').collect();
    for motif in DNA_MOTIFS {
        let found = seq.matches(motif).count() as f64;
        // Uniform random bases would give about len / 4^k occurrences.
        let chance = seq.len() as f64 / 4f64.powi(motif.len() as i32);
        assert!(
            found > 3.0 * chance.max(1.0),
            "{motif}: {found} vs chance {chance:.1}"
        );
    }
}

#[test]
fn log_timestamps_never_go_back_and_status_matches_level() {
    for doc in generate_domain(
        Domain::Logs,
        &CorpusConfig {
            seed: 5,
            docs_per_domain: 8,
            doc_bytes: 4096,
        },
    ) {
        let mut last = String::new();
        for line in doc.text.lines() {
            let stamp = &line[..23];
            assert!(stamp >= last.as_str(), "{stamp} after {last}");
            last = stamp.to_string();
            let level = line[24..29].trim();
            if level == "DEBUG" {
                continue;
            }
            let status: u32 = line.split("\" ").nth(1).unwrap()[..3].parse().unwrap();
            let ok = match level {
                "INFO" => status < 400,
                "WARN" => (400..500).contains(&status),
                "ERROR" => status >= 500,
                _ => panic!("unknown level in {line}"),
            };
            assert!(ok, "{line}");
        }
    }
}

#[test]
fn cjk_bytes_are_almost_all_high() {
    let text = domain_text(Domain::Cjk);
    let high = text.bytes().filter(|&b| b >= 0x80).count();
    assert!(
        high as f64 > 0.97 * text.len() as f64,
        "{high} of {}",
        text.len()
    );
    let distinct: std::collections::BTreeSet<char> = text.chars().collect();
    // A small character set: learnable, but far beyond one byte.
    assert!(
        (40..200).contains(&distinct.len()),
        "{} distinct chars",
        distinct.len()
    );
}

#[test]
fn prose_sentences_are_capitalised_and_use_an_before_vowels() {
    let text = domain_text(Domain::Prose);
    let words: Vec<&str> = text.split_whitespace().collect();
    for pair in words.windows(2) {
        if pair[0] == "a" {
            assert!(
                !pair[1].starts_with(['a', 'e', 'i', 'o', 'u']),
                "a {}",
                pair[1]
            );
        }
        if pair[0] == "an" {
            assert!(
                pair[1].starts_with(['a', 'e', 'i', 'o', 'u']),
                "an {}",
                pair[1]
            );
        }
        if pair[0].ends_with(['.', '?']) {
            assert!(
                pair[1].starts_with(|c: char| c.is_ascii_uppercase()),
                "{} {}",
                pair[0],
                pair[1]
            );
        }
    }
    let vocabulary: std::collections::BTreeSet<&str> = words
        .iter()
        .map(|w| w.trim_end_matches([',', '.', '?']))
        .collect();
    assert!(
        (200..800).contains(&vocabulary.len()),
        "{} distinct words",
        vocabulary.len()
    );
}
