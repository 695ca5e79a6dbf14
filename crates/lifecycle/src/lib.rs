//! Expert surgery: pure functions over a model's whole state — the experts' weights, the gate
//! rows that score them, the router buffers (selection biases, gate-in values) **and the
//! AdamW moments** — so that training continues from the result (`train --resume`) or a new
//! run starts from it (`init.from`).
//!
//! Every operation is one call of [`remap_layer`], which builds a layer's new experts from a
//! list of [`NewExpert`]s (keep, copy with noise, weighted mix, fresh), and then adjusts the
//! layer's config. The operations:
//!
//! | operation | what it does | what is preserved |
//! | --- | --- | --- |
//! | [`add_experts`] | new experts at the end, fresh or copied, gate-in 0 | outputs, bitwise, until training opens the gate |
//! | [`split_expert`] | expert `e` and a noisy copy, each with half the routing mass (gate-in ½) | the pair's routing mass |
//! | [`merge_experts`] | usage-weighted average of weights, gate rows, biases and moments | the other experts |
//! | [`prune_experts`] | drops experts; `k` clamped (with a warning) to what is left | the other experts |
//! | [`upcycle`] | every dense FFN copied into `N` experts (+ noise), fresh gate | with `k = N` and no noise, the dense outputs |
//!
//! **Moments.** Kept and copied experts carry their AdamW moments; a mix averages them with
//! the same weights as the weights. A fresh expert starts with a zero first moment and, as
//! its second moment, the mean of the layer's experts of the same architecture (zero if
//! none): with a zero second moment and a parameter whose step count is already large, Adam's
//! bias correction is ≈ 1 and the first updates of the new expert would be ~3–6× larger than
//! the others'. Step counts are per parameter (the layer's packed experts), so they stay.
//!
//! **Gate-in.** An added expert must not change the model until it is trained. Its gate row
//! cannot do that alone (a linear gate has no bias to push its logit to −∞), so each MoE
//! layer has gate-in values `α` per expert (`switchyard_core::MoeLayer::set_gate_in`,
//! stored as the router buffer `model.layers.{i}.block_sparse_moe.gate_in`): the expert's
//! logit is offset by `ln α`, `α = 0` gives exactly zero probability, and every optimiser
//! step raises `α` by `1 / gate_in_steps` until it is 1.
//!
//! ```
//! use switchyard_lifecycle::{add_experts, AddInit, ModelState};
//! use switchyard_models::LmConfig;
//!
//! let cfg = LmConfig::default(); // 2 MoE layers of 8 experts
//! let mut state = ModelState::init(cfg, 7).unwrap();
//! let report = add_experts(&mut state, &[0, 1], 2, &AddInit::Fresh { like: 0 }, 0.0, 1).unwrap();
//! assert_eq!(report.experts_after, vec![10, 10]);
//! assert_eq!(state.model.layer_moe_config(0).unwrap().experts.len(), 10);
//! ```

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use switchyard_core::{ParamBuilder, ParamStore};
use switchyard_models::{LmConfig, MoeLm};

mod error;
mod layer;
mod ops;
mod upcycle;

pub use error::{LifecycleError, Result};
pub use layer::{remap_layer, NewExpert, Source};
pub use ops::{add_experts, merge_experts, prune_experts, split_expert, AddInit, SurgeryReport};
pub use upcycle::{upcycle, UpcycleOptions};

/// Everything a checkpoint holds that expert surgery touches.
#[derive(Clone, Debug)]
pub struct ModelState {
    pub model: LmConfig,
    /// Parameters by store name (`model.safetensors`).
    pub params: BTreeMap<String, Tensor>,
    /// AdamW state: `<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.step`; empty when the
    /// checkpoint has none (an export), and then left empty.
    pub optimizer: BTreeMap<String, Tensor>,
    /// Router buffers by `state.json` key (selection biases, gate-in values).
    pub buffers: BTreeMap<String, Vec<f32>>,
}

impl ModelState {
    /// A freshly initialised model of `cfg` (seeded), without optimiser state; for tests and
    /// examples.
    pub fn init(cfg: LmConfig, seed: u64) -> Result<Self> {
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, seed, DType::F32, &Device::Cpu);
        let model = MoeLm::new(&pb, &cfg)?;
        let params = store
            .all()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        Ok(Self {
            model: cfg,
            params,
            optimizer: BTreeMap::new(),
            buffers: switchyard_io::router_buffers(&model),
        })
    }

    /// Builds the model this state describes: its parameters and router buffers loaded.
    pub fn build(&self) -> Result<MoeLm> {
        let store = ParamStore::new();
        for (name, t) in &self.params {
            store.insert(name, candle_core::Var::from_tensor(t)?);
        }
        let pb = ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu);
        let mut model = MoeLm::new(&pb, &self.model)?;
        let expected = store.num_params();
        let given: usize = self.params.values().map(|t| t.elem_count()).sum();
        if expected != given {
            return Err(LifecycleError::Inconsistent(format!(
                "the model of this config has {expected} parameters, the state {given}"
            )));
        }
        switchyard_io::load_router_buffers(&mut model, &self.buffers)
            .map_err(LifecycleError::Inconsistent)?;
        Ok(model)
    }
}

/// Prefix of MoE layer `i`'s parameters.
pub fn moe_prefix(layer: usize) -> String {
    format!("model.layers.{layer}.block_sparse_moe")
}
