//! Reading a `tokenizer.json` (with the `tokenizer_config.json` and `config.json` beside it,
//! which name the special tokens), as `import`, `--init-from` and `data.tokenizer` do, then
//! encoding a text with it and decoding the ids.
//!
//! Input: a bundle (see `src/lib.rs`) of those files and `text`, the text to encode.
//!
//! Property: no panic, no abort.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_data::HfTokenizer;
use switchyard_fuzz::{file, scratch_dir, write_bundle};

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir("tokenizer");
    let files = write_bundle(&dir, data);
    let text = file(&files, "text")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "Hello, world! 123".to_string());
    if let Ok(tok) = HfTokenizer::from_file(&dir.join("tokenizer.json")) {
        if let Ok(ids) = tok.try_encode(&text, true) {
            let _ = tok.try_decode(&ids);
        }
    }
});
