//! The left sidebar: image information, window/level presets and histogram, overlay controls with the label
//! legend, and the segmentation controls.

use logonet_viewer::legend::legend_ui;
use logonet_viewer::window_level::Preset;

use crate::StudioApp;
use crate::actions::Action;
use crate::jobs::job_progress_ui;
use crate::state::{Layout, OverlaySource, diff_table};

/// Draws the sidebar.
pub fn sidebar_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        image_section_ui(ui, app);
        ui.separator();
        window_section_ui(ui, app);
        ui.separator();
        segmentation_section_ui(ui, app);
        ui.separator();
        overlay_section_ui(ui, app);
    });
}

fn image_section_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    ui.heading("Image");
    let Some(doc) = &app.doc else {
        ui.label("No image loaded. File > Open image…, or drop a NIfTI file or DICOM folder here.");
        return;
    };
    let img = &doc.image;
    let s = img.spacing_mm();
    let code: String = img.ras_from_ijk.orientation_code().iter().collect();
    ui.label(egui::RichText::new(&doc.name).strong());
    egui::Grid::new("image_info").num_columns(2).show(ui, |ui| {
        ui.weak("Size");
        ui.label(format!(
            "{} × {} × {}",
            img.dims[0], img.dims[1], img.dims[2]
        ));
        ui.end_row();
        ui.weak("Spacing");
        ui.label(format!("{:.2} × {:.2} × {:.2} mm", s[0], s[1], s[2]));
        ui.end_row();
        ui.weak("Orientation");
        ui.label(code);
        ui.end_row();
        ui.weak("Modality");
        ui.label(if doc.is_ct { "CT (HU)" } else { "MR / other" });
        ui.end_row();
        ui.weak("Ground truth");
        ui.label(if doc.gt.is_some() { "loaded" } else { "-" });
        ui.end_row();
        ui.weak("Prediction");
        ui.label(if doc.pred.is_some() { "yes" } else { "-" });
        ui.end_row();
    });
}

fn window_section_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    ui.heading("Window / level");
    ui.horizontal_wrapped(|ui| {
        for p in Preset::ALL {
            let selected = app.view.preset == Some(p);
            if ui.selectable_label(selected, p.name()).clicked() {
                app.set_preset(p);
            }
        }
    });
    let view = &mut app.view;
    let mut changed = false;
    ui.horizontal(|ui| {
        let level = ui.label("Level");
        changed |= ui
            .add(egui::DragValue::new(&mut view.window.center).speed(2.0))
            .labelled_by(level.id)
            .changed();
        let width = ui.label("Width");
        changed |= ui
            .add(
                egui::DragValue::new(&mut view.window.width)
                    .speed(2.0)
                    .range(1.0..=10_000.0),
            )
            .labelled_by(width.id)
            .changed();
    });
    if changed {
        view.preset = None;
    }
    if view.show_histogram
        && let Some(h) = app.doc.as_ref().and_then(|d| d.histogram.as_ref())
    {
        logonet_viewer::plots::histogram_ui(ui, h, view.window);
    }
    ui.weak("Right-drag in a view: left/right = width, up/down = level.");
}

fn overlay_section_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    ui.heading("Labels");
    let view = &mut app.view;
    egui::ComboBox::from_label("Overlay")
        .selected_text(view.source.name())
        .show_ui(ui, |ui| {
            for s in [
                OverlaySource::None,
                OverlaySource::GroundTruth,
                OverlaySource::Prediction,
                OverlaySource::Difference,
            ] {
                ui.selectable_value(&mut view.source, s, s.name());
            }
        });
    ui.add(egui::Slider::new(&mut view.overlay.opacity, 0.0..=1.0).text("Opacity"));
    ui.checkbox(&mut view.overlay.outline, "Outline");
    let Some(doc) = &app.doc else { return };
    if view.source == OverlaySource::Difference {
        let mut none = Default::default();
        legend_ui(ui, &diff_table(), &mut none, None);
        if doc.diff.is_none() {
            ui.weak("Needs a prediction and a ground truth.");
        }
    } else {
        let present = (!doc.present.is_empty()).then_some(&doc.present);
        legend_ui(ui, &doc.table, &mut view.overlay.hidden, present);
    }
}

fn segmentation_section_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    ui.heading("Segment");
    match &app.model {
        Some(m) => {
            ui.label(format!("Model: {}", m.name));
        }
        None => {
            ui.colored_label(ui.visuals().warn_fg_color, "No model loaded");
            ui.weak("Segmentation > Load model… (a LoGoNet bundle: config + safetensors).");
        }
    }
    ui.horizontal(|ui| {
        if ui.button("Load model…").clicked() {
            app.actions.push(Action::OpenModelDialog);
        }
        let can_run = app.model.is_some() && app.doc.is_some() && app.segment_job.is_none();
        if ui
            .add_enabled(can_run, egui::Button::new("Run segmentation"))
            .clicked()
        {
            app.actions.push(Action::RunSegmentation);
        }
    });
    if let Some(job) = &app.segment_job
        && job_progress_ui(ui, job)
    {
        app.actions.push(Action::CancelSegmentation);
    }
    ui.horizontal(|ui| {
        if ui.button("Compare").clicked() {
            app.view.layout = if app.view.layout == Layout::Compare {
                Layout::ThreeViews
            } else {
                Layout::Compare
            };
        }
        if ui.button("Metrics").clicked() {
            app.view.show_metrics = true;
        }
        let has_pred = app.doc.as_ref().is_some_and(|d| d.pred.is_some());
        if ui
            .add_enabled(has_pred, egui::Button::new("Save…"))
            .clicked()
        {
            app.actions.push(Action::SaveSegmentationDialog);
        }
    });
    if let Some(doc) = &app.doc
        && let Some(mean) = logonet_viewer::metrics_table::mean_dice(&doc.metrics)
    {
        ui.label(format!(
            "Mean Dice {mean:.3} over {} labels",
            doc.metrics.len()
        ));
    }
}
