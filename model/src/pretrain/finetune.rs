//! Fine-tuning from a pre-trained checkpoint: the projection head (`pre_train_proj.*`) is dropped and every
//! other tensor whose name and shape match a variable of the segmentation network is copied into it (the
//! trunk: `van.*` and the eight `van{i}_{j}_{k}.*` local nets of LoGoNet, or ULKANet's encoder and decoder).
//! Tensors whose shape differs (e.g. an output head with another class count) are skipped and reported.

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Prefix of the projection head's parameters in a pre-training checkpoint.
pub const HEAD_PREFIX: &str = "pre_train_proj.";

/// What [`load_pretrained_trunk`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrunkLoadReport {
    /// Variables of the target that were overwritten.
    pub loaded: BTreeSet<String>,
    /// Checkpoint tensors of the head, dropped.
    pub dropped_head: usize,
    /// Names present in both whose shapes differ (skipped): (name, checkpoint shape, target shape).
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Checkpoint tensors (not the head's) with no variable of that name in the target.
    pub unused: BTreeSet<String>,
    /// Target variables left as they were (no tensor in the checkpoint, or a shape mismatch).
    pub untouched: BTreeSet<String>,
}

/// Copies every non-head tensor of `pretrained` with a matching name and shape into `target`.
pub fn load_pretrained_trunk(
    pretrained: &HashMap<String, Tensor>,
    target: &VarMap,
) -> Result<TrunkLoadReport> {
    let mut report = TrunkLoadReport::default();
    let data = target.data().lock().map_err(|_| Error::Checkpoint {
        msg: "variable map lock poisoned".into(),
    })?;
    for (name, t) in pretrained {
        if name.starts_with(HEAD_PREFIX) {
            report.dropped_head += 1;
            continue;
        }
        match data.get(name) {
            None => {
                report.unused.insert(name.clone());
            }
            Some(var) if var.dims() != t.dims() => {
                report
                    .shape_mismatch
                    .push((name.clone(), t.dims().to_vec(), var.dims().to_vec()));
            }
            Some(var) => {
                let src = t.to_dtype(var.dtype())?.to_device(var.device())?;
                var.set(&src)?;
                report.loaded.insert(name.clone());
            }
        }
    }
    for name in data.keys() {
        if !report.loaded.contains(name) {
            report.untouched.insert(name.clone());
        }
    }
    report.shape_mismatch.sort();
    Ok(report)
}

/// Reads a pre-training checkpoint (safetensors) and loads its trunk into `target`.
pub fn load_pretrained_trunk_file(path: &Path, target: &VarMap) -> Result<TrunkLoadReport> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::format(format!("cannot read pre-training checkpoint: {e}"), path))?;
    let report = load_pretrained_trunk(&tensors, target)?;
    if report.loaded.is_empty() {
        return Err(Error::format(
            "no tensor of the checkpoint matches the network",
            path,
        ));
    }
    Ok(report)
}
