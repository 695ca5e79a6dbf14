//! Loading a Switchyard checkpoint (`generate/eval/analyze --ckpt <step dir>`): `state.json`,
//! `config.json`, the two safetensors files and a carried `tokenizer.json`, through
//! `switchyard_io::load_checkpoint_model`, then one forward pass of the loaded model.
//!
//! Input: a flags byte, then a bundle (see `src/lib.rs`) of the step directory's files.
//! Flags bit 0 treats the `state.json` record as the JSON *body* and frames it with its
//! correct CRC-32; bit 1 also rewrites the body's `checksums` to match the other files. So
//! the fuzzer gets past the integrity checks to the parsers behind them; with bit 0 clear the
//! bytes are written as they are and the checks themselves are fuzzed.
//!
//! Property: no panic, no abort, no allocation beyond the memory limit the loader enforces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_fuzz::{file, scratch_dir, write_bundle};
use switchyard_io::{fsio::FileDigest, run_dir::STATE_FILE, state};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bundle)) = data.split_first() else {
        return;
    };
    switchyard_fuzz::limit_memory();
    let dir = scratch_dir("checkpoint");
    let files = write_bundle(&dir, bundle);
    if flags & 1 != 0 {
        let body = file(&files, STATE_FILE).unwrap_or_default().to_vec();
        let body = match (flags & 2 != 0, serde_json::from_slice::<Value>(&body)) {
            (true, Ok(Value::Object(mut obj))) => {
                let sums: serde_json::Map<String, Value> = files
                    .iter()
                    .filter(|(n, _)| n != STATE_FILE)
                    .map(|(n, b)| (n.clone(), serde_json::to_value(FileDigest::of(b)).unwrap()))
                    .collect();
                obj.insert("checksums".into(), Value::Object(sums));
                serde_json::to_vec(&obj).unwrap()
            }
            _ => body,
        };
        std::fs::write(dir.join(STATE_FILE), state::frame(&body)).unwrap();
    }
    if let Ok(loaded) = switchyard_io::load_checkpoint_model(&dir) {
        if loaded.model.cfg.vocab_size > 0 {
            let _ = switchyard_interop::logits(&loaded.model, &[0]);
        }
    }
});
