//! Parity with transformers: every fixture under `tests/fixtures/` is imported and run on its
//! `input_ids`; the logits must agree with transformers' within `LOGITS_TOL` (f32), every MoE
//! layer must choose the same experts (as sets: DeepSeek's top-k order is unspecified) with the
//! same weights and router logits, and 32 greedy tokens (KV cache on) must be identical.
//! Exporting an imported model and importing the export must give bit-identical tensors and
//! logits. The expected values come from `scripts/reference/make_hf_fixtures.py`. Besides one
//! fixture per architecture, `deepseek_v3_yarn` is a DeepSeek-V3 with YaRN RoPE scaling in
//! the Hub's `rope_scaling` layout.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use common::*;
use switchyard_interop::{export_imported, greedy, import, logits};
use switchyard_models::{RopeScaling, YarnScaling};

const LOGITS_TOL: f32 = 1e-4;
const ROUTER_TOL: f32 = 1e-4;
const GREEDY_TOKENS: usize = 32;
/// The fixture `name` holds a model of architecture `arch` (its `model_type`).
fn parity_as(name: &str, arch: &str) {
    let m = import(fixture(name)).unwrap_or_else(|e| panic!("{name}: import failed: {e}"));
    assert_eq!(m.arch.model_type(), arch);
    let exp = expected(name);
    let r = logits(&m.model, &exp.ids).unwrap();
    let dl = max_abs_diff(&r.logits.squeeze(0).unwrap(), &exp.logits);
    let mut msg = vec![format!("{name}: max |Δ logits| = {dl:.2e}")];

    let ours: Vec<usize> = r.layers.iter().map(|l| l.layer).collect();
    let theirs: Vec<usize> = exp.layers.keys().copied().collect();
    assert_eq!(ours, theirs, "{name}: MoE layers differ");
    for l in &r.layers {
        let (rl, chosen, weights) = &exp.layers[&l.layer];
        let dr = max_abs_diff(l.router_logits.as_ref().unwrap(), rl);
        let mut dw = 0f32;
        for (t, (c, w)) in chosen.iter().zip(weights).enumerate() {
            let mut want: Vec<u32> = c.iter().map(|&e| e as u32).collect();
            want.sort_unstable();
            assert_eq!(
                l.chosen[t], want,
                "{name} layer {}: token {t} chose different experts",
                l.layer
            );
            let by_id: BTreeMap<u32, f32> =
                c.iter().map(|&e| e as u32).zip(w.iter().copied()).collect();
            for (e, ours) in l.chosen[t].iter().zip(&l.weights[t]) {
                dw = dw.max((ours - by_id[e]).abs());
            }
        }
        assert!(
            dr <= ROUTER_TOL,
            "{name} layer {}: max |Δ router logits| = {dr:e}",
            l.layer
        );
        assert!(
            dw <= ROUTER_TOL,
            "{name} layer {}: max |Δ routing weights| = {dw:e}",
            l.layer
        );
        msg.push(format!(
            "L{}: router {dr:.1e}, weights {dw:.1e}, experts same",
            l.layer
        ));
    }
    let g = greedy(&m.model, &exp.ids, GREEDY_TOKENS).unwrap();
    assert_eq!(g, exp.greedy, "{name}: greedy tokens differ");
    msg.push("greedy same".into());
    println!("{}", msg.join("; "));
    assert!(
        dl <= LOGITS_TOL,
        "{name}: max |Δ logits| = {dl:e} > {LOGITS_TOL:e}"
    );
}

fn parity(name: &str) {
    parity_as(name, name)
}

#[test]
fn mixtral_matches_transformers() {
    parity("mixtral");
}

#[test]
fn qwen2_moe_matches_transformers() {
    parity("qwen2_moe");
}

#[test]
fn qwen3_moe_matches_transformers() {
    parity("qwen3_moe");
}

#[test]
fn olmoe_matches_transformers() {
    parity("olmoe");
}

#[test]
fn deepseek_v2_matches_transformers() {
    parity("deepseek_v2");
}

#[test]
fn deepseek_v3_matches_transformers() {
    parity("deepseek_v3");
}

/// DeepSeek-V3's `rope_scaling` (YaRN, mscale = mscale_all_dim = 1) scaled down to a
/// pretraining context of 32 and factor 4; greedy decoding runs past position 32.
/// A family added to the registry must come with its fixture (and its `*_matches_transformers`
/// test above): the fixture list is the one list here that is not derived from the registry.
#[test]
fn every_registered_family_has_a_parity_fixture() {
    for a in switchyard_interop::HfArch::ALL {
        assert!(
            FIXTURES.contains(&a.model_type()),
            "no fixture for {a} in tests/fixtures (scripts/reference/make_hf_fixtures.py)"
        );
    }
}

#[test]
fn deepseek_v3_with_yarn_matches_transformers() {
    let m = import(fixture("deepseek_v3_yarn")).unwrap();
    let want = RopeScaling::Yarn(YarnScaling {
        factor: 4.0,
        original_max_seq_len: 32,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: Some(1.0),
        mscale_all_dim: Some(1.0),
        attention_factor: None,
        truncate: true,
    });
    assert_eq!(m.cfg.rope_scaling, Some(want));
    assert_eq!(m.cfg.max_seq_len, 128);
    parity_as("deepseek_v3_yarn", "deepseek_v3");
}

/// transformers 5 keeps the scaling in `rope_parameters` (with `rope_theta`, and `rope_type`
/// for the Hub's `type`): the same config and logits as the Hub layout.
#[test]
fn yarn_reads_the_same_from_rope_parameters() {
    let d = copy_fixture("deepseek_v3_yarn", "yarn-rope-parameters");
    let path = d.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let o = c.as_object_mut().unwrap();
    let mut rp = o.remove("rope_scaling").unwrap();
    let theta = o.remove("rope_theta").unwrap();
    let r = rp.as_object_mut().unwrap();
    let kind = r.remove("type").unwrap();
    r.insert("rope_type".into(), kind);
    r.insert("rope_theta".into(), theta);
    o.insert("rope_parameters".into(), rp);
    std::fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();

    let (hub, t5) = (
        import(fixture("deepseek_v3_yarn")).unwrap(),
        import(&d).unwrap(),
    );
    assert!(t5.cfg.rope_scaling.is_some());
    assert_eq!(hub.cfg, t5.cfg);
    let ids = expected("deepseek_v3_yarn").ids;
    let (a, b) = (
        logits(&hub.model, &ids).unwrap(),
        logits(&t5.model, &ids).unwrap(),
    );
    assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Export writes back exactly the tensors it read (Hub names, shapes, values), and the
/// re-imported model gives bit-identical logits.
#[test]
fn export_then_reimport_is_exact() {
    for name in FIXTURES {
        let m = import(fixture(name)).unwrap();
        let out = scratch(&format!("roundtrip-{name}"));
        let rep = export_imported(&m, &out).unwrap();
        assert_eq!(rep.arch, m.arch);

        let src = switchyard_interop::import::Shards::open(&fixture(name)).unwrap();
        let dst = switchyard_interop::import::Shards::open(&out).unwrap();
        assert_eq!(
            src.tensors.keys().collect::<Vec<_>>(),
            dst.tensors.keys().collect::<Vec<_>>(),
            "{name}: exported tensor names differ"
        );
        for (n, (shape, _)) in &src.tensors {
            let (a, b) = (src.load(n, shape).unwrap(), dst.load(n, shape).unwrap());
            assert_eq!(
                max_abs_diff(&a, &b),
                0.0,
                "{name}: `{n}` changed in the round trip"
            );
        }

        let back = import(&out).unwrap();
        assert_eq!(back.cfg, m.cfg, "{name}: config changed in the round trip");
        let ids = expected(name).ids;
        let (a, b) = (
            logits(&m.model, &ids).unwrap(),
            logits(&back.model, &ids).unwrap(),
        );
        assert_eq!(
            max_abs_diff(&a.logits, &b.logits),
            0.0,
            "{name}: logits changed in the round trip"
        );
        assert!(out.join("tokenizer.json").is_file());
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// `logits().save()` writes the fixture format: the same names, dtypes and shapes as
/// `expected.safetensors`.
#[test]
fn logits_file_has_the_fixture_layout() {
    let name = "deepseek_v3";
    let m = import(fixture(name)).unwrap();
    let exp = expected(name);
    let out = scratch("logits-file");
    let path = out.join("out.safetensors");
    let g = greedy(&m.model, &exp.ids, 4).unwrap();
    logits(&m.model, &exp.ids)
        .unwrap()
        .save(&path, Some(&g))
        .unwrap();
    let ours = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let theirs =
        candle_core::safetensors::load(fixture(name).join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let sig = |m: &std::collections::HashMap<String, Tensor>| -> BTreeMap<String, (candle_core::DType, Vec<usize>)> {
        m.iter().filter(|(k, _)| *k != "greedy").map(|(k, t)| (k.clone(), (t.dtype(), t.dims().to_vec()))).collect()
    };
    assert_eq!(sig(&ours), sig(&theirs));
    assert_eq!(ours["greedy"].dims(), &[4]);
    std::fs::remove_dir_all(&out).unwrap();
}

/// A bf16 checkpoint imports as f32 holding exactly the bf16 values.
#[test]
fn bf16_checkpoint_imports_as_the_same_values_in_f32() {
    let name = "olmoe";
    let d = copy_fixture(name, "bf16");
    let path = d.join("model.safetensors");
    let t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let bf: std::collections::HashMap<String, Tensor> = t
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(candle_core::DType::BF16).unwrap()))
        .collect();
    candle_core::safetensors::save(&bf, &path).unwrap();
    let (a, b) = (import(fixture(name)).unwrap(), import(&d).unwrap());
    for ((n, va), (_, vb)) in a.store.all().iter().zip(b.store.all().iter()) {
        assert_eq!(vb.dtype(), candle_core::DType::F32);
        let rounded = va
            .as_tensor()
            .to_dtype(candle_core::DType::BF16)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        assert_eq!(max_abs_diff(&rounded, vb.as_tensor()), 0.0, "`{n}`");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Export shards at a size limit (with an index), and the shards import back exactly.
#[test]
fn sharded_export_writes_an_index_and_reimports_exactly() {
    let name = "deepseek_v2";
    let m = import(fixture(name)).unwrap();
    let out = scratch("sharded-export");
    let opts = switchyard_interop::ExportOptions {
        max_shard_bytes: 100_000,
        ..Default::default()
    };
    let rep = switchyard_interop::export_with(&m.model, None, &out, &opts).unwrap();
    let shards = rep
        .files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .count();
    assert!(shards > 1, "{:?}", rep.files);
    assert!(out.join("model.safetensors.index.json").is_file());
    let back = import(&out).unwrap();
    let ids = expected(name).ids;
    assert_eq!(
        max_abs_diff(
            &logits(&m.model, &ids).unwrap().logits,
            &logits(&back.model, &ids).unwrap().logits
        ),
        0.0
    );
    std::fs::remove_dir_all(&out).unwrap();
}
