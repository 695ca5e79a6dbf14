//! Named, deterministically initialised parameters.
//!
//! candle-nn's `VarMap` initialises from the device RNG, which is not seeded on CPU; Switchyard
//! promises bitwise-reproducible runs, so parameters are created here from a ChaCha stream.
//! The store keeps names in sorted order (a `BTreeMap`), which fixes the optimiser's and the
//! checkpoint's iteration order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::Result;

/// How a parameter starts.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    Zeros,
    Ones,
    /// Normal(0, std).
    Normal(f64),
    /// Uniform(-bound, bound); `Uniform(1/sqrt(fan_in))` is PyTorch's `nn.Linear` default.
    Uniform(f64),
}

/// A shared map from dotted parameter names to `Var`s.
#[derive(Clone, Default)]
pub struct ParamStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// All parameters in name order.
    pub fn all(&self) -> Vec<(String, Var)> {
        let vars = self.vars.lock().expect("param store poisoned");
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn get(&self, name: &str) -> Option<Var> {
        self.vars
            .lock()
            .expect("param store poisoned")
            .get(name)
            .cloned()
    }

    pub fn insert(&self, name: &str, var: Var) {
        self.vars
            .lock()
            .expect("param store poisoned")
            .insert(name.to_string(), var);
    }

    pub fn num_params(&self) -> usize {
        self.all().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// Creates parameters under a name prefix, drawing initial values from one seeded stream.
#[derive(Clone)]
pub struct ParamBuilder {
    store: ParamStore,
    prefix: String,
    rng: Arc<Mutex<ChaCha8Rng>>,
    pub dtype: DType,
    pub device: Device,
}

impl ParamBuilder {
    pub fn new(store: &ParamStore, seed: u64, dtype: DType, device: &Device) -> Self {
        Self {
            store: store.clone(),
            prefix: String::new(),
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
            dtype,
            device: device.clone(),
        }
    }

    /// A builder whose names are prefixed by `name.`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{}", self.prefix, leaf)
        }
    }

    /// Host values for a fresh parameter, drawn from this builder's stream.
    pub fn sample(&self, n: usize, init: Init) -> Vec<f64> {
        let mut rng = self.rng.lock().expect("param rng poisoned");
        (0..n)
            .map(|_| match init {
                Init::Zeros => 0.0,
                Init::Ones => 1.0,
                Init::Normal(std) => std * rng.sample::<f64, _>(StandardNormal),
                Init::Uniform(b) => rng.random_range(-b..=b),
            })
            .collect()
    }

    /// Creates (or, if the name exists, returns) a parameter.
    pub fn var(&self, leaf: &str, shape: &[usize], init: Init) -> Result<Var> {
        // An existing parameter (e.g. pre-filled from an imported checkpoint) is returned
        // before drawing: a large model would otherwise sample every weight just to drop it.
        if let Some(v) = self.existing(leaf) {
            return Ok(v);
        }
        let n: usize = shape.iter().product();
        self.var_from(leaf, shape, self.sample(n, init))
    }

    /// The parameter `leaf` under this prefix, if the store already holds it.
    pub fn existing(&self, leaf: &str) -> Option<Var> {
        self.store.get(&self.name(leaf))
    }

    /// Creates a parameter from explicit host values.
    pub fn var_from(&self, leaf: &str, shape: &[usize], values: Vec<f64>) -> Result<Var> {
        let name = self.name(leaf);
        if let Some(v) = self.store.get(&name) {
            return Ok(v);
        }
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        let var = Var::from_tensor(&t)?;
        self.store.insert(&name, var.clone());
        Ok(var)
    }
}
