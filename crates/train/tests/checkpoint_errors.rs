//! Damaged, incomplete and mismatched checkpoints: every failure names the file and the
//! problem, and an interrupted save never hides the previous checkpoint.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::{small_model, store_bits, trained, TempDir};
use serde_json::json;
use switchyard_core::{Init, ParamBuilder, ParamStore};
use switchyard_train::checkpoint::{LATEST_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE};
use switchyard_train::{
    load_checkpoint, restore_into, restore_optimizer, save_checkpoint, AdamW, AdamWConfig,
    CheckpointContents, CheckpointError, TrainState,
};

/// A run directory with one complete checkpoint (step 1, with optimiser state).
fn saved_run(tag: &str) -> (TempDir, PathBuf, ParamStore) {
    let run = TempDir::new(tag);
    let (store, opt) = trained(3, 2);
    let contents = CheckpointContents {
        params: &store,
        optimizer: Some(&opt),
        state: TrainState::default(),
        config: json!({}),
    };
    let dir = save_checkpoint(run.path(), 1, &contents).unwrap();
    (run, dir, store)
}

fn flip_last_byte(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    *data.last_mut().unwrap() ^= 0x01;
    std::fs::write(path, data).unwrap();
}

fn truncate(path: &Path, keep: usize) {
    let data = std::fs::read(path).unwrap();
    std::fs::write(path, &data[..keep]).unwrap();
}

#[test]
fn truncated_model_is_rejected_naming_the_file() {
    let (run, dir, _) = saved_run("truncated");
    let len = std::fs::metadata(dir.join(MODEL_FILE)).unwrap().len() as usize;
    truncate(&dir.join(MODEL_FILE), len / 2);
    let err = load_checkpoint(run.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::Truncated { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join(MODEL_FILE).display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "truncated: {} bytes on disk, {len} when written",
            len / 2
        )),
        "{msg}"
    );
    assert!(msg.contains("load an earlier checkpoint"), "{msg}");
}

#[test]
fn flipped_byte_is_rejected_in_every_file() {
    for file in [MODEL_FILE, OPTIMIZER_FILE, "config.json", STATE_FILE] {
        let (run, dir, _) = saved_run("flipped");
        let path = dir.join(file);
        if file == STATE_FILE {
            // Change the recorded step: still valid JSON, caught only by the checksum.
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("\"step\": 1", "\"step\": 7");
            std::fs::write(&path, text).unwrap();
        } else {
            flip_last_byte(&path);
        }
        let err = load_checkpoint(run.path()).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "{file}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("is corrupt"),
            "{msg}"
        );
    }
}

#[test]
fn truncated_or_garbled_state_json_is_rejected() {
    let (run, dir, _) = saved_run("state-truncated");
    let path = dir.join(STATE_FILE);
    truncate(&path, 100);
    let err = load_checkpoint(run.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("state.json"), "{err}");
}

#[test]
fn mismatched_shapes_are_reported_with_both_shapes() {
    let (run, _, _) = saved_run("shapes");
    let ckpt = load_checkpoint(run.path()).unwrap();
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
    pb.var("blocks.0.moe.gate.weight", &[4, 7], Init::Zeros)
        .unwrap();
    pb.var("blocks.0.moe.experts.w1", &[3, 6, 5], Init::Zeros)
        .unwrap();
    pb.var("blocks.0.attn_norm.weight", &[6], Init::Zeros)
        .unwrap();
    pb.var("head.bias", &[5], Init::Zeros).unwrap();
    let before = store_bits(&store);
    let err = restore_into(&store, &ckpt).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(
            "`blocks.0.moe.gate.weight`: shape [4, 6] in the checkpoint vs [4, 7] in the model"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("`head.bias`: shape [4] in the checkpoint vs [5] in the model"),
        "{msg}"
    );
    assert!(
        msg.contains(&ckpt.dir.join(MODEL_FILE).display().to_string()),
        "{msg}"
    );
    assert_eq!(store_bits(&store), before, "nothing restored on error");
}

#[test]
fn missing_extra_and_dtype_mismatches_are_all_listed() {
    let (run, _, _) = saved_run("names");
    let ckpt = load_checkpoint(run.path()).unwrap();
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
    pb.var("blocks.0.moe.gate.weight", &[4, 6], Init::Zeros)
        .unwrap();
    pb.var("blocks.0.moe.experts.w1", &[3, 6, 5], Init::Zeros)
        .unwrap();
    pb.var("blocks.1.moe.gate.weight", &[4, 6], Init::Zeros)
        .unwrap();
    ParamBuilder::new(&store, 0, DType::F64, &Device::Cpu)
        .var("blocks.0.attn_norm.weight", &[6], Init::Ones)
        .unwrap();
    let err = restore_into(&store, &ckpt).unwrap_err();
    let CheckpointError::Mismatch { problems, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(problems.len(), 3, "{err}");
    let msg = err.to_string();
    for needle in [
        "missing `blocks.1.moe.gate.weight` (model has F32 [4, 6])",
        "unexpected `head.bias` (F32 [4]; no such parameter in the model)",
        "`blocks.0.attn_norm.weight`: dtype F32 in the checkpoint vs F64 in the model",
        "(3 problems)",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
    }
}

#[test]
fn optimizer_mismatch_names_optimizer_file() {
    let (run, _, _) = saved_run("opt-mismatch");
    let ckpt = load_checkpoint(run.path()).unwrap();
    let store = small_model(0);
    ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu)
        .var("extra.weight", &[2, 2], Init::Zeros)
        .unwrap();
    let mut opt = AdamW::new(&store, AdamWConfig::default()).unwrap();
    let err = restore_optimizer(&mut opt, &ckpt).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(OPTIMIZER_FILE) && msg.contains("missing `extra.weight.exp_avg`"),
        "{msg}"
    );
}

#[test]
fn interrupted_save_leaves_previous_checkpoint_loadable() {
    let (run, dir, store) = saved_run("crash");
    // A crash while writing step 2: its temp directory holds half a model and no state.json.
    let tmp = run.path().join("tmp-2-4194304");
    std::fs::create_dir(&tmp).unwrap();
    let model = std::fs::read(dir.join(MODEL_FILE)).unwrap();
    std::fs::write(tmp.join(MODEL_FILE), &model[..model.len() / 2]).unwrap();
    // And a step directory that was not written by an atomic save (no state.json).
    let partial = run.path().join("step-00000003");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join(MODEL_FILE), &model[..10]).unwrap();
    std::fs::write(
        run.path().join(format!("{LATEST_FILE}.tmp-4194304")),
        "step-0000",
    )
    .unwrap();

    let ckpt = load_checkpoint(run.path()).unwrap();
    assert_eq!(ckpt.step, 1);
    std::fs::remove_file(run.path().join(LATEST_FILE)).unwrap();
    assert_eq!(
        load_checkpoint(run.path()).unwrap().step,
        1,
        "the newest *complete* checkpoint"
    );
    let restored = small_model(50);
    restore_into(&restored, &ckpt).unwrap();
    assert_eq!(store_bits(&restored), store_bits(&store));

    // The next save succeeds and clears the leftovers of the crashed one.
    let contents = CheckpointContents {
        params: &store,
        optimizer: None,
        state: TrainState::default(),
        config: json!({}),
    };
    save_checkpoint(run.path(), 2, &contents).unwrap();
    assert_eq!(load_checkpoint(run.path()).unwrap().step, 2);
    assert!(!tmp.exists());
    assert!(!run
        .path()
        .join(format!("{LATEST_FILE}.tmp-4194304"))
        .exists());
}

#[test]
fn not_a_checkpoint_says_what_was_expected() {
    let run = TempDir::new("empty");
    let err = load_checkpoint(run.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&run.path().display().to_string()));
    assert!(matches!(
        load_checkpoint(run.path().join("nope")),
        Err(CheckpointError::NotFound { .. })
    ));

    std::fs::write(run.path().join(LATEST_FILE), "../../etc\n").unwrap();
    let err = load_checkpoint(run.path()).unwrap_err();
    assert!(matches!(err, CheckpointError::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("delete the file"), "{err}");
}

#[test]
fn a_checkpoint_too_large_for_the_memory_is_refused_with_both_sizes() {
    let (_run, dir, _) = saved_run("too-large");
    let bytes = std::fs::metadata(dir.join(MODEL_FILE)).unwrap().len()
        + std::fs::metadata(dir.join(OPTIMIZER_FILE)).unwrap().len();
    let e = switchyard_train::check_load_fits(&dir, Some(bytes)).unwrap_err();
    assert!(matches!(e, CheckpointError::TooLarge { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("GiB") && msg.contains("available"), "{msg}");
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(switchyard_train::check_load_fits(&dir, Some(2 * bytes)).is_ok());
    assert!(switchyard_train::check_load_fits(&dir, None).is_ok());
}

/// What a `kill -9` during pruning left behind before prune renamed first: a step directory
/// whose `state.json` was already deleted (`remove_dir_all` removes it first), plus a pruned
/// directory and a temp directory caught mid-delete. The next start removes them all, so
/// `keep_last` holds again and no disk leaks.
#[test]
fn leftovers_of_a_kill_during_pruning_are_removed_on_the_next_start() {
    use switchyard_train::trainer::Trainer;

    let run = TempDir::new("prune-kill");
    let mut cfg = common::tiny_run(run.path());
    cfg.train.steps = 4;
    cfg.train.checkpoint_every = 2;
    cfg.train.keep_last = 1;
    Trainer::new(cfg.clone()).unwrap().run().unwrap();
    let model = std::fs::read(run.path().join("step-00000004").join(MODEL_FILE)).unwrap();

    // the crash state
    let half_deleted = run.path().join("step-00000002");
    std::fs::create_dir(&half_deleted).unwrap();
    std::fs::write(half_deleted.join(MODEL_FILE), &model).unwrap();
    let pruned = run.path().join("tmp-pruned-2-4194304");
    std::fs::create_dir(&pruned).unwrap();
    std::fs::write(pruned.join(OPTIMIZER_FILE), b"partial").unwrap();
    let writing = run.path().join("tmp-6-4194304");
    std::fs::create_dir(&writing).unwrap();
    std::fs::write(writing.join(MODEL_FILE), &model[..10]).unwrap();
    assert_eq!(load_checkpoint(run.path()).unwrap().step, 4);
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(run.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };

    // a start that trains nothing and saves nothing still cleans up
    let mut at_end = Trainer::resume(cfg.clone(), run.path()).unwrap();
    assert_eq!(at_end.run().unwrap().steps, 4);
    assert_eq!(names(), ["latest", "metrics.jsonl", "step-00000004"]);

    // and training on keeps keep_last = 1
    cfg.train.steps = 6;
    let mut resumed = Trainer::resume(cfg, run.path()).unwrap();
    assert_eq!(resumed.run().unwrap().steps, 6);
    assert_eq!(names(), ["latest", "metrics.jsonl", "step-00000006"]);
}

/// Regression (issue 22, item 9): a checkpoint holding NaN loaded silently, and `eval`
/// printed NaN losses with exit code 0.
#[test]
fn a_non_finite_parameter_is_refused_naming_the_tensor() {
    for bad in [f32::NAN, f32::NEG_INFINITY] {
        let run = TempDir::new("non-finite");
        let (store, opt) = trained(3, 2);
        let (name, var) = store.all().into_iter().nth(1).unwrap();
        let mut v = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[7] = bad;
        var.set(&candle_core::Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
            .unwrap();
        let contents = CheckpointContents {
            params: &store,
            optimizer: Some(&opt),
            state: TrainState::default(),
            config: json!({}),
        };
        let dir = save_checkpoint(run.path(), 1, &contents).unwrap();
        let err = load_checkpoint(run.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::NonFinite { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("`{name}`"))
                && msg.contains("flat index 7")
                && msg.contains(&dir.join(MODEL_FILE).display().to_string()),
            "{msg}"
        );
    }
}
