//! The reference's random training transforms (MONAI semantics, `BTCV/utils/data_utils.py`), on host arrays,
//! seeded with our own RNG (ChaCha8, so runs are reproducible and resumable; the draws are not numpy's):
//!
//! ```text
//! RandCropByPosNegLabeld(96³, pos=1, neg=1, num_samples=N, image_threshold=0)
//! RandFlipd(spatial_axis=0, p=0.2); RandFlipd(1, p=0.2); RandFlipd(2, p=0.2)
//! RandRotate90d(p=0.2, max_k=3)                      # spatial axes (0, 1)
//! RandScaleIntensityd(factors=0.1, p=0.1)            # image · (1 + U(-0.1, 0.1))
//! RandShiftIntensityd(offsets=0.1, p=0.1)            # image + U(-0.1, 0.1)
//! ```
//!
//! Each of the N crops then goes through the flip/rotate/intensity transforms independently, as MONAI applies
//! the rest of the chain per sample. Arrays are channel-first C order `[C, X, Y, Z]` (image) and `[X, Y, Z]`
//! (label), i.e. exactly a [`crate::volume::Volume`]'s `data`.

use crate::{Error, Result};
use rand::Rng;

/// A training sample on the host: image `[C, X, Y, Z]` (f32) and label `[X, Y, Z]` (class indices).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Image voxels, channel-first C order.
    pub image: Vec<f32>,
    /// Label voxels, C order.
    pub label: Vec<u16>,
    /// Number of image channels.
    pub channels: usize,
    /// Spatial size (X, Y, Z).
    pub dims: [usize; 3],
}

impl Sample {
    /// A sample from its parts; fails when the lengths do not match `channels` and `dims`.
    pub fn new(
        image: Vec<f32>,
        label: Vec<u16>,
        channels: usize,
        dims: [usize; 3],
    ) -> Result<Self> {
        let n = dims[0] * dims[1] * dims[2];
        if channels == 0 || image.len() != channels * n || label.len() != n {
            return Err(Error::invalid(
                "Sample::new",
                format!(
                    "image {} / label {} voxels for {channels} channels of {dims:?}",
                    image.len(),
                    label.len()
                ),
            ));
        }
        Ok(Self {
            image,
            label,
            channels,
            dims,
        })
    }

    fn voxels(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    /// Copies the box `start .. start + size` (must lie inside the sample).
    pub(crate) fn crop_box(&self, start: [usize; 3], size: [usize; 3]) -> Sample {
        let [_, ny, nz] = self.dims;
        let n = self.voxels();
        let m = size[0] * size[1] * size[2];
        let mut image = Vec::with_capacity(self.channels * m);
        let mut label = Vec::with_capacity(m);
        for c in 0..self.channels {
            for i in start[0]..start[0] + size[0] {
                for j in start[1]..start[1] + size[1] {
                    let o = c * n + (i * ny + j) * nz + start[2];
                    image.extend_from_slice(&self.image[o..o + size[2]]);
                }
            }
        }
        for i in start[0]..start[0] + size[0] {
            for j in start[1]..start[1] + size[1] {
                let o = (i * ny + j) * nz + start[2];
                label.extend_from_slice(&self.label[o..o + size[2]]);
            }
        }
        Sample {
            image,
            label,
            channels: self.channels,
            dims: size,
        }
    }

    /// Pads symmetrically with zeros (image and label) to at least `size` per axis (`diff // 2` before, the rest
    /// after, as MONAI `SpatialPad`).
    pub fn pad_to(&self, size: [usize; 3]) -> Sample {
        let out_dims = [
            self.dims[0].max(size[0]),
            self.dims[1].max(size[1]),
            self.dims[2].max(size[2]),
        ];
        if out_dims == self.dims {
            return self.clone();
        }
        let before: [usize; 3] = std::array::from_fn(|a| (out_dims[a] - self.dims[a]) / 2);
        let [nx, ny, nz] = self.dims;
        let (n, m) = (self.voxels(), out_dims[0] * out_dims[1] * out_dims[2]);
        let mut image = vec![0f32; self.channels * m];
        let mut label = vec![0u16; m];
        for i in 0..nx {
            for j in 0..ny {
                let src = (i * ny + j) * nz;
                let dst = ((i + before[0]) * out_dims[1] + j + before[1]) * out_dims[2] + before[2];
                for c in 0..self.channels {
                    image[c * m + dst..c * m + dst + nz]
                        .copy_from_slice(&self.image[c * n + src..c * n + src + nz]);
                }
                label[dst..dst + nz].copy_from_slice(&self.label[src..src + nz]);
            }
        }
        Sample {
            image,
            label,
            channels: self.channels,
            dims: out_dims,
        }
    }

    /// Reverses spatial axis `axis` (0, 1 or 2) of image and label (`np.flip`).
    pub fn flip(&mut self, axis: usize) {
        let [nx, ny, nz] = self.dims;
        let n = self.voxels();
        let map = |i: usize, j: usize, k: usize| match axis {
            0 => ((nx - 1 - i) * ny + j) * nz + k,
            1 => (i * ny + ny - 1 - j) * nz + k,
            _ => (i * ny + j) * nz + nz - 1 - k,
        };
        let mut image = vec![0f32; self.image.len()];
        let mut label = vec![0u16; n];
        for i in 0..nx {
            for j in 0..ny {
                for k in 0..nz {
                    let (d, s) = ((i * ny + j) * nz + k, map(i, j, k));
                    label[d] = self.label[s];
                    for c in 0..self.channels {
                        image[c * n + d] = self.image[c * n + s];
                    }
                }
            }
        }
        self.image = image;
        self.label = label;
    }

    /// `np.rot90(x, k, axes=(0, 1))` over the spatial axes (X, Y) of image and label; X and Y swap for odd k.
    pub fn rot90(&mut self, k: usize) {
        let k = k % 4;
        if k == 0 {
            return;
        }
        let [nx, ny, nz] = self.dims;
        let out_dims = if k % 2 == 1 {
            [ny, nx, nz]
        } else {
            [nx, ny, nz]
        };
        let n = self.voxels();
        let mut image = vec![0f32; self.image.len()];
        let mut label = vec![0u16; n];
        for a in 0..out_dims[0] {
            for b in 0..out_dims[1] {
                // numpy: k=1 out[a,b] = m[b, ny-1-a]; k=2 out[a,b] = m[nx-1-a, ny-1-b]; k=3 out[a,b] = m[nx-1-b, a].
                let (i, j) = match k {
                    1 => (b, ny - 1 - a),
                    2 => (nx - 1 - a, ny - 1 - b),
                    _ => (nx - 1 - b, a),
                };
                let d = (a * out_dims[1] + b) * nz;
                let s = (i * ny + j) * nz;
                label[d..d + nz].copy_from_slice(&self.label[s..s + nz]);
                for c in 0..self.channels {
                    image[c * n + d..c * n + d + nz]
                        .copy_from_slice(&self.image[c * n + s..c * n + s + nz]);
                }
            }
        }
        self.image = image;
        self.label = label;
        self.dims = out_dims;
    }
}

/// Options of the training augmentation, with the reference's values as defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Crop size (reference 96³).
    pub crop_size: [usize; 3],
    /// Weight of foreground-centred crops (reference 1).
    pub pos: f64,
    /// Weight of background-centred crops (reference 1).
    pub neg: f64,
    /// Crops per volume (reference `num_samples` 4 in MONAI's tutorial, 5 in the LoGoNet jobs).
    pub num_samples: usize,
    /// Voxels whose image value is not above this are neither foreground nor background centres (reference 0).
    pub image_threshold: f32,
    /// Probability of a flip, per spatial axis (reference 0.2).
    pub flip_prob: f64,
    /// Probability of a 90° rotation in the (X, Y) plane (reference 0.2).
    pub rot90_prob: f64,
    /// Rotations are by k·90° with k uniform in 1..=max_k (reference 3).
    pub rot90_max_k: usize,
    /// Probability of the intensity scaling (reference 0.1).
    pub scale_prob: f64,
    /// Scaling factor range ±(reference 0.1): `image · (1 + U(-f, f))`.
    pub scale_factor: f32,
    /// Probability of the intensity shift (reference 0.1).
    pub shift_prob: f64,
    /// Shift range ±(reference 0.1): `image + U(-o, o)`.
    pub shift_offset: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop_size: [96; 3],
            pos: 1.0,
            neg: 1.0,
            num_samples: 5,
            image_threshold: 0.0,
            flip_prob: 0.2,
            rot90_prob: 0.2,
            rot90_max_k: 3,
            scale_prob: 0.1,
            scale_factor: 0.1,
            shift_prob: 0.1,
            shift_offset: 0.1,
        }
    }
}

impl AugmentConfig {
    /// The same chain without any random flip, rotation or intensity change (crops only).
    pub fn crops_only(mut self) -> Self {
        self.flip_prob = 0.0;
        self.rot90_prob = 0.0;
        self.scale_prob = 0.0;
        self.shift_prob = 0.0;
        self
    }
}

/// MONAI `correct_crop_centers`: moves a centre so that the `size` box centred on it (start `c - size//2`) lies
/// inside `shape`.
pub fn correct_crop_center(center: [usize; 3], size: [usize; 3], shape: [usize; 3]) -> [usize; 3] {
    std::array::from_fn(|a| {
        let valid_start = size[a] / 2;
        // valid_end = uint16(shape + 1 - size / 2) (true division, truncated), bumped when equal to the start.
        let mut valid_end = ((shape[a] as f64 + 1.0 - size[a] as f64 / 2.0).max(0.0)) as usize;
        if valid_start == valid_end {
            valid_end += 1;
        }
        center[a].max(valid_start).min(valid_end.saturating_sub(1))
    })
}

/// MONAI `RandCropByPosNegLabeld`: `num_samples` crops of `crop_size`, each centred on a foreground voxel
/// (label > 0 and image > threshold in any channel) with probability `pos / (pos + neg)`, else on a background
/// voxel (label == 0 and image > threshold), the centre then moved so the crop lies inside the image.
/// When one of the two sets is empty every crop uses the other (MONAI warns and does the same).
///
/// Deviation: MONAI raises when the image is smaller than the crop; here the sample is first zero-padded
/// symmetrically (as `SpatialPad`), so small volumes (e.g. few slices) still train.
pub fn rand_crop_by_pos_neg_label<R: Rng>(
    sample: &Sample,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> Result<Vec<Sample>> {
    if cfg.crop_size.contains(&0) || cfg.num_samples == 0 {
        return Err(Error::invalid(
            "rand_crop_by_pos_neg_label",
            "crop size and num_samples must be positive",
        ));
    }
    if !(cfg.pos >= 0.0 && cfg.neg >= 0.0 && cfg.pos + cfg.neg > 0.0) {
        return Err(Error::invalid(
            "rand_crop_by_pos_neg_label",
            "pos and neg must be >= 0, not both 0",
        ));
    }
    let padded = sample.pad_to(cfg.crop_size);
    let s = &padded;
    let n = s.voxels();
    let mut fg: Vec<u32> = Vec::new();
    let mut bg: Vec<u32> = Vec::new();
    for v in 0..n {
        let bright = (0..s.channels).any(|c| s.image[c * n + v] > cfg.image_threshold);
        if !bright {
            continue;
        }
        if s.label[v] > 0 {
            fg.push(v as u32)
        } else {
            bg.push(v as u32)
        }
    }
    if fg.is_empty() && bg.is_empty() {
        return Err(Error::invalid(
            "rand_crop_by_pos_neg_label",
            format!(
                "no voxel above the image threshold {} to centre a crop on",
                cfg.image_threshold
            ),
        ));
    }
    let pos_ratio = if fg.is_empty() {
        0.0
    } else if bg.is_empty() {
        1.0
    } else {
        cfg.pos / (cfg.pos + cfg.neg)
    };
    let [_, ny, nz] = s.dims;
    let mut out = Vec::with_capacity(cfg.num_samples);
    for _ in 0..cfg.num_samples {
        let set = if rng.r#gen::<f64>() < pos_ratio {
            &fg
        } else {
            &bg
        };
        let idx = set[rng.gen_range(0..set.len())] as usize;
        let center = [idx / (ny * nz), (idx / nz) % ny, idx % nz];
        let c = correct_crop_center(center, cfg.crop_size, s.dims);
        let start: [usize; 3] = std::array::from_fn(|a| c[a] - cfg.crop_size[a] / 2);
        out.push(s.crop_box(start, cfg.crop_size));
    }
    Ok(out)
}

/// Applies the per-crop random transforms (flips, 90° rotation, intensity scale and shift) in the reference's
/// order.
pub fn augment_crop<R: Rng>(sample: &mut Sample, cfg: &AugmentConfig, rng: &mut R) {
    for axis in 0..3 {
        if rng.r#gen::<f64>() < cfg.flip_prob {
            sample.flip(axis);
        }
    }
    if rng.r#gen::<f64>() < cfg.rot90_prob && cfg.rot90_max_k > 0 {
        let k = rng.gen_range(0..cfg.rot90_max_k) + 1;
        sample.rot90(k);
    }
    if rng.r#gen::<f64>() < cfg.scale_prob {
        let f = rng.gen_range(-cfg.scale_factor..=cfg.scale_factor);
        sample.image.iter_mut().for_each(|v| *v *= 1.0 + f);
    }
    if rng.r#gen::<f64>() < cfg.shift_prob {
        let o = rng.gen_range(-cfg.shift_offset..=cfg.shift_offset);
        sample.image.iter_mut().for_each(|v| *v += o);
    }
}

/// The whole random chain for one preprocessed volume: `num_samples` augmented crops.
pub fn random_crops<R: Rng>(
    sample: &Sample,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> Result<Vec<Sample>> {
    let mut crops = rand_crop_by_pos_neg_label(sample, cfg, rng)?;
    for c in &mut crops {
        augment_crop(c, cfg, rng);
    }
    Ok(crops)
}
