//! The one place where the app calls into the `logonet` library for volumes, DICOM, models and metrics.
//!
//! Every function here runs on a background job thread (see [`crate::jobs`]) and returns `logonet::Result`.
//! Errors are shown in-window by the caller.

use std::path::{Path, PathBuf};

use logonet::infer::bundle::Bundle;
use logonet::infer::predict::{self, PredictOptions};
use logonet::job::{CancelToken, NoProgress, Progress, ProgressEvent};
use logonet::metrics::{MetricsConfig, evaluate};
use logonet::volume::dicom;
use logonet::volume::{ImageVolume, LabelTable, LabelVolume};
use logonet::{Error, Result};
use logonet_viewer::metrics_table::MetricRow;

/// An image with an optional ground truth, as the default sample is shipped.
pub struct Sample {
    /// The image (HU).
    pub image: ImageVolume,
    /// Its ground-truth label map, if any.
    pub labels: Option<LabelVolume>,
    /// Display name.
    pub name: String,
}

/// The embedded default sample: the synthetic abdominal CT phantom of `logonet::volume::phantom` (13 BTCV
/// organs, HU, RAS) with its ground truth.
pub fn default_sample() -> Result<Sample> {
    let (image, labels) =
        logonet::volume::phantom::phantom(&logonet::volume::phantom::PhantomConfig::default());
    Ok(Sample {
        image,
        labels: Some(labels),
        name: "Synthetic abdomen phantom".to_string(),
    })
}

/// The library's synthetic abdominal CT phantom (`logonet::volume::phantom`, seed 0) at any size and spacing,
/// used for frame-time benchmarks (`--phantom-dims`) and tests.
pub fn phantom(dims: [usize; 3], spacing_mm: [f64; 3]) -> (ImageVolume, LabelVolume) {
    use logonet::volume::phantom::PhantomConfig;
    logonet::volume::phantom::phantom(&PhantomConfig {
        dims,
        spacing_mm,
        ..PhantomConfig::default()
    })
}

/// Reads an image (NIfTI `.nii`/`.nii.gz`, or one DICOM file).
pub fn load_image(path: &Path) -> Result<ImageVolume> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".dcm") {
        return dicom::load_dicom_image(path);
    }
    logonet::volume::io::load_image(path)
}

/// Reads a label map (NIfTI) and checks nothing else: the caller checks the grid.
pub fn load_labels(path: &Path) -> Result<LabelVolume> {
    logonet::volume::io::load_labels(path)
}

/// Writes `labels` as NIfTI on its own grid (the input image's grid for a prediction).
pub fn save_labels(path: &Path, labels: &LabelVolume) -> Result<()> {
    logonet::volume::io::save_labels(path, labels)
}

/// One DICOM series found in a folder.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesInfo {
    /// The series' grouping key (unique within a scan; SeriesInstanceUID alone may be shared).
    pub uid: String,
    /// Human-readable description: modality, dims, description, files, transfer syntax.
    pub description: String,
    /// What the library found.
    pub info: dicom::SeriesInfo,
}

/// Lists the DICOM series under `dir` (image series first, segmentations last).
pub fn scan_series(
    dir: &Path,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<Vec<SeriesInfo>> {
    progress.report(ProgressEvent {
        stage: "scan".into(),
        done: 0,
        total: 1,
    });
    let mut found = dicom::scan_series(dir)?;
    cancel.check()?;
    found.sort_by_key(|s| s.kind == dicom::SeriesKind::Segmentation);
    progress.report(ProgressEvent {
        stage: "scan".into(),
        done: 1,
        total: 1,
    });
    Ok(found
        .into_iter()
        .map(|info| SeriesInfo {
            uid: info.key.clone(),
            description: info.summary(),
            info,
        })
        .collect())
}

/// Loads series `uid` (its grouping key) from `dir` as one volume; with a DICOM SEG of that series in the same
/// folder, also returns it as a label map on the image grid.
pub fn load_series(
    dir: &Path,
    uid: &str,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<(ImageVolume, Option<LabelVolume>, Vec<String>)> {
    let all = scan_series(dir, progress, cancel)?;
    let series = all
        .iter()
        .find(|s| s.uid == uid)
        .ok_or_else(|| Error::format(format!("series '{uid}' not found"), dir))?;
    let (image, mut warnings) = dicom::load_series_with(&series.info, progress, cancel)?;
    let mut gt = None;
    let source_uid = &series.info.series_uid;
    for s in &all {
        if s.info.kind != dicom::SeriesKind::Segmentation || gt.is_some() {
            continue;
        }
        let Some(seg_path) = s.info.files.first() else {
            continue;
        };
        match dicom::load_seg(seg_path, &image, &series.info) {
            Ok(seg) if seg.labels.data.iter().any(|&v| v != 0) => {
                warnings.extend(seg.warnings);
                gt = Some(seg.labels);
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!("DICOM SEG not used for series {source_uid}: {e}")),
        }
    }
    Ok((image, gt, warnings))
}

/// A loaded segmentation model.
pub struct Model {
    /// Display name (the bundle's name, else its file name).
    pub name: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The labels it predicts.
    pub table: LabelTable,
    /// The bundle (weights, preprocessing, sliding-window settings).
    pub bundle: Bundle,
}

/// Loads a model bundle, or imports a reference checkpoint (`.pt`/`.pth`, or a `.safetensors` state dict
/// without bundle metadata) with the paper's BTCV CT recipe.
pub fn load_model(path: &Path) -> Result<Model> {
    let bundle = match Bundle::load(path) {
        Ok(b) => b,
        Err(load_err) => {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            Bundle::import_checkpoint(path, &name).map_err(|_| load_err)?
        }
    };
    let name = if bundle.meta.name.is_empty() {
        path.file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        bundle.meta.name.clone()
    };
    Ok(Model {
        name,
        path: path.to_path_buf(),
        table: bundle.meta.labels.clone(),
        bundle,
    })
}

/// The bundled model shipped with the app, if any: the first `assets/models/*.safetensors` (sorted by name)
/// under the current directory or the workspace root this program was built from.
pub fn bundled_model_path() -> Option<PathBuf> {
    let roots = [
        PathBuf::from("assets/models"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models"),
    ];
    roots.iter().find_map(|dir| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        files.into_iter().next()
    })
}

/// Segments `image` with `model` (sliding window on CPU with the bundle's settings), reporting progress and
/// honouring `cancel`. The result lies on the image's grid.
pub fn segment(
    model: &Model,
    image: &ImageVolume,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<LabelVolume> {
    let options = PredictOptions {
        sliding_window: model.bundle.meta.sliding_window.clone(),
        device: candle_core::Device::Cpu,
    };
    predict::segment(image, &model.bundle, &options, progress, cancel)
}

/// Per-label Dice, HD95 and volumes of `pred` against `gt` (same grid) for the labels of `table`
/// present in either map (`logonet::metrics::evaluate`, MONAI conventions).
pub fn metrics(pred: &LabelVolume, gt: &LabelVolume, table: &LabelTable) -> Result<Vec<MetricRow>> {
    let present: std::collections::BTreeSet<u16> = pred
        .data
        .iter()
        .chain(&gt.data)
        .copied()
        .filter(|&v| v != 0)
        .collect();
    let config = MetricsConfig {
        labels: Some(present.into_iter().collect()),
        ..MetricsConfig::default()
    };
    let result = evaluate(pred, gt, table, &config, &NoProgress, &CancelToken::new())?;
    Ok(result
        .labels
        .into_iter()
        .map(|l| MetricRow {
            value: l.value,
            color: table.color(l.value),
            name: l.name,
            dice: l.dice,
            hd95_mm: l.hd95_mm.is_finite().then_some(l.hd95_mm),
            pred_volume_ml: l.volume_pred_ml,
            gt_volume_ml: l.volume_gt_ml,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_has_labelled_organs_in_hu() {
        let (image, labels) = phantom([96, 96, 40], [3.7, 3.7, 6.0]);
        assert_eq!(image.dims, labels.dims);
        let present = logonet_viewer::legend::present_labels(&labels.data);
        assert!(present.contains(&6) && present.contains(&1), "{present:?}");
        assert!(image.data.iter().any(|&v| v < -900.0) && image.data.iter().any(|&v| v > 500.0));
    }

    #[test]
    fn metrics_of_identical_maps_are_perfect() {
        let (_, labels) = phantom([64, 64, 24], [5.5, 5.5, 10.0]);
        assert!(default_sample().is_ok_and(|s| s.labels.is_some()));
        let rows = metrics(&labels, &labels, &LabelTable::btcv()).unwrap_or_default();
        assert!(!rows.is_empty());
        for r in rows {
            assert!((r.dice - 1.0).abs() < 1e-12);
            assert!((r.pred_volume_ml - r.gt_volume_ml).abs() < 1e-12);
        }
    }
}

#[cfg(test)]
mod io_tests {
    use super::*;

    #[test]
    fn saved_segmentation_reloads_on_the_same_grid() {
        let (_, labels) = phantom([40, 40, 20], [9.0, 9.0, 12.0]);
        let Ok(dir) = tempfile::tempdir() else { return };
        let path = dir.path().join("seg.nii.gz");
        assert!(save_labels(&path, &labels).is_ok());
        match load_labels(&path) {
            Ok(back) => {
                assert_eq!(back.dims, labels.dims);
                assert_eq!(back.data, labels.data);
                assert!(back.ras_from_ijk.max_abs_diff(&labels.ras_from_ijk) < 1e-4);
            }
            Err(e) => panic!("reload failed: {e}"),
        }
        assert!(load_image(&dir.path().join("missing.nii.gz")).is_err());
    }
}
