//! Whole-volume segmentation on the input's own grid: preprocessing as MONAI's test transforms (the volume
//! module's [`transforms::preprocess`]: orientation, `Spacingd` bilinear with border padding, intensity
//! transform), sliding-window inference, argmax, and the inverse geometry
//! ([`PreprocessRecord::invert_labels`]: nearest-neighbour back to the input grid), so the label map can be
//! saved with the input's affine.

use super::bundle::{Bundle, Preprocess};
use super::sliding_window::{SlidingWindowConfig, sliding_window_argmax};
use crate::Result;
use crate::job::{CancelToken, Progress, ProgressEvent};
use crate::nets::InferenceNet;
use crate::volume::transforms::{self, PreprocessRecord};
use crate::volume::{Affine, ImageVolume, LabelVolume, Volume, orient, resample};
use candle_core::{Device, Tensor};

/// Options of a prediction run (defaults come from the bundle).
#[derive(Clone, Debug)]
pub struct PredictOptions {
    /// Sliding-window settings.
    pub sliding_window: SlidingWindowConfig,
    /// Where the network runs.
    pub device: Device,
}

/// The grid the network sees: `dims` voxels with `ras_from_ijk`, RAS-oriented at the recipe's spacing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelGrid {
    /// Voxels per axis.
    pub dims: [usize; 3],
    /// Voxel to RAS millimetres.
    pub ras_from_ijk: Affine,
}

/// The network's grid for an input grid: MONAI `Orientationd` then `Spacingd(pixdim)`, computed by the
/// volume module ([`orient::reorientation_to`], [`resample::spacing_grid`]).
pub fn model_grid(
    dims: [usize; 3],
    ras_from_ijk: &Affine,
    recipe: &Preprocess,
) -> Result<ModelGrid> {
    let cfg = recipe.to_config()?;
    let (mut dims, mut affine) = (dims, *ras_from_ijk);
    if let Some(code) = cfg.orientation {
        let r = orient::reorientation_to(&affine, code)?;
        affine = r.out_affine(&affine, dims);
        dims = r.out_dims(dims);
    }
    if let Some(sp) = cfg.spacing_mm {
        (dims, affine) = resample::spacing_grid(dims, &affine, sp)?;
    }
    Ok(ModelGrid {
        dims,
        ras_from_ijk: affine,
    })
}

/// The network input for `volume` (on the model grid, normalised) and the record to invert the geometry:
/// [`transforms::preprocess`] with the bundle recipe.
pub fn preprocess(
    volume: &ImageVolume,
    recipe: &Preprocess,
) -> Result<(ImageVolume, PreprocessRecord)> {
    let p = transforms::preprocess(volume, None, &recipe.to_config()?)?;
    Ok((p.image, p.record))
}

/// Segments `volume` with any predictor (`[B, 1, r, r, r]` → `[B, C, r, r, r]` logits): preprocessing,
/// sliding window, argmax, back to the input grid. The result has the input's dims and affine.
pub fn segment_with<F>(
    volume: &ImageVolume,
    recipe: &Preprocess,
    options: &PredictOptions,
    predictor: F,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<LabelVolume>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    progress.report(ProgressEvent {
        stage: "preprocess".into(),
        done: 0,
        total: 1,
    });
    let (img, record) = preprocess(volume, recipe)?;
    cancel.check()?;
    progress.report(ProgressEvent {
        stage: "preprocess".into(),
        done: 1,
        total: 1,
    });
    let x = img.to_tensor(&options.device)?; // [1, 1, X, Y, Z]
    let labels = sliding_window_argmax(&x, &options.sliding_window, predictor, progress, cancel)?;
    drop(x);
    let labels = Volume::new(labels, img.dims, img.ras_from_ijk)?;
    cancel.check()?;
    progress.report(ProgressEvent {
        stage: "postprocess".into(),
        done: 0,
        total: 1,
    });
    let out = record.invert_labels(&labels)?;
    progress.report(ProgressEvent {
        stage: "postprocess".into(),
        done: 1,
        total: 1,
    });
    Ok(out)
}

/// Segments `volume` with a model bundle (see [`segment_with`]); the result lies on the input's grid.
pub fn segment(
    volume: &ImageVolume,
    bundle: &Bundle,
    options: &PredictOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<LabelVolume> {
    // Fold once (BatchNorm into the convs, plain tensors): every window then runs without autograd.
    let net = InferenceNet::new(&bundle.build_net(&options.device)?)?;
    segment_with(
        volume,
        &bundle.meta.preprocess,
        options,
        |x| net.forward(x),
        progress,
        cancel,
    )
}
