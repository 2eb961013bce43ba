//! The three linked orthogonal views: axial large on the left, coronal and sagittal stacked on the right.
//! Each has a slice slider ("Axial slice", ...); all share the crosshair stored in voxel indices.

use logonet_viewer::Axis;
use logonet_viewer::slice_view::{SliceContent, SliceView};

use crate::panels::overlay_map;
use crate::state::{Document, OverlaySource, ViewSettings, diff_table};

/// Draws the three views; returns the voxel under the pointer, if any.
pub fn views_ui(
    ui: &mut egui::Ui,
    doc: &Document,
    view: &mut ViewSettings,
    slice_views: &mut [SliceView; 3],
) -> Option<[usize; 3]> {
    let diff = diff_table();
    let table = if view.source == OverlaySource::Difference {
        &diff
    } else {
        &doc.table
    };
    let labels = overlay_map(doc, view.source);
    let overlay = view.overlay.clone();
    let content = SliceContent {
        image: &doc.image,
        labels,
        table,
        window: view.window,
        overlay: &overlay,
        revision: doc.revision,
    };
    let mut hovered = None;
    let full = ui.available_rect_before_wrap();
    let gap = 4.0;
    let left = egui::Rect::from_min_max(
        full.min,
        egui::pos2(full.center().x - gap / 2.0, full.max.y),
    );
    let right_top = egui::Rect::from_min_max(
        egui::pos2(full.center().x + gap / 2.0, full.min.y),
        egui::pos2(full.max.x, full.center().y - gap / 2.0),
    );
    let right_bottom = egui::Rect::from_min_max(
        egui::pos2(full.center().x + gap / 2.0, full.center().y + gap / 2.0),
        full.max,
    );
    let rects = [left, right_top, right_bottom];
    let [sv_axial, sv_coronal, sv_sagittal] = slice_views;
    for (idx, (rect, sv)) in rects
        .into_iter()
        .zip([sv_axial, sv_coronal, sv_sagittal])
        .enumerate()
    {
        let mut child = ui.new_child(egui::UiBuilder::new().max_rect(rect).id_salt(("view", idx)));
        if let Some(h) = one_view_ui(&mut child, &content, view, sv, idx) {
            hovered = Some(h);
        }
    }
    ui.advance_cursor_after_rect(full);
    hovered
}

/// A slice slider labelled "<Axis> slice" above one slice view.
pub fn slice_slider_ui(
    ui: &mut egui::Ui,
    axis: Axis,
    fixed: usize,
    dims: [usize; 3],
    cursor: &mut [usize; 3],
) {
    let n = dims[fixed].max(1);
    let mut s = cursor[fixed];
    ui.horizontal(|ui| {
        ui.spacing_mut().slider_width = (ui.available_width() - 150.0).max(60.0);
        let label = format!("{} slice", axis.name());
        if ui
            .add(egui::Slider::new(&mut s, 0..=n - 1).text(label))
            .changed()
        {
            cursor[fixed] = s.min(n - 1);
        }
    });
}

fn one_view_ui(
    ui: &mut egui::Ui,
    content: &SliceContent<'_>,
    view: &mut ViewSettings,
    sv: &mut SliceView,
    idx: usize,
) -> Option<[usize; 3]> {
    let geometry = logonet_viewer::SliceGeometry::new(sv.axis, &content.image.ras_from_ijk);
    slice_slider_ui(
        ui,
        sv.axis,
        geometry.fixed,
        content.image.dims,
        &mut view.cursor,
    );
    let r = sv.ui(
        ui,
        content,
        &mut view.cursor,
        &mut view.transforms[idx],
        &mut view.window,
    );
    if r.window_changed {
        view.preset = None;
    }
    r.hovered
}
