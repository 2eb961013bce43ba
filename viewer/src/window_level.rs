//! Window/level (contrast) for CT and MRI: the usual CT presets in Hounsfield units and an automatic
//! percentile window for MRI or unknown modalities.

/// A display window: intensities in `[center - width/2, center + width/2]` map to black..white.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowLevel {
    /// Window centre (level), in image units (HU for CT).
    pub center: f32,
    /// Window width, in image units (always > 0).
    pub width: f32,
}

impl Default for WindowLevel {
    fn default() -> Self {
        Preset::Abdomen.window()
    }
}

impl WindowLevel {
    /// A window from centre and width (the width is clamped to at least 1e-3).
    pub fn new(center: f32, width: f32) -> Self {
        Self {
            center,
            width: width.max(1e-3),
        }
    }

    /// The grey value (0..=255) of intensity `v`.
    #[inline]
    pub fn grey(&self, v: f32) -> u8 {
        let lo = self.center - 0.5 * self.width;
        let t = (v - lo) / self.width;
        if t.is_nan() {
            0
        } else {
            (t.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
        }
    }

    /// Applies a right-drag as in ITK-SNAP and 3D Slicer: horizontal motion changes the width, vertical motion
    /// the level; `scale` is image units per screen point.
    pub fn drag(&mut self, delta_x: f32, delta_y: f32, scale: f32) {
        self.width = (self.width + delta_x * scale).max(1.0e-3);
        self.center -= delta_y * scale;
    }
}

/// Named window presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// CT soft-tissue abdomen: W 400, L 40.
    Abdomen,
    /// CT liver: W 150, L 30.
    Liver,
    /// CT lung: W 1500, L -600.
    Lung,
    /// CT bone: W 1800, L 400.
    Bone,
    /// CT brain: W 80, L 40.
    Brain,
    /// 1st..99th intensity percentile (MRI, or anything not in HU).
    Auto,
}

impl Preset {
    /// Every preset in menu order.
    pub const ALL: [Preset; 6] = [
        Preset::Abdomen,
        Preset::Liver,
        Preset::Lung,
        Preset::Bone,
        Preset::Brain,
        Preset::Auto,
    ];

    /// Display name ("Abdomen").
    pub fn name(self) -> &'static str {
        match self {
            Preset::Abdomen => "Abdomen",
            Preset::Liver => "Liver",
            Preset::Lung => "Lung",
            Preset::Bone => "Bone",
            Preset::Brain => "Brain",
            Preset::Auto => "Auto (1-99%)",
        }
    }

    /// The CT window of this preset (`Auto` gives the abdomen window: use [`auto_window`] with the data).
    pub fn window(self) -> WindowLevel {
        match self {
            Preset::Abdomen | Preset::Auto => WindowLevel::new(40.0, 400.0),
            Preset::Liver => WindowLevel::new(30.0, 150.0),
            Preset::Lung => WindowLevel::new(-600.0, 1500.0),
            Preset::Bone => WindowLevel::new(400.0, 1800.0),
            Preset::Brain => WindowLevel::new(40.0, 80.0),
        }
    }
}

/// Intensity percentiles `p_lo`, `p_hi` (0..=100) of `data`, estimated on at most ~200k evenly strided voxels
/// (finite values only). `None` when there is no finite voxel.
pub fn percentiles(data: &[f32], p_lo: f32, p_hi: f32) -> Option<(f32, f32)> {
    let stride = (data.len() / 200_000).max(1);
    let mut sample: Vec<f32> = data
        .iter()
        .step_by(stride)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if sample.is_empty() {
        return None;
    }
    sample.sort_unstable_by(f32::total_cmp);
    let at = |p: f32| {
        let idx = ((p.clamp(0.0, 100.0) / 100.0) * (sample.len() - 1) as f32).round() as usize;
        sample[idx.min(sample.len() - 1)]
    };
    Some((at(p_lo), at(p_hi)))
}

/// The window spanning the 1st..99th percentile of `data` (MRI "auto" contrast).
pub fn auto_window(data: &[f32]) -> WindowLevel {
    match percentiles(data, 1.0, 99.0) {
        Some((lo, hi)) => WindowLevel::new(0.5 * (lo + hi), (hi - lo).max(1e-3)),
        None => WindowLevel::default(),
    }
}

/// Whether `data` looks like CT in Hounsfield units (air near -1000 present, values within -1100..4000).
pub fn looks_like_ct(data: &[f32]) -> bool {
    match percentiles(data, 0.5, 99.5) {
        Some((lo, hi)) => lo < -500.0 && lo > -1100.0 && hi < 4000.0,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_maps_window_edges() {
        let w = WindowLevel::new(40.0, 400.0);
        assert_eq!(w.grey(-160.0), 0);
        assert_eq!(w.grey(240.0), 255);
        assert_eq!(w.grey(-1000.0), 0);
        assert_eq!(w.grey(40.0), 128);
        assert_eq!(w.grey(f32::NAN), 0);
    }

    #[test]
    fn auto_window_spans_percentiles() {
        let data: Vec<f32> = (0..=1000).map(|v| v as f32).collect();
        let w = auto_window(&data);
        assert!((w.center - 500.0).abs() < 1.0, "{w:?}");
        assert!((w.width - 980.0).abs() < 2.0, "{w:?}");
        assert!(!looks_like_ct(&data));
        let ct: Vec<f32> = (0..1000).map(|v| -1000.0 + v as f32 * 2.0).collect();
        assert!(looks_like_ct(&ct));
    }

    #[test]
    fn drag_changes_width_and_level() {
        let mut w = WindowLevel::new(40.0, 400.0);
        w.drag(10.0, -5.0, 2.0);
        assert_eq!(w, WindowLevel::new(50.0, 420.0));
        w.drag(-1000.0, 0.0, 1.0);
        assert!(w.width > 0.0);
    }
}
