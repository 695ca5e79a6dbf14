//! Checkpoint round trips, the `latest` pointer, replacement and pruning.

mod common;

use std::collections::BTreeMap;

use common::{bits, fake_grads, small_model, store_bits, trained, TempDir};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use switchyard_core::ParamStore;
use switchyard_train::checkpoint::{LATEST_FILE, MODEL_FILE, STATE_FILE};
use switchyard_train::{
    load_checkpoint, restore_into, restore_optimizer, save_checkpoint, save_checkpoint_with, AdamW,
    AdamWConfig, CheckpointContents, CheckpointError, LrSchedule, RngState, SaveOptions,
    TrainState,
};

fn sample_state(rng: &ChaCha8Rng) -> TrainState {
    TrainState {
        rngs: [("dropout".to_string(), RngState::capture(rng))]
            .into_iter()
            .collect(),
        data_cursor: json!({"epoch": 2, "position": 4096}),
        lr_schedule: Some(LrSchedule {
            max_lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 10,
            total_steps: 100,
        }),
        buffers: [(
            "blocks.0.moe.router.bias".to_string(),
            vec![0.125, -3.5e-7, 1.0 / 3.0],
        )]
        .into_iter()
        .collect(),
        user: json!({"best_val_loss": 2.25, "note": "λ"}),
    }
}

fn contents<'a>(
    store: &'a ParamStore,
    opt: Option<&'a AdamW>,
    state: TrainState,
) -> CheckpointContents<'a> {
    CheckpointContents {
        params: store,
        optimizer: opt,
        state,
        config: json!({"d_model": 6, "n_experts": 3}),
    }
}

fn opt_cfg() -> AdamWConfig {
    AdamWConfig {
        weight_decay: 0.1,
        ..Default::default()
    }
}

#[test]
fn round_trip_is_bitwise_and_resumes_exactly() {
    let run = TempDir::new("roundtrip");
    let (store, mut opt) = trained(11, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    rng.next_u32();
    let state = sample_state(&rng);
    let dir = save_checkpoint(run.path(), 3, &contents(&store, Some(&opt), state.clone())).unwrap();
    assert_eq!(dir, run.path().join("step-00000003"));

    let ckpt = load_checkpoint(run.path()).unwrap();
    assert_eq!((ckpt.step, &ckpt.dir), (3, &dir));
    assert_eq!(ckpt.state, state);
    assert_eq!(ckpt.config, json!({"d_model": 6, "n_experts": 3}));

    let restored = small_model(999);
    assert_ne!(store_bits(&restored), store_bits(&store));
    restore_into(&restored, &ckpt).unwrap();
    assert_eq!(store_bits(&restored), store_bits(&store));
    let mut opt2 = AdamW::new(&restored, opt_cfg()).unwrap();
    restore_optimizer(&mut opt2, &ckpt).unwrap();
    let (a, b) = (opt.state_tensors().unwrap(), opt2.state_tensors().unwrap());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        if na.ends_with(".step") {
            assert_eq!(
                ta.to_scalar::<i64>().unwrap(),
                tb.to_scalar::<i64>().unwrap(),
                "{na}"
            );
        } else {
            assert_eq!(bits(ta), bits(tb), "{na}");
        }
    }

    for s in 3..6 {
        opt.step(&fake_grads(&store, s), 1e-2).unwrap();
        opt2.step(&fake_grads(&restored, s), 1e-2).unwrap();
    }
    assert_eq!(
        store_bits(&restored),
        store_bits(&store),
        "resumed run diverged"
    );
}

#[test]
fn rng_state_continues_the_stream() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for _ in 0..17 {
        rng.next_u32(); // an odd count leaves the generator mid-block
    }
    let saved = RngState::capture(&rng);
    let want: Vec<u64> = (0..9).map(|_| rng.random()).collect();

    let run = TempDir::new("rng");
    let store = small_model(0);
    let state = TrainState {
        rngs: [("data".to_string(), saved)].into_iter().collect(),
        ..Default::default()
    };
    save_checkpoint(run.path(), 1, &contents(&store, None, state)).unwrap();
    let mut resumed = load_checkpoint(run.path()).unwrap().state.rngs["data"]
        .to_rng()
        .unwrap();
    let got: Vec<u64> = (0..9).map(|_| resumed.random()).collect();
    assert_eq!(got, want);
}

#[test]
fn router_buffers_round_trip_bitwise() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut values = vec![
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        1e-45,
        f32::MAX,
        f32::MIN,
        0.1,
        1.0 / 3.0,
        16777217.0,
    ];
    while values.len() < 20_000 {
        let v = f32::from_bits(rng.next_u32());
        if v.is_finite() {
            values.push(v);
        }
    }
    let run = TempDir::new("buffers");
    let store = small_model(0);
    let state = TrainState {
        buffers: [("bias".to_string(), values.clone())].into_iter().collect(),
        ..Default::default()
    };
    save_checkpoint(run.path(), 1, &contents(&store, None, state)).unwrap();
    let back = &load_checkpoint(run.path()).unwrap().state.buffers["bias"];
    let as_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(as_bits(back), as_bits(&values));
}

#[test]
fn non_finite_buffer_is_rejected_at_save() {
    let run = TempDir::new("nan-buffer");
    let store = small_model(0);
    let state = TrainState {
        buffers: [("router.bias".to_string(), vec![0.0, f32::NAN])]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let err = save_checkpoint(run.path(), 1, &contents(&store, None, state)).unwrap_err();
    assert!(
        err.to_string().contains("buffer `router.bias`[1] is NaN"),
        "{err}"
    );
    assert!(
        load_checkpoint(run.path()).is_err(),
        "nothing was published"
    );
    assert_eq!(
        std::fs::read_dir(run.path()).unwrap().count(),
        0,
        "temp directory cleaned up"
    );
}

#[test]
fn latest_points_at_the_newest_save() {
    let run = TempDir::new("latest");
    let store = small_model(0);
    for step in [10, 20] {
        save_checkpoint(
            run.path(),
            step,
            &contents(&store, None, TrainState::default()),
        )
        .unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(run.path().join(LATEST_FILE)).unwrap(),
        "step-00000020\n"
    );
    assert_eq!(load_checkpoint(run.path()).unwrap().step, 20);
    assert_eq!(
        load_checkpoint(run.path().join("step-00000010"))
            .unwrap()
            .step,
        10
    );

    // A crash between the directory rename and the pointer update leaves `latest` on the older,
    // complete checkpoint: it stays authoritative.
    std::fs::write(run.path().join(LATEST_FILE), "step-00000010\n").unwrap();
    assert_eq!(load_checkpoint(run.path()).unwrap().step, 10);
    // Without a usable pointer the newest complete directory is loaded.
    std::fs::write(run.path().join(LATEST_FILE), "step-00000030\n").unwrap();
    assert_eq!(load_checkpoint(run.path()).unwrap().step, 20);
    std::fs::remove_file(run.path().join(LATEST_FILE)).unwrap();
    assert_eq!(load_checkpoint(run.path()).unwrap().step, 20);
}

#[test]
fn saving_a_step_again_replaces_it() {
    let run = TempDir::new("replace");
    let (store, _) = trained(1, 1);
    save_checkpoint(
        run.path(),
        5,
        &contents(&store, None, TrainState::default()),
    )
    .unwrap();
    let (newer, _) = trained(2, 1);
    save_checkpoint(
        run.path(),
        5,
        &contents(&newer, None, TrainState::default()),
    )
    .unwrap();
    let restored = small_model(0);
    restore_into(&restored, &load_checkpoint(run.path()).unwrap()).unwrap();
    assert_eq!(store_bits(&restored), store_bits(&newer));
    let names: Vec<_> = std::fs::read_dir(run.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only step-00000005 and latest remain: {names:?}"
    );
}

#[test]
fn keep_last_prunes_older_checkpoints_after_saving() {
    let run = TempDir::new("keep-last");
    let store = small_model(0);
    let opts = SaveOptions { keep_last: Some(2) };
    for step in 1..=5 {
        save_checkpoint_with(
            run.path(),
            step,
            &contents(&store, None, TrainState::default()),
            &opts,
        )
        .unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(run.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["latest", "step-00000004", "step-00000005"]);

    // Saving an earlier step (a run resumed from an older checkpoint) never deletes the new one.
    let opts = SaveOptions { keep_last: Some(1) };
    save_checkpoint_with(
        run.path(),
        3,
        &contents(&store, None, TrainState::default()),
        &opts,
    )
    .unwrap();
    assert_eq!(load_checkpoint(run.path()).unwrap().step, 3);
    assert!(!run.path().join("step-00000005").exists());

    let zero = SaveOptions { keep_last: Some(0) };
    assert!(matches!(
        save_checkpoint_with(
            run.path(),
            6,
            &contents(&store, None, TrainState::default()),
            &zero
        ),
        Err(CheckpointError::Invalid(_))
    ));
}

#[test]
fn files_are_where_the_design_says() {
    let run = TempDir::new("layout");
    let (store, opt) = trained(0, 1);
    let dir = save_checkpoint(
        run.path(),
        7,
        &contents(&store, Some(&opt), TrainState::default()),
    )
    .unwrap();
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "config.json",
        "state.json",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // model.safetensors is a plain safetensors file with the store's names.
    let model =
        candle_core::safetensors::load(dir.join(MODEL_FILE), &candle_core::Device::Cpu).unwrap();
    let names: BTreeMap<_, _> = model
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    assert_eq!(names["blocks.0.moe.experts.w1"], [3, 6, 5]);
    // state.json is readable JSON with the step and the checksums.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(state["state"]["step"], 7);
    assert!(state["state"]["checksums"]["model.safetensors"]["crc32"].is_string());
}
