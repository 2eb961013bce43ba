//! # logonet
//!
//! Everything in LoGoNet Studio that is not GUI, on [candle](https://github.com/huggingface/candle):
//!
//! * [`ops`]: the 3D tensor ops candle lacks (conv3d, trilinear upsampling, fused norms), NCDHW, differentiable;
//! * [`nets`]: LoGoNet (`VANV4122GL`) and ULKANet (`VANV412`) exactly as the authors' code
//!   (Karimi Monsefi et al., "Masked LoGoNet: Fast and Accurate 3D Image Analysis for Medical Domain", KDD 2024;
//!   reference code `github.com/7Amin/SSL_VAN` @ 3d705fc5);
//! * [`volume`]: CT/MRI volumes with their geometry, NIfTI and DICOM I/O, MONAI-equivalent preprocessing,
//!   datasets and the synthetic abdominal phantom;
//! * [`infer`]: model bundles and MONAI-equivalent sliding-window inference;
//! * [`metrics`]: Dice, HD95, surface Dice and volumes with MONAI semantics;
//! * [`train`]: supervised training and fine-tuning (DiceCE, AdamW, warm-up cosine schedule, augmentation);
//! * [`pretrain`]: the masked self-supervised pre-training (slice-sequence masking, k-means pseudo-labels).
//!
//! Conventions: tensors are NCDHW; volumes are stored in C order over voxel indices (i, j, k) so that a volume
//! is directly a `[1, 1, X, Y, Z]` tensor, exactly as MONAI sees a NIfTI image; geometry is named by space
//! (`ras_from_ijk`) and units are in names (`spacing_mm`).

pub mod alloc;
pub mod error;
pub mod infer;
pub mod job;
pub mod metrics;
pub mod nets;
pub mod ops;
pub mod pretrain;
pub mod train;
pub mod volume;

pub use error::{Error, Result};
