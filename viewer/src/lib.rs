//! Viewer widgets.
