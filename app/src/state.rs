//! Application state, apart from views: the open document (image, ground truth, prediction), view settings
//! (crosshair in voxel indices, window, overlay), and recent files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logonet::volume::{ImageVolume, LabelInfo, LabelTable, LabelVolume};
use logonet_viewer::metrics_table::MetricRow;
use logonet_viewer::plots::Histogram;
use logonet_viewer::slice_view::{OverlayStyle, ViewTransform};
use logonet_viewer::window_level::{self, Preset, WindowLevel};

/// The open image and the label maps on its grid.
pub struct Document {
    /// The image.
    pub image: Arc<ImageVolume>,
    /// Display name of the image.
    pub name: String,
    /// Where the image came from (None for the embedded sample).
    pub path: Option<PathBuf>,
    /// Ground-truth label map on the image grid.
    pub gt: Option<Arc<LabelVolume>>,
    /// Predicted label map on the image grid.
    pub pred: Option<Arc<LabelVolume>>,
    /// Difference map (1 = true positive, 2 = false positive, 3 = false negative) for `diff_label`.
    pub diff: Option<Arc<LabelVolume>>,
    /// Names and colours of the labels.
    pub table: LabelTable,
    /// Label values present in the ground truth or the prediction.
    pub present: BTreeSet<u16>,
    /// Whether the image looks like CT in HU (chooses CT presets vs. the auto window).
    pub is_ct: bool,
    /// Intensity histogram.
    pub histogram: Option<Histogram>,
    /// Per-label metrics of the prediction against the ground truth.
    pub metrics: Vec<MetricRow>,
    /// Bumped whenever any volume or the table changes (invalidates view textures).
    pub revision: u64,
}

/// Values of the difference map.
pub const DIFF_TP: u16 = 1;
/// False positive: predicted but not in the ground truth.
pub const DIFF_FP: u16 = 2;
/// False negative: in the ground truth but not predicted.
pub const DIFF_FN: u16 = 3;

/// The label table of the difference map.
pub fn diff_table() -> LabelTable {
    LabelTable {
        labels: vec![
            LabelInfo {
                value: DIFF_TP,
                name: "true positive".into(),
                color: [60, 200, 90],
            },
            LabelInfo {
                value: DIFF_FP,
                name: "false positive".into(),
                color: [240, 70, 60],
            },
            LabelInfo {
                value: DIFF_FN,
                name: "false negative".into(),
                color: [60, 140, 255],
            },
        ],
    }
}

/// The TP/FP/FN map of `pred` against `gt` for label `label` (all labels when `None`).
pub fn difference(pred: &LabelVolume, gt: &LabelVolume, label: Option<u16>) -> LabelVolume {
    let data = pred
        .data
        .iter()
        .zip(&gt.data)
        .map(|(&p, &g)| {
            let (p, g) = match label {
                Some(l) => ((p == l) as u16, (g == l) as u16),
                None => (p, g),
            };
            if p != 0 && p == g {
                DIFF_TP
            } else if p != 0 {
                DIFF_FP
            } else if g != 0 {
                DIFF_FN
            } else {
                0
            }
        })
        .collect();
    LabelVolume {
        data,
        dims: pred.dims,
        ras_from_ijk: pred.ras_from_ijk,
    }
}

impl Document {
    /// A document for `image` (no labels yet).
    pub fn new(image: ImageVolume, name: String, path: Option<PathBuf>) -> Self {
        let is_ct = window_level::looks_like_ct(&image.data);
        let histogram = Histogram::new(&image.data, 128);
        Self {
            image: Arc::new(image),
            name,
            path,
            gt: None,
            pred: None,
            diff: None,
            table: LabelTable::btcv(),
            present: BTreeSet::new(),
            is_ct,
            histogram,
            metrics: Vec::new(),
            revision: next_revision(),
        }
    }

    /// Recomputes what derives from the label maps: present labels, difference map, metrics.
    pub fn labels_changed(&mut self, diff_label: Option<u16>) {
        let mut present = BTreeSet::new();
        for map in [&self.gt, &self.pred].into_iter().flatten() {
            present.extend(logonet_viewer::legend::present_labels(&map.data));
        }
        self.present = present;
        let (diff, metrics) = match (&self.pred, &self.gt) {
            (Some(p), Some(g)) if p.dims == g.dims => (
                Some(Arc::new(difference(p, g, diff_label))),
                crate::backend::metrics(p, g, &self.table).unwrap_or_default(),
            ),
            _ => (None, Vec::new()),
        };
        self.diff = diff;
        self.metrics = metrics;
        self.revision = next_revision();
    }

    /// The label value of `map` at `ijk` with its name, e.g. "liver (6)".
    pub fn label_at(&self, map: &LabelVolume, ijk: [usize; 3]) -> Option<String> {
        let v = map.get(ijk[0], ijk[1], ijk[2])?;
        Some(format!("{} ({v})", self.table.name(v)))
    }

    /// The default window for this image: abdomen for CT, 1-99 % for anything else.
    pub fn default_window(&self) -> (Option<Preset>, WindowLevel) {
        if self.is_ct {
            (Some(Preset::Abdomen), Preset::Abdomen.window())
        } else {
            (
                Some(Preset::Auto),
                window_level::auto_window(&self.image.data),
            )
        }
    }
}

fn next_revision() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Which label map the three main views draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlaySource {
    /// No overlay.
    None,
    /// The ground truth.
    GroundTruth,
    /// The prediction.
    Prediction,
    /// The TP/FP/FN difference map.
    Difference,
}

impl OverlaySource {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            OverlaySource::None => "None",
            OverlaySource::GroundTruth => "Ground truth",
            OverlaySource::Prediction => "Prediction",
            OverlaySource::Difference => "Difference",
        }
    }
}

/// Main area layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Axial, coronal and sagittal side by side.
    ThreeViews,
    /// Ground truth and prediction of one axis in two synchronised panes.
    Compare,
}

/// Everything about how the document is shown.
pub struct ViewSettings {
    /// The crosshair, in voxel indices (i, j, k).
    pub cursor: [usize; 3],
    /// The display window.
    pub window: WindowLevel,
    /// The preset the window came from (None after manual changes).
    pub preset: Option<Preset>,
    /// Overlay opacity, outline and hidden labels.
    pub overlay: OverlayStyle,
    /// Which map the main views draw.
    pub source: OverlaySource,
    /// Main area layout.
    pub layout: Layout,
    /// The axis shown by the compare panes.
    pub compare_axis: logonet_viewer::Axis,
    /// The right compare pane shows the difference map instead of the prediction.
    pub compare_difference: bool,
    /// The label the difference map is restricted to (None = all labels).
    pub diff_label: Option<u16>,
    /// Zoom/pan of the three main views.
    pub transforms: [ViewTransform; 3],
    /// Zoom/pan shared by both compare panes.
    pub compare_transform: ViewTransform,
    /// Show the metrics window.
    pub show_metrics: bool,
    /// Show the intensity histogram.
    pub show_histogram: bool,
    /// Show the UI time per frame in the status bar (off by default: it changes every frame).
    pub show_frame_time: bool,
}

impl ViewSettings {
    /// Settings centred on `doc`, with its default window.
    pub fn for_document(doc: &Document) -> Self {
        let (preset, window) = doc.default_window();
        Self {
            cursor: doc.image.dims.map(|d| d / 2),
            window,
            preset,
            overlay: OverlayStyle::default(),
            source: OverlaySource::GroundTruth,
            layout: Layout::ThreeViews,
            compare_axis: logonet_viewer::Axis::Axial,
            compare_difference: false,
            diff_label: None,
            transforms: [ViewTransform::default(); 3],
            compare_transform: ViewTransform::default(),
            show_metrics: false,
            show_histogram: true,
            show_frame_time: false,
        }
    }
}

/// Most recently opened files, newest first, at most [`RecentFiles::MAX`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecentFiles {
    /// The paths.
    pub paths: Vec<PathBuf>,
}

impl RecentFiles {
    /// How many paths are kept.
    pub const MAX: usize = 8;

    /// Moves `path` to the front.
    pub fn push(&mut self, path: &Path) {
        self.paths.retain(|p| p != path);
        self.paths.insert(0, path.to_path_buf());
        self.paths.truncate(Self::MAX);
    }

    /// Reads the list (one path per line) from `file`; an unreadable file gives an empty list.
    pub fn load(file: &Path) -> Self {
        let paths = std::fs::read_to_string(file)
            .map(|s| {
                s.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(PathBuf::from)
                    .take(Self::MAX)
                    .collect()
            })
            .unwrap_or_default();
        Self { paths }
    }

    /// Writes the list to `file` (atomically).
    pub fn save(&self, file: &Path) -> logonet::Result<()> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| logonet::Error::io("cannot create folder", e, dir))?;
        }
        let text: String = self
            .paths
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        logonet::error::write_atomic(file, text.as_bytes())
    }

    /// The default location: `$XDG_CONFIG_HOME/logonet-studio/recent.txt` or `~/.config/...`.
    pub fn default_file() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("logonet-studio").join("recent.txt"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logonet::volume::Affine;

    #[test]
    fn difference_marks_tp_fp_fn() {
        let a = Affine::identity();
        let gt = LabelVolume {
            data: vec![0, 1, 1, 2, 0],
            dims: [5, 1, 1],
            ras_from_ijk: a,
        };
        let pred = LabelVolume {
            data: vec![1, 1, 0, 1, 0],
            dims: [5, 1, 1],
            ras_from_ijk: a,
        };
        assert_eq!(
            difference(&pred, &gt, None).data,
            vec![DIFF_FP, DIFF_TP, DIFF_FN, DIFF_FP, 0]
        );
        assert_eq!(
            difference(&pred, &gt, Some(2)).data,
            vec![0, 0, 0, DIFF_FN, 0]
        );
        assert_eq!(
            difference(&pred, &gt, Some(1)).data,
            vec![DIFF_FP, DIFF_TP, DIFF_FN, DIFF_FP, 0]
        );
    }

    #[test]
    fn recent_files_keep_newest_first_and_round_trip() {
        let mut r = RecentFiles::default();
        for i in 0..10 {
            r.push(Path::new(&format!("/data/{i}.nii.gz")));
        }
        r.push(Path::new("/data/5.nii.gz"));
        assert_eq!(r.paths.len(), RecentFiles::MAX);
        assert_eq!(r.paths[0], PathBuf::from("/data/5.nii.gz"));
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else { return };
        let file = dir.path().join("x/recent.txt");
        assert!(r.save(&file).is_ok());
        assert_eq!(RecentFiles::load(&file), r);
    }
}
