//! LrSchedule at its boundaries.

use switchyard_train::LrSchedule;

const S: LrSchedule = LrSchedule {
    max_lr: 1e-3,
    min_lr: 1e-4,
    warmup_steps: 10,
    total_steps: 110,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15
}

#[test]
fn warmup_is_linear_and_starts_above_zero() {
    // max_lr * (step + 1) / warmup_steps
    assert!(close(S.lr_at(0), 1e-4));
    assert!(close(S.lr_at(4), 5e-4));
    assert_eq!(S.lr_at(9), 1e-3, "last warmup step reaches max_lr");
}

#[test]
fn cosine_runs_from_max_to_min() {
    assert_eq!(S.lr_at(10), 1e-3, "progress 0: cos(0) = 1");
    // progress 0.5: min + (max - min) * 0.5 * (1 + cos(pi/2)) = (max + min) / 2
    assert!(close(S.lr_at(60), 5.5e-4));
    // progress 0.25: min + (max - min) * 0.5 * (1 + sqrt(2)/2)
    assert!(close(
        S.lr_at(35),
        1e-4 + 9e-4 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)
    ));
    // progress 0.99: 0.5 * (1 + cos(0.99 pi)) = 2.467e-4, so just above min_lr
    assert!(close(
        S.lr_at(109),
        1e-4 + 9e-4 * 0.5 * (1.0 + (0.99 * std::f64::consts::PI).cos())
    ));
    assert!(S.lr_at(109) > 1e-4 && S.lr_at(109) < 1.003e-4);
    assert_eq!(S.lr_at(110), 1e-4);
    assert_eq!(S.lr_at(u64::MAX), 1e-4);
}

#[test]
fn monotone_after_warmup() {
    let lrs: Vec<f64> = (10..=110).map(|s| S.lr_at(s)).collect();
    assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
}

#[test]
fn no_warmup_and_constant() {
    let s = LrSchedule {
        warmup_steps: 0,
        ..S
    };
    assert_eq!(s.lr_at(0), 1e-3);
    let c = LrSchedule::constant(3e-4);
    c.validate().unwrap();
    assert!([0, 1, 1000].iter().all(|&t| c.lr_at(t) == 3e-4));
    let all_warmup = LrSchedule {
        warmup_steps: 110,
        ..S
    };
    assert_eq!(all_warmup.lr_at(109), 1e-3);
    assert_eq!(all_warmup.lr_at(110), 1e-4);
}

#[test]
fn validate_rejects_bad_schedules() {
    S.validate().unwrap();
    for (bad, field) in [
        (LrSchedule { min_lr: 2e-3, ..S }, "min_lr"),
        (
            LrSchedule {
                max_lr: f64::NAN,
                ..S
            },
            "max_lr",
        ),
        (
            LrSchedule {
                warmup_steps: 111,
                ..S
            },
            "warmup_steps",
        ),
    ] {
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains(&format!("`{field}`")), "{err}");
    }
}
