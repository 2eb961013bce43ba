//! Unlabelled crops for pre-training: every NIfTI volume of a folder, intensities scaled to 0..1, padded to
//! the crop size and cut into random crops (reference transforms: ScaleIntensityRange −1000..1000 → 0..1,
//! SpatialPad, RandSpatialCropSamples; no resampling). Volumes are used in their stored index order
//! (i, j, k); the reference reorients to RAS first.

use crate::{Error, Result};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// How intensities become 0..1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Intensity {
    /// CT: −1000..1000 HU → 0..1, clipped (the reference).
    Ct,
    /// MRI and anything without absolute units: the volume's 0.5 and 99.5 percentiles → 0..1, clipped.
    Percentile,
    /// Z-score over the non-zero voxels (zeros stay 0), as `Preprocess::mri` (`logonet train --recipe mri`)
    /// does: pre-training then sees what fine-tuning will. Values are not bounded to 0..1.
    ZScore,
}

/// One crop `[X, Y, Z]`, C order over (x, y, z), values in 0..1.
#[derive(Clone, Debug, PartialEq)]
pub struct Crop {
    /// Size.
    pub dims: [usize; 3],
    /// Voxels.
    pub data: Vec<f32>,
}

/// The NIfTI files (`.nii`, `.nii.gz`) of `dir`, sorted; files whose name contains `_label`, `_seg` or
/// `_gt` are skipped (unlabelled pre-training).
pub fn list_volumes(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list folder", e, dir))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io("cannot list folder", e, dir))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let is_nifti = name.ends_with(".nii") || name.ends_with(".nii.gz");
        let is_label = ["_label", "_seg", "_gt", "label"]
            .iter()
            .any(|s| name.contains(s));
        if is_nifti && !is_label {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a NIfTI volume as (dims, C-order voxels over (i, j, k)); 4-D files give their first volume.
pub fn read_nifti(path: &Path) -> Result<([usize; 3], Vec<f32>)> {
    use nifti::{IntoNdArray as _, NiftiObject as _};
    let obj = nifti::ReaderOptions::new()
        .read_file(path)
        .map_err(|e| Error::format(format!("cannot read NIfTI: {e}"), path))?;
    let arr = obj
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| Error::format(format!("cannot decode NIfTI voxels: {e}"), path))?;
    let shape = arr.shape().to_vec();
    if shape.len() < 3 || shape[3..].contains(&0) {
        return Err(Error::format(
            format!("expected a 3-D volume, got shape {shape:?}"),
            path,
        ));
    }
    let dims = [shape[0], shape[1], shape[2]];
    let mut data = Vec::with_capacity(dims.iter().product());
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let mut idx = vec![i, j, k];
                idx.extend(std::iter::repeat_n(0, shape.len() - 3));
                data.push(arr[idx.as_slice()]);
            }
        }
    }
    Ok((dims, data))
}

/// Scales voxels to 0..1 in place.
pub fn scale(data: &mut [f32], intensity: Intensity) {
    match intensity {
        Intensity::Ct => data
            .iter_mut()
            .for_each(|v| *v = super::kmeans::scale_ct(*v)),
        Intensity::Percentile => {
            let mut sorted: Vec<f32> = data.iter().copied().filter(|v| v.is_finite()).collect();
            if sorted.is_empty() {
                return;
            }
            sorted.sort_by(|a, b| a.total_cmp(b));
            let at = |q: f64| {
                sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
            };
            let (lo, hi) = (at(0.005), at(0.995));
            let range = (hi - lo).max(f32::EPSILON);
            data.iter_mut()
                .for_each(|v| *v = ((*v - lo) / range).clamp(0.0, 1.0));
        }
        Intensity::ZScore => {
            // The same two-pass statistics as `volume::transforms::z_score(.., nonzero = true)`.
            let nonzero = || data.iter().filter(|v| **v != 0.0).map(|&v| v as f64);
            let n = nonzero().count();
            if n == 0 {
                return;
            }
            let mean = nonzero().sum::<f64>() / n as f64;
            let var = nonzero().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
            data.iter_mut()
                .filter(|v| **v != 0.0)
                .for_each(|v| *v = ((*v as f64 - mean) / sd) as f32);
        }
    }
}

/// `count` random crops of size `crop` from a volume (padded with zeros, symmetric as MONAI's SpatialPad,
/// when smaller than the crop).
pub fn random_crops(
    dims: [usize; 3],
    data: &[f32],
    crop: [usize; 3],
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Crop> {
    let padded = [0, 1, 2].map(|a| dims[a].max(crop[a]));
    let before = [0, 1, 2].map(|a| (padded[a] - dims[a]) / 2);
    (0..count)
        .map(|_| {
            let start = [0, 1, 2].map(|a| rng.gen_range(0..=padded[a] - crop[a]));
            let mut out = vec![0f32; crop.iter().product()];
            for x in 0..crop[0] {
                let Some(i) = (start[0] + x)
                    .checked_sub(before[0])
                    .filter(|&i| i < dims[0])
                else {
                    continue;
                };
                for y in 0..crop[1] {
                    let Some(j) = (start[1] + y)
                        .checked_sub(before[1])
                        .filter(|&j| j < dims[1])
                    else {
                        continue;
                    };
                    for z in 0..crop[2] {
                        let Some(k) = (start[2] + z)
                            .checked_sub(before[2])
                            .filter(|&k| k < dims[2])
                        else {
                            continue;
                        };
                        out[(x * crop[1] + y) * crop[2] + z] =
                            data[(i * dims[1] + j) * dims[2] + k];
                    }
                }
            }
            Crop {
                dims: crop,
                data: out,
            }
        })
        .collect()
}

/// Loads every volume of `dir` and cuts `crops_per_volume` random crops from each.
pub fn load_crops(
    dir: &Path,
    crop: [usize; 3],
    crops_per_volume: usize,
    intensity: Intensity,
    seed: u64,
    progress: &dyn crate::job::Progress,
    cancel: &crate::job::CancelToken,
) -> Result<Vec<Crop>> {
    let files = list_volumes(dir)?;
    if files.is_empty() {
        return Err(Error::format("no NIfTI volume found", dir));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut crops = Vec::new();
    for (n, f) in files.iter().enumerate() {
        cancel.check()?;
        let (dims, mut data) = read_nifti(f)?;
        scale(&mut data, intensity);
        crops.extend(random_crops(dims, &data, crop, crops_per_volume, &mut rng));
        progress.report(crate::job::ProgressEvent {
            stage: "loading".into(),
            done: n as u64 + 1,
            total: files.len() as u64,
        });
    }
    Ok(crops)
}
