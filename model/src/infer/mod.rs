//! Inference: model bundles and MONAI-equivalent sliding-window inference.
//!
//! * [`sliding_window`]: `sliding_window_inference` exactly as MONAI (window placement, padding, blending),
//!   with bounded memory, progress and cancellation;
//! * [`bundle`]: a trained model in one file (architecture, weights, labels, preprocessing recipe, settings);
//! * [`predict`]: whole-volume segmentation on the input's own grid.

pub mod bundle;
pub mod predict;
pub mod sliding_window;

pub use bundle::{Bundle, BundleMeta, Intensity, Preprocess};
pub use predict::{PredictOptions, segment_with};
pub use sliding_window::{
    Blend, SlidingWindowConfig, WindowPlan, importance_map, sliding_window_argmax,
    sliding_window_inference,
};
