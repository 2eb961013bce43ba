//! The panels of the main window, one file each: sidebar (controls), views (three orthogonal views),
//! compare (prediction next to the ground truth), status bar, and the floating windows.

pub mod compare;
pub mod sidebar;
pub mod status;
pub mod views;
pub mod windows;

use logonet::volume::LabelVolume;

use crate::state::{Document, OverlaySource};

/// The label map drawn for `source`, with the table to colour it (the difference map has its own).
pub fn overlay_map(doc: &Document, source: OverlaySource) -> Option<&LabelVolume> {
    match source {
        OverlaySource::None => None,
        OverlaySource::GroundTruth => doc.gt.as_deref(),
        OverlaySource::Prediction => doc.pred.as_deref(),
        OverlaySource::Difference => doc.diff.as_deref(),
    }
}
