//! README's demo figures come from a command: `switchyard demo --table <summary.json>` prints
//! the table and the parameter sentence, and README's copy keeps that shape (only the numbers
//! change when the lead re-measures with a release run). README's commands themselves are run
//! by `scripts/readme_check.sh` (part of `scripts/test.sh`).

use std::path::Path;
use std::process::Command;

/// A summary.json as `switchyard demo` writes it (the fields the table reads).
fn summary() -> serde_json::Value {
    let domains = ["prose", "arith", "json", "code", "dna", "logs", "cjk"];
    let model = |base: f64, active: u64, total: u64| {
        let by_domain: serde_json::Map<_, _> = domains
            .iter()
            .enumerate()
            .map(|(i, d)| (d.to_string(), serde_json::json!(base + 0.1 * i as f64)))
            .collect();
        serde_json::json!({
            "val_loss": base + 0.3,
            "val_loss_by_domain": by_domain,
            "params_active_per_token": active,
            "params_total": total,
        })
    };
    serde_json::json!({
        "domains": domains,
        "moe": model(1.0, 693_760, 1_870_000),
        "dense": model(1.2, 694_272, 694_272),
    })
}

/// Every number (with its sign) replaced by `#`, so two tables compare by shape.
fn shape(text: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in text.chars() {
        let numeric = c.is_ascii_digit() || (in_number && (c == '.' || c == ','));
        let sign = matches!(c, '+' | '−' | '-');
        if numeric || sign {
            if !in_number {
                out.push('#');
            }
            in_number = numeric || sign;
        } else {
            // "1.87M": the unit stays
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// README's lines from the table's header to the parameter sentence.
fn readme_table() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme
        .find("| domain | MoE | dense | MoE − dense |")
        .expect("README has the demo table");
    let rest = &readme[start..];
    let end = rest
        .find(" in total.")
        .expect("README has the parameter sentence after the table");
    rest[..end + " in total.".len()].to_string() + "\n"
}

#[test]
fn readme_demo_table_has_the_shape_demo_table_prints() {
    let dir = std::env::temp_dir().join(format!("switchyard-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("summary.json");
    std::fs::write(&path, summary().to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--table", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("| **overall** | **1.300** | **1.500** | **−0.200** |"),
        "{printed}"
    );
    assert!(
        printed.contains("(MoE 693,760, dense 694,272)"),
        "{printed}"
    );
    assert_eq!(
        shape(&readme_table()),
        shape(&printed),
        "README's demo table differs in shape from `switchyard demo --table`; regenerate it:\n{printed}"
    );
}
