//! `kernel::set_wave_rows` (process-wide, hence its own test binary): every wave size gives
//! the reference's results, the same bits for any thread count.

mod big_plan;

use big_plan::{big, rel_err};
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
}
