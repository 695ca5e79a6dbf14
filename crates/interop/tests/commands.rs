//! The library side of `switchyard import | export | logits`: an imported checkpoint loads
//! back (router buffers and tokenizer included) with the same logits, exports back to its
//! own architecture, and a native Switchyard model exports to the architecture that fits.

mod common;

use candle_core::{DType, Device};
use common::*;
use switchyard_core::router::TopKConfig;
use switchyard_core::{ExpertSpec, MoeConfig, ParamBuilder, ParamStore, RouterConfig};
use switchyard_interop::commands::{
    export_model_dir, import_to_checkpoint, logits_to_file, parse_ids_arg, IdsInput,
};
use switchyard_interop::{export, import, load_any, logits, HfArch};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, MoeLm};

#[test]
fn imported_checkpoint_loads_back_with_identical_logits_and_exports_to_its_arch() {
    // V3: its e_score_correction_bias lives in state.json as a router buffer
    let name = "deepseek_v3";
    let run = scratch("ckpt-v3");
    let s = import_to_checkpoint(&fixture(name), &run).unwrap();
    assert_eq!(s.arch, HfArch::DeepseekV3);
    assert_eq!(s.moe_layers, vec![1, 2]);
    assert!(s.tokenizer && run.join("tokenizer.json").is_file());

    // the train crate's own loader reads it
    let ck = switchyard_train::load_checkpoint(&run).unwrap();
    assert_eq!(ck.step, 0);
    assert_eq!(ck.state.buffers.len(), 2);

    let ids = expected(name).ids;
    let loaded = load_any(&run).unwrap();
    assert_eq!(loaded.arch, Some(HfArch::DeepseekV3));
    assert!(loaded.tokenizer.is_some());
    let direct = import(fixture(name)).unwrap();
    let (a, b) = (
        logits(&direct.model, &ids).unwrap(),
        logits(&loaded.model, &ids).unwrap(),
    );
    assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0);

    let out = scratch("ckpt-v3-export");
    let rep = export_model_dir(&run, &out, None).unwrap();
    assert_eq!(rep.arch, HfArch::DeepseekV3);
    let back = import(&out).unwrap();
    assert_eq!(
        max_abs_diff(&logits(&back.model, &ids).unwrap().logits, &a.logits),
        0.0
    );
    std::fs::remove_dir_all(&run).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn logits_from_text_use_the_hf_tokenizer_with_its_bos() {
    let name = "mixtral";
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("meta.json")).unwrap())
            .unwrap();
    let prompt = meta["prompt"].as_str().unwrap().to_string();
    let out = scratch("logits-text");
    let path = out.join("out.safetensors");
    let r = logits_to_file(&fixture(name), &IdsInput::Text(prompt), &path, 2).unwrap();
    let want = expected(name).ids;
    assert_eq!(
        r.input_ids[..want.len()],
        want[..],
        "the fixture input is the prompt's first tokens"
    );
    assert!(path.is_file());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn ids_argument_accepts_a_json_list_a_file_or_text() {
    assert_eq!(
        parse_ids_arg("[1, 2, 3]").unwrap(),
        IdsInput::Ids(vec![1, 2, 3])
    );
    assert_eq!(
        parse_ids_arg("hello").unwrap(),
        IdsInput::Text("hello".into())
    );
    let d = scratch("ids-arg");
    let f = d.join("ids.json");
    std::fs::write(&f, "[5, 6]\n").unwrap();
    assert_eq!(
        parse_ids_arg(f.to_str().unwrap()).unwrap(),
        IdsInput::Ids(vec![5, 6])
    );
    std::fs::write(&f, "some text\n").unwrap();
    assert_eq!(
        parse_ids_arg(f.to_str().unwrap()).unwrap(),
        IdsInput::Text("some text".into())
    );
    std::fs::write(&f, "[1, -2]").unwrap();
    assert!(parse_ids_arg(f.to_str().unwrap())
        .unwrap_err()
        .to_string()
        .contains("ids.json"));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A directory or a mistyped file name given to `--ids` used to be encoded as text.
#[test]
fn ids_argument_that_is_a_directory_or_a_missing_file_is_refused() {
    let d = scratch("ids-path");
    let err = parse_ids_arg(d.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
    for missing in [
        d.join("prompt.txt").display().to_string(),
        "prompt.txt".to_string(),
        "no/such/ids".to_string(),
    ] {
        let err = parse_ids_arg(&missing).unwrap_err().to_string();
        assert!(
            err.contains(&missing) && err.contains("no such file"),
            "{err}"
        );
    }
    // plain text, even with a full stop, is still text
    for text in ["The quick brown fox.", "hello", "3.14"] {
        assert_eq!(parse_ids_arg(text).unwrap(), IdsInput::Text(text.into()));
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A native model (top-2 renormalised, tied embeddings, grouped-query attention) is a Mixtral;
/// the export re-imports to the same logits.
#[test]
fn native_model_exports_as_mixtral() {
    let d = 32;
    let moe = MoeConfig {
        d_model: d,
        experts: vec![ExpertSpec::swiglu(48); 4],
        router: RouterConfig::TopK(TopKConfig { k: 2 }),
        ..Default::default()
    };
    let cfg = LmConfig {
        vocab_size: 300,
        d_model: d,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: Some(2),
        max_seq_len: 64,
        ffn: FfnConfig {
            sparse: LayerFfn::Moe(moe),
            dense_hidden: 64,
            moe_every: 1,
            first_dense: 0,
        },
        ..Default::default()
    };
    let store = ParamStore::new();
    let lm = MoeLm::new(
        &ParamBuilder::new(&store, 3, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let out = scratch("native-export");
    let rep = export(&lm, None, &out).unwrap();
    assert_eq!(rep.arch, HfArch::Mixtral);
    let back = import(&out).unwrap();
    assert!(back.cfg.tie_embeddings);
    let ids: Vec<u32> = (1..20).collect();
    let (a, b) = (
        logits(&lm, &ids).unwrap(),
        logits(&back.model, &ids).unwrap(),
    );
    assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0);
    std::fs::remove_dir_all(&out).unwrap();
}
