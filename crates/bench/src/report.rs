//! Printers: an aligned table for people, JSON lines for scripts.

use std::fmt::Write as _;
use std::path::Path;

use crate::{BenchError, BenchRow, Result};

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{:.1}%", 100.0 * v))
}

/// One line per row: config, mode, threads, shape, time, GFLOP/s, ratio to the ceiling, and
/// the routing share / memory ratio where measured.
pub fn format_table(rows: &[BenchRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:<8} {:>3} {:>5} {:>2} {:>4} {:>5} {:>5} {:>10} {:>8} {:>8} {:>7} {:>8} {:>6}",
        "config",
        "mode",
        "thr",
        "E",
        "k",
        "d",
        "h",
        "T",
        "ms",
        "GFLOP/s",
        "ceiling",
        "ratio",
        "routing",
        "mem"
    );
    for r in rows {
        let mem = r
            .peak_mem_ratio
            .map_or_else(|| "-".into(), |m| format!("{m:.2}x"));
        let _ = writeln!(
            s,
            "{:<26} {:<8} {:>3} {:>5} {:>2} {:>4} {:>5} {:>5} {:>10.2} {:>8.1} {:>8.1} {:>7.3} {:>8} {:>6}",
            r.config,
            r.mode,
            r.threads,
            r.experts,
            r.k,
            r.d,
            r.h,
            r.tokens,
            r.seconds * 1e3,
            r.gflops,
            r.ceiling_gflops,
            r.ratio_to_ceiling,
            pct(r.routing_share),
            mem
        );
    }
    s
}

/// One JSON object per row, one row per line.
pub fn to_json_lines(rows: &[BenchRow]) -> String {
    rows.iter()
        .map(|r| serde_json::to_string(r).expect("rows serialise") + "\n")
        .collect()
}

pub fn write_json(path: &Path, rows: &[BenchRow]) -> Result<()> {
    std::fs::write(path, to_json_lines(rows)).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })
}
