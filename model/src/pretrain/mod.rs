//! Masked self-supervised pre-training: slice-sequence masking, k-means pseudo-labels, the projection head.
//!
//! The reference is the "Masked" part of Masked LoGoNet (`pretrain/` and `clustering/` of SSL_VAN @ 3d705fc5,
//! spec §3): slices along the last spatial axis are masked in short runs ([`mask`]), every 2-D slice of the
//! unmasked crop gets one pseudo-label per k-means clusterer ([`kmeans`]), and the network with the
//! projection head ([`head`]) learns to predict them on the masked slices ([`loss`]).
//!
//! One slice axis is used throughout: the **last** spatial axis (Z, dim 4) for the mask, the targets and the
//! logits. The reference computes its targets along the first axis (see `docs/PRETRAINING.md`).

pub mod data;
pub mod finetune;
pub mod head;
pub mod kmeans;
pub mod loss;
pub mod mask;
pub mod trainer;
pub mod trunk;
