//! The per-label metrics table used by `logonet eval` and the app.

use super::{PairStats, label_surface_distances, mean_reduction, volume_ml};
use crate::job::{CancelToken, Progress, ProgressEvent};
use crate::volume::{LabelTable, LabelVolume};
use crate::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// What to compute and how (MONAI names and defaults where MONAI has them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsConfig {
    /// Evaluate label 0 too (MONAI `include_background`, default `false`).
    pub include_background: bool,
    /// Dice is nan when the ground truth of a label is empty (MONAI `ignore_empty`, default `true`).
    pub ignore_empty: bool,
    /// Hausdorff percentile (default 95).
    pub hd_percentile: f64,
    /// Surface-Dice tolerance in millimetres, the same for every label (default 1.0).
    pub nsd_tolerance_mm: f64,
    /// Compute HD95 and NSD (the slow part); when `false` they are nan.
    pub surface: bool,
    /// Labels to evaluate; `None`: every label of the table and every label present in either map.
    pub labels: Option<Vec<u16>>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            include_background: false,
            ignore_empty: true,
            hd_percentile: 95.0,
            nsd_tolerance_mm: 1.0,
            surface: true,
            labels: None,
        }
    }
}

/// Metrics of one label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    /// Label value.
    pub value: u16,
    /// Label name.
    pub name: String,
    /// Dice (nan for an empty ground truth with `ignore_empty`).
    pub dice: f64,
    /// Symmetric Hausdorff distance at the configured percentile, millimetres.
    pub hd95_mm: f64,
    /// Normalised surface Dice at the configured tolerance.
    pub nsd: f64,
    /// Predicted volume, millilitres.
    pub volume_pred_ml: f64,
    /// Ground-truth volume, millilitres.
    pub volume_gt_ml: f64,
}

/// Per-label metrics of one prediction against one ground truth, with MONAI "mean" means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsTable {
    /// One row per evaluated label, ascending value.
    pub labels: Vec<LabelMetrics>,
    /// Mean Dice over non-nan labels (0.0 if none, as MONAI).
    pub mean_dice: f64,
    /// Mean HD95 over non-nan labels, millimetres.
    pub mean_hd95_mm: f64,
    /// Mean NSD over non-nan labels.
    pub mean_nsd: f64,
    /// The settings used.
    pub config: MetricsConfig,
}

/// Computes the metrics table of `pred` against `gt` (same grid; spacing from `gt`'s affine).
pub fn evaluate(
    pred: &LabelVolume,
    gt: &LabelVolume,
    table: &LabelTable,
    config: &MetricsConfig,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<MetricsTable> {
    if pred.dims != gt.dims {
        return Err(Error::invalid(
            "metrics::evaluate",
            format!(
                "prediction dims {:?} differ from ground-truth dims {:?}",
                pred.dims, gt.dims
            ),
        ));
    }
    let diff = pred.ras_from_ijk.max_abs_diff(&gt.ras_from_ijk);
    if diff > 1e-2 {
        return Err(Error::invalid(
            "metrics::evaluate",
            format!(
                "prediction and ground truth lie on different grids (affines differ by {diff:.3} mm)"
            ),
        ));
    }
    let spacing_mm = gt.spacing_mm();
    let dims = gt.dims;
    let stats = PairStats::compute(&pred.data, &gt.data, dims);
    let labels: Vec<u16> = match &config.labels {
        Some(l) => l.clone(),
        None => {
            let mut l: Vec<u16> = table.labels.iter().map(|l| l.value).collect();
            l.extend(
                (0..stats.counts.len())
                    .filter(|&v| stats.counts[v].pred + stats.counts[v].gt > 0)
                    .map(|v| v as u16),
            );
            l.sort_unstable();
            l.dedup();
            l
        }
    };
    let labels: Vec<u16> = labels
        .into_iter()
        .filter(|&v| config.include_background || v != 0)
        .collect();
    let total = labels.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let rows: Vec<Result<LabelMetrics>> = labels
        .par_iter()
        .map(|&value| {
            cancel.check()?;
            let c = stats.counts(value);
            let (hd95_mm, nsd) = if config.surface {
                let bbox = stats.union_box(value);
                let d = label_surface_distances(
                    &pred.data,
                    &gt.data,
                    dims,
                    value,
                    spacing_mm,
                    Some(bbox),
                );
                (
                    d.hausdorff_mm(Some(config.hd_percentile)),
                    d.surface_dice(config.nsd_tolerance_mm),
                )
            } else {
                (f64::NAN, f64::NAN)
            };
            let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            progress.report(ProgressEvent {
                stage: "metrics".into(),
                done: n,
                total,
            });
            Ok(LabelMetrics {
                value,
                name: table.name(value),
                dice: c.dice(config.ignore_empty),
                hd95_mm,
                nsd,
                volume_pred_ml: volume_ml(c.pred, spacing_mm),
                volume_gt_ml: volume_ml(c.gt, spacing_mm),
            })
        })
        .collect();
    let labels = rows.into_iter().collect::<Result<Vec<_>>>()?;
    let mean = |f: fn(&LabelMetrics) -> f64| mean_reduction(&[labels.iter().map(f).collect()]);
    Ok(MetricsTable {
        mean_dice: mean(|l| l.dice),
        mean_hd95_mm: mean(|l| l.hd95_mm),
        mean_nsd: mean(|l| l.nsd),
        labels,
        config: config.clone(),
    })
}

impl MetricsTable {
    /// The table as aligned text (one row per label, then the mean), for terminals and logs.
    pub fn to_text(&self) -> String {
        let width = self
            .labels
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = format!(
            "{:>5}  {:<width$}  {:>7}  {:>9}  {:>7}  {:>10}  {:>10}\n",
            "label",
            "name",
            "dice",
            format!("hd{}_mm", self.config.hd_percentile),
            "nsd",
            "pred_ml",
            "gt_ml"
        );
        for l in &self.labels {
            s += &format!(
                "{:>5}  {:<width$}  {:>7.4}  {:>9.3}  {:>7.4}  {:>10.2}  {:>10.2}\n",
                l.value, l.name, l.dice, l.hd95_mm, l.nsd, l.volume_pred_ml, l.volume_gt_ml
            );
        }
        s += &format!(
            "{:>5}  {:<width$}  {:>7.4}  {:>9.3}  {:>7.4}\n",
            "", "mean", self.mean_dice, self.mean_hd95_mm, self.mean_nsd
        );
        s
    }
}
