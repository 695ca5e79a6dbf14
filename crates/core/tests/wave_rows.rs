//! `KernelOptions::{wave_rows, overfill, packing, stream_min_bytes}` (the diagnostics counters
//! `packings` and `streamed_blocks` are process-wide, hence their own test binary and one
//! test function): every wave size, with waves and tiles allowed over their budgets or not, gives
//! the reference's results and the same bits for any thread count; packed weights give
//! `gemm`'s bits; streamed weight-gradient blocks the same bits as blocks written in place.

mod big_plan;

use big_plan::{big, uneven};
use candle_core::Tensor;
use switchyard_core::KernelOptions;
use switchyard_kernels::dispatch as kernel;

#[test]
fn any_wave_size_matches_the_reference_and_ignores_thread_count() {
    let b = big();
    let reference = b.reference();
    // the kernel rounds a wave's rows down to a multiple of 512 (at least 512): 1 or 700
    // rows would run as 512, 3000 runs as 2560
    for rows in [512, 1536, 3000, usize::MAX] {
        let opts = KernelOptions {
            wave_rows: rows,
            ..KernelOptions::default()
        };
        let run = |threads: usize| {
            b.kernel_bits_with(threads, &opts, |y, g| {
                b.assert_close(y, g, &reference, &format!("{rows} rows"))
            })
        };
        assert!(
            run(1) == run(3),
            "{rows} rows: thread count changed the bits"
        );
    }

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
        let opts = KernelOptions {
            overfill,
            ..KernelOptions::default()
        };
        dirty();
        let one = u.kernel_bits_with(1, &opts, close);
        dirty();
        assert!(
            one == u.kernel_bits_with(3, &opts, close),
            "overfill {overfill}: thread count changed the bits"
        );
    }

    // experts of several row tiles (and widths of 16 and up) have their weights packed once
    // per wave (`switchyard_kernels::packed`); that path gives the same bits as `gemm` packing per
    // call, at any thread count (the weight gradients' packed rows too, on this plan: no
    // chunk of 1–2 rows, which `gemm` would run through other kernels)
    for threads in [1, 2, 3] {
        let before = kernel::packings();
        let with = b.kernel_bits(threads, |_, _| {});
        assert!(
            kernel::packings() > before,
            "{threads} threads: no expert was packed"
        );
        let no_packing = KernelOptions {
            packing: false,
            ..KernelOptions::default()
        };
        let without = b.kernel_bits_with(threads, &no_packing, |_, _| {});
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
        let with_stream_min = |bytes: usize| KernelOptions {
            wave_rows: rows,
            stream_min_bytes: bytes,
            ..KernelOptions::default()
        };
        for threads in [1, 3] {
            dirty_for(plan.layout.total);
            let before = kernel::streamed_blocks();
            let plain = plan.kernel_bits_with(threads, &with_stream_min(usize::MAX), |_, _| {});
            assert_eq!(
                kernel::streamed_blocks(),
                before,
                "{name}: streamed when off"
            );
            dirty_for(plan.layout.total);
            let streamed = plan.kernel_bits_with(threads, &with_stream_min(0), |_, _| {});
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
}
