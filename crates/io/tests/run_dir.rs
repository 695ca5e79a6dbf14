//! The run directory and the one loader: a saved model loads back bit for bit from its run
//! directory or its step directory, with its origin; sidecar files keep their layout.

use std::path::PathBuf;

use candle_core::{DType, Device};
use serde_json::json;
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_data::SpecialIds;
use switchyard_io::{
    load_checkpoint_model, router_buffers, save_checkpoint, CheckpointContents, HfSource,
    LoadError, ModelSource, RunDir, TrainState, HF_SOURCE_FILE, LATEST_FILE,
};
use switchyard_models::{LmConfig, MoeLm};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("switchyard-io-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn saved_model(run: &std::path::Path, step: u64) -> (ParamStore, MoeLm) {
    let cfg = LmConfig::default();
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 7, DType::F32, &Device::Cpu);
    let model = MoeLm::new(&pb, &cfg).unwrap();
    let state: TrainState = TrainState {
        buffers: router_buffers(&model),
        ..Default::default()
    };
    let contents = CheckpointContents {
        params: &store,
        optimizer: Vec::new(),
        state,
        config: json!({ "seed": 7, "model": cfg }),
    };
    save_checkpoint(run, step, &contents).unwrap();
    (store, model)
}

#[test]
fn a_saved_model_loads_from_its_run_dir_and_its_step_dir() {
    let dir = TempDir::new("roundtrip");
    let run = dir.0.join("run");
    let (store, _) = saved_model(&run, 5);
    let rd = RunDir::new(&run);
    assert_eq!(rd.latest().unwrap().as_deref(), Some("step-00000005"));
    assert_eq!(rd.steps().unwrap(), vec![(5, rd.step_dir(5))]);

    for path in [run.clone(), rd.step_dir(5)] {
        let m = load_checkpoint_model(&path).unwrap();
        assert!(m.tokenizer.is_none(), "a byte-level model");
        assert!(m.hf_source.is_none());
        match &m.source {
            ModelSource::Checkpoint { step_dir, step, .. } => {
                assert_eq!(*step, 5);
                assert_eq!(step_dir, &rd.step_dir(5));
            }
            other => panic!("unexpected source {other:?}"),
        }
        for (name, var) in store.all() {
            let loaded = m.store.get(&name).unwrap();
            let (a, b) = (
                var.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                loaded
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            assert_eq!(a, b, "{name}");
        }
    }
}

#[test]
fn hf_source_keeps_its_layout_and_is_found_beside_latest() {
    let dir = TempDir::new("hf-source");
    let run = dir.0.join("run");
    saved_model(&run, 0);
    let source = HfSource {
        arch: "mixtral".into(),
        config: json!({ "model_type": "mixtral" }),
        special_ids: SpecialIds {
            bos: Some(1),
            eos: Some(2),
            pad: None,
        },
    };
    RunDir::new(&run).write_hf_source(&source).unwrap();
    // the layout `switchyard import` has always written: keys in this order, a final newline
    let text = std::fs::read_to_string(run.join(HF_SOURCE_FILE)).unwrap();
    let expected = serde_json::to_string_pretty(&json!({
        "arch": "mixtral",
        "config": { "model_type": "mixtral" },
        "special_ids": { "bos": 1, "eos": 2, "pad": null },
    }))
    .unwrap()
        + "\n";
    assert_eq!(text, expected);
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let m = load_checkpoint_model(&run.join("step-00000000")).unwrap();
    assert_eq!(m.hf_source, Some(source));
}

#[test]
fn a_config_without_a_model_is_refused_naming_the_file() {
    let dir = TempDir::new("no-model");
    let run = dir.0.join("run");
    let store = ParamStore::new();
    let contents: CheckpointContents = CheckpointContents {
        params: &store,
        optimizer: Vec::new(),
        state: TrainState::default(),
        config: json!({ "seed": 0 }),
    };
    save_checkpoint(&run, 1, &contents).unwrap();
    assert!(run.join(LATEST_FILE).is_file());
    let err = load_checkpoint_model(&run).err().expect("no model section");
    assert!(matches!(err, LoadError::Incompatible { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("step-00000001/config.json") && msg.contains("`model`"),
        "{msg}"
    );
}

#[test]
fn occupant_tells_a_run_from_anything_else_and_replace_run_leaves_nothing_behind() {
    use switchyard_io::run_dir::{occupant, replace_run, Occupant};

    let dir = TempDir::new("occupant");
    let run = dir.0.join("run");
    assert_eq!(occupant(&run).unwrap(), Occupant::Nothing);
    std::fs::create_dir(&run).unwrap();
    assert_eq!(
        occupant(&run).unwrap(),
        Occupant::Nothing,
        "an empty directory"
    );
    saved_model(&run, 5);
    assert_eq!(
        occupant(&run).unwrap(),
        Occupant::Run {
            latest: Some("step-00000005".into()),
            steps: 1
        }
    );
    // what an earlier replace killed mid-delete left beside the run goes too
    let stale = dir.0.join(".run.replaced-4194304");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join(LATEST_FILE), "step-00000001\n").unwrap();
    replace_run(&run).unwrap();
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);

    let other = dir.0.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    assert_eq!(
        occupant(&other).unwrap(),
        Occupant::Other {
            example: "notes.txt".into()
        }
    );
    assert!(matches!(
        occupant(&other.join("notes.txt")).unwrap(),
        Occupant::Other { .. }
    ));
}
