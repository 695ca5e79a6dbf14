//! `switchyard-bench`: the benchmark suite of `switchyard bench`, plus peak memory of
//! forward+backward measured by a counting global allocator (which only a binary can install).
//!
//! Run with: `cargo run --release -p switchyard-bench -- [--quick] [--json PATH]
//! [--threads 1,2] [--configs mixtral8,fine64] [--sweep]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchyard_bench::{format_table, run, write_json, BenchOpts, MemProbe};
use switchyard_kernels::alloc::Recycling;

/// The system allocator behind Switchyard's recycling of large blocks (as a training binary
/// would use it), counting live bytes and their peak (blocks kept for reuse count as freed).
struct Counting {
    live: AtomicUsize,
    peak: AtomicUsize,
    inner: Recycling<System>,
}

// SAFETY: every call is forwarded to `inner` unchanged; the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = self.inner.alloc(l);
        if !p.is_null() {
            self.grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = self.inner.alloc_zeroed(l);
        if !p.is_null() {
            self.grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        self.inner.dealloc(p, l);
        self.live.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = self.inner.realloc(p, l, new);
        if !q.is_null() {
            self.live.fetch_sub(l.size(), Ordering::Relaxed);
            self.grew(new);
        }
        q
    }
}

impl Counting {
    fn grew(&self, n: usize) {
        let now = self.live.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
}

impl MemProbe for Counting {
    fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
    fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
    fn reset_peak(&self) {
        self.peak
            .store(self.live.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    fn set_recycling(&self, on: bool) {
        self.inner.set_enabled(on);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting {
    live: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    inner: Recycling::new(System),
};

const USAGE: &str = "usage: switchyard-bench [--quick] [--json PATH] [--threads 1,2] [--configs mixtral8,fine64] [--sweep] [--reps N] [--ab]

--ab: instead of the suite, fwd+bwd of each config under four variants timed round-robin with
the dense ceiling, plus each one's peak memory: [0] as before this round of work (plain
loss.backward(), one wave, no huge pages, no recycling of large blocks), [1] the kernel's
waves and huge pages, [2] and dispatch::backward, [3] and recycling (current).";

fn list<T: std::str::FromStr>(v: &str, what: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("bad {what} `{x}`")))
        .collect()
}

fn parse(args: &[String]) -> Result<(BenchOpts, Option<PathBuf>, bool), String> {
    let mut opts = BenchOpts {
        mem: Some(&ALLOC),
        ..Default::default()
    };
    let mut json = None;
    let mut ab = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--ab" => ab = true,
            "--sweep" => opts.sweep = true,
            "--json" => json = Some(PathBuf::from(val("--json")?)),
            "--threads" => opts.threads = list(&val("--threads")?, "thread count")?,
            "--configs" => opts.configs = list(&val("--configs")?, "config")?,
            "--reps" => {
                opts.reps = Some(
                    val("--reps")?
                        .parse()
                        .map_err(|_| "bad --reps".to_string())?,
                )
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok((opts, json, ab))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (opts, json, ab) = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rows = if ab { run_ab(&opts) } else { run(&opts) };
    match rows {
        Ok(rows) => {
            print!("{}", format_table(&rows));
            if let Some(path) = json {
                if let Err(e) = write_json(&path, &rows) {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--ab`: see [`USAGE`].
fn run_ab(opts: &BenchOpts) -> switchyard_bench::Result<Vec<switchyard_bench::BenchRow>> {
    use switchyard_bench::layer::{ab_rows, Variant};
    let variants = [
        Variant::BEFORE,
        Variant {
            plain_backward: true,
            recycle: false,
            ..Variant::CURRENT
        },
        Variant {
            recycle: false,
            ..Variant::CURRENT
        },
        Variant::CURRENT,
    ];
    let reps = opts.reps.unwrap_or(if opts.quick { 2 } else { 5 }).max(1);
    let mut rows = Vec::new();
    for &threads in &opts.threads {
        for name in &opts.configs {
            let s = switchyard_bench::shapes::named(name, opts.quick)
                .ok_or_else(|| switchyard_bench::BenchError::UnknownConfig(name.clone()))?;
            let r = switchyard_bench::timing::with_threads(threads, || {
                ab_rows(&s, threads, reps, opts.mem, &variants)
            })??;
            eprint!("{}", format_table(&r));
            rows.extend(r);
        }
    }
    Ok(rows)
}
