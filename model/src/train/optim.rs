//! `torch.optim.AdamW` on named candle [`Var`]s, with state that can be saved and restored for `--resume`.
//!
//! candle-nn's own `AdamW` is numerically identical but keeps its moments in private fields (so training
//! cannot be resumed) and has no notion of names or frozen parameters; this one has both. It reproduces
//! torch's single-tensor CPU path operation by operation in f32 (fixture README §1):
//!
//! ```text
//! p     = p * (1 - lr*wd)                                   # decoupled weight decay first
//! m     = lerp(m, g, 1-β1)      = m + (1-β1)·(g - m)
//! v     = v*β2 + ((1-β2)·g)·g                               # addcmul
//! denom = sqrt(v) / sqrt(1 - β2^t) + eps                    # true division by the bias correction
//! p     = p + ((-lr / (1 - β1^t))·m) / denom                # addcdiv
//! ```
//!
//! Scalars are formed in f64 and rounded to f32 once, as torch does with Python floats. The first step is
//! bit-exact against torch (checked on all 1,230 tensors of tiny LoGoNet). From the second step on torch's
//! vectorised `lerp` uses a fused multiply-add, which this (unfused) version can differ from by 1 ulp in `m`.
//!
//! Running BatchNorm statistics live in the same `VarMap` as the parameters; every variable whose name ends in
//! `running_mean`, `running_var` or `num_batches_tracked` is skipped (see [`is_buffer_name`]).

use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The hyper-parameters of AdamW, with torch's defaults except weight decay (1e-5, as the reference).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-4, the reference's `--optim_lr`).
    pub lr: f64,
    /// β1 (default 0.9).
    pub beta1: f64,
    /// β2 (default 0.999).
    pub beta2: f64,
    /// ε added to the denominator (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay (default 1e-5, the reference's `--reg_weight`).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-5,
        }
    }
}

/// Whether a variable name is a BatchNorm running-statistics buffer, never touched by an optimizer.
pub fn is_buffer_name(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

/// Per-parameter state: the number of updates and the two moments (same shape and device as the parameter).
#[derive(Clone, Debug)]
struct ParamState {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over a set of named variables.
pub struct AdamW {
    config: AdamWConfig,
    params: BTreeMap<String, Var>,
    frozen: BTreeSet<String>,
    state: HashMap<String, ParamState>,
}

impl AdamW {
    /// An optimizer over `named` variables. Buffers ([`is_buffer_name`]) and non-float variables are skipped.
    pub fn new(
        named: impl IntoIterator<Item = (String, Var)>,
        config: AdamWConfig,
    ) -> Result<Self> {
        if !(config.lr >= 0.0 && config.eps >= 0.0 && config.weight_decay >= 0.0) {
            return Err(Error::invalid(
                "AdamW",
                format!("lr, eps and weight_decay must be >= 0: {config:?}"),
            ));
        }
        if !(0.0..1.0).contains(&config.beta1) || !(0.0..1.0).contains(&config.beta2) {
            return Err(Error::invalid(
                "AdamW",
                format!("betas must be in [0, 1): {config:?}"),
            ));
        }
        let params = named
            .into_iter()
            .filter(|(n, v)| !is_buffer_name(n) && v.dtype().is_float())
            .collect::<BTreeMap<_, _>>();
        Ok(Self {
            config,
            params,
            frozen: BTreeSet::new(),
            state: HashMap::new(),
        })
    }

    /// An optimizer over every trainable variable of a `VarMap`.
    pub fn from_varmap(varmap: &candle_nn::VarMap, config: AdamWConfig) -> Result<Self> {
        let named: Vec<(String, Var)> = match varmap.data().lock() {
            Ok(d) => d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return Err(Error::invalid("AdamW", "variable map lock poisoned")),
        };
        Self::new(named, config)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate (the schedule calls this once per epoch).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Names of the optimised parameters (sorted), frozen ones included.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    /// Number of optimised scalar values (frozen excluded).
    pub fn trainable_elements(&self) -> usize {
        self.params
            .iter()
            .filter(|(n, _)| !self.frozen.contains(*n))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Freezes these parameters: they are never updated and get no state (torch `requires_grad=False`).
    pub fn freeze<S: AsRef<str>>(&mut self, names: impl IntoIterator<Item = S>) {
        for n in names {
            self.frozen.insert(n.as_ref().to_string());
            self.state.remove(n.as_ref());
        }
    }

    /// Whether a parameter is frozen.
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.contains(name)
    }

    /// The number of updates applied to `name` so far (0 when never updated).
    pub fn step_count(&self, name: &str) -> u64 {
        self.state.get(name).map_or(0, |s| s.step)
    }

    /// Back-propagates `loss` and applies one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Applies one AdamW step with the gradients in `grads`. Parameters without a gradient (and frozen
    /// ones) are left alone, with their state, as torch skips `p.grad is None`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.config;
        for (name, var) in &self.params {
            if self.frozen.contains(name) {
                continue;
            }
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_tensor().detach();
            let g = grad.detach().to_dtype(p.dtype())?;
            if g.shape() != p.shape() {
                return Err(Error::invalid(
                    "AdamW::step",
                    format!("gradient {:?} for {:?}: {name}", g.dims(), p.dims()),
                ));
            }
            let st = match self.state.remove(name) {
                Some(s) => s,
                None => ParamState {
                    step: 0,
                    exp_avg: p.zeros_like()?,
                    exp_avg_sq: p.zeros_like()?,
                },
            };
            let step = st.step + 1;
            // p = p * (1 - lr*wd)
            let p = p.affine(1.0 - c.lr * c.weight_decay, 0.0)?;
            // m = lerp(m, g, 1-β1): torch's lerp takes `self + w·(end - self)` for w < 0.5, else
            // `end - (end - self)·(1 - w)`.
            let w = 1.0 - c.beta1;
            let diff = (&g - &st.exp_avg)?;
            let exp_avg = if w < 0.5 {
                (&st.exp_avg + diff.affine(w, 0.0)?)?
            } else {
                (&g - diff.affine(1.0 - w, 0.0)?)?
            };
            // v = v·β2 + ((1-β2)·g)·g
            let exp_avg_sq =
                (st.exp_avg_sq.affine(c.beta2, 0.0)? + (g.affine(1.0 - c.beta2, 0.0)? * &g)?)?;
            let bias_correction1 = 1.0 - c.beta1.powi(step as i32);
            let bias_correction2 = 1.0 - c.beta2.powi(step as i32);
            let step_size = c.lr / bias_correction1;
            let bc2_sqrt =
                Tensor::new(bias_correction2.sqrt() as f32, p.device())?.to_dtype(p.dtype())?;
            let eps = Tensor::new(c.eps as f32, p.device())?.to_dtype(p.dtype())?;
            let denom = exp_avg_sq
                .sqrt()?
                .broadcast_div(&bc2_sqrt)?
                .broadcast_add(&eps)?;
            let update = exp_avg.affine(-step_size, 0.0)?.div(&denom)?;
            let p = (p + update)?;
            var.set(&p)?;
            self.state.insert(
                name.clone(),
                ParamState {
                    step,
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        Ok(())
    }

    /// The optimizer state as named tensors, for a checkpoint: `adamw.exp_avg.<name>`,
    /// `adamw.exp_avg_sq.<name>` (parameter shape) and `adamw.step.<name>` (I64 scalar).
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (name, st) in &self.state {
            out.insert(format!("adamw.exp_avg.{name}"), st.exp_avg.clone());
            out.insert(format!("adamw.exp_avg_sq.{name}"), st.exp_avg_sq.clone());
            out.insert(
                format!("adamw.step.{name}"),
                Tensor::new(st.step as i64, st.exp_avg.device())?,
            );
        }
        Ok(out)
    }

    /// Restores state written by [`AdamW::state_tensors`] (other keys are ignored). Moments whose shape no
    /// longer matches the parameter (e.g. a re-initialised head) are dropped, so those parameters start fresh.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<usize> {
        let mut loaded = 0;
        for (name, var) in &self.params {
            let (Some(m), Some(v), Some(s)) = (
                tensors.get(&format!("adamw.exp_avg.{name}")),
                tensors.get(&format!("adamw.exp_avg_sq.{name}")),
                tensors.get(&format!("adamw.step.{name}")),
            ) else {
                continue;
            };
            if m.shape() != var.shape() || v.shape() != var.shape() || self.frozen.contains(name) {
                continue;
            }
            let step = s.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
            let step =
                step.first()
                    .copied()
                    .filter(|&s| s >= 0)
                    .ok_or_else(|| Error::Checkpoint {
                        msg: format!("optimizer step for {name} must be a non-negative scalar"),
                    })? as u64;
            let (dev, dt) = (var.device(), var.dtype());
            self.state.insert(
                name.clone(),
                ParamState {
                    step,
                    exp_avg: m.to_device(dev)?.to_dtype(dt)?,
                    exp_avg_sq: v.to_device(dev)?.to_dtype(dt)?,
                },
            );
            loaded += 1;
        }
        Ok(loaded)
    }
}
