//! Training checkpoints: everything needed to continue a run exactly where it stopped (`--resume`).
//!
//! One `.safetensors` file, written atomically (temporary file, fsync, rename), holding
//! * `model.<name>`: every network variable under its reference state-dict name, BatchNorm running statistics
//!   included;
//! * `adamw.exp_avg.<name>`, `adamw.exp_avg_sq.<name>`, `adamw.step.<name>`: the optimizer moments;
//! * the header metadata key [`META_KEY`]: JSON [`CheckpointMeta`] with the network and training configuration,
//!   the schedule's position, the next epoch (the loader's RNG streams are a function of seed and epoch, so
//!   this is the whole RNG state), the global step and the best validation Dice so far.

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Metadata key of a training checkpoint.
pub const META_KEY: &str = "logonet.train_checkpoint";
/// Current checkpoint format version.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of the network tensors in a checkpoint.
pub const MODEL_PREFIX: &str = "model.";

/// The JSON part of a training checkpoint.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The network configuration (`crate::nets::NetConfig` JSON).
    pub net: serde_json::Value,
    /// The training configuration (`super::trainer::TrainConfig` JSON).
    pub train: serde_json::Value,
    /// The schedule with its position.
    pub schedule: super::schedule::LrSchedule,
    /// The next epoch to run.
    pub next_epoch: usize,
    /// Optimizer steps taken so far.
    pub global_step: u64,
    /// Best mean validation Dice so far and its epoch.
    pub best: Option<(f64, usize)>,
}

/// A training checkpoint in memory (CPU tensors).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The description.
    pub meta: CheckpointMeta,
    /// Network tensors by reference name (no prefix).
    pub model: HashMap<String, Tensor>,
    /// Optimizer state tensors (`adamw.*`).
    pub optimizer: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_string(&self.meta).map_err(|e| Error::Checkpoint {
            msg: format!("cannot encode metadata: {e}"),
        })?;
        let mut named: Vec<(String, Tensor)> =
            Vec::with_capacity(self.model.len() + self.optimizer.len());
        for (k, t) in &self.model {
            named.push((
                format!("{MODEL_PREFIX}{k}"),
                t.to_device(&Device::Cpu)?.contiguous()?,
            ));
        }
        for (k, t) in &self.optimizer {
            named.push((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        safetensors::serialize(
            named.iter().map(|(k, t)| (k.as_str(), t)),
            Some(HashMap::from([(META_KEY.to_string(), json)])),
        )
        .map_err(|e| Error::Checkpoint {
            msg: format!("cannot serialise tensors: {e}"),
        })
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::error::write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::io("cannot read training checkpoint", e, path))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(format!("not a safetensors file ({e})"), path))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| {
                Error::format(
                    format!("no '{META_KEY}' metadata: not a training checkpoint"),
                    path,
                )
            })?;
        let meta: CheckpointMeta = serde_json::from_str(json)
            .map_err(|e| Error::format(format!("bad checkpoint metadata ({e})"), path))?;
        if meta.format_version > FORMAT_VERSION {
            return Err(Error::format(
                format!(
                    "checkpoint format {} is newer than this program ({FORMAT_VERSION})",
                    meta.format_version
                ),
                path,
            ));
        }
        let all = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| Error::format(format!("bad tensors ({e})"), path))?;
        let mut model = HashMap::new();
        let mut optimizer = HashMap::new();
        for (k, t) in all {
            match k.strip_prefix(MODEL_PREFIX) {
                Some(name) => {
                    model.insert(name.to_string(), t);
                }
                None => {
                    optimizer.insert(k, t);
                }
            }
        }
        Ok(Self {
            meta,
            model,
            optimizer,
        })
    }
}

/// The network variables of a `VarMap` as CPU tensors by name (a state dict): a snapshot, owning its
/// storage. (`detach` and a CPU → CPU `to_device` share the variable's storage, which the optimizer and
/// BatchNorm update in place, so without the copy a state dict taken before training would silently follow
/// the live weights.)
pub fn state_dict(varmap: &candle_nn::VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().map_err(|_| Error::Checkpoint {
        msg: "variable map lock poisoned".into(),
    })?;
    let mut out = HashMap::with_capacity(data.len());
    for (k, v) in data.iter() {
        let t = v.as_tensor().detach();
        let t = if t.device().is_cpu() {
            t.copy()?
        } else {
            t.to_device(&Device::Cpu)?
        };
        out.insert(k.clone(), t);
    }
    Ok(out)
}

/// What [`load_weights`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables set from the source.
    pub loaded: Vec<String>,
    /// Variables left at their initial value because the source's shape differs (e.g. a new class count).
    pub shape_mismatch: Vec<String>,
    /// Variables the source does not have.
    pub missing: Vec<String>,
    /// Source tensors with no variable of that name.
    pub unused: Vec<String>,
}

/// Copies `source` tensors into the `VarMap`'s variables of the same name and shape (the reference's
/// fine-tuning: "load every key except those whose shape mismatches"). dtype and device follow the variable.
pub fn load_weights(
    varmap: &candle_nn::VarMap,
    source: &HashMap<String, Tensor>,
) -> Result<LoadReport> {
    let data = varmap.data().lock().map_err(|_| Error::Checkpoint {
        msg: "variable map lock poisoned".into(),
    })?;
    let mut report = LoadReport::default();
    for (name, var) in data.iter() {
        match source.get(name) {
            None => report.missing.push(name.clone()),
            Some(t) if t.shape() != var.shape() => report.shape_mismatch.push(name.clone()),
            Some(t) => {
                var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
                report.loaded.push(name.clone());
            }
        }
    }
    report.unused = source
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    for v in [
        &mut report.loaded,
        &mut report.shape_mismatch,
        &mut report.missing,
        &mut report.unused,
    ] {
        v.sort();
    }
    Ok(report)
}

/// Initial weights for fine-tuning, read by [`read_initial_weights`].
#[derive(Clone, Debug)]
pub struct InitialWeights {
    /// Network tensors by reference name.
    pub tensors: HashMap<String, Tensor>,
    /// What the file was ("bundle 'name'", "training checkpoint at epoch 12", ...).
    pub source: String,
    /// Tensors of a pre-training projection head (`pre_train_proj.*`) that were dropped.
    pub dropped_head: usize,
}

/// Reads the starting weights of a fine-tuning run from `path` (a `.safetensors` file, or a folder holding
/// `model.safetensors`): a model bundle, a training checkpoint (its network part), a `logonet pretrain`
/// checkpoint (its projection head [`crate::pretrain::finetune::HEAD_PREFIX`] dropped, the trunk kept) or a
/// plain state dict under reference names (`logonet convert` output).
pub fn read_initial_weights(path: &Path) -> Result<InitialWeights> {
    let file = crate::infer::bundle::resolve_path(path);
    if let Ok(b) = crate::infer::Bundle::load(&file) {
        return Ok(InitialWeights {
            tensors: b.tensors,
            source: format!("bundle '{}'", b.meta.name),
            dropped_head: 0,
        });
    }
    if let Ok(c) = Checkpoint::load(&file) {
        return Ok(InitialWeights {
            tensors: c.model,
            source: format!("training checkpoint at epoch {}", c.meta.next_epoch),
            dropped_head: 0,
        });
    }
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu)
        .map_err(|e| Error::format(format!("cannot read initial weights ({e})"), &file))?;
    let head = crate::pretrain::finetune::HEAD_PREFIX;
    let before = tensors.len();
    tensors.retain(|k, _| !k.starts_with(head));
    let dropped_head = before - tensors.len();
    let source = if dropped_head > 0 {
        format!(
            "pre-training checkpoint (projection head '{head}*': {dropped_head} tensors dropped)"
        )
    } else {
        "state dict".to_string()
    };
    Ok(InitialWeights {
        tensors,
        source,
        dropped_head,
    })
}
