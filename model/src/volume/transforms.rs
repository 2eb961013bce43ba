//! MONAI-equivalent preprocessing and its inverse.
//!
//! The chain of the reference `BTCV/utils/data_utils.py` (MONAI 1.x names and defaults): `Orientationd("RAS")`
//! → `Spacingd(pixdim, mode=("bilinear", "nearest"))` → `ScaleIntensityRanged(a_min=-175, a_max=250,
//! b_min=0, b_max=1, clip=True)` → `CropForegroundd(source_key="image")`, plus `NormalizeIntensity`
//! (z-score) for MRI and `SpatialPad`/`DivisiblePad`. [`PreprocessRecord`] remembers every step so a prediction
//! on the preprocessed grid can be put back on the original grid (undo the crop, nearest resampling back,
//! reorientation back).

use super::orient::Reorientation;
use super::resample::{resample_image, resample_nearest, spacing_grid};
use super::{Affine, ImageVolume, LabelVolume, Volume};
use crate::{Error, Result};

/// MONAI `ScaleIntensityRange`: `(x − a_min)/(a_max − a_min)·(b_max − b_min) + b_min`, optionally clipped
/// to `[b_min, b_max]`, in f32 as MONAI computes it.
pub fn scale_intensity_range(
    img: &mut ImageVolume,
    a_min: f32,
    a_max: f32,
    b_min: f32,
    b_max: f32,
    clip: bool,
) -> Result<()> {
    if a_max == a_min
        || !(a_min.is_finite() && a_max.is_finite() && b_min.is_finite() && b_max.is_finite())
    {
        return Err(Error::invalid(
            "scale_intensity_range",
            format!("bad range a [{a_min}, {a_max}] -> b [{b_min}, {b_max}]"),
        ));
    }
    let (da, db) = (
        (a_max as f64 - a_min as f64) as f32,
        (b_max as f64 - b_min as f64) as f32,
    );
    let (lo, hi) = (b_min.min(b_max), b_min.max(b_max));
    for v in &mut img.data {
        let mut x = (*v - a_min) / da;
        x = x * db + b_min;
        if clip {
            x = x.clamp(lo, hi);
        }
        *v = x;
    }
    Ok(())
}

/// MONAI `NormalizeIntensity` (not channel-wise): subtract the mean and divide by the (population) standard
/// deviation, over all voxels or only the non-zero ones (others stay 0). A zero deviation divides by 1.
pub fn z_score(img: &mut ImageVolume, nonzero: bool) {
    let sel = |v: f32| !nonzero || v != 0.0;
    let (mut n, mut sum) = (0usize, 0f64);
    for &v in &img.data {
        if sel(v) {
            n += 1;
            sum += v as f64;
        }
    }
    if n == 0 {
        return;
    }
    let mean = sum / n as f64;
    let var = img
        .data
        .iter()
        .filter(|&&v| sel(v))
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
    for v in &mut img.data {
        if sel(*v) {
            *v = ((*v as f64 - mean) / sd) as f32;
        }
    }
}

/// A half-open box of voxels `start..end` per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoxelBox {
    /// First voxel per axis.
    pub start: [usize; 3],
    /// One past the last voxel per axis.
    pub end: [usize; 3],
}

impl VoxelBox {
    /// Size per axis.
    pub fn dims(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.end[a].saturating_sub(self.start[a]))
    }
}

/// MONAI `CropForeground` box (`select_fn=is_positive`, margin 0, `k_divisible=1`): the bounding box of the
/// voxels `> 0`. `None` when there is none (MONAI then crops to an empty volume).
pub fn foreground_box(img: &ImageVolume) -> Option<VoxelBox> {
    let [ni, nj, nk] = img.dims;
    let mut start = [usize::MAX; 3];
    let mut end = [0usize; 3];
    for i in 0..ni {
        for j in 0..nj {
            let row = &img.data[(i * nj + j) * nk..(i * nj + j + 1) * nk];
            let first = row.iter().position(|&v| v > 0.0);
            if let Some(k0) = first {
                let k1 = row.iter().rposition(|&v| v > 0.0).unwrap_or(k0);
                start = [start[0].min(i), start[1].min(j), start[2].min(k0)];
                end = [end[0].max(i + 1), end[1].max(j + 1), end[2].max(k1 + 1)];
            }
        }
    }
    (start[0] != usize::MAX).then_some(VoxelBox { start, end })
}

/// Crops a volume to `b`; the affine's origin moves to the box's first voxel.
pub fn crop<T: Copy>(vol: &Volume<T>, b: &VoxelBox) -> Result<Volume<T>> {
    if (0..3).any(|a| b.start[a] > b.end[a] || b.end[a] > vol.dims[a]) {
        return Err(Error::invalid(
            "crop",
            format!("box {b:?} outside dims {:?}", vol.dims),
        ));
    }
    let d = b.dims();
    let mut data = Vec::with_capacity(d[0] * d[1] * d[2]);
    for i in b.start[0]..b.end[0] {
        for j in b.start[1]..b.end[1] {
            let o = vol.index(i, j, 0);
            data.extend_from_slice(&vol.data[o + b.start[2]..o + b.end[2]]);
        }
    }
    let origin = vol
        .ras_from_ijk
        .apply([b.start[0] as f64, b.start[1] as f64, b.start[2] as f64]);
    Ok(Volume {
        data,
        dims: d,
        ras_from_ijk: vol.ras_from_ijk.with_origin(origin),
    })
}

/// Places `vol` at `start` inside a grid of `dims` filled with `fill` (the inverse of [`crop`]).
pub fn uncrop<T: Copy>(
    vol: &Volume<T>,
    start: [usize; 3],
    dims: [usize; 3],
    fill: T,
) -> Result<Volume<T>> {
    if (0..3).any(|a| start[a] + vol.dims[a] > dims[a]) {
        return Err(Error::invalid(
            "uncrop",
            format!("{:?} at {start:?} does not fit in {dims:?}", vol.dims),
        ));
    }
    let origin =
        vol.ras_from_ijk
            .apply([-(start[0] as f64), -(start[1] as f64), -(start[2] as f64)]);
    let mut out = Volume::filled(fill, dims, vol.ras_from_ijk.with_origin(origin));
    let [_, nj, nk] = vol.dims;
    for i in 0..vol.dims[0] {
        for j in 0..nj {
            let src = &vol.data[(i * nj + j) * nk..(i * nj + j + 1) * nk];
            let o = out.index(i + start[0], j + start[1], start[2]);
            out.data[o..o + nk].copy_from_slice(src);
        }
    }
    Ok(out)
}

/// MONAI `SpatialPad(spatial_size, method="symmetric", mode="constant")`: pads each axis shorter than
/// `size` with `fill`, half before (rounded down) and the rest after; returns the volume and the offset of
/// the original voxels.
pub fn spatial_pad<T: Copy>(
    vol: &Volume<T>,
    size: [usize; 3],
    fill: T,
) -> Result<(Volume<T>, [usize; 3])> {
    let dims: [usize; 3] = std::array::from_fn(|a| vol.dims[a].max(size[a]));
    let start: [usize; 3] = std::array::from_fn(|a| (dims[a] - vol.dims[a]) / 2);
    Ok((uncrop(vol, start, dims, fill)?, start))
}

/// MONAI `DivisiblePad(k)`: symmetric constant padding up to the next multiple of `k` per axis.
pub fn divisible_pad<T: Copy>(
    vol: &Volume<T>,
    k: [usize; 3],
    fill: T,
) -> Result<(Volume<T>, [usize; 3])> {
    let size: [usize; 3] = std::array::from_fn(|a| vol.dims[a].div_ceil(k[a].max(1)) * k[a].max(1));
    spatial_pad(vol, size, fill)
}

/// Intensity normalisation of the chain.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Intensity {
    /// Leave intensities as they are.
    None,
    /// MONAI `ScaleIntensityRange`.
    ScaleRange {
        /// Input lower bound (HU).
        a_min: f32,
        /// Input upper bound (HU).
        a_max: f32,
        /// Output lower bound.
        b_min: f32,
        /// Output upper bound.
        b_max: f32,
        /// Clip to the output range.
        clip: bool,
    },
    /// MONAI `NormalizeIntensity` (z-score), over non-zero voxels or all.
    ZScore {
        /// Only non-zero voxels.
        nonzero: bool,
    },
}

/// The preprocessing chain's settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreprocessConfig {
    /// Target orientation code (`None` = keep the file's).
    pub orientation: Option<[char; 3]>,
    /// Target voxel size in mm (`None` = keep).
    pub spacing_mm: Option<[f64; 3]>,
    /// Intensity normalisation.
    pub intensity: Intensity,
    /// Crop to the foreground (`image > 0` after normalisation), MONAI `CropForegroundd`.
    pub crop_foreground: bool,
}

impl PreprocessConfig {
    /// The BTCV CT chain of the reference code: RAS, 1.5×1.5×2 mm, HU −175..250 → 0..1 clipped, foreground
    /// crop.
    pub fn btcv_ct() -> Self {
        Self {
            orientation: Some(['R', 'A', 'S']),
            spacing_mm: Some([1.5, 1.5, 2.0]),
            intensity: Intensity::ScaleRange {
                a_min: -175.0,
                a_max: 250.0,
                b_min: 0.0,
                b_max: 1.0,
                clip: true,
            },
            crop_foreground: true,
        }
    }

    /// A chain for MRI: RAS, z-score over non-zero voxels, no resampling, no crop.
    pub fn mri() -> Self {
        Self {
            orientation: Some(['R', 'A', 'S']),
            spacing_mm: None,
            intensity: Intensity::ZScore { nonzero: true },
            crop_foreground: false,
        }
    }
}

/// Everything needed to map a result on the preprocessed grid back to the original grid.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreprocessRecord {
    /// The input grid's dims.
    pub original_dims: [usize; 3],
    /// The input grid's affine.
    pub original_affine: Affine,
    /// Axis permutation/flips applied first (`axis`, `flip` per input axis).
    pub reorientation: ([usize; 3], [bool; 3]),
    /// Grid after reorientation.
    pub oriented_dims: [usize; 3],
    /// Affine after reorientation.
    pub oriented_affine: Affine,
    /// Grid after resampling.
    pub spaced_dims: [usize; 3],
    /// Affine after resampling.
    pub spaced_affine: Affine,
    /// The foreground crop, if one was made.
    pub crop: Option<VoxelBox>,
}

/// The preprocessed image (and labels) and the record of what was done.
#[derive(Clone, Debug)]
pub struct Preprocessed {
    /// The image on the preprocessed grid.
    pub image: ImageVolume,
    /// The labels on the same grid (nearest resampling), when given.
    pub labels: Option<LabelVolume>,
    /// How to go back.
    pub record: PreprocessRecord,
}

/// Runs the chain. Without any foreground the crop is skipped (MONAI would produce an empty volume).
pub fn preprocess(
    image: &ImageVolume,
    labels: Option<&LabelVolume>,
    cfg: &PreprocessConfig,
) -> Result<Preprocessed> {
    if let Some(l) = labels.filter(|l| !image.same_grid(l, 1e-3)) {
        {
            return Err(Error::invalid(
                "preprocess",
                format!(
                    "image {:?} and labels {:?} are not on the same grid",
                    image.dims, l.dims
                ),
            ));
        }
    }
    let r = match cfg.orientation {
        Some(code) => super::orient::reorientation_to(&image.ras_from_ijk, code)?,
        None => Reorientation::identity(),
    };
    let mut img = r.apply(image);
    let mut lab = labels.map(|l| r.apply(l));
    let (oriented_dims, oriented_affine) = (img.dims, img.ras_from_ijk);
    if let Some(sp) = cfg.spacing_mm {
        let (dims, affine) = spacing_grid(img.dims, &img.ras_from_ijk, sp)?;
        img = resample_image(&img, dims, &affine)?;
        lab = lab
            .map(|l| resample_nearest(&l, dims, &affine))
            .transpose()?;
    }
    let (spaced_dims, spaced_affine) = (img.dims, img.ras_from_ijk);
    match cfg.intensity {
        Intensity::None => {}
        Intensity::ScaleRange {
            a_min,
            a_max,
            b_min,
            b_max,
            clip,
        } => scale_intensity_range(&mut img, a_min, a_max, b_min, b_max, clip)?,
        Intensity::ZScore { nonzero } => z_score(&mut img, nonzero),
    }
    let mut crop_box = None;
    if let Some(b) = cfg.crop_foreground.then(|| foreground_box(&img)).flatten() {
        {
            img = crop(&img, &b)?;
            lab = lab.map(|l| crop(&l, &b)).transpose()?;
            crop_box = Some(b);
        }
    }
    let record = PreprocessRecord {
        original_dims: image.dims,
        original_affine: image.ras_from_ijk,
        reorientation: (r.axis, r.flip),
        oriented_dims,
        oriented_affine,
        spaced_dims,
        spaced_affine,
        crop: crop_box,
    };
    Ok(Preprocessed {
        image: img,
        labels: lab,
        record,
    })
}

impl PreprocessRecord {
    fn check(&self, dims: [usize; 3]) -> Result<()> {
        let want = self.crop.map(|b| b.dims()).unwrap_or(self.spaced_dims);
        if dims != want {
            return Err(Error::invalid(
                "invert preprocessing",
                format!("result has dims {dims:?}, the preprocessed grid {want:?}"),
            ));
        }
        Ok(())
    }

    fn reorientation(&self) -> Reorientation {
        Reorientation {
            axis: self.reorientation.0,
            flip: self.reorientation.1,
        }
    }

    /// Puts a label map from the preprocessed grid back on the original grid: zero outside the crop,
    /// nearest resampling back to the original spacing, reorientation back. The result has exactly the
    /// original dims and affine.
    pub fn invert_labels(&self, pred: &LabelVolume) -> Result<LabelVolume> {
        self.check(pred.dims)?;
        let mut v = pred.clone();
        v.ras_from_ijk = self.crop_affine();
        if let Some(b) = self.crop {
            v = uncrop(&v, b.start, self.spaced_dims, 0)?;
        }
        v.ras_from_ijk = self.spaced_affine;
        if self.spaced_dims != self.oriented_dims
            || self.spaced_affine.max_abs_diff(&self.oriented_affine) > 0.0
        {
            v = resample_nearest(&v, self.oriented_dims, &self.oriented_affine)?;
        }
        let mut out = self.reorientation().inverse().apply(&v);
        out.ras_from_ijk = self.original_affine;
        Ok(out)
    }

    /// As [`Self::invert_labels`] for a continuous map (probabilities), with trilinear resampling.
    pub fn invert_image(&self, pred: &ImageVolume) -> Result<ImageVolume> {
        self.check(pred.dims)?;
        let mut v = pred.clone();
        if let Some(b) = self.crop {
            v = uncrop(&v, b.start, self.spaced_dims, 0.0)?;
        }
        v.ras_from_ijk = self.spaced_affine;
        if self.spaced_dims != self.oriented_dims
            || self.spaced_affine.max_abs_diff(&self.oriented_affine) > 0.0
        {
            v = resample_image(&v, self.oriented_dims, &self.oriented_affine)?;
        }
        let mut out = self.reorientation().inverse().apply(&v);
        out.ras_from_ijk = self.original_affine;
        Ok(out)
    }

    /// The affine of the preprocessed (cropped) grid.
    pub fn crop_affine(&self) -> Affine {
        match self.crop {
            Some(b) => self.spaced_affine.with_origin(self.spaced_affine.apply([
                b.start[0] as f64,
                b.start[1] as f64,
                b.start[2] as f64,
            ])),
            None => self.spaced_affine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_uncrop_pad() {
        let a = Affine::from_spacing_origin([2.0, 2.0, 2.0], [0.0; 3]);
        let mut v = Volume::filled(0.0f32, [6, 5, 4], a);
        let idx = v.index(2, 1, 3);
        v.data[idx] = 1.0;
        let idx = v.index(4, 3, 1);
        v.data[idx] = 2.0;
        let b = foreground_box(&v).unwrap();
        assert_eq!(
            b,
            VoxelBox {
                start: [2, 1, 1],
                end: [5, 4, 4]
            }
        );
        let c = crop(&v, &b).unwrap();
        assert_eq!(c.ras_from_ijk.origin_mm(), [4.0, 2.0, 2.0]);
        let u = uncrop(&c, b.start, v.dims, 0.0).unwrap();
        assert_eq!(u, v);
        let (p, start) = spatial_pad(&v, [9, 5, 7], -1.0).unwrap();
        assert_eq!((p.dims, start), ([9, 5, 7], [1, 0, 1]));
        assert_eq!(p.ras_from_ijk.origin_mm(), [-2.0, 0.0, -2.0]);
        assert!(foreground_box(&Volume::filled(0.0f32, [2, 2, 2], a)).is_none());
    }

    #[test]
    fn zscore_nonzero() {
        let a = Affine::identity();
        let mut v = Volume::new(vec![0.0, 1.0, 3.0, 0.0], [1, 1, 4], a).unwrap();
        z_score(&mut v, true);
        assert_eq!(v.data, vec![0.0, -1.0, 1.0, 0.0]);
    }
}
