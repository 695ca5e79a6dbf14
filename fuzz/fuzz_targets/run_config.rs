//! The run config: TOML text and `--set key=value` overrides, parsed and validated as
//! `switchyard train --config x.toml --set …` does. Input: the TOML text, then each override,
//! separated by NUL bytes.
//!
//! Properties: no panic, no abort; a config that validates renders to TOML that parses back
//! to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_train::TrainConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let toml = parts.next().unwrap_or("");
    let overrides: Vec<String> = parts.map(str::to_string).collect();
    if let Ok(cfg) = TrainConfig::from_toml_str(toml, None, &overrides) {
        let rendered = cfg.to_toml_string();
        let again = TrainConfig::from_toml_str(&rendered, None, &[]).unwrap_or_else(|e| {
            panic!("a valid config renders to TOML that fails: {e}\n{rendered}")
        });
        assert_eq!(cfg, again, "the config changed in a TOML round trip");
    }
});
