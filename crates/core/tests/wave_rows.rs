//! `kernel::set_wave_rows` and `kernel::set_overfill` (process-wide, hence their own test
//! binary and one test function): every wave size, with waves and tiles allowed over their
//! budgets or not, gives the reference's results and the same bits for any thread count.

mod big_plan;

use big_plan::{big, rel_err, uneven};
use candle_core::Tensor;
use switchyard_core::dispatch::kernel;

#[test]
fn any_wave_size_matches_the_reference_and_ignores_thread_count() {
    let b = big();
    let (y_ref, loss_ref) = b.run(true);
    let g_ref = loss_ref.backward().unwrap();
    // the kernel rounds a wave's rows down to a multiple of 512 (at least 512): 1 or 700
    // rows would run as 512, 3000 runs as 2560
    for rows in [512, 1536, 3000, usize::MAX] {
        kernel::set_wave_rows(rows);
        let run = |threads: usize| {
            b.kernel_bits(threads, |y, g| {
                assert!(rel_err(y, &y_ref) < 1e-5, "{rows} rows: forward");
                for v in b.vars() {
                    let (a, r) = (
                        g.get(v.as_tensor()).unwrap(),
                        g_ref.get(v.as_tensor()).unwrap(),
                    );
                    assert!(rel_err(a, r) < 1e-5, "{rows} rows: {}", rel_err(a, r));
                }
            })
        };
        assert!(
            run(1) == run(3),
            "{rows} rows: thread count changed the bits"
        );
    }
    kernel::set_wave_rows(0);

    // waves that finish an expert over their budget and tiles over ROW_TILE (the default), and
    // waves and tiles held to their budgets: both give the reference's results and the same
    // bits for any thread count (not the same bits as each other: a remainder tile of a few
    // rows makes `gemm` take its dot-product kernels, another order of summation)
    let u = uneven();
    let (y_ref, loss_ref) = u.run(true);
    let g_ref = loss_ref.backward().unwrap();
    let close = |y: &Tensor, g: &candle_core::backprop::GradStore| {
        assert!(rel_err(y, &y_ref) < 1e-5, "uneven plan: forward");
        for v in u.vars() {
            let (a, r) = (
                g.get(v.as_tensor()).unwrap(),
                g_ref.get(v.as_tensor()).unwrap(),
            );
            assert!(rel_err(a, r) < 1e-5, "uneven plan: {}", rel_err(a, r));
        }
    };
    // the expert gradient is not zeroed up front (only biases and experts without rows are):
    // leave large values in freed memory of its size so that a missed entry would show
    let dirty = || drop(vec![1e30f32; u.layout.total]);
    for overfill in [true, false] {
        kernel::set_overfill(overfill);
        dirty();
        let one = u.kernel_bits(1, close);
        dirty();
        assert!(
            one == u.kernel_bits(3, close),
            "overfill {overfill}: thread count changed the bits"
        );
    }
    kernel::set_overfill(true);
}
