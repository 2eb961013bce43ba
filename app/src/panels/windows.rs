//! Floating windows: metrics, DICOM series choice, training information, controls, about; and the in-window
//! message banner (errors are shown here, never as a crash).

use crate::StudioApp;
use crate::actions::Action;

/// A message for the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Whether it is an error (red) or information.
    pub is_error: bool,
    /// The text.
    pub text: String,
}

/// Draws the message banner (one line per message with a Dismiss button).
pub fn messages_ui(ui: &mut egui::Ui, app: &mut StudioApp) {
    let mut dismiss = None;
    for (i, m) in app.messages.iter().enumerate() {
        ui.horizontal(|ui| {
            let color = if m.is_error {
                ui.visuals().error_fg_color
            } else {
                ui.visuals().text_color()
            };
            ui.colored_label(color, if m.is_error { "Error:" } else { "Note:" });
            ui.colored_label(color, &m.text);
            if ui.small_button("Dismiss").clicked() {
                dismiss = Some(i);
            }
        });
    }
    if let Some(i) = dismiss {
        app.messages.remove(i);
    }
}

/// Draws whichever floating windows are open.
pub fn windows_ui(ctx: &egui::Context, app: &mut StudioApp) {
    let mut show_metrics = app.view.show_metrics;
    let top_right = ctx.content_rect().right_top() + egui::vec2(-500.0, 60.0);
    egui::Window::new("Metrics")
        .open(&mut show_metrics)
        .default_width(460.0)
        .default_pos(top_right)
        .show(ctx, |ui| match &app.doc {
            Some(doc) if doc.pred.is_some() && doc.gt.is_some() => {
                logonet_viewer::metrics_table::metrics_table_ui(ui, &doc.metrics);
            }
            _ => {
                ui.label("Metrics need a prediction and a ground truth.");
                if app.model.is_none() {
                    ui.label("No model loaded: Segmentation > Load model…");
                }
            }
        });
    app.view.show_metrics = show_metrics;

    if let Some((dir, series)) = app.dicom_choice.clone() {
        let mut open = true;
        egui::Window::new("Choose DICOM series")
            .open(&mut open)
            .show(ctx, |ui| {
                ui.label(format!("{} series in {}", series.len(), dir.display()));
                for s in &series {
                    if ui.button(&s.description).clicked() {
                        app.actions
                            .push(Action::LoadDicomSeries(dir.clone(), s.uid.clone()));
                        app.dicom_choice = None;
                    }
                }
            });
        if !open {
            app.dicom_choice = None;
        }
    }

    egui::Window::new("Training")
        .open(&mut app.windows.training)
        .show(ctx, |ui| {
            ui.label(
                "Training and pre-training run from the command line (they take hours on a GPU):",
            );
            ui.monospace("logonet pretrain --data DIR --out ckpt/");
            ui.monospace("logonet train --data DIR --init ckpt/ --out model/");
            ui.monospace("logonet predict --model model/ --image CT.nii.gz --out pred.nii.gz");
            ui.label("Then load the bundle here with Segmentation > Load model…");
        });
    egui::Window::new("Mouse and keyboard")
        .open(&mut app.windows.controls)
        .show(ctx, |ui| {
            egui::Grid::new("controls")
                .num_columns(2)
                .striped(true)
                .show(ui, |ui| {
                    for (k, v) in [
                        ("Left click / drag", "move the crosshair"),
                        ("Mouse wheel", "previous / next slice"),
                        ("Ctrl + wheel", "zoom"),
                        ("Middle drag, Shift + drag", "pan"),
                        ("Right drag", "window width (left/right), level (up/down)"),
                        ("Double click", "reset zoom and pan"),
                    ] {
                        ui.strong(k);
                        ui.label(v);
                        ui.end_row();
                    }
                });
        });
    egui::Window::new("About LoGoNet Studio").open(&mut app.windows.about).show(ctx, |ui| {
        ui.label(format!("LoGoNet Studio {}", env!("CARGO_PKG_VERSION")));
        ui.label("CT/MRI segmentation with LoGoNet (Karimi Monsefi et al., Masked LoGoNet, KDD 2024), in Rust.");
        ui.label("Not for clinical use.");
    });
}
