//! Printers: an aligned table for people, JSON lines for scripts.

use std::fmt::Write as _;
use std::path::Path;

use crate::{BenchError, BenchRow, Result};

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{:.1}%", 100.0 * v))
}

/// Says why a table has no `mem` column.
pub const NO_MEM_NOTE: &str = "peak memory of fwd+bwd is not measured here: it needs a \
counting allocator, which only the switchyard-bench binary installs \
(cargo run --release -p switchyard-bench -- --quick)";

/// One line per row: config, mode, threads, shape, time, GFLOP/s, ratio to the ceiling, the
/// routing share, and the memory ratio (`mem`, peak over kept bytes of fwd+bwd at the first
/// thread count) when any row measured it; without it, a line says why the column is absent.
pub fn format_table(rows: &[BenchRow]) -> String {
    let with_mem = rows.iter().any(|r| r.peak_mem_ratio.is_some());
    let mut s = String::new();
    let _ = write!(
        s,
        "{:<26} {:<8} {:>3} {:>5} {:>2} {:>4} {:>5} {:>5} {:>10} {:>8} {:>8} {:>7} {:>8}",
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
    );
    if with_mem {
        let _ = write!(s, " {:>6}", "mem");
    }
    s.push('\n');
    for r in rows {
        let _ = write!(
            s,
            "{:<26} {:<8} {:>3} {:>5} {:>2} {:>4} {:>5} {:>5} {:>10.2} {:>8.1} {:>8.1} {:>7.3} {:>8}",
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
        );
        if with_mem {
            let mem = r
                .peak_mem_ratio
                .map_or_else(|| "-".into(), |m| format!("{m:.2}x"));
            let _ = write!(s, " {mem:>6}");
        }
        s.push('\n');
    }
    if !with_mem && !rows.is_empty() {
        let _ = writeln!(s, "({NO_MEM_NOTE})");
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
