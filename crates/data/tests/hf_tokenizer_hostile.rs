//! Malformed `tokenizer.json` files are refused with an error naming the file, never a panic.
//! The first case is the crash the `tokenizer` fuzz target found (fuzz/regressions/tokenizer/):
//! the `tokenizers` crate `expect`s on a JSON syntax error inside `decoder`.

use std::path::PathBuf;

use switchyard_data::{DataError, HfTokenizer};

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sy-hostile-tok-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, text).unwrap();
    path
}

fn refused(name: &str, text: &str) -> String {
    let path = write(name, text);
    match HfTokenizer::from_file(&path) {
        Ok(_) => panic!("{name}: accepted"),
        Err(e @ DataError::Tokenizer { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{name}: {msg}");
            msg
        }
        Err(e) => panic!("{name}: unexpected error kind: {e}"),
    }
}

const VALID: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": null, "pre_tokenizer": null, "post_processor": null,
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "[UNK]": 2}, "unk_token": "[UNK]"}
}"#;

#[test]
fn a_valid_file_still_loads() {
    let path = write("valid", VALID);
    let tok = HfTokenizer::from_file(&path).unwrap();
    assert_eq!(tok.try_encode("a", false).unwrap(), vec![0]);
}

#[test]
fn a_control_character_inside_decoder_is_an_error_not_a_panic() {
    // a raw newline inside a string of the decoder object, as the fuzzer made it
    let text = VALID.replace("\"use_regex\": true", "\"use_regex\n\": true");
    let msg = refused("decoder", &text);
    assert!(msg.contains("not valid JSON"), "{msg}");
}

#[test]
fn a_bad_precompiled_charsmap_is_an_error_not_a_panic() {
    let text = VALID.replace(
        "\"normalizer\": null",
        r#""normalizer": {"type": "Sequence", "normalizers": [{"type": "Precompiled", "precompiled_charsmap": "AAAA"}]}"#,
    );
    let msg = refused("precompiled", &text);
    assert!(msg.contains("Precompiled"), "{msg}");
}

#[test]
fn a_template_naming_an_undefined_special_token_is_an_error_not_a_panic() {
    // the second crash of the `tokenizer` fuzz target: `tokenizers` panics when encoding
    let text = VALID.replace(
        "\"post_processor\": null",
        r#""post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<x>": {"id": "<x>", "ids": [1], "tokens": ["<x>"]}}}"#,
    );
    let msg = refused("template", &text);
    assert!(msg.contains("\"<s>\""), "{msg}");
    let text = text.replace(
        r#"{"SpecialToken": {"id": "<s>", "type_id": 0}}"#,
        r#"{"Sequence": {"id": "B", "type_id": 0}}"#,
    );
    let msg = refused("template-b", &text);
    assert!(msg.contains("single"), "{msg}");
}
