//! Plots: the intensity histogram with the display window marked.

use egui_plot::{Bar, BarChart, Plot, VLine};

use crate::window_level::WindowLevel;

/// A histogram of intensities, computed once per image.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub min: f32,
    /// Bin width.
    pub bin_width: f32,
    /// Voxel counts per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `bins` bins between the 0.5th and 99.5th percentiles of `data` (strided sample, finite values).
    pub fn new(data: &[f32], bins: usize) -> Option<Self> {
        let (lo, hi) = crate::window_level::percentiles(data, 0.5, 99.5)?;
        let bins = bins.max(1);
        let bin_width = ((hi - lo) / bins as f32).max(1e-6);
        let mut counts = vec![0u64; bins];
        let stride = (data.len() / 2_000_000).max(1);
        for &v in data.iter().step_by(stride) {
            if v.is_finite() && v >= lo && v <= hi {
                let b = (((v - lo) / bin_width) as usize).min(bins - 1);
                counts[b] += 1;
            }
        }
        Some(Self {
            min: lo,
            bin_width,
            counts,
        })
    }
}

/// Shows `hist` (log counts) with the window edges as vertical lines.
pub fn histogram_ui(ui: &mut egui::Ui, hist: &Histogram, window: WindowLevel) {
    let bars: Vec<Bar> = hist
        .counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            Bar::new(
                (hist.min + (i as f32 + 0.5) * hist.bin_width) as f64,
                ((c + 1) as f64).log10(),
            )
            .width(hist.bin_width as f64)
        })
        .collect();
    let lo = (window.center - 0.5 * window.width) as f64;
    let hi = (window.center + 0.5 * window.width) as f64;
    Plot::new("intensity_histogram")
        .height(80.0)
        .show_y(false)
        .allow_scroll(false)
        .allow_drag(false)
        .show(ui, |plot| {
            plot.bar_chart(
                BarChart::new("log10 voxels", bars).color(egui::Color32::from_gray(170)),
            );
            plot.vline(VLine::new("window min", lo).color(egui::Color32::from_rgb(120, 170, 255)));
            plot.vline(VLine::new("window max", hi).color(egui::Color32::from_rgb(120, 170, 255)));
        });
}
