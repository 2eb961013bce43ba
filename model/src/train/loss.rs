//! Segmentation losses with MONAI 1.6.1 semantics: `DiceLoss`, `CrossEntropyLoss` and `DiceCELoss`, as the
//! reference trains with `DiceCELoss(to_onehot_y=True, softmax=True)` (`BTCV/main.py`).
//!
//! All functions take logits `[B, C, D, H, W]` and a label map `[B, 1, D, H, W]` (any integer or float dtype
//! holding class indices `0..C`), are built from differentiable candle ops and return a tensor that can be
//! back-propagated. Semantics (checked against `tests/fixtures/pipeline/dice_ce_loss`):
//!
//! * Dice: `p = softmax(logits, 1)`, `g = one_hot(label, C)`; per (b, c) `tp = Σ p·g`, `fp = Σ p − tp`,
//!   `fn = Σ g − tp` over the spatial axes (and over the batch too with `batch = true`);
//!   `f = 1 − (2·tp + smooth_nr) / (2·(tp + ½fp + ½fn) + smooth_dr)`. `include_background = false` drops channel
//!   0 *after* the softmax. An empty class does not give 0 loss: f ≈ 1 − 1e-5/(Σp + 1e-5).
//! * CE: `nn.CrossEntropyLoss()` on the raw logits (no softmax first), the mean over all B·D·H·W voxels.
//! * DiceCE: `lambda_dice · dice + lambda_ce · ce`.

use crate::{Error, Result};
use candle_core::{D, DType, Tensor};

/// How the per-(batch, class) Dice values are reduced (MONAI `LossReduction`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// The mean over all entries (MONAI default).
    #[default]
    Mean,
    /// The sum over all entries.
    Sum,
    /// No reduction: Dice returns `[B, C, 1, 1, 1]` (`[C, 1, 1, 1]` with `batch = true`).
    None,
}

/// Options of [`DiceCeLoss`], with MONAI's names and defaults (`DiceCELoss(to_onehot_y=True, softmax=True)`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DiceCeConfig {
    /// Keep class 0 in the Dice term (default `true`). CE always uses every class.
    pub include_background: bool,
    /// Sum tp/fp/fn over the batch before the Dice ratio (default `false`).
    pub batch: bool,
    /// Reduction of the Dice values (default mean). `None` is only accepted by [`dice_loss`].
    pub reduction: Reduction,
    /// Added to the Dice numerator (default 1e-5).
    pub smooth_nr: f64,
    /// Added to the Dice denominator (default 1e-5).
    pub smooth_dr: f64,
    /// Weight of the Dice term (default 1).
    pub lambda_dice: f64,
    /// Weight of the cross-entropy term (default 1).
    pub lambda_ce: f64,
}

impl Default for DiceCeConfig {
    fn default() -> Self {
        Self {
            include_background: true,
            batch: false,
            reduction: Reduction::Mean,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            lambda_dice: 1.0,
            lambda_ce: 1.0,
        }
    }
}

/// MONAI `DiceCELoss(to_onehot_y=True, softmax=True, ...)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DiceCeLoss {
    /// The options.
    pub config: DiceCeConfig,
}

impl DiceCeLoss {
    /// A loss with the given options.
    pub fn new(config: DiceCeConfig) -> Self {
        Self { config }
    }

    /// The scalar loss (shape `[]`) of `logits [B, C, D, H, W]` against `labels [B, 1, D, H, W]`.
    pub fn forward(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        dice_ce_loss(logits, labels, &self.config)
    }
}

/// Checks shapes and turns `labels` into `u32` class indices `[B, 1, D, H, W]`, rejecting values outside `0..C`.
fn class_indices(op: &'static str, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let ld = logits.dims();
    if ld.len() < 3 {
        return Err(Error::invalid(
            op,
            format!("logits must be [B, C, spatial...], got {ld:?}"),
        ));
    }
    let gd = labels.dims();
    let expected: Vec<usize> = ld
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == 1 { 1 } else { d })
        .collect();
    if gd != expected.as_slice() {
        return Err(Error::invalid(
            op,
            format!("labels must be {expected:?} for logits {ld:?}, got {gd:?}"),
        ));
    }
    let c = ld[1];
    // Range check on the host (labels are small next to the network), in f32 so negative floats are caught.
    let as_f32 = labels.to_dtype(DType::F32)?;
    let min = as_f32.min_all()?.to_scalar::<f32>()?;
    let max = as_f32.max_all()?.to_scalar::<f32>()?;
    if !(min >= 0.0 && max < c as f32) {
        return Err(Error::invalid(
            op,
            format!("labels must be class indices in 0..{c}, found {min}..={max}"),
        ));
    }
    Ok(as_f32.to_dtype(DType::U32)?)
}

/// One-hot encoding of a label map `[B, 1, ...]` (class indices) into f32 `[B, C, ...]`
/// (MONAI `one_hot(label, C)`, as `to_onehot_y=True` does).
pub fn one_hot(labels: &Tensor, num_classes: usize) -> Result<Tensor> {
    let rank = labels.rank();
    if rank < 2 || labels.dims()[1] != 1 {
        return Err(Error::invalid(
            "one_hot",
            format!("labels must be [B, 1, ...], got {:?}", labels.dims()),
        ));
    }
    let idx = labels.to_dtype(DType::F32)?.to_dtype(DType::U32)?;
    let mut shape = vec![1usize; rank];
    shape[1] = num_classes;
    let classes = Tensor::arange(0u32, num_classes as u32, labels.device())?.reshape(shape)?;
    Ok(idx.broadcast_eq(&classes)?.to_dtype(DType::F32)?)
}

/// MONAI `DiceLoss(to_onehot_y=True, softmax=True, include_background, batch, reduction, smooth_nr,
/// smooth_dr)`. Returns a scalar for mean/sum, else `[B, C', 1, 1, 1]` (`[C', 1, 1, 1]` with `batch`).
pub fn dice_loss(logits: &Tensor, labels: &Tensor, cfg: &DiceCeConfig) -> Result<Tensor> {
    let _ = class_indices("dice_loss", logits, labels)?;
    let c = logits.dims()[1];
    let p = candle_nn::ops::softmax(logits, 1)?; // [B, C, D, H, W]
    let g = one_hot(labels, c)?.to_dtype(p.dtype())?; // [B, C, D, H, W]
    let (p, g) = if cfg.include_background {
        (p, g)
    } else {
        if c < 2 {
            return Err(Error::invalid(
                "dice_loss",
                "include_background=false needs at least 2 classes",
            ));
        }
        (p.narrow(1, 1, c - 1)?, g.narrow(1, 1, c - 1)?)
    };
    let (b, cc) = (p.dims()[0], p.dims()[1]);
    let p = p.flatten_from(2)?; // [B, C', N]
    let g = g.flatten_from(2)?;
    let mut tp = (&p * &g)?.sum(D::Minus1)?; // [B, C']
    let mut ground_o = g.sum(D::Minus1)?;
    let mut pred_o = p.sum(D::Minus1)?;
    if cfg.batch {
        tp = tp.sum(0)?; // [C']
        ground_o = ground_o.sum(0)?;
        pred_o = pred_o.sum(0)?;
    }
    let fp = (&pred_o - &tp)?;
    let fn_ = (&ground_o - &tp)?;
    let numer = tp.affine(2.0, cfg.smooth_nr)?;
    // MONAI 1.6.1 writes the denominator as 2·(tp + 0.5·fp + 0.5·fn) + smooth_dr.
    let denom =
        ((&tp + fp.affine(0.5, 0.0)?)? + fn_.affine(0.5, 0.0)?)?.affine(2.0, cfg.smooth_dr)?;
    let f = numer.div(&denom)?.affine(-1.0, 1.0)?; // 1 − numer/denom
    Ok(match cfg.reduction {
        Reduction::Mean => f.mean_all()?,
        Reduction::Sum => f.sum_all()?,
        Reduction::None => {
            let spatial = logits.rank() - 2;
            let mut shape = if cfg.batch { vec![cc] } else { vec![b, cc] };
            shape.extend(std::iter::repeat_n(1, spatial));
            f.reshape(shape)?
        }
    })
}

/// `nn.CrossEntropyLoss()(logits, labels[:, 0].long())`: the mean over all voxels of `−log_softmax(logits)[label]`.
/// Softmax is not applied to the logits beforehand (MONAI's `softmax=True` only affects the Dice term).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    cross_entropy_reduced(logits, labels, Reduction::Mean)
}

/// Cross-entropy with `reduction` mean or sum over the voxels (`None` returns `[B, 1, ...]` per voxel).
pub fn cross_entropy_reduced(
    logits: &Tensor,
    labels: &Tensor,
    reduction: Reduction,
) -> Result<Tensor> {
    let idx = class_indices("cross_entropy", logits, labels)?; // [B, 1, ...]
    let log_p = candle_nn::ops::log_softmax(logits, 1)?; // [B, C, ...]
    let picked = log_p.gather(&idx.contiguous()?, 1)?.neg()?; // [B, 1, ...]
    Ok(match reduction {
        Reduction::Mean => picked.mean_all()?,
        Reduction::Sum => picked.sum_all()?,
        Reduction::None => picked,
    })
}

/// MONAI `DiceCELoss(to_onehot_y=True, softmax=True, ...)`: `lambda_dice · dice + lambda_ce · ce`, a scalar.
/// Both terms use `cfg.reduction` (mean or sum), as MONAI builds its `CrossEntropyLoss` with it.
pub fn dice_ce_loss(logits: &Tensor, labels: &Tensor, cfg: &DiceCeConfig) -> Result<Tensor> {
    if cfg.reduction == Reduction::None {
        return Err(Error::invalid(
            "dice_ce_loss",
            "reduction 'none' is not supported by DiceCE (use dice_loss)",
        ));
    }
    if cfg.lambda_dice < 0.0 || cfg.lambda_ce < 0.0 {
        return Err(Error::invalid(
            "dice_ce_loss",
            "lambda_dice and lambda_ce must be >= 0",
        ));
    }
    let dice = dice_loss(logits, labels, cfg)?;
    let ce = cross_entropy_reduced(logits, labels, cfg.reduction)?;
    Ok((dice.affine(cfg.lambda_dice, 0.0)? + ce.affine(cfg.lambda_ce, 0.0)?)?)
}
