//! CT/MRI volumes with their geometry: I/O (NIfTI, DICOM), orientation, resampling, MONAI-equivalent
//! preprocessing, datasets and the synthetic abdominal phantom.
//!
//! Memory layout: voxel `(i, j, k)` of a volume with `dims = [ni, nj, nk]` is at `data[(i * nj + j) * nk + k]`
//! (C order over the NIfTI indices), so a volume is directly the `[1, 1, X, Y, Z]` tensor MONAI builds from a
//! NIfTI file (`dim2 = i`, `dim4 = k`). `ras_from_ijk` maps voxel indices to RAS millimetres, as nibabel's affine.

pub mod dataset;
pub mod dicom;
pub mod geometry;
pub mod io;
pub mod labels;
pub mod nifti;
pub mod orient;
pub mod phantom;
pub mod resample;
pub mod transforms;

pub use geometry::Affine;
pub use labels::{LabelInfo, LabelTable};

use crate::{Error, Result};
use candle_core::{Device, Tensor};

/// A 3-D grid of voxels with its voxel-to-world geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume<T> {
    /// Voxels in C order over (i, j, k): index `(i * nj + j) * nk + k`.
    pub data: Vec<T>,
    /// Number of voxels along i, j, k.
    pub dims: [usize; 3],
    /// Voxel indices (i, j, k) to RAS millimetres.
    pub ras_from_ijk: Affine,
}

/// An image: intensities as f32 (HU for CT).
pub type ImageVolume = Volume<f32>;
/// A label map: one integer label per voxel (0 = background).
pub type LabelVolume = Volume<u16>;

impl<T: Copy> Volume<T> {
    /// A volume from its voxels; fails if `data.len()` is not `dims` multiplied out.
    pub fn new(data: Vec<T>, dims: [usize; 3], ras_from_ijk: Affine) -> Result<Self> {
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            return Err(Error::invalid(
                "Volume::new",
                format!("{} voxels for dims {dims:?}", data.len()),
            ));
        }
        Ok(Self {
            data,
            dims,
            ras_from_ijk,
        })
    }

    /// A volume of `dims` filled with `value`.
    pub fn filled(value: T, dims: [usize; 3], ras_from_ijk: Affine) -> Self {
        Self {
            data: vec![value; dims[0] * dims[1] * dims[2]],
            dims,
            ras_from_ijk,
        }
    }

    /// Flat index of voxel (i, j, k).
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        (i * self.dims[1] + j) * self.dims[2] + k
    }

    /// Voxel (i, j, k), or `None` outside the grid.
    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> Option<T> {
        (i < self.dims[0] && j < self.dims[1] && k < self.dims[2])
            .then(|| self.data[self.index(i, j, k)])
    }

    /// Voxel size along i, j, k in millimetres (the affine's column norms).
    pub fn spacing_mm(&self) -> [f64; 3] {
        self.ras_from_ijk.spacing_mm()
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the volume has no voxels.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A volume on the same grid with every voxel mapped through `f`.
    pub fn map<U: Copy>(&self, f: impl Fn(T) -> U) -> Volume<U> {
        Volume {
            data: self.data.iter().map(|&v| f(v)).collect(),
            dims: self.dims,
            ras_from_ijk: self.ras_from_ijk,
        }
    }

    /// Whether `other` lies on the same grid (same dims, affines equal within `tol_mm`).
    pub fn same_grid<U>(&self, other: &Volume<U>, tol_mm: f64) -> bool {
        self.dims == other.dims && self.ras_from_ijk.max_abs_diff(&other.ras_from_ijk) <= tol_mm
    }
}

impl ImageVolume {
    /// The volume as a `[1, 1, X, Y, Z]` f32 tensor.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let [x, y, z] = self.dims;
        Ok(Tensor::from_slice(&self.data, (1, 1, x, y, z), device)?)
    }

    /// An image from a `[X, Y, Z]`, `[1, X, Y, Z]` or `[1, 1, X, Y, Z]` tensor and a geometry.
    pub fn from_tensor(t: &Tensor, ras_from_ijk: Affine) -> Result<Self> {
        let dims = t.dims();
        let spatial: [usize; 3] =
            dims[dims.len().saturating_sub(3)..]
                .try_into()
                .map_err(|_| {
                    Error::invalid(
                        "ImageVolume::from_tensor",
                        format!("need a 3-D tensor, got {dims:?}"),
                    )
                })?;
        if dims.len() > 3 && dims[..dims.len() - 3].iter().any(|&d| d != 1) {
            return Err(Error::invalid(
                "ImageVolume::from_tensor",
                format!("leading dims must be 1, got {dims:?}"),
            ));
        }
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Volume::new(data, spatial, ras_from_ijk)
    }
}
