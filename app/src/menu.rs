//! The menu bar: File, Segmentation, Training, View, Help.

use logonet_viewer::window_level::Preset;

use crate::StudioApp;
use crate::actions::Action;
use crate::state::{Layout, OverlaySource};

/// Draws the menu bar and queues the chosen actions.
pub fn menu_bar_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| file_menu_ui(ui, app));
        ui.menu_button("Segmentation", |ui| segmentation_menu_ui(ui, app));
        ui.menu_button("Training", |ui| {
            if ui.button("Training and pre-training…").clicked() {
                app.windows.training = true;
            }
        });
        ui.menu_button("View", |ui| view_menu_ui(ui, app));
        ui.menu_button("Help", |ui| {
            if ui.button("Mouse and keyboard…").clicked() {
                app.windows.controls = true;
            }
            if ui.button("About LoGoNet Studio…").clicked() {
                app.windows.about = true;
            }
        });
    });
}

fn file_menu_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    let actions = &mut app.actions;
    if ui.button("Open image…").clicked() {
        actions.push(Action::OpenImageDialog);
    }
    if ui.button("Open DICOM folder…").clicked() {
        actions.push(Action::OpenDicomDialog);
    }
    let has_doc = app.doc.is_some();
    if ui
        .add_enabled(has_doc, egui::Button::new("Open ground truth…"))
        .clicked()
    {
        actions.push(Action::OpenGroundTruthDialog);
    }
    if ui
        .add_enabled(has_doc, egui::Button::new("Open prediction…"))
        .clicked()
    {
        actions.push(Action::OpenPredictionDialog);
    }
    ui.menu_button("Recent files", |ui| {
        if app.recent.paths.is_empty() {
            ui.weak("(none)");
        }
        for p in &app.recent.paths {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string());
            if ui
                .button(name)
                .on_hover_text(p.display().to_string())
                .clicked()
            {
                actions.push(Action::OpenPath(p.clone()));
            }
        }
        ui.separator();
        if ui.button("Clear recent files").clicked() {
            actions.push(Action::ClearRecent);
        }
    });
    if ui.button("Load default sample").clicked() {
        actions.push(Action::LoadDefault);
    }
    ui.separator();
    let has_pred = app.doc.as_ref().is_some_and(|d| d.pred.is_some());
    if ui
        .add_enabled(has_pred, egui::Button::new("Save segmentation…"))
        .clicked()
    {
        actions.push(Action::SaveSegmentationDialog);
    }
    ui.separator();
    if ui.button("Quit").clicked() {
        actions.push(Action::Quit);
    }
}

fn segmentation_menu_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
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
    if ui
        .add_enabled(
            app.segment_job.is_some(),
            egui::Button::new("Cancel segmentation"),
        )
        .clicked()
    {
        app.actions.push(Action::CancelSegmentation);
    }
    let has_pred = app.doc.as_ref().is_some_and(|d| d.pred.is_some());
    if ui
        .add_enabled(has_pred, egui::Button::new("Save segmentation…"))
        .clicked()
    {
        app.actions.push(Action::SaveSegmentationDialog);
    }
    ui.separator();
    if ui.button("Compare with ground truth").clicked() {
        app.view.layout = Layout::Compare;
    }
    if ui.button("Metrics table…").clicked() {
        app.view.show_metrics = true;
    }
}

fn view_menu_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    let view = &mut app.view;
    ui.radio_value(&mut view.layout, Layout::ThreeViews, "Three views");
    ui.radio_value(
        &mut view.layout,
        Layout::Compare,
        "Compare prediction and ground truth",
    );
    ui.separator();
    ui.menu_button("Window preset", |ui| {
        for p in Preset::ALL {
            if ui.button(p.name()).clicked() {
                app.set_preset(p);
            }
        }
    });
    let view = &mut app.view;
    ui.menu_button("Overlay", |ui| {
        for s in [
            OverlaySource::None,
            OverlaySource::GroundTruth,
            OverlaySource::Prediction,
            OverlaySource::Difference,
        ] {
            ui.radio_value(&mut view.source, s, s.name());
        }
    });
    ui.checkbox(&mut view.overlay.outline, "Outline labels");
    ui.checkbox(&mut view.show_histogram, "Show histogram");
    ui.checkbox(&mut view.show_frame_time, "Show frame time");
    if ui.button("Reset zoom and pan").clicked() {
        view.transforms = Default::default();
        view.compare_transform = Default::default();
    }
}
