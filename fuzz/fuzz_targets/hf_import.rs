//! Importing a HuggingFace model directory (`switchyard import`): `config.json`,
//! `model.safetensors.index.json`, the safetensors shards it names (headers, shapes, dtypes)
//! and `tokenizer.json`, through `switchyard_interop::import_with`, then one forward pass of
//! the imported model.
//!
//! Input: a bundle (see `src/lib.rs`) of the model directory's files.
//!
//! Property: no panic, no abort, no allocation beyond the memory limit the importer enforces.
//! (The bundle can only name files inside the directory; a shard path in the index that
//! leaves it must be refused, which `interop`'s own tests check.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::{scratch_dir, write_bundle};
use switchyard_interop::{import_with, ImportOptions};

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::limit_memory();
    let dir = scratch_dir("hf_import");
    write_bundle(&dir, data);
    if let Ok(m) = import_with(&dir, &ImportOptions::default()) {
        if m.cfg.vocab_size > 0 {
            let _ = switchyard_interop::logits(&m.model, &[0]);
        }
    }
});
