//! `--quick` runs end to end and its JSON rows carry the fields scripts read.

use switchyard_bench::{run, to_json_lines, BenchOpts};

#[test]
fn quick_run_writes_the_documented_json_fields() {
    let opts = BenchOpts {
        quick: true,
        threads: vec![1, 2],
        reps: Some(1),
        ..Default::default()
    };
    let rows = run(&opts).expect("quick bench runs");
    let json = to_json_lines(&rows);
    let objs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(objs.len(), rows.len());
    for o in &objs {
        for field in [
            "config",
            "mode",
            "threads",
            "experts",
            "gflops",
            "ratio_to_ceiling",
            "seconds",
            "k",
            "d",
            "h",
            "tokens",
        ] {
            assert!(o.get(field).is_some(), "row {o} lacks `{field}`");
        }
        assert!(o["gflops"].as_f64().unwrap() > 0.0);
    }
    for config in ["mixtral8", "fine64"] {
        for mode in ["fwd", "fwd_bwd"] {
            for threads in [1, 2] {
                let row = objs.iter().find(|o| {
                    o["config"] == config && o["mode"] == mode && o["threads"] == threads
                });
                let row =
                    row.unwrap_or_else(|| panic!("no {config} {mode} row at {threads} threads"));
                assert!(row["ratio_to_ceiling"].as_f64().unwrap() > 0.0);
                if mode == "fwd_bwd" {
                    assert!(
                        row.get("routing_share").is_some(),
                        "{config} fwd_bwd lacks the routing share"
                    );
                }
            }
        }
    }
    assert!(objs.iter().any(|o| o["config"] == "candle_matmul_1024"));
}

/// `switchyard bench` has no counting allocator, so its `mem` column was `-` in every row
/// without a word; now the column appears only when measured, and its absence is explained.
#[test]
fn the_mem_column_is_shown_only_when_measured_and_its_absence_explained() {
    use switchyard_bench::{format_table, report::NO_MEM_NOTE, BenchRow};
    let row = BenchRow {
        config: "mixtral8".into(),
        mode: "fwd_bwd".into(),
        threads: 1,
        ..Default::default()
    };
    let table = format_table(std::slice::from_ref(&row));
    let header = table.lines().next().unwrap();
    assert!(!header.contains("mem"), "{table}");
    assert!(table.contains(NO_MEM_NOTE), "{table}");
    let measured = BenchRow {
        peak_mem_ratio: Some(1.5),
        ..row.clone()
    };
    let table = format_table(&[measured, row]);
    assert!(table.lines().next().unwrap().ends_with("mem"), "{table}");
    assert!(
        table.contains("1.50x") && !table.contains(NO_MEM_NOTE),
        "{table}"
    );
}
