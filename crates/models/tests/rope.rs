//! RoPE against hand-computed values (generator: `scripts/reference/rope.py`).

use candle_core::{DType, Device, Tensor};
use switchyard_models::Rope;

/// `x = [1, 2, 3, 4]`, head_dim 4, theta 10000 (frequencies 1 and 0.01).
const X: [f64; 4] = [1.0, 2.0, 3.0, 4.0];
const AT_POS_1: [f64; 4] = [
    -1.9841106485555495,
    1.959900667496664,
    2.4623779024123156,
    4.019799668334994,
];
const AT_POS_3: [f64; 4] = [
    -1.413352520780047,
    1.8791180666879925,
    -2.828857481741469,
    4.058191135400942,
];

fn rotate(pos: usize, offset: usize) -> Vec<f64> {
    let rope = Rope::new(4, 8, 10_000.0, DType::F64, &Device::Cpu).unwrap();
    // rows at positions offset..=pos, all equal to X; read back the row at `pos`
    let rows = pos - offset + 1;
    let x = Tensor::from_vec(X.repeat(rows), (1, 1, rows, 4), &Device::Cpu).unwrap();
    let y = rope.apply(&x, offset).unwrap();
    y.narrow(2, rows - 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[test]
fn rope_matches_hand_computed_values() {
    // first element at position 1: x0·cos(1) − x2·sin(1)
    assert!((AT_POS_1[0] - (1f64.cos() - 3.0 * 1f64.sin())).abs() < 1e-15);
    for (pos, offset, want) in [
        (1, 0, AT_POS_1),
        (1, 1, AT_POS_1),
        (3, 0, AT_POS_3),
        (3, 2, AT_POS_3),
    ] {
        let got = rotate(pos, offset);
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() < 1e-12,
                "pos {pos} offset {offset}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn rope_leaves_position_zero_unchanged() {
    assert_eq!(rotate(0, 0), X.to_vec());
}

#[test]
fn rope_rejects_positions_past_the_table() {
    let rope = Rope::new(4, 8, 10_000.0, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 1, 2, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(rope.apply(&x, 6).is_ok());
    assert!(rope.apply(&x, 7).is_err());
    assert!(Rope::new(3, 8, 10_000.0, DType::F32, &Device::Cpu).is_err());
}
