//! End-to-end on a tiny LM whose routing is known (hash router) and on a learned router:
//! traces record what the model did, round-trip through safetensors, and replay bit-exactly.

use candle_core::{DType, Device};
use switchyard_analyze::{metrics, trace, AnalyzeOptions};
use switchyard_core::router::HashRouter;
use switchyard_core::router::{HashConfig, TopKConfig};
use switchyard_core::{ExpertSpec, MoeConfig, ParamBuilder, ParamStore, RouterConfig};
use switchyard_data::{Batch, ByteTokenizer};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, MoeLm};

fn tiny_lm(router: RouterConfig) -> MoeLm {
    let moe = MoeConfig {
        d_model: 16,
        experts: vec![ExpertSpec::swiglu(8); 4],
        router,
        ..Default::default()
    };
    let cfg = LmConfig {
        vocab_size: 259,
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        max_seq_len: 32,
        ffn: FfnConfig {
            sparse: LayerFfn::Moe(moe),
            moe_every: 1,
            first_dense: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let store = ParamStore::new();
    MoeLm::new(
        &ParamBuilder::new(&store, 1, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap()
}

fn batches() -> (Vec<Batch>, Vec<String>) {
    let text_a = b"abcabcabcabcabcabcabcabc";
    let text_b = b"0123456789012345678901234";
    let mk = |off: usize| {
        let mut inputs = Vec::new();
        let mut domains = Vec::new();
        for row in 0..2 {
            let (t, d) = if row == 0 {
                (&text_a[..], 0)
            } else {
                (&text_b[..], 1)
            };
            inputs.extend(t[off..off + 16].iter().map(|&b| b as u32));
            domains.extend(std::iter::repeat_n(d, 16));
        }
        let targets = inputs.iter().map(|x| x + 1).collect();
        Batch {
            batch_size: 2,
            seq_len: 16,
            inputs,
            targets,
            domains,
        }
    };
    (vec![mk(0), mk(3)], vec!["letters".into(), "digits".into()])
}

#[test]
fn hash_routed_trace_matches_the_hash_and_the_metrics_follow() {
    let model = tiny_lm(RouterConfig::Hash(HashConfig { seed: 5 }));
    let (b, names) = batches();
    let tr = trace::record(&model, &b, &names).unwrap();
    assert_eq!(tr.layers.len(), 2);
    let h = HashRouter::new(HashConfig { seed: 5 }, 4);
    let mut want = vec![vec![0u64; 4]; 2];
    for (n, &id) in tr.token_ids.iter().enumerate() {
        assert_eq!(
            tr.layers[0].experts_of(n).collect::<Vec<_>>(),
            vec![h.expert_of(id)]
        );
        want[tr.domains[n] as usize][h.expert_of(id)] += 1;
    }
    let m = metrics::layer_metrics(&tr, &tr.layers[0]);
    assert_eq!(m.domain_expert, want);
    assert_eq!(m.nmi, metrics::nmi(&want));
    assert!(m.entropy.abs() < 1e-6, "one-hot routing has zero entropy");
}

#[test]
fn trace_round_trips_and_replays_bit_exactly() {
    let model = tiny_lm(RouterConfig::TopK(TopKConfig { k: 2 }));
    let (b, names) = batches();
    let tr = trace::record(&model, &b, &names).unwrap();
    let dir = std::env::temp_dir().join(format!("sy-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.safetensors");
    trace::save(&tr, &path).unwrap();
    let back = trace::load(&path).unwrap();
    assert_eq!(back, tr);
    let replayed = trace::replay_logits(&model, &back).unwrap();
    for (bi, batch) in b.iter().enumerate() {
        let ids = candle_core::Tensor::from_slice(&batch.inputs, (2, 16), &Device::Cpu).unwrap();
        let fresh = model
            .forward(&ids, &mut switchyard_models::LmCtx::new(false, 0))
            .unwrap()
            .logits;
        let a = fresh.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let r = replayed[bi]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            a.iter().zip(&r).all(|(x, y)| x.to_bits() == y.to_bits()),
            "batch {bi} logits differ"
        );
    }
    // a corrupted trace is rejected with the path in the message
    std::fs::write(&path, b"not a trace").unwrap();
    let err = trace::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("trace.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );
}

#[test]
fn replay_really_forces_the_routing() {
    // route everything in layer 0 of the trace to expert 3: the logits must change
    let model = tiny_lm(RouterConfig::TopK(TopKConfig { k: 1 }));
    let (b, names) = batches();
    let mut tr = trace::record(&model, &b, &names).unwrap();
    let before = trace::replay_logits(&model, &tr).unwrap();
    for e in tr.layers[0].experts.iter_mut() {
        *e = 3;
    }
    let after = trace::replay_logits(&model, &tr).unwrap();
    let d = (&before[0] - &after[0])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d > 1e-4);
}

#[test]
fn ablation_of_an_expert_nobody_uses_changes_nothing() {
    let model = tiny_lm(RouterConfig::Hash(HashConfig { seed: 5 }));
    let (b, names) = batches();
    let a = switchyard_analyze::ablation::ablate(&model, &b, &names).unwrap();
    let tr = trace::record(&model, &b, &names).unwrap();
    for (la, lt) in a.layers.iter().zip(&tr.layers) {
        let m = metrics::layer_metrics(&tr, lt);
        for e in 0..4 {
            let changed = la.delta[e].iter().any(|d| d.abs() > 0.0);
            // hash routing moves an unavailable expert's tokens to the next one: only experts
            // that received tokens can change the loss
            assert_eq!(
                changed,
                m.load[e] > 0,
                "layer {} expert {e}: load {} delta {:?}",
                lt.layer,
                m.load[e],
                la.delta[e]
            );
        }
    }
}

#[test]
fn analyze_writes_every_output() {
    let model = tiny_lm(RouterConfig::TopK(TopKConfig { k: 2 }));
    let (b, names) = batches();
    let dir = std::env::temp_dir().join(format!("sy-analyze-{}", std::process::id()));
    let s = switchyard_analyze::analyze(
        &model,
        &b,
        &names,
        &ByteTokenizer,
        &AnalyzeOptions::new(&dir),
    )
    .unwrap();
    for p in [&s.report, &s.trace, &s.metrics_json] {
        assert!(p.exists(), "{p:?}");
    }
    assert!(s.plots.iter().any(|p| p.extension().unwrap() == "png"));
    for p in &s.plots {
        assert!(std::fs::metadata(p).unwrap().len() > 100, "{p:?} is empty");
    }
    let html = std::fs::read_to_string(&s.report).unwrap();
    assert!(html.contains("<svg") && html.contains("Token view"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "report must not fetch anything"
    );
    let tables = switchyard_analyze::report::terminal_tables(&s);
    assert!(tables.contains("NMI") && tables.contains("letters"));
}
