//! Causality: changing a future token leaves every earlier position's logits unchanged.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use switchyard_models::LmCtx;

#[test]
fn future_tokens_do_not_change_past_logits() {
    let (_, lm) = build(&tiny_cfg(), 3, DType::F32);
    let (b, l, cut) = (2, 8, 5);
    let base = ids(b, l);
    let mut changed = base.to_vec2::<u32>().unwrap();
    for row in changed.iter_mut() {
        for t in row[cut..].iter_mut() {
            *t = (*t + 11) % VOCAB as u32;
        }
    }
    let changed = Tensor::new(changed, &Device::Cpu).unwrap();
    let a = lm.forward(&base, &mut LmCtx::new(false, 0)).unwrap().logits;
    let c = lm
        .forward(&changed, &mut LmCtx::new(false, 0))
        .unwrap()
        .logits;
    let past = max_abs_diff(&a.narrow(1, 0, cut).unwrap(), &c.narrow(1, 0, cut).unwrap());
    assert!(past < 1e-6, "past logits moved by {past}");
    // and the future ones do change
    let future = max_abs_diff(
        &a.narrow(1, cut, l - cut).unwrap(),
        &c.narrow(1, cut, l - cut).unwrap(),
    );
    assert!(
        future > 1e-4,
        "future logits should differ, max diff {future}"
    );
}
