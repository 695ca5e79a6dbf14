//! The scan for NaN and infinity that loaders run on every tensor they read.

use candle_core::{DType, Device, Tensor};
use switchyard_io::non_finite;

fn with_bad(n: usize, bad: &[(usize, f32)]) -> Tensor {
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    for &(i, x) in bad {
        v[i] = x;
    }
    Tensor::from_vec(v, (n / 10, 10), &Device::Cpu).unwrap()
}

#[test]
fn finds_the_first_non_finite_value_and_counts_them_in_every_float_dtype() {
    // across chunk boundaries (the scan works in blocks of 4096)
    let t = with_bad(
        20_000,
        &[
            (9_000, f32::INFINITY),
            (5_000, f32::NAN),
            (19_999, f32::NAN),
        ],
    );
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let f = non_finite(&t.to_dtype(dtype).unwrap())
            .unwrap()
            .unwrap_or_else(|| panic!("{dtype:?}: not found"));
        assert_eq!((f.count, f.first_index), (3, 5_000), "{dtype:?}");
        assert!(f.first.is_nan(), "{dtype:?}");
    }
}

#[test]
fn finite_tensors_and_integers_pass() {
    let t = with_bad(1_000, &[]);
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        assert_eq!(non_finite(&t.to_dtype(dtype).unwrap()).unwrap(), None);
    }
    let ids = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    assert_eq!(non_finite(&ids).unwrap(), None);
    // a strided view is scanned as its own values
    let view = with_bad(100, &[(1, f32::NAN)]).t().unwrap();
    let f = non_finite(&view).unwrap().unwrap();
    assert_eq!((f.count, f.first_index), (1, 10));
}
