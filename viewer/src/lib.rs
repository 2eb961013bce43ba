//! # logonet-viewer
//!
//! egui widgets that draw CT/MRI volumes for LoGoNet Studio, in the manner of ITK-SNAP and 3D Slicer:
//!
//! * [`slice_view`]: one orthogonal view (axial, coronal, sagittal) with window/level, label overlay, physical
//!   aspect ratio, zoom/pan, crosshair and wheel paging; one texture per view, updated only on change;
//! * [`window_level`]: CT window presets and the automatic MRI window;
//! * [`legend`]: label colours and per-label visibility;
//! * [`metrics_table`]: Dice / HD95 / volume per label;
//! * [`plots`]: the intensity histogram.
//!
//! Widgets borrow volumes from the application state and keep only view state (texture, zoom, pan); the
//! crosshair is stored by the caller in voxel indices.

pub mod legend;
pub mod metrics_table;
pub mod plots;
pub mod slice_view;
pub mod window_level;

pub use slice_view::{
    Axis, OverlayStyle, SliceContent, SliceGeometry, SliceView, SliceViewResponse, ViewTransform,
};
pub use window_level::{Preset, WindowLevel};
