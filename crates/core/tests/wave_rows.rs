//! `kernel::set_wave_rows`, `kernel::set_overfill`, `kernel::set_packing` and
//! `kernel::set_stream_min_bytes` (process-wide, hence their own test binary and one test
//! function): every wave size, with waves and tiles allowed over their budgets or not, gives
//! the reference's results and the same bits for any thread count; packed weights give
//! `gemm`'s bits; streamed weight-gradient blocks the same bits as blocks written in place.

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

    // experts of several row tiles (and widths of 16 and up) have their weights packed once
    // per wave (`dispatch::packed`); that path gives the same bits as `gemm` packing per
    // call, at any thread count (the weight gradients' packed rows too, on this plan: no
    // chunk of 1–2 rows, which `gemm` would run through other kernels)
    for threads in [1, 2, 3] {
        let before = kernel::packings();
        let with = b.kernel_bits(threads, |_, _| {});
        assert!(
            kernel::packings() > before,
            "{threads} threads: no expert was packed"
        );
        kernel::set_packing(false);
        let without = b.kernel_bits(threads, |_, _| {});
        kernel::set_packing(true);
        assert!(
            with == without,
            "{threads} threads: packing changed the bits"
        );
    }

    // final weight-gradient blocks streamed out of a per-thread block (large expert
    // gradients; forced here for every size) give the bits of blocks written in place: the
    // big plan in one wave (every expert's blocks streamed), the uneven one in waves of 512
    // rows (experts continued in a later wave, not streamed, mixed in)
    // leave large values in freed memory of the plan's gradient size (see `dirty` above)
    let dirty_for = |total: usize| drop(vec![1e30f32; total]);
    for (name, plan, rows) in [("big", &b, usize::MAX), ("uneven", &u, 512)] {
        kernel::set_wave_rows(rows);
        for threads in [1, 3] {
            kernel::set_stream_min_bytes(usize::MAX);
            dirty_for(plan.layout.total);
            let before = kernel::streamed_blocks();
            let plain = plan.kernel_bits(threads, |_, _| {});
            assert_eq!(
                kernel::streamed_blocks(),
                before,
                "{name}: streamed when off"
            );
            kernel::set_stream_min_bytes(0);
            dirty_for(plan.layout.total);
            let streamed = plan.kernel_bits(threads, |_, _| {});
            assert!(
                kernel::streamed_blocks() > before,
                "{name}, {threads} threads: no block was streamed"
            );
            assert!(
                plain == streamed,
                "{name}, {threads} threads: streaming changed the bits"
            );
        }
    }
    kernel::set_stream_min_bytes(kernel::STREAM_MIN_BYTES);
    kernel::set_wave_rows(0);
}
