//! Floats in `state.json` (the spike guard's loss window lives in `user`) come back bitwise:
//! the kill -9 loop (scripts/kill_loop.sh) found `3.8721237182617188` read back one ULP off
//! with serde_json's default float parser, so a run resumed within the window's length wrote
//! a different `state.json` than an uninterrupted one. serde_json's `float_roundtrip` fixes it.

use std::collections::BTreeMap;
use std::path::Path;

use switchyard_io::state::{decode, encode};
use switchyard_io::TrainState;

#[test]
fn every_f64_in_the_state_round_trips_bitwise() {
    let mut values = vec![
        3.8721237182617188_f64,
        0.1,
        1.0 / 3.0,
        6.02214076e23,
        5e-324,
        -2.5e-308,
    ];
    // plus a spread of awkward ones: f32 losses widened to f64, and random bit patterns
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            values.push(f);
        }
        values.push(f32::from_bits(x as u32 & 0x7f7f_ffff) as f64);
    }
    let state: TrainState = TrainState {
        user: serde_json::json!({ "losses": values }),
        ..Default::default()
    };
    let bytes = encode(1, BTreeMap::new(), &state).unwrap();
    let back = decode::<serde_json::Value>(Path::new("state.json"), &bytes).unwrap();
    let got: Vec<f64> = serde_json::from_value(back.state.user["losses"].clone()).unwrap();
    let wrong: Vec<(f64, f64)> = values
        .iter()
        .zip(&got)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .map(|(a, b)| (*a, *b))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "not bitwise after a round trip: {wrong:?}"
    );
}
