//! Import and export errors: each names what is wrong (the architecture with the supported
//! list, the missing shard and the index that lists it, the tensor with both shapes, …).

mod common;

use common::*;
use serde_json::Value;
use switchyard_interop::{export, import, HfArch, InteropError};
use switchyard_models::ModelError;

fn edit_config(dir: &std::path::Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn import_err(dir: &std::path::Path) -> (InteropError, String) {
    let e = import(dir).err().expect("import must fail");
    let msg = e.to_string();
    (e, msg)
}

#[test]
fn unknown_architecture_lists_the_supported_ones() {
    let d = copy_fixture("mixtral", "unknown-arch");
    edit_config(&d, |c| {
        c.insert("model_type".into(), "gpt_oss".into());
        c.insert(
            "architectures".into(),
            serde_json::json!(["GptOssForCausalLM"]),
        );
    });
    let (e, msg) = import_err(&d);
    assert!(
        matches!(e, InteropError::UnknownArchitecture { .. }),
        "{msg}"
    );
    assert!(msg.contains("gpt_oss"), "{msg}");
    for a in HfArch::ALL {
        assert!(msg.contains(a.model_type()), "{msg} should list {a}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn missing_shard_is_named_with_its_index() {
    let d = copy_fixture("mixtral", "missing-shard");
    std::fs::remove_file(d.join("model-00003-of-00005.safetensors")).unwrap();
    let (e, msg) = import_err(&d);
    assert!(matches!(e, InteropError::MissingFile { .. }), "{msg}");
    assert!(msg.contains("model-00003-of-00005.safetensors"), "{msg}");
    assert!(msg.contains("model.safetensors.index.json"), "{msg}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_shard_path_outside_the_model_directory_is_refused() {
    for bad in ["../model-00001-of-00005.safetensors", "/etc/passwd"] {
        let d = copy_fixture("mixtral", "escaping-shard");
        let p = d.join("model.safetensors.index.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let map = v["weight_map"].as_object_mut().unwrap();
        let first = map.keys().next().unwrap().clone();
        map.insert(first, bad.into());
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        let (e, msg) = import_err(&d);
        assert!(matches!(e, InteropError::Config { .. }), "{msg}");
        assert!(
            msg.contains(bad) && msg.contains("leaves the model directory"),
            "{msg}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    // the config says experts are 48 wide, the weights are 64 wide
    let d = copy_fixture("mixtral", "wrong-shape");
    edit_config(&d, |c| {
        c.insert("intermediate_size".into(), 48.into());
    });
    let (e, msg) = import_err(&d);
    match e {
        InteropError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "model.layers.0.block_sparse_moe.experts.0.w1.weight");
            assert_eq!(expected, vec![48, 32]);
            assert_eq!(found, vec![64, 32]);
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
    assert!(
        msg.contains("[48, 32]") && msg.contains("[64, 32]"),
        "{msg}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    // Qwen3 fixture without its dense layer: layer 1 now needs experts the file lacks
    let d = copy_fixture("qwen3_moe", "missing-tensor");
    edit_config(&d, |c| {
        c.insert("mlp_only_layers".into(), serde_json::json!([]));
    });
    let (e, msg) = import_err(&d);
    assert!(matches!(e, InteropError::MissingTensor { .. }), "{msg}");
    assert!(msg.contains("model.layers.1.mlp.gate.weight"), "{msg}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unimplemented_rope_scaling_is_refused_plainly() {
    let d = copy_fixture("deepseek_v2", "rope-dynamic");
    for kind in ["dynamic", "longrope", "llama3"] {
        edit_config(&d, |c| {
            c.insert(
                "rope_scaling".into(),
                serde_json::json!({"type": kind, "factor": 4}),
            );
        });
        let (e, msg) = import_err(&d);
        assert!(matches!(e, InteropError::Unsupported { .. }), "{msg}");
        assert!(msg.contains(kind) && msg.contains("deepseek_v2"), "{msg}");
        assert!(msg.contains("linear and yarn"), "{msg}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn partial_rotary_factor_is_refused_not_ignored() {
    let d = copy_fixture("qwen3_moe", "partial-rope");
    edit_config(&d, |c| {
        c.insert("partial_rotary_factor".into(), serde_json::json!(0.5));
    });
    let (e, msg) = import_err(&d);
    assert!(matches!(e, InteropError::Unsupported { .. }), "{msg}");
    assert!(msg.contains("partial_rotary_factor = 0.5"), "{msg}");
    // 1.0 is the whole head: accepted
    edit_config(&d, |c| {
        c.insert("partial_rotary_factor".into(), serde_json::json!(1.0));
    });
    assert!(import(&d).is_ok());
    // not a number: a config error naming the key, not silently "absent"
    edit_config(&d, |c| {
        c.insert("partial_rotary_factor".into(), serde_json::json!("0.5"));
    });
    let (e, msg) = import_err(&d);
    assert!(
        matches!(&e, InteropError::Config { key, .. } if key == "partial_rotary_factor"),
        "{msg}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_yarn_values_name_their_key() {
    let d = copy_fixture("deepseek_v3_yarn", "yarn-bad");
    for (edit, key) in [
        (serde_json::json!({"factor": null}), "rope_scaling.factor"),
        (serde_json::json!({"factor": "40"}), "rope_scaling.factor"),
        (serde_json::json!({"factor": 0.5}), "rope_scaling.factor"),
        (
            serde_json::json!({"beta_slow": 64}),
            "rope_scaling.beta_fast",
        ),
        (
            serde_json::json!({"original_max_position_embeddings": 0}),
            "rope_scaling.original_max_position_embeddings",
        ),
        (
            serde_json::json!({"original_max_position_embeddings": -1}),
            "rope_scaling.original_max_position_embeddings",
        ),
        (
            serde_json::json!({"truncate": "no"}),
            "rope_scaling.truncate",
        ),
    ] {
        edit_config(&d, |c| {
            let mut s = serde_json::json!({"type": "yarn", "factor": 4.0,
                "original_max_position_embeddings": 32, "mscale": 1.0, "mscale_all_dim": 1.0});
            for (k, v) in edit.as_object().unwrap() {
                s[k] = v.clone();
            }
            c.insert("rope_scaling".into(), s);
        });
        let (e, msg) = import_err(&d);
        assert!(
            matches!(&e, InteropError::Config { key: k, .. } if k == key),
            "{edit}: {msg}"
        );
    }
    // DeepSeek's softmax factor from mscale_all_dim is implemented for YaRN only
    edit_config(&d, |c| {
        c.insert(
            "rope_scaling".into(),
            serde_json::json!({"type": "linear", "factor": 2, "mscale_all_dim": 1.0}),
        );
    });
    let (e, msg) = import_err(&d);
    assert!(matches!(e, InteropError::Unsupported { .. }), "{msg}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn missing_config_is_named() {
    let d = scratch("no-config");
    let (e, msg) = import_err(&d);
    assert!(matches!(e, InteropError::MissingFile { .. }), "{msg}");
    assert!(msg.contains("config.json"), "{msg}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_model_too_big_for_memory_says_so_before_reading_weights() {
    // within every limit, but 4 attention matrices of 2^20 × 2^20 per layer: terabytes
    let d = copy_fixture("mixtral", "too-big");
    edit_config(&d, |c| {
        c.insert("hidden_size".into(), (1u64 << 20).into());
        c.insert("head_dim".into(), Value::Null);
    });
    let (e, msg) = import_err(&d);
    assert!(
        matches!(e, InteropError::Model(ModelError::TooLarge(_))),
        "{msg}"
    );
    assert!(
        msg.matches("GiB").count() >= 2 && msg.contains("available"),
        "{msg}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// Regression (issue 22, item 1): these aborted the process on an allocation of their size.
#[test]
fn absurd_sizes_in_config_json_are_refused_not_aborted() {
    let huge = 1u64 << 40;
    for (key, value) in [
        ("num_hidden_layers", 1_000_000_000u64),
        ("max_position_embeddings", huge),
        ("vocab_size", huge),
        ("hidden_size", huge),
        ("intermediate_size", huge),
        ("num_local_experts", huge),
        ("num_attention_heads", huge),
        ("head_dim", huge),
    ] {
        let d = copy_fixture("mixtral", "absurd");
        edit_config(&d, |c| {
            c.insert(key.into(), value.into());
        });
        let (_, msg) = import_err(&d);
        assert!(
            msg.contains("at most") || msg.contains("GiB"),
            "{key}: {msg}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// Regression (issue 22, item 9): a NaN weight imported silently, and eval printed NaN.
#[test]
fn a_non_finite_weight_is_refused_naming_the_tensor() {
    for bad in [f32::NAN, f32::INFINITY] {
        let d = copy_fixture("mixtral", "nan-weight");
        let index: Value = serde_json::from_str(
            &std::fs::read_to_string(d.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        let name = "model.layers.0.block_sparse_moe.experts.1.w2.weight";
        let shard = d.join(index["weight_map"][name].as_str().unwrap());
        let mut tensors =
            candle_core::safetensors::load(&shard, &candle_core::Device::Cpu).unwrap();
        let t = &tensors[name];
        let mut v = t
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        v[3] = bad;
        let poisoned = candle_core::Tensor::from_vec(v, t.dims(), &candle_core::Device::Cpu)
            .unwrap()
            .to_dtype(t.dtype())
            .unwrap();
        tensors.insert(name.to_string(), poisoned);
        candle_core::safetensors::save(&tensors, &shard).unwrap();
        let (e, msg) = import_err(&d);
        assert!(matches!(e, InteropError::NonFinite { .. }), "{msg}");
        assert!(
            msg.contains(name) && msg.contains("flat index 3") && msg.contains("non-finite"),
            "{msg}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn export_refuses_an_architecture_that_cannot_express_the_model() {
    let m = import(fixture("qwen2_moe")).unwrap();
    let out = scratch("not-representable");
    let e = export(&m.model, Some(HfArch::Mixtral), &out).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, InteropError::NotRepresentable { .. }), "{msg}");
    assert!(msg.contains("shared"), "{msg}");
    // the right one is found without help
    assert_eq!(export(&m.model, None, &out).unwrap().arch, HfArch::Qwen2Moe);
    std::fs::remove_dir_all(&out).unwrap();
}
