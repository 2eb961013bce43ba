//! The status bar: the readout under the pointer (voxel, RAS mm, intensity, labels) and background jobs.

use crate::StudioApp;
use crate::actions::Action;
use crate::jobs::job_progress_ui;

/// The readout text for voxel `ijk`: "ijk (i, j, k)  RAS (x, y, z) mm  HU v  GT liver (6)  Pred ...".
pub fn readout(app: &StudioApp, ijk: [usize; 3]) -> String {
    let Some(doc) = &app.doc else {
        return String::new();
    };
    let Some(v) = doc.image.get(ijk[0], ijk[1], ijk[2]) else {
        return String::new();
    };
    let ras = doc.image.ras_from_ijk.apply(ijk.map(|c| c as f64));
    let unit = if doc.is_ct { "HU" } else { "value" };
    let mut s = format!(
        "ijk ({}, {}, {})   RAS ({:.1}, {:.1}, {:.1}) mm   {unit} {v:.0}",
        ijk[0], ijk[1], ijk[2], ras[0], ras[1], ras[2]
    );
    if let Some(gt) = &doc.gt
        && let Some(name) = doc.label_at(gt, ijk)
    {
        s.push_str(&format!("   GT: {name}"));
    }
    if let Some(pred) = &doc.pred
        && let Some(name) = doc.label_at(pred, ijk)
    {
        s.push_str(&format!("   Pred: {name}"));
    }
    s
}

/// Draws the status bar.
pub fn status_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    ui.horizontal(|ui| {
        let at = app.hovered.unwrap_or(app.view.cursor);
        let text = readout(app, at);
        ui.monospace(text);
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if app.view.show_frame_time {
                ui.weak(format!("{:.1} ms/frame", app.frame_ms));
            }
            if let Some(job) = &app.load_job
                && job_progress_ui(ui, job)
            {
                app.actions.push(Action::CancelLoad);
            }
            if let Some(job) = &app.segment_job
                && job_progress_ui(ui, job)
            {
                app.actions.push(Action::CancelSegmentation);
            }
        });
    });
}
