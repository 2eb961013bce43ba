//! `ClusteringLoss2` (reference `pretrain/losses/loss.py`): cross-entropy of the head's logits against k-means
//! pseudo-labels with temperature 10, over masked slices only.
//!
//! `p = softmax(0.1 · logits, dim = K)`, loss = mean over the selected (b, z, c) of `−log p[target]`, where the
//! selection is every (b, z) with `mask[b, z] = 1` and every clusterer c (all (b, z, c) without a mask).
//!
//! Differences from the reference, on purpose:
//! * the reference reshapes the selected entries to `(B, −1, C, K)`, so with B > 1 every sample must have the
//!   same number of masked slices (it raises otherwise); here the masked mean is taken over all selected
//!   entries, which equals the reference whenever the reference runs;
//! * with C = 1 the reference's `squeeze()` drops the cluster axis and the mask broadcasts wrongly, so its
//!   "masked" loss equals the unmasked mean; here the logits are always `[B, Z, C, K]` and the masked mean is
//!   the true one.

use crate::{Error, Result};
use candle_core::{D, DType, Tensor};

/// The temperature factor of `ClusteringLoss2` (`0.1 · logits`).
pub const LOGIT_SCALE: f64 = 0.1;

/// `ClusteringLoss2` for logits `[B, Z, C, K]`, integer targets `[B, Z, C]` (any integer dtype, values in
/// `0..K`) and an optional 0/1 mask vector `[B, Z]`. Returns a scalar in the logits' dtype, differentiable
/// with respect to the logits. With a mask that selects nothing the loss is 0 (the reference would give NaN).
pub fn clustering_loss(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, z, c, k) = logits.dims4()?;
    if targets.dims() != [b, z, c] {
        return Err(Error::invalid(
            "clustering_loss",
            format!(
                "targets have shape {:?}, expected [{b}, {z}, {c}] for logits {:?}",
                targets.dims(),
                logits.dims()
            ),
        ));
    }
    if !targets.dtype().is_int() {
        return Err(Error::invalid(
            "clustering_loss",
            format!("targets must be integers, got {:?}", targets.dtype()),
        ));
    }
    let max_target = targets
        .flatten_all()?
        .to_dtype(DType::I64)?
        .max(0)?
        .to_scalar::<i64>()?;
    let min_target = targets
        .flatten_all()?
        .to_dtype(DType::I64)?
        .min(0)?
        .to_scalar::<i64>()?;
    if min_target < 0 || max_target >= k as i64 {
        return Err(Error::invalid(
            "clustering_loss",
            format!("targets must lie in 0..{k}, got {min_target}..={max_target}"),
        ));
    }
    let log_p = candle_nn::ops::log_softmax(&(logits * LOGIT_SCALE)?, D::Minus1)?; // [B, Z, C, K]
    let idx = targets.to_dtype(DType::U32)?.unsqueeze(3)?; // [B, Z, C, 1]
    let nll = log_p.gather(&idx, 3)?.squeeze(3)?.neg()?; // [B, Z, C]
    match mask {
        None => Ok(nll.mean_all()?),
        Some(m) => {
            if m.dims() != [b, z] {
                return Err(Error::invalid(
                    "clustering_loss",
                    format!("mask has shape {:?}, expected [{b}, {z}]", m.dims()),
                ));
            }
            let m = m.to_dtype(logits.dtype())?; // [B, Z]
            let count = m.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? * c as f64;
            let total = nll.broadcast_mul(&m.unsqueeze(2)?)?.sum_all()?; // []
            Ok((total / count.max(1.0))?)
        }
    }
}
