//! The training loop of the reference (`BTCV/trainer.py::run_training`): epochs of AdamW steps on DiceCE,
//! the learning rate set per epoch by the schedule, validation every `val_every` epochs with sliding-window
//! inference and per-label Dice (background included, as the reference's `DiceMetric(include_background=True)`),
//! keeping the best model; checkpoints for `--resume`; fine-tuning from a bundle or reference checkpoint.
//!
//! Progress goes out as [`TrainEvent`]s over a channel (the CLI draws a progress bar and writes JSONL/CSV logs,
//! the app plots them); cancellation is checked between steps. A cancelled run keeps its last checkpoint
//! (written at the end of every epoch), from which `--resume` continues exactly: batches are a function of
//! the seed and the epoch (see [`super::data`]).

use super::augment::Sample;
use super::checkpoint::{self, Checkpoint, CheckpointMeta, LoadReport};
use super::data::{Loader, LoaderConfig};
use super::loss::{DiceCeConfig, dice_ce_loss};
use super::optim::{AdamW, AdamWConfig};
use super::schedule::LrSchedule;
use crate::infer::sliding_window::{SlidingWindowConfig, sliding_window_argmax};
use crate::job::{CancelToken, NoProgress};
use crate::nets::{AnyNet, NetConfig, SegmentationNet};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Which learning-rate schedule to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// `LinearWarmupCosineAnnealingLR(warmup_epochs, epochs)` (the reference's `warmup_cosine`).
    WarmupCosine,
    /// A constant rate (the reference's `--lrschedule none`, used for fine-tuning).
    Constant,
}

/// Everything that defines a training run (saved in checkpoints).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Total epochs (reference `--max_epochs` 5000).
    pub epochs: usize,
    /// Warm-up epochs of the warm-up cosine schedule (reference 50).
    pub warmup_epochs: usize,
    /// The schedule.
    pub schedule: ScheduleKind,
    /// AdamW hyper-parameters (reference lr 1e-4, weight decay 1e-5).
    pub optimizer: AdamWConfig,
    /// The loss (reference: MONAI defaults).
    pub loss: DiceCeConfig,
    /// Batching, crops and augmentation.
    pub loader: LoaderConfig,
    /// Validate every this many epochs (reference `--val_every`); 0 = never.
    pub val_every: usize,
    /// Sliding-window settings of the validation (reference: 96³, overlap 0.5, sw batch 4, constant).
    pub sliding_window: SlidingWindowConfig,
    /// Freeze every weight loaded by fine-tuning (the reference's `--freeze yes`).
    pub freeze_loaded: bool,
    /// Write a checkpoint every this many epochs (and at the end); 0 = only at the end.
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5000,
            warmup_epochs: 50,
            schedule: ScheduleKind::WarmupCosine,
            optimizer: AdamWConfig::default(),
            loss: DiceCeConfig::default(),
            loader: LoaderConfig::default(),
            val_every: 1,
            sliding_window: SlidingWindowConfig::default(),
            freeze_loaded: false,
            checkpoint_every: 1,
        }
    }
}

impl TrainConfig {
    /// The schedule at epoch 0.
    pub fn new_schedule(&self) -> Result<LrSchedule> {
        match self.schedule {
            ScheduleKind::Constant => Ok(LrSchedule::constant(self.optimizer.lr)),
            ScheduleKind::WarmupCosine => {
                LrSchedule::warmup_cosine(self.optimizer.lr, self.warmup_epochs, self.epochs)
            }
        }
    }
}

/// Per-label Dice of one validation pass.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Validation {
    /// Dice per label value 0..C, averaged over the cases where the label is present in the ground truth
    /// (`None` when it is in none of them).
    pub per_label: Vec<Option<f64>>,
    /// The mean of the present labels (background included, as the reference's printed mean).
    pub mean: f64,
}

/// What the trainer reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    /// The run starts (or resumes).
    Started {
        /// Network description.
        net: String,
        /// Trainable parameters (frozen excluded).
        trainable_params: usize,
        /// First epoch of this run.
        start_epoch: usize,
        /// Total epochs.
        epochs: usize,
        /// Optimizer steps per epoch.
        steps_per_epoch: usize,
        /// Training and validation cases.
        cases: (usize, usize),
    },
    /// Something the user should know (e.g. a re-initialised head).
    Note {
        /// The message.
        message: String,
    },
    /// One optimizer step done.
    Step {
        /// Epoch.
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// Steps taken in the whole run.
        global_step: u64,
        /// DiceCE of the batch.
        loss: f64,
        /// Learning rate used.
        lr: f64,
        /// Wall time of the step (forward, backward, update), seconds.
        step_secs: f64,
        /// Time spent waiting for the batch, seconds (should be ~0).
        wait_secs: f64,
    },
    /// An epoch ended.
    Epoch {
        /// Epoch.
        epoch: usize,
        /// Mean loss over its steps.
        mean_loss: f64,
        /// Learning rate used.
        lr: f64,
        /// Wall time, seconds.
        secs: f64,
    },
    /// A validation pass ended.
    Validation {
        /// Epoch.
        epoch: usize,
        /// Mean Dice (background included).
        mean_dice: f64,
        /// Per label.
        per_label: Vec<Option<f64>>,
        /// Whether this is the best so far (the best model was written).
        best: bool,
        /// Wall time, seconds.
        secs: f64,
    },
    /// A checkpoint or model file was written.
    Saved {
        /// The file.
        path: PathBuf,
    },
    /// The run ended normally.
    Finished {
        /// Best mean validation Dice and its epoch.
        best: Option<(f64, usize)>,
        /// Epochs completed in all.
        epochs: usize,
    },
}

/// A network with its variables, optimizer and schedule.
pub struct Trainer {
    net: AnyNet,
    net_config: NetConfig,
    varmap: VarMap,
    optimizer: AdamW,
    schedule: LrSchedule,
    config: TrainConfig,
    device: Device,
    next_epoch: usize,
    global_step: u64,
    best: Option<(f64, usize)>,
    deadline: Option<Instant>,
}

impl Trainer {
    /// A fresh network (PyTorch default initialisation) ready to train.
    pub fn new(net_config: &NetConfig, config: TrainConfig, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let net = AnyNet::new(net_config, vb)?;
        let optimizer = AdamW::from_varmap(&varmap, config.optimizer)?;
        let schedule = config.new_schedule()?;
        Ok(Self {
            net,
            net_config: net_config.clone(),
            varmap,
            optimizer,
            schedule,
            config,
            device: device.clone(),
            next_epoch: 0,
            global_step: 0,
            best: None,
            deadline: None,
        })
    }

    /// Re-draws every convolution weight and bias from PyTorch's default `U(-1/√fan_in, 1/√fan_in)` (the
    /// network's own initialisation) with a seeded RNG, so a run is reproducible end to end (candle's CPU RNG
    /// cannot be seeded). Constant-initialised tensors (norms, layer scales, running statistics) are kept.
    /// Call before [`Trainer::init_from`]. Returns how many tensors were re-drawn.
    pub fn seed_init(&mut self, seed: u64) -> Result<usize> {
        use rand::{Rng as _, SeedableRng as _};
        let data = self.varmap.data().lock().map_err(|_| Error::Checkpoint {
            msg: "variable map lock poisoned".into(),
        })?;
        let fan_in = |dims: &[usize]| dims[1..].iter().product::<usize>();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut redrawn = 0;
        for name in names {
            let var = &data[name];
            let dims = var.dims().to_vec();
            let fan = if dims.len() >= 2 {
                Some(fan_in(&dims))
            } else if let Some(stem) = name.strip_suffix(".bias") {
                data.get(&format!("{stem}.weight"))
                    .filter(|w| w.dims().len() >= 2)
                    .map(|w| fan_in(w.dims()))
            } else {
                None
            };
            let Some(fan) = fan.filter(|&f| f > 0) else {
                continue;
            };
            let bound = 1.0 / (fan as f32).sqrt();
            // One stream per name (FNV-1a), so the draw does not depend on the map's order.
            let stream = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(stream);
            let n: usize = dims.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.gen_range(-bound..bound)).collect();
            let t = Tensor::from_vec(values, dims, &Device::Cpu)?
                .to_dtype(var.dtype())?
                .to_device(var.device())?;
            var.set(&t)?;
            redrawn += 1;
        }
        Ok(redrawn)
    }

    /// Fine-tuning: loads every tensor of `weights` (a bundle's or a reference state dict) whose name and shape
    /// match; the rest keeps its fresh initialisation (a new head when the class count changes). With
    /// `freeze_loaded` the loaded parameters are frozen. Returns what was loaded and a note for the event
    /// stream when parameters were re-initialised.
    pub fn init_from(
        &mut self,
        weights: &HashMap<String, Tensor>,
    ) -> Result<(LoadReport, Option<String>)> {
        let report = checkpoint::load_weights(&self.varmap, weights)?;
        if report.loaded.is_empty() {
            return Err(Error::Checkpoint {
                msg: format!(
                    "no tensor of the initial weights matches the network {} (names differ?)",
                    self.net_config.describe()
                ),
            });
        }
        if self.config.freeze_loaded {
            self.optimizer.freeze(report.loaded.iter());
        }
        let reinit: Vec<&String> = report
            .shape_mismatch
            .iter()
            .chain(&report.missing)
            .filter(|n| !super::optim::is_buffer_name(n))
            .collect();
        let note = (!reinit.is_empty()).then(|| {
            let head: Vec<&str> = reinit.iter().take(6).map(|s| s.as_str()).collect();
            format!(
                "{} parameter tensors re-initialised (shape differs or absent, e.g. a new class count): {}{}",
                reinit.len(),
                head.join(", "),
                if reinit.len() > head.len() { ", ..." } else { "" }
            )
        });
        Ok((report, note))
    }

    /// Restores a run from a checkpoint written by [`Trainer::checkpoint`].
    pub fn resume(ckpt: &Checkpoint, device: &Device) -> Result<Self> {
        let net_config: NetConfig =
            serde_json::from_value(ckpt.meta.net.clone()).map_err(|e| Error::Checkpoint {
                msg: format!("bad network configuration: {e}"),
            })?;
        let config: TrainConfig =
            serde_json::from_value(ckpt.meta.train.clone()).map_err(|e| Error::Checkpoint {
                msg: format!("bad training configuration: {e}"),
            })?;
        let mut t = Self::new(&net_config, config, device)?;
        let report = checkpoint::load_weights(&t.varmap, &ckpt.model)?;
        if !report.missing.is_empty() || !report.shape_mismatch.is_empty() {
            return Err(Error::Checkpoint {
                msg: format!(
                    "checkpoint does not match its network: {} missing, {} of another shape",
                    report.missing.len(),
                    report.shape_mismatch.len()
                ),
            });
        }
        t.optimizer.load_state(&ckpt.optimizer)?;
        t.schedule = ckpt.meta.schedule.clone();
        t.next_epoch = ckpt.meta.next_epoch;
        t.global_step = ckpt.meta.global_step;
        t.best = ckpt.meta.best;
        Ok(t)
    }

    /// Lets a resumed run go on for more epochs than first planned (the schedule keeps its own horizon).
    pub fn set_epochs(&mut self, epochs: usize) {
        self.config.epochs = epochs;
    }

    /// A wall-clock budget: [`Trainer::run`] stops at the end of the first epoch that ends after `deadline`
    /// (writing the checkpoint, so `--resume` can go on later). Not part of the checkpoint.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Freezes named parameters (their optimizer state is dropped).
    pub fn freeze<S: AsRef<str>>(&mut self, names: impl IntoIterator<Item = S>) {
        self.optimizer.freeze(names);
    }

    /// The network.
    pub fn net(&self) -> &AnyNet {
        &self.net
    }

    /// The network configuration.
    pub fn net_config(&self) -> &NetConfig {
        &self.net_config
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The variables (weights and BatchNorm statistics).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// The next epoch to run.
    pub fn next_epoch(&self) -> usize {
        self.next_epoch
    }

    /// Best mean validation Dice so far and its epoch.
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best
    }

    /// One optimizer step on a batch: train-mode forward, DiceCE, backward, AdamW at the schedule's current
    /// rate. Returns the loss. `image [N, C, X, Y, Z]`, `label [N, 1, X, Y, Z]` (class indices).
    pub fn train_step(&mut self, image: &Tensor, label: &Tensor) -> Result<f64> {
        self.optimizer.set_learning_rate(self.schedule.lr());
        let logits = self.net.forward_t(image, true)?; // [N, classes, X, Y, Z]
        let loss = dice_ce_loss(&logits, label, &self.config.loss)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(Error::invalid(
                "train_step",
                format!("the loss is {value} at step {}", self.global_step),
            ));
        }
        self.optimizer.backward_step(&loss)?;
        self.global_step += 1;
        Ok(value)
    }

    /// Validation: sliding-window inference and argmax on each case, per-label Dice against its label map.
    pub fn validate(&self, cases: &[Sample], cancel: &CancelToken) -> Result<Validation> {
        let classes = self.net_config.out_channels();
        let mut sums = vec![0f64; classes];
        let mut counts = vec![0usize; classes];
        for case in cases {
            let [x, y, z] = case.dims;
            let input = Tensor::from_slice(&case.image, (1, case.channels, x, y, z), &Device::Cpu)?;
            let predictor = |w: &Tensor| -> Result<Tensor> {
                let w = w.to_device(&self.device)?;
                Ok(self
                    .net
                    .forward_t(&w, false)?
                    .detach()
                    .to_device(&Device::Cpu)?)
            };
            let pred = sliding_window_argmax(
                &input,
                &self.config.sliding_window,
                predictor,
                &NoProgress,
                cancel,
            )?;
            for (c, d) in dice_per_label(&pred, &case.label, classes)
                .into_iter()
                .enumerate()
            {
                if let Some(d) = d {
                    sums[c] += d;
                    counts[c] += 1;
                }
            }
        }
        let per_label: Vec<Option<f64>> = sums
            .iter()
            .zip(&counts)
            .map(|(&s, &n)| (n > 0).then(|| s / n as f64))
            .collect();
        let present: Vec<f64> = per_label.iter().flatten().copied().collect();
        let mean = if present.is_empty() {
            f64::NAN
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        };
        Ok(Validation { per_label, mean })
    }

    /// The run's full state as a checkpoint.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Ok(Checkpoint {
            meta: CheckpointMeta {
                format_version: checkpoint::FORMAT_VERSION,
                net: serde_json::to_value(&self.net_config).map_err(|e| Error::Checkpoint {
                    msg: format!("cannot encode network configuration: {e}"),
                })?,
                train: serde_json::to_value(&self.config).map_err(|e| Error::Checkpoint {
                    msg: format!("cannot encode training configuration: {e}"),
                })?,
                schedule: self.schedule.clone(),
                next_epoch: self.next_epoch,
                global_step: self.global_step,
                best: self.best,
            },
            model: checkpoint::state_dict(&self.varmap)?,
            optimizer: self.optimizer.state_tensors()?,
        })
    }

    /// Trains from the current epoch to `config.epochs`, writing into `out_dir`:
    /// `checkpoint.safetensors` (resume state, every `checkpoint_every` epochs and at the end) and, through
    /// `save_best`, the best model whenever validation improves (called with the epoch). Cancellation is
    /// checked between steps; on cancel the last checkpoint stays in place and `Error::Cancelled` is returned.
    pub fn run(
        &mut self,
        train: Arc<Vec<Sample>>,
        val: &[Sample],
        out_dir: &Path,
        events: &Sender<TrainEvent>,
        cancel: &CancelToken,
        save_best: &mut dyn FnMut(&Trainer, usize) -> Result<()>,
    ) -> Result<()> {
        let emit = |e: TrainEvent| {
            let _ = events.send(e);
        };
        std::fs::create_dir_all(out_dir)
            .map_err(|e| Error::io("cannot create the output folder", e, out_dir))?;
        let ckpt_path = out_dir.join("checkpoint.safetensors");
        let mut loader = Loader::new(
            Arc::clone(&train),
            self.config.loader.clone(),
            self.next_epoch,
        )?;
        let steps = loader.batches_per_epoch();
        emit(TrainEvent::Started {
            net: self.net_config.describe(),
            trainable_params: self.optimizer.trainable_elements(),
            start_epoch: self.next_epoch,
            epochs: self.config.epochs,
            steps_per_epoch: steps,
            cases: (train.len(), val.len()),
        });
        while self.next_epoch < self.config.epochs {
            let epoch = self.next_epoch;
            let lr = self.schedule.lr();
            let t_epoch = Instant::now();
            let mut loss_sum = 0.0;
            for step in 0..steps {
                cancel.check()?;
                let t_wait = Instant::now();
                let batch = loader.next_batch()?;
                let wait_secs = t_wait.elapsed().as_secs_f64();
                let t_step = Instant::now();
                let (image, label) = batch.to_tensors(&self.device)?;
                let loss = self.train_step(&image, &label)?;
                loss_sum += loss;
                emit(TrainEvent::Step {
                    epoch,
                    step,
                    global_step: self.global_step,
                    loss,
                    lr,
                    step_secs: t_step.elapsed().as_secs_f64(),
                    wait_secs,
                });
            }
            emit(TrainEvent::Epoch {
                epoch,
                mean_loss: loss_sum / steps as f64,
                lr,
                secs: t_epoch.elapsed().as_secs_f64(),
            });
            // As the reference: validate after epochs where (epoch + 1) % val_every == 0, then step the schedule.
            if self.config.val_every > 0
                && (epoch + 1).is_multiple_of(self.config.val_every)
                && !val.is_empty()
            {
                let t_val = Instant::now();
                let v = self.validate(val, cancel)?;
                let best = v.mean.is_finite() && self.best.is_none_or(|(b, _)| v.mean > b);
                if best {
                    self.best = Some((v.mean, epoch));
                    save_best(self, epoch)?;
                }
                emit(TrainEvent::Validation {
                    epoch,
                    mean_dice: v.mean,
                    per_label: v.per_label,
                    best,
                    secs: t_val.elapsed().as_secs_f64(),
                });
            }
            self.schedule.step();
            self.next_epoch = epoch + 1;
            let every = self.config.checkpoint_every;
            let out_of_time = self.deadline.is_some_and(|d| Instant::now() >= d)
                && self.next_epoch < self.config.epochs;
            if self.next_epoch == self.config.epochs
                || out_of_time
                || (every > 0 && self.next_epoch.is_multiple_of(every))
            {
                self.checkpoint()?.save(&ckpt_path)?;
                emit(TrainEvent::Saved {
                    path: ckpt_path.clone(),
                });
            }
            if out_of_time {
                emit(TrainEvent::Note {
                    message: format!(
                        "time limit reached after epoch {epoch}; stopping ({} of {} epochs done; --resume goes on)",
                        self.next_epoch, self.config.epochs
                    ),
                });
                break;
            }
        }
        emit(TrainEvent::Finished {
            best: self.best,
            epochs: self.next_epoch,
        });
        Ok(())
    }
}

/// MONAI `DiceMetric(include_background=True)` for one case on label maps: per label value `0..classes`,
/// `2|P∩G| / (|P| + |G|)`, `None` when the label is absent from the ground truth (`ignore_empty=True`).
pub fn dice_per_label(pred: &[u16], truth: &[u16], classes: usize) -> Vec<Option<f64>> {
    let mut inter = vec![0u64; classes];
    let mut p = vec![0u64; classes];
    let mut g = vec![0u64; classes];
    for (&a, &b) in pred.iter().zip(truth) {
        let (a, b) = (a as usize, b as usize);
        if a < classes {
            p[a] += 1;
        }
        if b < classes {
            g[b] += 1;
            if a == b {
                inter[a] += 1;
            }
        }
    }
    (0..classes)
        .map(|c| (g[c] > 0).then(|| 2.0 * inter[c] as f64 / (p[c] + g[c]) as f64))
        .collect()
}
