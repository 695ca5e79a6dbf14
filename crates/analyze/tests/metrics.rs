//! Metrics on traces whose routing is known: hand-built traces with numbers worked out by
//! hand, and a model whose routing is a hash of the token id.

use switchyard_analyze::metrics::{cross_layer, cv, layer_metrics, nmi, purity};
use switchyard_analyze::trace::{LayerTrace, RoutingTrace};

/// 2 domains × 4 tokens each, one sequence of 8; layer 0 top-1, layer 1 top-2.
fn known_trace() -> RoutingTrace {
    let l0 = LayerTrace {
        layer: 0,
        num_experts: 3,
        k: 1,
        // domain 0 → expert 0 always; domain 1 → expert 1, 1, 1, 2
        experts: vec![0, 0, 0, 0, 1, 1, 1, 2],
        weights: vec![1.0; 8],
        entropy: vec![0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0],
        dropped: vec![false; 8],
    };
    let l1 = LayerTrace {
        layer: 2,
        num_experts: 2,
        k: 2,
        experts: vec![0, 1, 0, -1, 0, -1, 0, 1, 1, -1, 1, -1, -1, -1, 1, -1],
        weights: vec![
            0.6, 0.4, 1.0, 0.0, 1.0, 0.0, 0.7, 0.3, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0,
        ],
        entropy: vec![0.0; 8],
        dropped: vec![false, false, false, false, false, false, true, false],
    };
    RoutingTrace {
        batch_size: 1,
        seq_len: 8,
        token_ids: vec![10, 11, 10, 12, 20, 21, 20, 22],
        domains: vec![0, 0, 0, 0, 1, 1, 1, 1],
        domain_names: vec!["a".into(), "b".into()],
        layers: vec![l0, l1],
    }
}

#[test]
fn load_cv_entropy_dead_and_dropped() {
    let t = known_trace();
    let m = layer_metrics(&t, &t.layers[0]);
    assert_eq!(m.load, vec![4, 3, 1]);
    // mean 8/3, deviations 4/3, 1/3, -5/3 → var = (16+1+25)/27 = 42/27
    assert!((m.load_cv - (42.0f64 / 27.0).sqrt() / (8.0 / 3.0)).abs() < 1e-12);
    assert!((m.entropy - 0.75).abs() < 1e-12);
    assert!(m.dead_experts.is_empty());
    let m1 = layer_metrics(&t, &t.layers[1]);
    assert_eq!(m1.load, vec![4, 5]);
    assert_eq!(m1.dropped_fraction, 1.0 / 8.0);
    assert_eq!(m.domain_expert, vec![vec![4, 0, 0], vec![0, 3, 1]]);
}

#[test]
fn nmi_by_hand() {
    // perfect correspondence → 1; independence → 0
    assert!((nmi(&[vec![5, 0], vec![0, 5]]) - 1.0).abs() < 1e-12);
    assert!(nmi(&[vec![5, 5], vec![5, 5]]).abs() < 1e-12);
    // layer 0 of the known trace: p(d)= (1/2,1/2); p(e)=(1/2,3/8,1/8)
    // I = H(E) − H(E|D) = H(E) − ½·H(3/4,1/4); NMI = I / ((H(D)+H(E))/2)
    let h = |p: &[f64]| -p.iter().map(|x| x * x.ln()).sum::<f64>();
    let he = h(&[0.5, 0.375, 0.125]);
    let i = he - 0.5 * h(&[0.75, 0.25]);
    let want = i / ((2f64.ln() + he) / 2.0);
    let t = known_trace();
    assert!((layer_metrics(&t, &t.layers[0]).nmi - want).abs() < 1e-12);
}

#[test]
fn coactivation_within_and_across_layers() {
    let t = known_trace();
    let m1 = layer_metrics(&t, &t.layers[1]);
    // tokens 0 and 3 go to both experts
    assert_eq!(m1.coactivation, vec![vec![4, 2], vec![2, 5]]);
    let c = cross_layer(&t);
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].from, c[0].to), (0, 2));
    // layer-0 expert 0 (tokens 0..4) → layer-2 experts: t0 {0,1}, t1 {0}, t2 {0}, t3 {0,1}
    assert_eq!(c[0].counts[0], vec![4, 2]);
    assert_eq!(c[0].counts[1], vec![0, 2]); // tokens 4,5 → e1; token 6 dropped
    assert_eq!(c[0].counts[2], vec![0, 1]);
}

#[test]
fn top_tokens_and_trigrams() {
    let t = known_trace();
    let m = layer_metrics(&t, &t.layers[0]);
    assert_eq!(m.top_tokens[0], vec![(10, 2), (11, 1), (12, 1)]);
    // trigrams need two previous tokens in the same sequence
    assert_eq!(
        m.top_ngrams[0],
        vec![(vec![10, 11, 10], 1), (vec![11, 10, 12], 1)]
    );
    assert_eq!(m.top_ngrams[2], vec![(vec![21, 20, 22], 1)]);
}

#[test]
fn cv_edge_cases() {
    assert_eq!(cv(&[]), 0.0);
    assert_eq!(cv(&[0, 0]), 0.0);
    assert_eq!(cv(&[3, 3, 3]), 0.0);
}

/// Routing purity: the share of a mapped domain's tokens whose top-1 expert (largest weight)
/// is one of its experts; a dropped token is not pure.
#[test]
fn routing_purity_of_known_traces() {
    let t = known_trace();
    // layer 0: domain a → e0 (4 of 4), domain b → e1 (3 of 4)
    let map = vec![vec![0], vec![1]];
    let p = purity(&t, &t.layers[0], Some(&map));
    assert_eq!(p.by_domain, vec![Some(1.0), Some(0.75)]);
    assert_eq!(p.overall, 7.0 / 8.0);
    // b → {1, 2}: every token pure
    let p = purity(&t, &t.layers[0], Some(&[vec![0], vec![1, 2]]));
    assert_eq!(p.overall, 1.0);
    // default mapping d mod E: the same as the first here
    assert_eq!(purity(&t, &t.layers[0], None).overall, 7.0 / 8.0);
    // domain a unmapped: only b's tokens count
    let p = purity(&t, &t.layers[0], Some(&[vec![], vec![1]]));
    assert_eq!(p.by_domain, vec![None, Some(0.75)]);
    assert_eq!(p.overall, 0.75);
    // layer 1 (top-2, by weight): a's top-1 experts are 0, 0, 0, 0; b's 1, 1, none, 1
    let p = purity(&t, &t.layers[1], Some(&[vec![0], vec![1]]));
    assert_eq!(p.by_domain, vec![Some(1.0), Some(0.75)]);
}
