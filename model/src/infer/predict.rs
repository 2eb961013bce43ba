//! Whole-volume segmentation on the input's own grid: preprocessing as MONAI's test transforms (orientation
//! RAS, `Spacingd` bilinear with border padding, intensity transform), sliding-window inference, argmax, and
//! the inverse geometry (nearest-neighbour back to the input grid), so the label map can be saved with the
//! input's affine.

// Small fixed-size geometry loops read best with explicit indices.
#![allow(clippy::needless_range_loop)]

use super::bundle::{Bundle, Intensity, Preprocess};
use super::sliding_window::{SlidingWindowConfig, sliding_window_argmax};
use crate::job::{CancelToken, Progress, ProgressEvent};
use crate::nets::SegmentationNet as _;
use crate::volume::{Affine, ImageVolume, LabelVolume, Volume};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

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

/// Which input axis feeds each RAS output axis and whether it is flipped (nibabel `io_orientation` for
/// non-degenerate affines: each output axis takes the input axis that points most along it).
fn ras_axes(a: &Affine) -> Result<[(usize, bool); 3]> {
    let m = &a.0;
    let norm: [f64; 3] =
        std::array::from_fn(|c| (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt());
    if norm.iter().any(|&n| n.is_nan() || n <= 0.0) {
        return Err(Error::invalid(
            "predict",
            "the volume's affine is degenerate",
        ));
    }
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for c in 0..3 {
        for r in 0..3 {
            pairs.push(((m[r][c] / norm[c]).abs(), c, r));
        }
    }
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut out = [(usize::MAX, false); 3];
    let mut used_in = [false; 3];
    for (_, c, r) in pairs {
        if out[r].0 == usize::MAX && !used_in[c] {
            out[r] = (c, m[r][c] < 0.0);
            used_in[c] = true;
        }
    }
    Ok(out)
}

/// The network's grid for an input grid: MONAI `Orientationd("RAS")` then `Spacingd(pixdim)` (same origin as
/// the oriented image, shape `round((n − 1)·spacing/pixdim + 1)` per axis, half to even).
pub fn model_grid(
    dims: [usize; 3],
    ras_from_ijk: &Affine,
    recipe: &Preprocess,
) -> Result<ModelGrid> {
    if !recipe.orientation.eq_ignore_ascii_case("RAS") {
        return Err(Error::invalid(
            "predict",
            format!(
                "orientation '{}' is not supported (RAS only)",
                recipe.orientation
            ),
        ));
    }
    let axes = ras_axes(ras_from_ijk)?;
    let m = &ras_from_ijk.0;
    let mut out = Affine::identity();
    let mut odims = [0usize; 3];
    let mut origin_idx = [0.0f64; 3];
    for (a, &(c, flip)) in axes.iter().enumerate() {
        odims[a] = dims[c];
        if flip {
            origin_idx[c] = (dims[c] - 1) as f64;
        }
        let sign = if flip { -1.0 } else { 1.0 };
        let len: f64 = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
        let (target, n) = match recipe.spacing_mm {
            Some(p) => (
                p[a],
                ((dims[c] - 1) as f64 * len / p[a] + 1.0)
                    .round_ties_even()
                    .max(1.0) as usize,
            ),
            None => (len, dims[c]),
        };
        odims[a] = n;
        for r in 0..3 {
            out.0[r][a] = sign * m[r][c] / len * target;
        }
    }
    let origin = ras_from_ijk.apply(origin_idx);
    for r in 0..3 {
        out.0[r][3] = origin[r];
    }
    Ok(ModelGrid {
        dims: odims,
        ras_from_ijk: out,
    })
}

/// `dst` voxel index → `src` voxel index.
fn src_from_dst(src: &Affine, dst: &Affine) -> Result<Affine> {
    let inv = src
        .inverse()
        .ok_or_else(|| Error::invalid("predict", "the volume's affine is not invertible"))?;
    Ok(inv.compose(dst))
}

/// Trilinear resampling of `image` onto `grid` with border clamping (MONAI `Spacingd` bilinear,
/// `padding_mode="border"`), computed in f64.
pub fn resample_linear(image: &ImageVolume, grid: &ModelGrid) -> Result<ImageVolume> {
    let t = src_from_dst(&image.ras_from_ijk, &grid.ras_from_ijk)?;
    let [ni, nj, nk] = image.dims;
    let [di, dj, dk] = grid.dims;
    let src = &image.data;
    let mut data = vec![0f32; di * dj * dk];
    data.par_chunks_mut(dj * dk)
        .enumerate()
        .for_each(|(i, plane)| {
            for j in 0..dj {
                for k in 0..dk {
                    let p = t.apply([i as f64, j as f64, k as f64]);
                    let c: [(usize, usize, f64); 3] = std::array::from_fn(|a| {
                        let n = [ni, nj, nk][a];
                        let x = p[a].clamp(0.0, (n - 1) as f64);
                        let lo = x.floor() as usize;
                        let hi = (lo + 1).min(n - 1);
                        (lo, hi, x - lo as f64)
                    });
                    let at = |a: usize, b: usize, cc: usize| src[(a * nj + b) * nk + cc] as f64;
                    let mut v = 0.0;
                    for (ia, wa) in [(c[0].0, 1.0 - c[0].2), (c[0].1, c[0].2)] {
                        for (ib, wb) in [(c[1].0, 1.0 - c[1].2), (c[1].1, c[1].2)] {
                            for (ic, wc) in [(c[2].0, 1.0 - c[2].2), (c[2].1, c[2].2)] {
                                let w = wa * wb * wc;
                                if w != 0.0 {
                                    v += w * at(ia, ib, ic);
                                }
                            }
                        }
                    }
                    plane[j * dk + k] = v as f32;
                }
            }
        });
    Volume::new(data, grid.dims, grid.ras_from_ijk)
}

/// Nearest-neighbour resampling of a label map onto another grid (voxels outside map to the nearest border
/// voxel): the inverse geometry step after inference.
pub fn resample_labels_nearest(
    labels: &LabelVolume,
    dims: [usize; 3],
    ras_from_ijk: &Affine,
) -> Result<LabelVolume> {
    let t = src_from_dst(&labels.ras_from_ijk, ras_from_ijk)?;
    let [ni, nj, nk] = labels.dims;
    let [di, dj, dk] = dims;
    let mut data = vec![0u16; di * dj * dk];
    data.par_chunks_mut(dj * dk)
        .enumerate()
        .for_each(|(i, plane)| {
            for j in 0..dj {
                for k in 0..dk {
                    let p = t.apply([i as f64, j as f64, k as f64]);
                    let idx: [usize; 3] = std::array::from_fn(|a| {
                        let n = [ni, nj, nk][a];
                        p[a].round_ties_even().clamp(0.0, (n - 1) as f64) as usize
                    });
                    plane[j * dk + k] = labels.data[(idx[0] * nj + idx[1]) * nk + idx[2]];
                }
            }
        });
    Volume::new(data, dims, *ras_from_ijk)
}

/// Applies an intensity transform in place (float32, as MONAI).
pub fn apply_intensity(data: &mut [f32], intensity: &Intensity) {
    match *intensity {
        Intensity::ScaleRange {
            a_min,
            a_max,
            b_min,
            b_max,
            clip,
        } => {
            data.par_iter_mut().for_each(|v| {
                let mut x = ((*v - a_min) / (a_max - a_min)) * (b_max - b_min) + b_min;
                if clip {
                    x = x.clamp(b_min, b_max);
                }
                *v = x;
            });
        }
        Intensity::ZScore { nonzero } => {
            let sel = |v: f32| !nonzero || v != 0.0;
            let (n, sum) = data
                .iter()
                .filter(|&&v| sel(v))
                .fold((0u64, 0f64), |(n, s), &v| (n + 1, s + v as f64));
            if n == 0 {
                return;
            }
            let mean = sum / n as f64;
            let var = data
                .iter()
                .filter(|&&v| sel(v))
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let std = if var > 0.0 { var.sqrt() } else { 1.0 };
            data.par_iter_mut().for_each(|v| {
                if sel(*v) {
                    *v = ((*v as f64 - mean) / std) as f32;
                }
            });
        }
        Intensity::None => {}
    }
}

/// The network input for `volume`: resampled onto the model grid and normalised.
pub fn preprocess(volume: &ImageVolume, recipe: &Preprocess) -> Result<ImageVolume> {
    let grid = model_grid(volume.dims, &volume.ras_from_ijk, recipe)?;
    let mut img = resample_linear(volume, &grid)?;
    apply_intensity(&mut img.data, &recipe.intensity);
    Ok(img)
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
    let img = preprocess(volume, recipe)?;
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
    let out = resample_labels_nearest(&labels, volume.dims, &volume.ras_from_ijk)?;
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
    let net = bundle.build_net(&options.device)?;
    segment_with(
        volume,
        &bundle.meta.preprocess,
        options,
        |x| net.forward_t(x, false),
        progress,
        cancel,
    )
}
