//! Router buffers (non-gradient state such as aux-loss-free selection biases) as they are
//! stored in `state.json`, so the trainer, an import and the loader read and write them alike.

use std::collections::BTreeMap;

use switchyard_models::{ffn::Ffn, MoeLm};

/// Name of a router buffer in `state.json`: `model.layers.{i}.block_sparse_moe.router.{name}`,
/// next to the layer's parameters.
pub fn buffer_key(layer: usize, name: &str) -> String {
    format!("model.layers.{layer}.block_sparse_moe.router.{name}")
}

/// Name of a layer's gate-in values in `state.json` (see `MoeLayer::set_gate_in`), saved
/// only while an added expert is still entering routing.
pub fn gate_in_key(layer: usize) -> String {
    format!("model.layers.{layer}.block_sparse_moe.gate_in")
}

/// Every router buffer of the model, by key (with each layer's gate-in values while some
/// expert is entering routing).
pub fn router_buffers(model: &MoeLm) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    for (i, block) in model.layers.iter().enumerate() {
        if let Ffn::Moe(m) = &block.ffn {
            for (name, values) in m.router.buffers() {
                out.insert(buffer_key(i, &name), values);
            }
            if let Some(a) = m.gate_in() {
                out.insert(gate_in_key(i), a.to_vec());
            }
        }
    }
    out
}

/// Restores router buffers saved by [`router_buffers`]; every buffer the model has must be
/// present and nothing else (a layer's gate-in values are optional: absent, every expert
/// is fully in). On error the message lists every problem.
pub fn load_router_buffers(
    model: &mut MoeLm,
    saved: &BTreeMap<String, Vec<f32>>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut used = 0;
    for (i, block) in model.layers.iter_mut().enumerate() {
        let Ffn::Moe(m) = &mut block.ffn else {
            continue;
        };
        let gate_in = saved.get(&gate_in_key(i));
        used += usize::from(gate_in.is_some());
        if let Err(e) = m.set_gate_in(gate_in.cloned()) {
            problems.push(format!("`{}`: {e}", gate_in_key(i)));
        }
        for (name, _) in m.router.buffers() {
            let key = buffer_key(i, &name);
            match saved.get(&key) {
                None => problems.push(format!("missing router buffer `{key}`")),
                Some(values) => {
                    used += 1;
                    if let Err(e) = m.router.load_buffer(&name, values) {
                        problems.push(format!("`{key}`: {e}"));
                    }
                }
            }
        }
    }
    if used < saved.len() {
        let mut known = router_buffers(model);
        for (i, block) in model.layers.iter().enumerate() {
            if matches!(block.ffn, Ffn::Moe(_)) {
                known.insert(gate_in_key(i), Vec::new());
            }
        }
        problems.extend(
            saved
                .keys()
                .filter(|k| !known.contains_key(*k))
                .map(|k| format!("unexpected router buffer `{k}`")),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "router buffers do not match: {}",
            problems.join("; ")
        ))
    }
}
