//! Training data: the background batch loader (random crops and augmentation on worker threads, handed over
//! through bounded channels so the model never waits for data, and memory stays bounded).
//!
//! Batches are a pure function of `(seed, epoch, batch index)`: the epoch's case order is a seeded shuffle,
//! and each batch draws from its own ChaCha8 stream. So results do not depend on thread timing, and resuming
//! at an epoch boundary reproduces exactly the batches an uninterrupted run would have seen (the "RNG state"
//! saved in a checkpoint is the seed and the epoch).
//!
//! A batch holds `batch_volumes` volumes × `num_samples` crops (the reference's `--batch_size 2` with
//! `num_samples` crops each; the last batch of an epoch may hold fewer volumes, as torch's `DataLoader` with
//! `drop_last=False`).

use super::augment::{AugmentConfig, Sample, random_crops};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use crossbeam_channel::{Receiver, bounded};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Options of the loader.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoaderConfig {
    /// Volumes per batch (reference 2 for LoGoNet-S, 4 for ULKANet-S).
    pub batch_volumes: usize,
    /// The random crop and augmentation chain.
    pub augment: AugmentConfig,
    /// Seed of every random draw.
    pub seed: u64,
    /// Background threads (at least 1).
    pub workers: usize,
    /// Batches each worker may have ready in advance.
    pub prefetch: usize,
    /// Batches per epoch; `None` = one pass over the cases (`ceil(cases / batch_volumes)`). More batches than
    /// one pass start further seeded shuffles of the cases.
    #[serde(default)]
    pub steps_per_epoch: Option<usize>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_volumes: 2,
            augment: AugmentConfig::default(),
            seed: 0,
            workers: 2,
            prefetch: 2,
            steps_per_epoch: None,
        }
    }
}

/// One training batch on the host: images `[N, C, X, Y, Z]` and labels `[N, 1, X, Y, Z]`.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The epoch it belongs to.
    pub epoch: usize,
    /// Its index within the epoch.
    pub index: usize,
    /// Image voxels, `[N, C, X, Y, Z]` C order.
    pub image: Vec<f32>,
    /// Label voxels, `[N, 1, X, Y, Z]` C order.
    pub label: Vec<u32>,
    /// The image shape `[N, C, X, Y, Z]`.
    pub shape: [usize; 5],
}

impl Batch {
    /// The batch as tensors on `device`: image f32 `[N, C, X, Y, Z]`, label u32 `[N, 1, X, Y, Z]`.
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let [n, c, x, y, z] = self.shape;
        let image = Tensor::from_slice(&self.image, (n, c, x, y, z), device)?;
        let label = Tensor::from_slice(&self.label, (n, 1, x, y, z), device)?;
        Ok((image, label))
    }
}

/// Number of batches per epoch for `cases` volumes.
pub fn batches_per_epoch(cases: usize, cfg: &LoaderConfig) -> usize {
    cfg.steps_per_epoch
        .unwrap_or_else(|| cases.div_ceil(cfg.batch_volumes.max(1)))
        .max(1)
}

/// The cases of batch `index` of `epoch` (indices into the case list).
pub fn batch_cases(cases: usize, cfg: &LoaderConfig, epoch: usize, index: usize) -> Vec<usize> {
    let b = cfg.batch_volumes.max(1);
    let per_pass = cases.div_ceil(b).max(1);
    let (pass, index) = (index / per_pass, index % per_pass);
    let mut order: Vec<usize> = (0..cases).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(u64::MAX - ((epoch as u64) << 16 | pass as u64));
    order.shuffle(&mut rng);
    order.into_iter().skip(index * b).take(b).collect()
}

/// Builds batch `index` of `epoch` (deterministic).
pub fn make_batch(
    cases: &[Sample],
    cfg: &LoaderConfig,
    epoch: usize,
    index: usize,
) -> Result<Batch> {
    let picked = batch_cases(cases.len(), cfg, epoch, index);
    if picked.is_empty() {
        return Err(Error::invalid(
            "make_batch",
            format!("batch {index} of epoch {epoch} is past the end"),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(((epoch as u64) << 32) | index as u64);
    let mut image = Vec::new();
    let mut label = Vec::new();
    let mut shape = [0usize; 5];
    let mut n = 0;
    for &ci in &picked {
        for crop in random_crops(&cases[ci], &cfg.augment, &mut rng)? {
            let s = [0, crop.channels, crop.dims[0], crop.dims[1], crop.dims[2]];
            if n > 0 && s[1..] != shape[1..] {
                return Err(Error::invalid(
                    "make_batch",
                    format!("crops of different shapes {s:?} / {shape:?}"),
                ));
            }
            shape = s;
            image.extend_from_slice(&crop.image);
            label.extend(crop.label.iter().map(|&v| v as u32));
            n += 1;
        }
    }
    shape[0] = n;
    Ok(Batch {
        epoch,
        index,
        image,
        label,
        shape,
    })
}

/// Produces batches on background threads, epoch after epoch, starting at `start_epoch`.
/// Iterate with [`Loader::next_batch`]; dropping the loader stops the workers.
pub struct Loader {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    per_epoch: usize,
    start_epoch: usize,
}

impl Loader {
    /// Starts the workers. `cases` are the preprocessed training volumes.
    pub fn new(cases: Arc<Vec<Sample>>, cfg: LoaderConfig, start_epoch: usize) -> Result<Self> {
        if cases.is_empty() {
            return Err(Error::invalid("Loader", "no training cases"));
        }
        if cfg.batch_volumes == 0 || cfg.augment.num_samples == 0 {
            return Err(Error::invalid(
                "Loader",
                "batch_volumes and num_samples must be positive",
            ));
        }
        let workers = cfg.workers.max(1);
        let per_epoch = batches_per_epoch(cases.len(), &cfg);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = bounded::<Result<Batch>>(cfg.prefetch.max(1));
            let (cases, cfg) = (Arc::clone(&cases), cfg.clone());
            let handle = std::thread::Builder::new()
                .name(format!("logonet-loader-{w}"))
                .spawn(move || {
                    // Worker w makes global batches w, w + W, w + 2W, ...; a closed channel ends it.
                    let mut g = w;
                    loop {
                        let (epoch, index) = (start_epoch + g / per_epoch, g % per_epoch);
                        let batch = make_batch(&cases, &cfg, epoch, index);
                        let failed = batch.is_err();
                        if tx.send(batch).is_err() || failed {
                            return;
                        }
                        g += workers;
                    }
                })
                .map_err(|e| {
                    Error::invalid("Loader", format!("cannot start a loader thread: {e}"))
                })?;
            receivers.push(rx);
            handles.push(handle);
        }
        Ok(Self {
            receivers,
            handles,
            next: 0,
            per_epoch,
            start_epoch,
        })
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.per_epoch
    }

    /// The next batch in order (blocks until it is ready).
    pub fn next_batch(&mut self) -> Result<Batch> {
        let w = self.next % self.receivers.len();
        let b = self.receivers[w].recv().map_err(|_| {
            Error::invalid("Loader", "a loader thread stopped after an earlier error")
        })??;
        debug_assert_eq!(b.epoch, self.start_epoch + self.next / self.per_epoch);
        self.next += 1;
        Ok(b)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channels makes every blocked `send` fail, so the workers return.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Preprocesses one labelled case for training or validation, as the reference's deterministic transforms:
/// `Orientationd("RAS")` → `Spacingd(recipe spacing; bilinear image, nearest label)` → intensity transform →
/// `CropForegroundd(source_key="image")` (bounding box of voxels > 0, margin 0), the last only for
/// `ScaleRange` (CT) recipes, where "> 0" means "above the window's lower end".
pub fn prepare_case(
    image: &crate::volume::ImageVolume,
    label: &crate::volume::LabelVolume,
    recipe: &crate::infer::Preprocess,
) -> Result<Sample> {
    if image.dims != label.dims {
        return Err(Error::invalid(
            "prepare_case",
            format!(
                "image {:?} and label {:?} grids differ",
                image.dims, label.dims
            ),
        ));
    }
    // The same MONAI-parity chain as inference (`volume::transforms`), plus the foreground crop for CT.
    let mut cfg = recipe.to_config()?;
    cfg.crop_foreground = matches!(recipe.intensity, crate::infer::Intensity::ScaleRange { .. });
    let pre = crate::volume::transforms::preprocess(image, Some(label), &cfg)?;
    let lab = pre
        .labels
        .ok_or_else(|| Error::invalid("prepare_case", "preprocessing dropped the label map"))?;
    Sample::new(pre.image.data, lab.data, 1, pre.image.dims)
}

/// MONAI `CropForegroundd(select_fn=x > 0, margin=0)`: the bounding box of voxels with any channel > 0
/// (the whole sample when there is none).
pub fn crop_foreground(s: &Sample) -> Sample {
    let [nx, ny, nz] = s.dims;
    let n = nx * ny * nz;
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for i in 0..nx {
        for j in 0..ny {
            for k in 0..nz {
                let v = (i * ny + j) * nz + k;
                if (0..s.channels).any(|c| s.image[c * n + v] > 0.0) {
                    for (a, x) in [i, j, k].into_iter().enumerate() {
                        lo[a] = lo[a].min(x);
                        hi[a] = hi[a].max(x + 1);
                    }
                }
            }
        }
    }
    if lo[0] == usize::MAX {
        return s.clone();
    }
    let size: [usize; 3] = std::array::from_fn(|a| hi[a] - lo[a]);
    s.crop_box(lo, size)
}
