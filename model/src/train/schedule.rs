//! Learning-rate schedules, stepped once per epoch as the reference does (`scheduler.step()` at the end of
//! every epoch in `BTCV/trainer.py`).
//!
//! [`LrSchedule::WarmupCosine`] is `LinearWarmupCosineAnnealingLR(warmup_epochs, max_epochs,
//! warmup_start_lr=0, eta_min=0)` (the PyTorch-Lightning-bolts scheduler the reference uses, `--lrschedule
//! warmup_cosine`, 50 / 5000 epochs), in its *chainable* form: each epoch's rate is computed from the previous
//! one, exactly as `_LRScheduler.step()` without an epoch argument does, in f64. Its quirks are kept:
//!
//! * epoch 0 trains with `warmup_start_lr` (0): the first epoch only updates the BatchNorm statistics and
//!   the AdamW moments;
//! * the warm-up is linear over `warmup_epochs - 1` epochs: the rate reaches `base_lr` at epoch
//!   `warmup_epochs - 1` and stays there at `warmup_epochs`;
//! * then cosine annealing to `eta_min` at `max_epochs`.
//!
//! [`LrSchedule::Constant`] is the reference's `--lrschedule none` (used for fine-tuning).

use crate::{Error, Result};
use std::f64::consts::PI;

/// A per-epoch learning-rate schedule with its position; serialisable into checkpoints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// A constant rate.
    Constant {
        /// The rate.
        lr: f64,
        /// Epochs stepped so far.
        epoch: usize,
    },
    /// Linear warm-up then cosine annealing (Lightning-bolts `LinearWarmupCosineAnnealingLR`).
    WarmupCosine(WarmupCosine),
}

/// State of `LinearWarmupCosineAnnealingLR`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WarmupCosine {
    /// The optimizer's initial rate (`base_lr`).
    pub base_lr: f64,
    /// Warm-up length in epochs (reference 50).
    pub warmup_epochs: usize,
    /// Total epochs (reference 5000).
    pub max_epochs: usize,
    /// Rate at epoch 0 (default 0).
    pub warmup_start_lr: f64,
    /// Final rate (default 0).
    pub eta_min: f64,
    /// The current epoch (torch's `last_epoch`).
    pub epoch: usize,
    /// The rate for the current epoch.
    pub lr: f64,
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(lr: f64) -> Self {
        Self::Constant { lr, epoch: 0 }
    }

    /// `LinearWarmupCosineAnnealingLR(warmup_epochs, max_epochs)` with `warmup_start_lr = eta_min = 0`,
    /// positioned at epoch 0 (rate 0).
    pub fn warmup_cosine(base_lr: f64, warmup_epochs: usize, max_epochs: usize) -> Result<Self> {
        Self::warmup_cosine_with(base_lr, warmup_epochs, max_epochs, 0.0, 0.0)
    }

    /// The same with explicit `warmup_start_lr` and `eta_min`.
    ///
    /// `warmup_epochs` must be at least 1 and below `max_epochs`: with 0 the reference formula keeps the rate at
    /// `warmup_start_lr` forever, and with `max_epochs == warmup_epochs` it divides by zero.
    pub fn warmup_cosine_with(
        base_lr: f64,
        warmup_epochs: usize,
        max_epochs: usize,
        warmup_start_lr: f64,
        eta_min: f64,
    ) -> Result<Self> {
        if warmup_epochs == 0 || warmup_epochs >= max_epochs {
            return Err(Error::invalid(
                "LrSchedule::warmup_cosine",
                format!(
                    "need 1 <= warmup_epochs < max_epochs, got {warmup_epochs} and {max_epochs}"
                ),
            ));
        }
        Ok(Self::WarmupCosine(WarmupCosine {
            base_lr,
            warmup_epochs,
            max_epochs,
            warmup_start_lr,
            eta_min,
            epoch: 0,
            lr: warmup_start_lr,
        }))
    }

    /// The rate to train the current epoch with.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Constant { lr, .. } => *lr,
            Self::WarmupCosine(w) => w.lr,
        }
    }

    /// The current epoch (number of [`LrSchedule::step`] calls so far).
    pub fn epoch(&self) -> usize {
        match self {
            Self::Constant { epoch, .. } => *epoch,
            Self::WarmupCosine(w) => w.epoch,
        }
    }

    /// Advances one epoch (call at the end of each epoch) and returns the new rate.
    pub fn step(&mut self) -> f64 {
        match self {
            Self::Constant { lr, epoch } => {
                *epoch += 1;
                *lr
            }
            Self::WarmupCosine(w) => {
                w.epoch += 1;
                w.lr = w.chained_lr();
                w.lr
            }
        }
    }
}

impl WarmupCosine {
    /// `get_lr()` of the bolts scheduler for `self.epoch`, from the previous rate `self.lr`.
    fn chained_lr(&self) -> f64 {
        let (e, w, m) = (
            self.epoch as i64,
            self.warmup_epochs as i64,
            self.max_epochs as i64,
        );
        let prev = self.lr;
        if e == 0 {
            self.warmup_start_lr
        } else if e < w {
            prev + (self.base_lr - self.warmup_start_lr) / (w - 1) as f64
        } else if e == w {
            self.base_lr
        } else if (e - 1 - m).rem_euclid(2 * (m - w)) == 0 {
            prev + (self.base_lr - self.eta_min) * (1.0 - (PI / (m - w) as f64).cos()) / 2.0
        } else {
            (1.0 + (PI * (e - w) as f64 / (m - w) as f64).cos())
                / (1.0 + (PI * (e - w - 1) as f64 / (m - w) as f64).cos())
                * (prev - self.eta_min)
                + self.eta_min
        }
    }

    /// The bolts closed form (`_get_closed_form_lr`) at `epoch`; equal to the chained rate up to rounding.
    pub fn closed_form_lr(&self, epoch: usize) -> f64 {
        let (e, w, m) = (
            epoch as f64,
            self.warmup_epochs as f64,
            self.max_epochs as f64,
        );
        if epoch < self.warmup_epochs {
            self.warmup_start_lr + e * (self.base_lr - self.warmup_start_lr) / (w - 1.0).max(1.0)
        } else {
            self.eta_min
                + 0.5 * (self.base_lr - self.eta_min) * (1.0 + (PI * (e - w) / (m - w)).cos())
        }
    }
}
