//! Router buffers (non-gradient state such as aux-loss-free selection biases) as they are
//! stored in `state.json`, so the trainer, an import and the loader read and write them alike.

use std::collections::BTreeMap;

use switchyard_models::{ffn::Ffn, MoeLm};

/// Name of a router buffer in `state.json`: `model.layers.{i}.block_sparse_moe.router.{name}`,
/// next to the layer's parameters.
pub fn buffer_key(layer: usize, name: &str) -> String {
    format!("model.layers.{layer}.block_sparse_moe.router.{name}")
}

/// Every router buffer of the model, by key.
pub fn router_buffers(model: &MoeLm) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    for (i, block) in model.layers.iter().enumerate() {
        if let Ffn::Moe(m) = &block.ffn {
            for (name, values) in m.router.buffers() {
                out.insert(buffer_key(i, &name), values);
            }
        }
    }
    out
}

/// Restores router buffers saved by [`router_buffers`]; every buffer the model has must be
/// present and nothing else. On error the message lists every problem.
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
        let known = router_buffers(model);
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
