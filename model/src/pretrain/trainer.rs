//! The pre-training loop (reference `pretrain/training_2.py` with `--pretrain_v 2`): k-means pseudo-labels on
//! the unmasked crops, slice-sequence masking of the input, `ClusteringLoss2` on the masked slices, AdamW
//! (lr 1e-4, weight decay 1e-5, no schedule), batch 1 (the reference, on 96³ crops; smaller crops need a larger
//! batch, see [`check_batch_shape`]).
//!
//! Outputs in the output folder: `clusterers/` (the k-means bank), `pretrain.safetensors` (every variable of
//! the network under the reference's names, the head under `pre_train_proj.*`; written atomically after each
//! epoch) and `pretrain.json` (configuration and per-epoch losses).

use super::data::Crop;
use super::kmeans::{self, ClustererBank, KMeansConfig};
use super::loss::clustering_loss;
use super::mask::{self, MaskConfig, SeededDraws};
use super::trunk::PretrainNet;
use crate::job::{CancelToken, Progress, ProgressEvent};
use crate::nets::NetConfig;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Everything that defines a pre-training run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PretrainConfig {
    /// The segmentation network whose trunk is pre-trained.
    pub net: NetConfig,
    /// Crop size `[X, Y, Z]` (96³ in the paper).
    pub crop: [usize; 3],
    /// Masking; `None` = the no-mask ablation (loss over every slice, input unchanged).
    pub mask: Option<MaskConfig>,
    /// The clusterer bank.
    pub kmeans: KMeansConfig,
    /// Logit slots per clusterer; `None` = the bank's largest k (the reference uses 500 = k_max).
    pub class_size: Option<usize>,
    /// Passes over the crops.
    pub epochs: usize,
    /// Crops per optimizer step (the reference: 1 per GPU on 96³ crops).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Stop after the first step that ends past this many seconds of training (the checkpoint then holds the
    /// weights after that step); `None` = run every epoch.
    #[serde(default)]
    pub time_limit_secs: Option<f64>,
    /// Optimizer settings.
    pub optim: AdamWConfig,
    /// Seed of the masking draws and the crop order.
    pub seed: u64,
}

fn default_batch() -> usize {
    1
}

/// Stride of the deepest feature map of `net` (32 for the 4-stage presets): every spatial input size must be
/// a multiple of it.
pub fn bottleneck_stride(net: &NetConfig) -> usize {
    net.input_multiple()
}

/// Checks that `net` can be trained on batches of `batch` crops of size `crop` **before** any work is done:
/// every crop size a positive multiple of the bottleneck stride s (32), and at least 2 values per channel at
/// the bottleneck (`batch · Π crop_i/s ≥ 2`), because batch normalisation in training mode (like PyTorch's)
/// needs more than one value per channel. The reference trains with batch 1 on 96³ crops (27 values); a 32³
/// crop leaves one value, so it needs batch ≥ 2 (or crops of 64³).
pub fn check_batch_shape(net: &NetConfig, crop: [usize; 3], batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(Error::invalid(
            "pretrain",
            "the batch size must be at least 1",
        ));
    }
    net.check_input(&[batch, net.in_channels(), crop[0], crop[1], crop[2]])?;
    let s = bottleneck_stride(net);
    let values = batch * crop.iter().map(|c| c / s).product::<usize>();
    if values < 2 {
        return Err(Error::invalid(
            "pretrain",
            format!(
                "a batch of {batch} crop(s) of {crop:?} leaves {values} value per channel at the network's \
                 1/{s}-scale bottleneck, and batch normalisation in training needs at least 2: use a batch of \
                 2 or more, or crops of {}³ or more",
                2 * s
            ),
        ));
    }
    Ok(())
}

/// The smallest batch size that [`check_batch_shape`] accepts for `crop` (1 for 64³ and 96³, 2 for 32³).
pub fn min_batch(net: &NetConfig, crop: [usize; 3]) -> usize {
    let s = bottleneck_stride(net).max(1);
    let per_crop = crop.iter().map(|c| c / s).product::<usize>();
    if per_crop >= 2 { 1 } else { 2 }
}

/// Loss of one epoch.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean `ClusteringLoss2` over the epoch's steps.
    pub mean_loss: f64,
    /// Wall time of the epoch in seconds.
    pub duration_secs: f64,
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PretrainOutcome {
    /// The configuration.
    pub config: PretrainConfig,
    /// Number of crops.
    pub crops: usize,
    /// k of every clusterer.
    pub ks: Vec<usize>,
    /// Per-epoch losses.
    pub epochs: Vec<EpochStats>,
    /// Whether the time limit stopped the run before its last epoch ended.
    #[serde(default)]
    pub stopped_by_time_limit: bool,
    /// Loss of every optimizer step, in order.
    #[serde(default)]
    pub step_losses: Vec<f64>,
    /// The checkpoint (`pretrain.safetensors`).
    pub checkpoint: PathBuf,
}

/// Flattened slices (last axis) of all crops: [Σ Z, X·Y].
pub fn all_slices(crops: &[Crop]) -> Result<ndarray::Array2<f32>> {
    let views = crops
        .iter()
        .map(|c| kmeans::crop_slices(&c.data, c.dims))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<_> = views.iter().map(|a| a.view()).collect();
    ndarray::concatenate(ndarray::Axis(0), &refs)
        .map_err(|e| Error::invalid("all_slices", e.to_string()))
}

/// Serialises every variable of `varmap` to safetensors bytes with `metadata`.
pub fn varmap_bytes(varmap: &VarMap, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let data = varmap.data().lock().map_err(|_| Error::Checkpoint {
        msg: "variable map lock poisoned".into(),
    })?;
    let mut tensors: Vec<(String, Tensor)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    drop(data);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata)).map_err(
        |e| Error::Checkpoint {
            msg: format!("cannot serialise: {e}"),
        },
    )
}

/// Runs pre-training on `crops` (values 0..1, all of size `cfg.crop`), writing into `out_dir`. A bank in
/// `bank` is used as is; otherwise one is fitted on the crops. Reports stages "clustering", "targets",
/// "pre-training" (one unit per step).
pub fn pretrain(
    crops: &[Crop],
    cfg: &PretrainConfig,
    bank: Option<ClustererBank>,
    out_dir: &Path,
    device: &Device,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<PretrainOutcome> {
    if crops.is_empty() || crops.iter().any(|c| c.dims != cfg.crop) {
        return Err(Error::invalid(
            "pretrain",
            format!("need at least one crop, all of size {:?}", cfg.crop),
        ));
    }
    check_batch_shape(&cfg.net, cfg.crop, cfg.batch)?;
    if cfg.epochs == 0 {
        return Err(Error::invalid("pretrain", "need at least one epoch"));
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::io("cannot create output folder", e, out_dir))?;
    let [nx, ny, nz] = cfg.crop;
    let bank = match bank {
        Some(b) => b,
        None => {
            let slices = all_slices(crops)?;
            let b = ClustererBank::fit(slices.view(), [nx, ny], &cfg.kmeans, progress, cancel)?;
            b.save(&out_dir.join("clusterers"))?;
            b
        }
    };
    if bank.meta.slice_dims != [nx, ny] {
        return Err(Error::invalid(
            "pretrain",
            format!(
                "clusterers were fitted on {:?} slices, crops are {:?}",
                bank.meta.slice_dims, cfg.crop
            ),
        ));
    }
    let class_size = cfg.class_size.unwrap_or(bank.max_k());
    if class_size < bank.max_k() {
        return Err(Error::invalid(
            "pretrain",
            format!("class size {class_size} < largest k {}", bank.max_k()),
        ));
    }
    // Targets from the unmasked crops, once: [1, Z, C] each.
    let mut inputs = Vec::with_capacity(crops.len());
    let mut targets = Vec::with_capacity(crops.len());
    for (i, c) in crops.iter().enumerate() {
        cancel.check()?;
        let x = Tensor::from_slice(&c.data, (1, 1, nx, ny, nz), &Device::Cpu)?;
        targets.push(bank.targets(&x)?.to_device(device)?);
        inputs.push(x.to_device(device)?);
        progress.report(ProgressEvent {
            stage: "targets".into(),
            done: i as u64 + 1,
            total: crops.len() as u64,
        });
    }

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = PretrainNet::new(&cfg.net, cfg.crop, bank.len(), class_size, vb)?;
    let mut opt = AdamW::from_varmap(&varmap, cfg.optim)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut draws = SeededDraws::new(cfg.seed.wrapping_add(1));
    let checkpoint = out_dir.join("pretrain.safetensors");
    let mut outcome = PretrainOutcome {
        config: cfg.clone(),
        crops: crops.len(),
        ks: bank.meta.ks.clone(),
        epochs: Vec::new(),
        stopped_by_time_limit: false,
        step_losses: Vec::new(),
        checkpoint: checkpoint.clone(),
    };
    // Steps per epoch: every crop once; a short last batch is filled from the start of the epoch's order.
    let batch = cfg.batch;
    let steps = crops.len().div_ceil(batch);
    let total = (cfg.epochs * steps) as u64;
    let mut order: Vec<usize> = (0..crops.len()).collect();
    let run_start = std::time::Instant::now();
    for epoch in 1..=cfg.epochs {
        let start = std::time::Instant::now();
        order.shuffle(&mut rng);
        let (mut sum, mut done) = (0.0, 0usize);
        for step in 0..steps {
            if cfg
                .time_limit_secs
                .is_some_and(|t| run_start.elapsed().as_secs_f64() >= t)
            {
                outcome.stopped_by_time_limit = true;
                break;
            }
            cancel.check()?;
            let idx: Vec<usize> = (0..batch)
                .map(|j| order[(step * batch + j) % order.len()])
                .collect();
            let x = Tensor::cat(&idx.iter().map(|&i| &inputs[i]).collect::<Vec<_>>(), 0)?; // [B, 1, X, Y, Z]
            let target = Tensor::cat(&idx.iter().map(|&i| &targets[i]).collect::<Vec<_>>(), 0)?; // [B, Z, C]
            let (xin, mask_vector) = match &cfg.mask {
                Some(m) => {
                    let (xm, mv) = mask::apply_mask(&x, m, &mut draws)?; // [B, 1, X, Y, Z], [B, Z]
                    (xm, Some(mv))
                }
                None => (x, None),
            };
            let logits = net.forward_t(&xin, true)?; // [B, Z, C, K]
            let loss = clustering_loss(&logits, &target, mask_vector.as_ref())?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(Error::invalid(
                    "pretrain",
                    format!(
                        "the loss became {value} at epoch {epoch}, step {}",
                        step + 1
                    ),
                ));
            }
            sum += value;
            done += 1;
            outcome.step_losses.push(value);
            opt.backward_step(&loss)?;
            progress.report(ProgressEvent {
                stage: "pre-training".into(),
                done: ((epoch - 1) * steps + step + 1) as u64,
                total,
            });
        }
        outcome.epochs.push(EpochStats {
            epoch,
            mean_loss: sum / done.max(1) as f64,
            duration_secs: start.elapsed().as_secs_f64(),
        });
        let meta = HashMap::from([
            ("format".to_string(), "logonet-pretrain".to_string()),
            (
                "net".to_string(),
                serde_json::to_string(&cfg.net).unwrap_or_default(),
            ),
            ("cluster_num".to_string(), bank.len().to_string()),
            ("class_size".to_string(), class_size.to_string()),
            ("epoch".to_string(), epoch.to_string()),
        ]);
        crate::error::write_atomic(&checkpoint, &varmap_bytes(&varmap, meta)?)?;
        let json = serde_json::to_vec_pretty(&outcome)
            .map_err(|e| Error::invalid("pretrain", e.to_string()))?;
        crate::error::write_atomic(&out_dir.join("pretrain.json"), &json)?;
        if outcome.stopped_by_time_limit {
            break;
        }
    }
    Ok(outcome)
}
