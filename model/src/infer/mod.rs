//! Inference: model bundles and MONAI-equivalent sliding-window inference.
