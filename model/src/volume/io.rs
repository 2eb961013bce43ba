//! Loading and saving volumes by path: NIfTI files by extension, DICOM series from a directory.

use super::nifti::{self, ReadOptions, WriteOptions};
use super::{ImageVolume, LabelVolume};
use crate::{Error, Result};
use std::path::Path;

/// Whether `path` names a NIfTI file (`.nii` or `.nii.gz`, any case).
pub fn is_nifti_path(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// Loads an image: a `.nii`/`.nii.gz` file, or a directory holding one DICOM series.
///
/// NaN or infinite voxels are an error here (they would poison every later step); use
/// [`nifti::read_image`] to read such a file anyway and see how many there are.
pub fn load_image(path: &Path) -> Result<ImageVolume> {
    if path.is_dir() {
        return load_dicom(path);
    }
    if !is_nifti_path(path) {
        return Err(Error::format(
            "unknown volume format (expected .nii, .nii.gz or a DICOM folder)",
            path,
        ));
    }
    let img = nifti::read_image(path, &ReadOptions::default())?;
    if img.nonfinite_voxels > 0 {
        return Err(Error::format(
            format!("{} voxels are NaN or infinite", img.nonfinite_voxels),
            path,
        ));
    }
    Ok(img.volume)
}

/// Loads a label map from a `.nii`/`.nii.gz` file.
pub fn load_labels(path: &Path) -> Result<LabelVolume> {
    if !is_nifti_path(path) {
        return Err(Error::format(
            "label maps are read from .nii or .nii.gz files",
            path,
        ));
    }
    Ok(nifti::read_labels(path, &ReadOptions::default())?.volume)
}

/// Saves an image as float32 NIfTI (`.nii` or `.nii.gz`), atomically.
pub fn save_image(path: &Path, vol: &ImageVolume) -> Result<()> {
    check_out_path(path)?;
    nifti::write_image(path, vol, &WriteOptions::default())
}

/// Saves a label map as uint8/uint16 NIfTI, atomically.
pub fn save_labels(path: &Path, vol: &LabelVolume) -> Result<()> {
    check_out_path(path)?;
    nifti::write_labels(path, vol, &WriteOptions::default())
}

fn check_out_path(path: &Path) -> Result<()> {
    if is_nifti_path(path) {
        Ok(())
    } else {
        Err(Error::format("output must end in .nii or .nii.gz", path))
    }
}

fn load_dicom(path: &Path) -> Result<ImageVolume> {
    super::dicom::load_dicom_image(path)
}
