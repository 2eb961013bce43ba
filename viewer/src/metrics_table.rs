//! The per-label metrics table of a prediction against its ground truth (Dice, HD95, volumes).

use egui::Color32;

/// Metrics of one label.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRow {
    /// Label value.
    pub value: u16,
    /// Label name.
    pub name: String,
    /// Display colour.
    pub color: [u8; 3],
    /// Dice coefficient (NaN when both prediction and ground truth are empty).
    pub dice: f64,
    /// 95th percentile Hausdorff distance in mm (None when not computed or undefined).
    pub hd95_mm: Option<f64>,
    /// Predicted volume in mL.
    pub pred_volume_ml: f64,
    /// Ground-truth volume in mL.
    pub gt_volume_ml: f64,
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".to_string(),
    }
}

/// Mean Dice over labels with a defined Dice.
pub fn mean_dice(rows: &[MetricRow]) -> Option<f64> {
    let d: Vec<f64> = rows
        .iter()
        .map(|r| r.dice)
        .filter(|d| d.is_finite())
        .collect();
    (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64)
}

/// Shows `rows` as a striped grid with a mean-Dice footer.
pub fn metrics_table_ui(ui: &mut egui::Ui, rows: &[MetricRow]) {
    if rows.is_empty() {
        ui.label("No metrics: needs a prediction and a ground truth on the same grid.");
        return;
    }
    egui::ScrollArea::vertical().show(ui, |ui| {
        egui::Grid::new("metrics_table")
            .striped(true)
            .num_columns(6)
            .spacing([14.0, 4.0])
            .show(ui, |ui| {
                for h in ["", "Label", "Dice", "HD95 (mm)", "Pred (mL)", "GT (mL)"] {
                    ui.strong(h);
                }
                ui.end_row();
                for r in rows {
                    let [cr, cg, cb] = r.color;
                    let (rect, _) =
                        ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
                    ui.painter()
                        .rect_filled(rect, 2.0, Color32::from_rgb(cr, cg, cb));
                    ui.label(&r.name);
                    ui.label(fmt_opt(Some(r.dice), 3));
                    ui.label(fmt_opt(r.hd95_mm, 1));
                    ui.label(format!("{:.1}", r.pred_volume_ml));
                    ui.label(format!("{:.1}", r.gt_volume_ml));
                    ui.end_row();
                }
                ui.label("");
                ui.strong("Mean");
                ui.strong(fmt_opt(mean_dice(rows), 3));
                ui.end_row();
            });
    });
}
