//! Fine-tuning an imported HF model with the ordinary trainer: `init.from` takes the
//! imported run's model, weights and tokenizer; the data is tokenized by the HF tokenizer;
//! the run directory carries the tokenizer and the architecture, so the result loads,
//! evaluates, resumes and exports like the import did.

mod common;

use common::*;
use switchyard_data::{HfTokenizer, Tokenizer};
use switchyard_interop::commands::{export_model_dir, import_to_checkpoint};
use switchyard_interop::{import, load_any, logits, HfArch};
use switchyard_train::trainer::{evaluate, TrainConfig, Trainer};

fn config(init: &std::path::Path, run_dir: &std::path::Path, steps: u64) -> TrainConfig {
    let text = format!(
        "seed = 3\nrun_dir = {run:?}\n[init]\nfrom = {init:?}\n\
         [data]\nseq_len = 32\ndocs_per_domain = 4\ndoc_bytes = 600\n\
         [optim]\nlr = 3e-3\nwarmup_steps = 0\n\
         [train]\nsteps = {steps}\nbatch_size = 4\neval_every = 0\ncheckpoint_every = 0\n\
         [log]\nprogress = false\nmetrics = false\n",
        run = run_dir.display().to_string(),
        init = init.display().to_string(),
    );
    TrainConfig::from_toml_str(&text, None, &[]).unwrap()
}

#[test]
fn an_imported_olmoe_fine_tunes_with_its_own_tokenizer_and_exports_back() {
    let name = "olmoe";
    let imported = scratch("ft-import");
    import_to_checkpoint(&fixture(name), &imported).unwrap();
    let run = scratch("ft-run");
    let cfg = config(&imported, &run, 6);

    // the model and tokenizer come from the init checkpoint, without a [model] section
    let direct = import(fixture(name)).unwrap();
    assert_eq!(cfg.model, direct.cfg);
    assert_eq!(
        cfg.data.tokenizer.as_deref(),
        Some(imported.join("tokenizer.json").as_path())
    );

    let mut t = Trainer::new(cfg.clone()).unwrap();
    // starts from the imported weights, bitwise
    for (name, var) in t.store.all() {
        let want = direct.store.get(&name).unwrap();
        let d = max_abs_diff(var.as_tensor(), want.as_tensor());
        assert_eq!(d, 0.0, "{name} differs from the import");
    }
    // the data is tokenized by the HF tokenizer, not bytes
    let tok = HfTokenizer::from_dir(&imported).unwrap();
    let by_hf = switchyard_train::trainer::data::build_dataset_with(&cfg, &tok).unwrap();
    assert_eq!(t.data.train.tokens(), by_hf.train.tokens());
    let docs = switchyard_train::trainer::data::load_documents(&cfg).unwrap();
    let byte_len: usize = docs.iter().map(|d| d.text.len()).sum();
    let tok_len: usize = docs.iter().map(|d| tok.encode(&d.text).len()).sum();
    assert!(
        tok_len < byte_len,
        "{tok_len} HF tokens vs {byte_len} bytes"
    );

    let before = evaluate(&t.model, &t.data, 8).unwrap().loss;
    let summary = t.run().unwrap();
    eprintln!(
        "olmoe fine-tune: val loss {before:.4} -> {:.4} after {} steps",
        summary.eval.loss, summary.steps
    );
    assert!(
        summary.eval.loss < before - 0.1,
        "fine-tuning did not lower the validation loss: {before} -> {}",
        summary.eval.loss
    );

    // the run carries the tokenizer and the architecture
    for f in ["tokenizer.json", "tokenizer_config.json", "hf_source.json"] {
        assert!(run.join(f).is_file(), "{f} missing from the run directory");
    }
    let loaded = load_any(&run).unwrap();
    assert_eq!(loaded.arch, Some(HfArch::Olmoe));
    assert!(loaded.tokenizer.is_some());
    let trained = switchyard_train::trainer::load_model(&run).unwrap();
    assert!(trained.tokenizer.is_some());

    // export to OLMoE and read back: same logits as the fine-tuned model
    let ids = expected(name).ids;
    let out = scratch("ft-export");
    assert_eq!(
        export_model_dir(&run, &out, None).unwrap().arch,
        HfArch::Olmoe
    );
    let back = import(&out).unwrap();
    let a = logits(&loaded.model, &ids).unwrap();
    let b = logits(&back.model, &ids).unwrap();
    assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0);
    // and the fine-tuned model differs from the original
    let orig = logits(&direct.model, &ids).unwrap();
    assert!(max_abs_diff(&a.logits, &orig.logits) > 1e-3);

    // resuming the fine-tuned run needs neither the init checkpoint's weights nor its
    // tokenizer (the run carries a copy) and continues it
    std::fs::remove_dir_all(&imported).unwrap();
    let saved = trained.cfg.to_toml_string();
    let more = TrainConfig::from_toml_str(&saved, None, &["train.steps=8".into()]).unwrap();
    let mut r = Trainer::resume(more, &run).unwrap();
    assert_eq!(r.step(), 6);
    assert_eq!(r.run().unwrap().steps, 8);

    // resumed into another run directory, which gets the carried files from the checkpoint's
    let run2 = scratch("ft-run2");
    let moved = TrainConfig::from_toml_str(
        &saved,
        None,
        &[
            "train.steps=10".into(),
            format!("run_dir={:?}", run2.display().to_string()),
        ],
    )
    .unwrap();
    Trainer::resume(moved, &run).unwrap().run().unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "hf_source.json"] {
        assert!(
            run2.join(f).is_file(),
            "{f} not carried into the new run directory"
        );
    }

    for d in [&run, &run2, &out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn init_from_errors_name_the_problem() {
    // an HF directory: import it first
    let err = TrainConfig::from_overrides(&[format!(
        "init.from={:?}",
        fixture("mixtral").display().to_string()
    )])
    .unwrap_err()
    .to_string();
    assert!(err.contains("switchyard import"), "{err}");
    // a directory with no checkpoint
    let empty = scratch("ft-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err =
        TrainConfig::from_overrides(&[format!("init.from={:?}", empty.display().to_string())])
            .unwrap_err()
            .to_string();
    assert!(err.contains("init.from"), "{err}");
    // a model whose shapes differ from the checkpoint's: every mismatch is named
    let imported = scratch("ft-import-mismatch");
    import_to_checkpoint(&fixture("mixtral"), &imported).unwrap();
    let mut cfg = config(&imported, &scratch("ft-mismatch-run"), 1);
    cfg.model.vocab_size += 8;
    let err = Trainer::new(cfg).err().unwrap().to_string();
    assert!(err.contains("shape"), "{err}");
    std::fs::remove_dir_all(&imported).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}
