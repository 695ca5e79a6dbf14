//! Greedy, temperature and nucleus sampling.

use switchyard_models::Sampler;

#[test]
fn temperature_zero_is_argmax_with_ties_to_the_lower_id() {
    let mut s = Sampler::greedy();
    assert_eq!(s.sample(&[0.1, 2.0, -1.0, 2.0]), 1);
}

#[test]
fn tiny_top_p_keeps_only_the_most_likely_token() {
    let mut s = Sampler::new(1.0, 1e-6, 0);
    for _ in 0..50 {
        assert_eq!(s.sample(&[0.0, 1.0, 3.0, 2.9]), 2);
    }
}

#[test]
fn nucleus_excludes_the_tail() {
    // probabilities ≈ [0.64, 0.24, 0.09, 0.03]: top_p = 0.8 keeps the first two
    let logits = [3.0, 2.0, 1.0, -0.2];
    let mut s = Sampler::new(1.0, 0.8, 1);
    let mut counts = [0usize; 4];
    for _ in 0..2000 {
        counts[s.sample(&logits) as usize] += 1;
    }
    assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
    // renormalised over the nucleus: 0.64 / 0.88 ≈ 0.73
    let p0 = counts[0] as f64 / 2000.0;
    assert!((p0 - 0.731).abs() < 0.04, "{counts:?}");
}

#[test]
fn full_temperature_sampling_matches_softmax() {
    let logits = [0.0, (2f64).ln()]; // probabilities 1/3, 2/3
    let mut s = Sampler::new(1.0, 1.0, 2);
    let ones = (0..3000).filter(|_| s.sample(&logits) == 1).count() as f64 / 3000.0;
    assert!((ones - 2.0 / 3.0).abs() < 0.03, "{ones}");
}

#[test]
fn invalid_settings_are_rejected() {
    assert!(Sampler::new(-1.0, 0.9, 0).validate().is_err());
    assert!(Sampler::new(1.0, 0.0, 0).validate().is_err());
    assert!(Sampler::new(1.0, 1.5, 0).validate().is_err());
    assert!(Sampler::new(0.7, 0.9, 0).validate().is_ok());
}
