//! Masked self-supervised pre-training: slice-sequence masking, k-means pseudo-labels, the projection head.
