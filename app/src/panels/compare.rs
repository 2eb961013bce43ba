//! Prediction next to the ground truth: two synchronised panes (shared crosshair, slice, zoom and pan) of one
//! axis; the right pane shows the prediction or the TP/FP/FN difference map.

use logonet_viewer::Axis;
use logonet_viewer::slice_view::{SliceContent, SliceView};

use crate::actions::Action;
use crate::state::{Document, ViewSettings, diff_table};

/// Draws the compare layout; returns the voxel under the pointer, if any.
pub fn compare_ui(
    ui: &mut egui::Ui,
    doc: &Document,
    view: &mut ViewSettings,
    panes: &mut [SliceView; 2],
    actions: &mut Vec<Action>,
) -> Option<[usize; 3]> {
    ui.horizontal(|ui| {
        for axis in Axis::ALL {
            ui.selectable_value(&mut view.compare_axis, axis, axis.name());
        }
        ui.separator();
        ui.checkbox(&mut view.compare_difference, "Difference overlay");
        let current = view
            .diff_label
            .map(|v| doc.table.name(v))
            .unwrap_or_else(|| "all labels".into());
        let before = view.diff_label;
        egui::ComboBox::from_label("Difference label")
            .selected_text(current)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut view.diff_label, None, "all labels");
                for &v in &doc.present {
                    ui.selectable_value(&mut view.diff_label, Some(v), doc.table.name(v));
                }
            });
        if view.diff_label != before {
            actions.push(Action::DiffLabelChanged);
        }
    });
    if doc.gt.is_none() || doc.pred.is_none() {
        let missing = match (doc.gt.is_some(), doc.pred.is_some()) {
            (false, false) => "No ground truth and no prediction yet.",
            (false, true) => "No ground truth: File > Open ground truth…",
            _ => {
                "No prediction yet: Segmentation > Load model…, then Run segmentation (or File > Open prediction…)."
            }
        };
        ui.colored_label(ui.visuals().warn_fg_color, missing);
    }
    for sv in panes.iter_mut() {
        sv.axis = view.compare_axis;
    }
    let geometry = logonet_viewer::SliceGeometry::new(view.compare_axis, &doc.image.ras_from_ijk);
    crate::panels::views::slice_slider_ui(
        ui,
        view.compare_axis,
        geometry.fixed,
        doc.image.dims,
        &mut view.cursor,
    );

    let diff = diff_table();
    let overlay = view.overlay.clone();
    let full = ui.available_rect_before_wrap();
    let gap = 4.0;
    let left = egui::Rect::from_min_max(
        full.min,
        egui::pos2(full.center().x - gap / 2.0, full.max.y),
    );
    let right = egui::Rect::from_min_max(
        egui::pos2(full.center().x + gap / 2.0, full.min.y),
        full.max,
    );
    let mut hovered = None;
    let [gt_pane, pred_pane] = panes;
    let right_title = if view.compare_difference {
        "Difference (TP green, FP red, FN blue)"
    } else {
        "Prediction"
    };
    let right_labels = if view.compare_difference {
        doc.diff.as_deref()
    } else {
        doc.pred.as_deref()
    };
    let right_table = if view.compare_difference {
        &diff
    } else {
        &doc.table
    };
    let panes_spec = [
        (left, "Ground truth", doc.gt.as_deref(), &doc.table, gt_pane),
        (right, right_title, right_labels, right_table, pred_pane),
    ];
    for (idx, (rect, title, labels, table, sv)) in panes_spec.into_iter().enumerate() {
        let mut child = ui.new_child(
            egui::UiBuilder::new()
                .max_rect(rect)
                .id_salt(("compare", idx)),
        );
        child.strong(title);
        let content = SliceContent {
            image: &doc.image,
            labels,
            table,
            window: view.window,
            overlay: &overlay,
            revision: doc.revision,
        };
        let r = sv.ui(
            &mut child,
            &content,
            &mut view.cursor,
            &mut view.compare_transform,
            &mut view.window,
        );
        if r.window_changed {
            view.preset = None;
        }
        hovered = hovered.or(r.hovered);
    }
    ui.advance_cursor_after_rect(full);
    hovered
}
