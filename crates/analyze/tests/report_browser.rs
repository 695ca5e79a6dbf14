//! Opens the HTML report in headless Chromium (Debian's `chromium`, installed by
//! `scripts/test.sh`): the page must render with no console errors, its script must run, and
//! a screenshot is saved next to the report.
//!
//! Set `SWITCHYARD_SKIP_BROWSER=1` to skip on a machine without Chromium; otherwise a missing
//! browser fails the test, so CI cannot pass without really rendering the report.

use std::process::Command;

use candle_core::{DType, Device};
use switchyard_analyze::AnalyzeOptions;
use switchyard_core::router::TopKConfig;
use switchyard_core::{ExpertSpec, MoeConfig, ParamBuilder, ParamStore, RouterConfig};
use switchyard_data::{ByteTokenizer, CorpusConfig, Dataset, DatasetConfig};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, MoeLm};

const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=3000",
];

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|c| c.to_string())
}

#[test]
fn report_renders_in_headless_chromium_without_console_errors() {
    let Some(browser) = chromium() else {
        if std::env::var("SWITCHYARD_SKIP_BROWSER").is_ok() {
            eprintln!("skipping: no chromium and SWITCHYARD_SKIP_BROWSER is set");
            return;
        }
        panic!("chromium not found: run `bash scripts/test.sh` (installs it) or set SWITCHYARD_SKIP_BROWSER=1");
    };
    // a small model on the real corpus, so the report has every section
    let docs = switchyard_data::generate(&CorpusConfig {
        docs_per_domain: 4,
        doc_bytes: 400,
        ..Default::default()
    });
    let data = Dataset::build(
        &docs,
        &ByteTokenizer,
        &DatasetConfig {
            seq_len: 32,
            valid_fraction: 0.25,
            split_seed: 0,
        },
    )
    .unwrap();
    let batches: Vec<_> = data.valid_batches().map(|(_, b)| b).collect();
    let names: Vec<String> = data.domains.names().to_vec();
    // valid batches differ in size per domain; trace each domain's first 2 windows
    let batches: Vec<_> = batches
        .iter()
        .map(|b| {
            let n = 2 * b.seq_len;
            switchyard_data::Batch {
                batch_size: 2,
                seq_len: b.seq_len,
                inputs: b.inputs[..n].to_vec(),
                targets: b.targets[..n].to_vec(),
                domains: b.domains[..n].to_vec(),
            }
        })
        .collect();
    let moe = MoeConfig {
        d_model: 16,
        experts: vec![ExpertSpec::swiglu(8); 4],
        router: RouterConfig::TopK(TopKConfig { k: 2 }),
        ..Default::default()
    };
    let cfg = LmConfig {
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        max_seq_len: 64,
        ffn: FfnConfig {
            sparse: LayerFfn::Moe(moe),
            ..Default::default()
        },
        ..Default::default()
    };
    let store = ParamStore::new();
    let model = MoeLm::new(
        &ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("sy-report-browser-{}", std::process::id()));
    let s = switchyard_analyze::analyze(
        &model,
        &batches,
        &names,
        &ByteTokenizer,
        &AnalyzeOptions::new(&dir),
    )
    .unwrap();

    let profile = dir.join("chrome-profile");
    let url = format!("file://{}", s.report.display());
    let dom = Command::new(&browser)
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the report's script did not finish; DOM starts: {}",
        &dom[..dom.len().min(400)]
    );
    let errors = dom
        .split("<pre id=\"console-errors\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .expect("error box present");
    assert!(errors.trim().is_empty(), "console errors: {errors}");
    // the token view was coloured by the script
    assert!(
        dom.contains("class=\"tok\"") && dom.contains("style=\"background: rgb("),
        "tokens were not coloured"
    );

    let shot = dir.join("report.png");
    let out = Command::new(&browser)
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,2400")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot looks empty ({} bytes)",
        png.len()
    );
    println!("screenshot: {}", shot.display());
}
