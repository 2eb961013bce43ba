//! Segmentation metrics with MONAI 1.6 semantics: Dice, Hausdorff distance (HD95 / HD100) and normalised
//! surface Dice (NSD) in millimetres, and volumes in millilitres, on label maps.
//!
//! The values equal MONAI's `DiceMetric`, `HausdorffDistanceMetric` and `SurfaceDiceMetric` called on the
//! one-hot encoded maps (golden-tested against `tests/fixtures/pipeline/metrics.io.safetensors`).
//!
//! # Empty masks (per label, prediction P, ground truth G)
//! | case | Dice | HD95 | HD100 | NSD |
//! |---|---|---|---|---|
//! | both non-empty | `2|P∩G|/(|P|+|G|)` | percentile | max | fraction |
//! | P empty, G not | 0.0 | **nan** | **inf** | 0.0 |
//! | G empty, P not | **nan** (`ignore_empty`, default) or 0.0 | **nan** | **inf** | 0.0 |
//! | both empty | **nan** (`ignore_empty`) or 1.0 | nan | nan | nan |
//!
//! HD95 is nan, not inf, with one empty mask because `torch.quantile` interpolates `inf − inf`.
//!
//! # Means
//! [`mean_reduction`] is MONAI's `reduction="mean"`: nan entries are skipped, first over labels per case, then
//! over cases that have at least one non-nan value; if nothing is left the mean is **0.0** (MONAI's choice).
//! `inf` is not skipped and propagates.

pub mod surface;
mod table;

pub use surface::{
    SurfaceDistances, VoxelBox, mask_edges, quantile_linear, surface_distances,
    surface_distances_by,
};
pub use table::{LabelMetrics, MetricsConfig, MetricsTable, evaluate};

/// Voxel counts of one label: in the prediction, the ground truth and both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelCounts {
    /// Voxels labelled so in the prediction.
    pub pred: u64,
    /// Voxels labelled so in the ground truth.
    pub gt: u64,
    /// Voxels labelled so in both.
    pub both: u64,
}

impl LabelCounts {
    /// MONAI `DiceMetric` for this label (see the module table for the empty cases).
    pub fn dice(&self, ignore_empty: bool) -> f64 {
        dice_from_counts(self.both, self.pred, self.gt, ignore_empty)
    }
}

/// Dice from voxel counts with MONAI's empty-ground-truth rule.
pub fn dice_from_counts(both: u64, pred: u64, gt: u64, ignore_empty: bool) -> f64 {
    if gt == 0 {
        return if ignore_empty {
            f64::NAN
        } else if pred == 0 {
            1.0
        } else {
            0.0
        };
    }
    2.0 * both as f64 / (pred + gt) as f64
}

/// Per-label counts and bounding boxes of a pair of label maps, in one pass.
#[derive(Clone, Debug, Default)]
pub struct PairStats {
    /// Counts indexed by label value (length = the largest value present + 1).
    pub counts: Vec<LabelCounts>,
    /// Bounding box of each label in the prediction.
    pub pred_boxes: Vec<VoxelBox>,
    /// Bounding box of each label in the ground truth.
    pub gt_boxes: Vec<VoxelBox>,
}

impl PairStats {
    /// Counts and boxes of `pred` and `gt` (same `dims`, C order).
    pub fn compute(pred: &[u16], gt: &[u16], dims: [usize; 3]) -> Self {
        let mut s = PairStats::default();
        let grow = |s: &mut PairStats, v: usize| {
            if s.counts.len() <= v {
                s.counts.resize(v + 1, LabelCounts::default());
                s.pred_boxes.resize(v + 1, VoxelBox::empty());
                s.gt_boxes.resize(v + 1, VoxelBox::empty());
            }
        };
        let mut idx = 0usize;
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let (p, g) = (pred[idx] as usize, gt[idx] as usize);
                    grow(&mut s, p.max(g));
                    s.counts[p].pred += 1;
                    s.counts[g].gt += 1;
                    s.pred_boxes[p].include([i, j, k]);
                    s.gt_boxes[g].include([i, j, k]);
                    if p == g {
                        s.counts[p].both += 1;
                    }
                    idx += 1;
                }
            }
        }
        s
    }

    /// Counts of `label` (zeros if absent from both).
    pub fn counts(&self, label: u16) -> LabelCounts {
        self.counts.get(label as usize).copied().unwrap_or_default()
    }

    /// Box holding `label` in either map (empty if absent from both).
    pub fn union_box(&self, label: u16) -> VoxelBox {
        let l = label as usize;
        match (self.pred_boxes.get(l), self.gt_boxes.get(l)) {
            (Some(p), Some(g)) => p.union(g),
            _ => VoxelBox::empty(),
        }
    }
}

/// MONAI's `reduction="mean"` over a `[case][label]` table (see the module doc).
pub fn mean_reduction(values: &[Vec<f64>]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for case in values {
        let ok: Vec<f64> = case.iter().copied().filter(|v| !v.is_nan()).collect();
        if !ok.is_empty() {
            sum += ok.iter().sum::<f64>() / ok.len() as f64;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Volume in millilitres of `voxels` voxels of `spacing_mm`.
pub fn volume_ml(voxels: u64, spacing_mm: [f64; 3]) -> f64 {
    voxels as f64 * spacing_mm[0] * spacing_mm[1] * spacing_mm[2] / 1000.0
}

/// Surface distances of `label` between two label maps (C order, `dims`), scanning only the label's box.
pub fn label_surface_distances(
    pred: &[u16],
    gt: &[u16],
    dims: [usize; 3],
    label: u16,
    spacing_mm: [f64; 3],
    bbox: Option<VoxelBox>,
) -> SurfaceDistances {
    surface_distances_by(
        dims,
        bbox,
        spacing_mm,
        |i| pred[i] == label,
        |i| gt[i] == label,
    )
}
