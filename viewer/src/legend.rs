//! The label legend: a colour swatch and a visibility checkbox (accessible by the label's name) per label.

use std::collections::BTreeSet;

use egui::{Color32, Sense, Vec2};
use logonet::volume::LabelTable;

/// Shows one row per label of `table` (only those in `present` when given) with its colour and a checkbox
/// that adds or removes it from `hidden`. Returns whether visibility changed.
pub fn legend_ui(
    ui: &mut egui::Ui,
    table: &LabelTable,
    hidden: &mut BTreeSet<u16>,
    present: Option<&BTreeSet<u16>>,
) -> bool {
    let mut changed = false;
    ui.horizontal(|ui| {
        if ui.small_button("Show all").clicked() {
            changed |= !hidden.is_empty();
            hidden.clear();
        }
        if ui.small_button("Hide all").clicked() {
            hidden.extend(table.labels.iter().map(|l| l.value));
            changed = true;
        }
    });
    for label in &table.labels {
        if present.is_some_and(|p| !p.contains(&label.value)) {
            continue;
        }
        ui.horizontal(|ui| {
            let (rect, _) = ui.allocate_exact_size(Vec2::new(14.0, 14.0), Sense::hover());
            let [r, g, b] = label.color;
            ui.painter()
                .rect_filled(rect, 2.0, Color32::from_rgb(r, g, b));
            let mut visible = !hidden.contains(&label.value);
            if ui.checkbox(&mut visible, label.name.as_str()).changed() {
                if visible {
                    hidden.remove(&label.value);
                } else {
                    hidden.insert(label.value);
                }
                changed = true;
            }
            ui.weak(format!("{}", label.value));
        });
    }
    changed
}

/// The set of label values that occur in `data` (background excluded).
pub fn present_labels(data: &[u16]) -> BTreeSet<u16> {
    let mut seen = vec![false; u16::MAX as usize + 1];
    for &v in data {
        seen[v as usize] = true;
    }
    seen.iter()
        .enumerate()
        .skip(1)
        .filter(|(_, s)| **s)
        .map(|(v, _)| v as u16)
        .collect()
}
