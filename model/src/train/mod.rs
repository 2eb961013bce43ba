//! Supervised training and fine-tuning, as the reference trained (`BTCV/main.py`, `BTCV/trainer.py` of
//! `github.com/7Amin/SSL_VAN` @ 3d705fc5; see `../shared/spec/logonet.md` §2):
//!
//! | module | contents |
//! |---|---|
//! | [`loss`] | MONAI `DiceCELoss(to_onehot_y=True, softmax=True)` (and Dice, CE alone) |
//! | [`optim`] | `torch.optim.AdamW` (lr 1e-4, weight decay 1e-5) on named candle variables, saveable state |
//! | [`schedule`] | `LinearWarmupCosineAnnealingLR(warmup_epochs=50, max_epochs=5000)`, stepped per epoch |
//! | [`augment`] | `RandCropByPosNegLabeld`, flips, 90° rotations, intensity scale/shift (seeded) |
//! | [`data`] | preprocessing of labelled cases, the background batch loader |
//! | [`checkpoint`] | training checkpoints (weights, AdamW moments, schedule, epoch), fine-tuning loads |
//! | [`trainer`] | the training loop: steps, validation, best model, resume, events, cancellation |

pub mod augment;
pub mod checkpoint;
pub mod data;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use augment::{AugmentConfig, Sample};
pub use data::{Batch, Loader, LoaderConfig};
pub use loss::{DiceCeConfig, DiceCeLoss, Reduction};
pub use optim::{AdamW, AdamWConfig};
pub use schedule::LrSchedule;
pub use trainer::{TrainConfig, TrainEvent, Trainer};
