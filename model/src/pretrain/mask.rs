//! Slice-sequence masking, exactly as the reference `pretrain/utils/mask.py::create_mask`.
//!
//! Per sample, `int(phi_1 * Z)` distinct anchor slices are drawn along the **last** spatial axis (Z). For each
//! anchor `a` (in draw order) the window of slices `max(0, a - M + 1) ..= a` (M = `mask_length`) is visited in
//! ascending order; on *every* visit a patch size `p` is drawn from [`PATCH_SIZES`] (even when the slice was
//! already masked by an earlier window: the draw is consumed and ignored), and on the *first* visit the X×Y
//! slice is tiled into p×p squares (row-major, X outer), each zeroed when a uniform draw is `< phi_2`. Rows and
//! columns left over when `p` does not divide the slice stay unmasked; when `p` exceeds X or Y the whole slice
//! is zeroed without any coin flip. The mask vector marks every visited slice.
//!
//! The random draws come from a [`MaskDraws`] source: [`SeededDraws`] for real use, [`RecordedDraws`] to
//! replay the draws recorded by the reference (numpy's legacy RNG for anchors and patch sizes, Python's
//! `random` for the coin flips), which reproduces the fixture's masks exactly.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

/// The patch sizes of the reference (`PATCHES` in `pretrain/config/masking.py`).
pub const PATCH_SIZES: [usize; 7] = [1, 2, 4, 8, 16, 32, 96];

/// Masking hyper-parameters; the defaults are the paper's (phi_1 = 0.1, phi_2 = 0.7, M = 5).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskConfig {
    /// Fraction of slices used as anchors: `int(phi_1 * Z)` anchors.
    pub phi_1: f64,
    /// Probability that a tile of a masked slice is zeroed.
    pub phi_2: f64,
    /// Number of consecutive slices masked per anchor (the window ends at the anchor).
    pub mask_length: usize,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            phi_1: 0.1,
            phi_2: 0.7,
            mask_length: 5,
        }
    }
}

impl MaskConfig {
    /// Number of anchors for `z` slices: `int(phi_1 * z)` as in the reference.
    pub fn anchor_count(&self, z: usize) -> usize {
        ((self.phi_1 * z as f64).floor().max(0.0) as usize).min(z)
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.phi_1) || !(0.0..=1.0).contains(&self.phi_2) {
            return Err(Error::invalid(
                "create_mask",
                format!(
                    "phi_1 and phi_2 must lie in [0, 1], got {} and {}",
                    self.phi_1, self.phi_2
                ),
            ));
        }
        if self.mask_length == 0 {
            return Err(Error::invalid(
                "create_mask",
                "mask_length must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Where the masking algorithm gets its random numbers.
pub trait MaskDraws {
    /// `count` distinct slice indices in `0..z`, in draw order (`np.random.choice(z, count, replace=False)`).
    fn anchors(&mut self, z: usize, count: usize) -> Result<Vec<usize>>;
    /// One patch size from [`PATCH_SIZES`], uniformly (`np.random.choice(PATCHES)`).
    fn patch_size(&mut self) -> Result<usize>;
    /// One uniform number in [0, 1) (`random.random()`).
    fn uniform(&mut self) -> Result<f64>;
}

/// A seeded random source for real use (ChaCha8; not numpy's stream, but the same distributions).
#[derive(Clone, Debug)]
pub struct SeededDraws {
    rng: ChaCha8Rng,
}

impl SeededDraws {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl MaskDraws for SeededDraws {
    fn anchors(&mut self, z: usize, count: usize) -> Result<Vec<usize>> {
        if count > z {
            return Err(Error::invalid(
                "create_mask",
                format!("cannot draw {count} distinct anchors from {z} slices"),
            ));
        }
        Ok(rand::seq::index::sample(&mut self.rng, z, count).into_vec())
    }
    fn patch_size(&mut self) -> Result<usize> {
        Ok(PATCH_SIZES[self.rng.gen_range(0..PATCH_SIZES.len())])
    }
    fn uniform(&mut self) -> Result<f64> {
        Ok(self.rng.r#gen::<f64>())
    }
}

/// Replays recorded draws (e.g. the fixture's `mask.b*.draw_*`); errors when a list runs out or an anchor
/// request does not match the recording.
#[derive(Clone, Debug, Default)]
pub struct RecordedDraws {
    /// The anchors, in draw order.
    pub anchors: Vec<usize>,
    /// One patch size per slice visit.
    pub patch_sizes: Vec<usize>,
    /// One uniform per tile coin flip.
    pub uniforms: Vec<f64>,
    next_patch: usize,
    next_uniform: usize,
}

impl RecordedDraws {
    /// A replay source over the three recorded lists.
    pub fn new(anchors: Vec<usize>, patch_sizes: Vec<usize>, uniforms: Vec<f64>) -> Self {
        Self {
            anchors,
            patch_sizes,
            uniforms,
            next_patch: 0,
            next_uniform: 0,
        }
    }
    /// Whether every recorded patch size and uniform was consumed.
    pub fn exhausted(&self) -> bool {
        self.next_patch == self.patch_sizes.len() && self.next_uniform == self.uniforms.len()
    }
}

impl MaskDraws for RecordedDraws {
    fn anchors(&mut self, z: usize, count: usize) -> Result<Vec<usize>> {
        if self.anchors.len() != count || self.anchors.iter().any(|&a| a >= z) {
            return Err(Error::invalid(
                "RecordedDraws",
                format!(
                    "recorded anchors {:?} do not fit a request of {count} anchors in {z} slices",
                    self.anchors
                ),
            ));
        }
        Ok(self.anchors.clone())
    }
    fn patch_size(&mut self) -> Result<usize> {
        let p = *self
            .patch_sizes
            .get(self.next_patch)
            .ok_or_else(|| Error::invalid("RecordedDraws", "ran out of recorded patch sizes"))?;
        self.next_patch += 1;
        Ok(p)
    }
    fn uniform(&mut self) -> Result<f64> {
        let u = *self
            .uniforms
            .get(self.next_uniform)
            .ok_or_else(|| Error::invalid("RecordedDraws", "ran out of recorded uniforms"))?;
        self.next_uniform += 1;
        Ok(u)
    }
}

/// One sample's mask.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceMask {
    /// Spatial size `[X, Y, Z]`.
    pub dims: [usize; 3],
    /// 1 = keep, 0 = masked; C order over (x, y, z): `mask[(x * Y + y) * Z + z]`.
    pub mask: Vec<f32>,
    /// 1 for every slice (index along Z) visited by a window.
    pub mask_vector: Vec<f32>,
    /// The anchors in draw order.
    pub anchors: Vec<usize>,
    /// The patch size used on each masked slice (first visit), `None` for unmasked slices.
    pub slice_patch_size: Vec<Option<usize>>,
}

impl SliceMask {
    /// Fraction of voxels that are masked (zero).
    pub fn masked_fraction(&self) -> f64 {
        let zeros = self.mask.iter().filter(|&&m| m == 0.0).count();
        zeros as f64 / self.mask.len().max(1) as f64
    }
    /// The mask as a `[1, X, Y, Z]` f32 tensor.
    pub fn mask_tensor(&self, device: &Device) -> Result<Tensor> {
        let [x, y, z] = self.dims;
        Ok(Tensor::from_slice(&self.mask, (1, x, y, z), device)?)
    }
    /// The mask vector as a `[1, Z]` f32 tensor.
    pub fn mask_vector_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.mask_vector,
            (1, self.dims[2]),
            device,
        )?)
    }
}

/// The reference's `create_mask(phi_1, phi_2, mask_length, (X, Y, Z))` with draws from `draws`.
pub fn create_mask(
    cfg: &MaskConfig,
    dims: [usize; 3],
    draws: &mut dyn MaskDraws,
) -> Result<SliceMask> {
    cfg.validate()?;
    let [nx, ny, nz] = dims;
    if nx == 0 || ny == 0 || nz == 0 {
        return Err(Error::invalid(
            "create_mask",
            format!("empty spatial size {dims:?}"),
        ));
    }
    let anchors = draws.anchors(nz, cfg.anchor_count(nz))?;
    let mut mask = vec![1f32; nx * ny * nz];
    let mut mask_vector = vec![0f32; nz];
    let mut slice_patch_size = vec![None; nz];
    for &a in &anchors {
        mask_vector[a] = 1.0;
    }
    for &a in &anchors {
        for s in (a + 1).saturating_sub(cfg.mask_length)..=a {
            mask_vector[s] = 1.0;
            // Drawn on every visit, as the reference does, so the draw stream stays aligned.
            let p = draws.patch_size()?;
            if slice_patch_size[s].is_some() {
                continue;
            }
            slice_patch_size[s] = Some(p);
            if p == 0 {
                return Err(Error::invalid("create_mask", "patch size 0"));
            }
            if nx < p || ny < p {
                for x in 0..nx {
                    for y in 0..ny {
                        mask[(x * ny + y) * nz + s] = 0.0;
                    }
                }
                continue;
            }
            for i in 0..nx / p {
                for j in 0..ny / p {
                    if draws.uniform()? < cfg.phi_2 {
                        for x in i * p..(i + 1) * p {
                            for y in j * p..(j + 1) * p {
                                mask[(x * ny + y) * nz + s] = 0.0;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(SliceMask {
        dims,
        mask,
        mask_vector,
        anchors,
        slice_patch_size,
    })
}

/// The reference's `apply_mask`: one mask per batch sample (drawn in batch order from `draws`), repeated over
/// channels and multiplied into `x` ([B, C, X, Y, Z]). Returns the masked input ([B, C, X, Y, Z]) and the mask
/// vectors ([B, Z]), both in `x`'s dtype.
pub fn apply_mask(
    x: &Tensor,
    cfg: &MaskConfig,
    draws: &mut dyn MaskDraws,
) -> Result<(Tensor, Tensor)> {
    let (b, _c, nx, ny, nz) = x.dims5()?;
    let masks = (0..b)
        .map(|_| create_mask(cfg, [nx, ny, nz], draws))
        .collect::<Result<Vec<_>>>()?;
    apply_masks(x, &masks)
}

/// Multiplies sample `b` of `x` ([B, C, X, Y, Z]) by `masks[b]` on every channel. Returns the masked input
/// ([B, C, X, Y, Z]) and the mask vectors ([B, Z]), both in `x`'s dtype.
pub fn apply_masks(x: &Tensor, masks: &[SliceMask]) -> Result<(Tensor, Tensor)> {
    let (b, _c, nx, ny, nz) = x.dims5()?;
    if masks.len() != b || masks.iter().any(|m| m.dims != [nx, ny, nz]) {
        return Err(Error::invalid(
            "apply_masks",
            format!(
                "need {b} masks of size [{nx}, {ny}, {nz}] for input {:?}, got {}",
                x.dims(),
                masks.len()
            ),
        ));
    }
    let device = x.device();
    let mask = Tensor::stack(
        &masks
            .iter()
            .map(|m| m.mask_tensor(device))
            .collect::<Result<Vec<_>>>()?,
        0,
    )?
    .to_dtype(x.dtype())?; // [B, 1, X, Y, Z]
    let vector = Tensor::cat(
        &masks
            .iter()
            .map(|m| m.mask_vector_tensor(device))
            .collect::<Result<Vec<_>>>()?,
        0,
    )?
    .to_dtype(x.dtype())?; // [B, Z]
    let masked = x.broadcast_mul(&mask)?; // [B, C, X, Y, Z]
    Ok((masked, vector))
}

/// The mask vector of "no masking" (the `--no-mask` ablation): every slice counts, `[B, Z]` ones.
pub fn full_mask_vector(b: usize, z: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::ones((b, z), DType::F32, device)?)
}

/// Analytic expectations of the masking statistics for Z slices (used by tests and documentation).
pub mod expected {
    use super::MaskConfig;

    fn ln_choose(n: usize, k: usize) -> f64 {
        if k > n {
            return f64::NEG_INFINITY;
        }
        (1..=k)
            .map(|i| ((n - k + i) as f64).ln() - (i as f64).ln())
            .sum()
    }

    /// Probability that slice `s` of `z` is in some window: 1 − C(z − w, n) / C(z, n), where `w` is the
    /// number of anchor positions `s ..= s + M − 1` inside the volume and `n` the anchor count.
    pub fn slice_covered_probability(cfg: &MaskConfig, z: usize, s: usize) -> f64 {
        let n = cfg.anchor_count(z);
        let w = cfg.mask_length.min(z - s);
        if z - w < n {
            return 1.0;
        }
        1.0 - (ln_choose(z - w, n) - ln_choose(z, n)).exp()
    }

    /// Expected number of masked (visited) slices.
    pub fn masked_slices(cfg: &MaskConfig, z: usize) -> f64 {
        (0..z).map(|s| slice_covered_probability(cfg, z, s)).sum()
    }

    /// Expected number of patch-size draws (slice visits): n · E[min(M, a + 1)] with a uniform anchor.
    pub fn visits(cfg: &MaskConfig, z: usize) -> f64 {
        let n = cfg.anchor_count(z) as f64;
        let mean_len = (0..z)
            .map(|a| cfg.mask_length.min(a + 1) as f64)
            .sum::<f64>()
            / z as f64;
        n * mean_len
    }

    /// Expected fraction of masked voxels for an X×Y slice (each masked slice's patch size uniform over
    /// [`super::PATCH_SIZES`]; tiles that fit are zeroed with probability phi_2, remainders kept, and a patch
    /// larger than the slice zeroes it whole).
    pub fn masked_voxel_fraction(cfg: &MaskConfig, xy: [usize; 2], z: usize) -> f64 {
        let [nx, ny] = xy;
        let per_slice: f64 = super::PATCH_SIZES
            .iter()
            .map(|&p| {
                if nx < p || ny < p {
                    1.0
                } else {
                    cfg.phi_2 * ((nx / p * p) * (ny / p * p)) as f64 / (nx * ny) as f64
                }
            })
            .sum::<f64>()
            / super::PATCH_SIZES.len() as f64;
        per_slice * masked_slices(cfg, z) / z as f64
    }
}
