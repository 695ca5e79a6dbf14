//! Loss values and gradients against PyTorch: `scripts/reference/losses.py` wrote
//! `scripts/reference/losses.json` (inputs, values, autograd gradients).

use candle_core::{Device, Tensor, Var};
use serde_json::Value;
use switchyard_core::losses;
use switchyard_core::router::top_k;

const TOL: f64 = 1e-10;

fn mat(v: &Value) -> (Vec<f64>, usize, usize) {
    let rows = v.as_array().unwrap();
    let cols = rows[0].as_array().unwrap().len();
    let flat = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    (flat, rows.len(), cols)
}

fn var(v: &Value) -> Var {
    let (d, r, c) = mat(v);
    Var::from_tensor(&Tensor::from_vec(d, (r, c), &Device::Cpu).unwrap()).unwrap()
}

fn close(name: &str, got: &Tensor, want: &Value) {
    let got = got.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (want, _, _) = mat(want);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= TOL * (1.0 + w.abs()),
            "{name}[{i}]: {g} vs torch {w}"
        );
    }
}

#[test]
fn losses_match_pytorch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/reference/losses.json"
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let k = c["k"].as_u64().unwrap() as usize;
        let logits = var(&c["logits"]);
        let noisy = var(&c["noisy_logits"]);
        let std = var(&c["noise_std"]);
        let (t, e) = logits.dims2().unwrap();
        let l = logits.as_tensor().to_vec2::<f64>().unwrap();
        let mut counts = vec![0usize; e];
        for row in &l {
            for x in top_k(row, k, 0..e) {
                counts[x] += 1;
            }
        }
        let probs = candle_nn::ops::softmax(logits.as_tensor(), 1).unwrap();
        let lb = losses::switch_balance(&probs, &counts, k).unwrap();
        let z = losses::z_loss(logits.as_tensor()).unwrap();
        // importance: softmax over each row's top-k noisy logits, zeros elsewhere
        let nv = noisy.as_tensor().to_vec2::<f64>().unwrap();
        let mut mask = vec![0f64; t * e];
        for (tok, row) in nv.iter().enumerate() {
            for x in top_k(row, k, 0..e) {
                mask[tok * e + x] = 1.0;
            }
        }
        let mask = Tensor::from_vec(mask, (t, e), &Device::Cpu).unwrap();
        let m = noisy.as_tensor().max_keepdim(1).unwrap().detach();
        let ex = (noisy.as_tensor().broadcast_sub(&m).unwrap().exp().unwrap() * mask).unwrap();
        let gates = ex.broadcast_div(&ex.sum_keepdim(1).unwrap()).unwrap();
        let imp = losses::importance(&gates).unwrap();
        let load = losses::load(logits.as_tensor(), noisy.as_tensor(), std.as_tensor(), k).unwrap();
        for (what, got) in [
            ("switch_lb", &lb),
            ("z_loss", &z),
            ("importance", &imp),
            ("load", &load),
        ] {
            let g = got.to_scalar::<f64>().unwrap();
            let w = c[what].as_f64().unwrap();
            assert!(
                (g - w).abs() <= TOL * (1.0 + w.abs()),
                "case {name} {what}: {g} vs torch {w}"
            );
        }
        let g = lb.backward().unwrap();
        close(
            "grad_switch_lb_logits",
            g.get(logits.as_tensor()).unwrap(),
            &c["grad_switch_lb_logits"],
        );
        let g = z.backward().unwrap();
        close(
            "grad_z_loss_logits",
            g.get(logits.as_tensor()).unwrap(),
            &c["grad_z_loss_logits"],
        );
        let g = imp.backward().unwrap();
        let gi = g
            .get(noisy.as_tensor())
            .cloned()
            .unwrap_or(noisy.as_tensor().zeros_like().unwrap());
        close(
            "grad_importance_noisy_logits",
            &gi,
            &c["grad_importance_noisy_logits"],
        );
        let g = load.backward().unwrap();
        close(
            "grad_load_logits",
            g.get(logits.as_tensor()).unwrap(),
            &c["grad_load_logits"],
        );
        close(
            "grad_load_noise_std",
            g.get(std.as_tensor()).unwrap(),
            &c["grad_load_noise_std"],
        );
    }
}
