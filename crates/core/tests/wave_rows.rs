//! `kernel::set_wave_rows` and `kernel::set_overfill` (process-wide, hence their own test
//! binary and one test function): every wave size, with waves and tiles allowed over their
//! budgets or not, gives the reference's results and the same bits for any thread count.

mod big_plan;

use big_plan::{big, uneven};
use candle_core::Tensor;
use switchyard_core::dispatch::kernel;

#[test]
fn any_wave_size_matches_the_reference_and_ignores_thread_count() {
    let b = big();
    let reference = b.reference();
    // the kernel rounds a wave's rows down to a multiple of 512 (at least 512): 1 or 700
    // rows would run as 512, 3000 runs as 2560
    for rows in [512, 1536, 3000, usize::MAX] {
        kernel::set_wave_rows(rows);
        let run = |threads: usize| {
            b.kernel_bits(threads, |y, g| {
                b.assert_close(y, g, &reference, &format!("{rows} rows"))
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
    let u_ref = u.reference();
    let close = |y: &Tensor, g: &candle_core::backprop::GradStore| {
        u.assert_close(y, g, &u_ref, "uneven plan")
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
