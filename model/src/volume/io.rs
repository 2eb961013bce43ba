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

/// Whether `path` is a DICOM file: a Part-10 preamble ("DICM" at byte 128) or a `.dcm` / `.dicom` name.
pub fn is_dicom_file(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".dcm") || name.ends_with(".dicom") {
        return true;
    }
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && &head[128..132] == b"DICM"
}

/// Options of [`load_image_with`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Frame of a 4-D NIfTI file (0-based).
    pub frame: usize,
    /// Which image series of a DICOM folder holding several (index into the list [`super::dicom::scan_series`]
    /// returns, segmentations left out); `None`: the folder must hold exactly one.
    pub series: Option<usize>,
}

/// Loads an image: a `.nii`/`.nii.gz` file, a DICOM file, or a folder holding one DICOM series.
///
/// NaN or infinite voxels are an error here (they would poison every later step); use
/// [`nifti::read_image`] to read such a file anyway and see how many there are.
pub fn load_image(path: &Path) -> Result<ImageVolume> {
    Ok(load_image_with(path, &LoadOptions::default())?.0)
}

/// Loads an image as [`load_image`] does, choosing a 4-D frame or one of several DICOM series, and returns the
/// loader's warnings (irregular slice spacing, assumed geometry, ...).
pub fn load_image_with(path: &Path, opts: &LoadOptions) -> Result<(ImageVolume, Vec<String>)> {
    if path.is_dir() || is_dicom_file(path) {
        return load_dicom(path, opts.series);
    }
    if !is_nifti_path(path) {
        return Err(Error::format(
            "unknown volume format (expected .nii, .nii.gz, a DICOM file or a DICOM folder)",
            path,
        ));
    }
    let img = nifti::read_image(
        path,
        &ReadOptions {
            frame: opts.frame,
            ..ReadOptions::default()
        },
    )?;
    if img.nonfinite_voxels > 0 {
        return Err(Error::format(
            format!("{} voxels are NaN or infinite", img.nonfinite_voxels),
            path,
        ));
    }
    let mut warnings = Vec::new();
    if img.info.frames > 1 {
        warnings.push(format!(
            "4-D file: frame {} of {} loaded",
            opts.frame, img.info.frames
        ));
    }
    Ok((img.volume, warnings))
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

fn load_dicom(path: &Path, series: Option<usize>) -> Result<(ImageVolume, Vec<String>)> {
    use super::dicom::{SeriesKind, load_series, scan_series};
    let Some(n) = series else {
        return super::dicom::load_dicom_image_with_warnings(path);
    };
    let found: Vec<_> = scan_series(path)?
        .into_iter()
        .filter(|s| s.kind != SeriesKind::Segmentation)
        .collect();
    let s = found.get(n).ok_or_else(|| {
        Error::format(
            format!(
                "series {n} requested but {} image series were found",
                found.len()
            ),
            path,
        )
    })?;
    load_series(s)
}
