//! `logonet pretrain`: masked self-supervised pre-training with k-means pseudo-labels.

use crate::progress::Bars;
use anyhow::Context as _;
use logonet::job::CancelToken;
use logonet::nets::NetConfig;
use logonet::pretrain::data::{self, Intensity};
use logonet::pretrain::kmeans::{ClustererBank, KMeansBackend, KMeansConfig};
use logonet::pretrain::mask::MaskConfig;
use logonet::pretrain::trainer::{self, PretrainConfig};
use logonet::train::optim::AdamWConfig;
use std::path::PathBuf;

/// Arguments of `logonet pretrain`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of unlabelled NIfTI volumes (files named *label*, *_seg*, *_gt* are skipped).
    #[arg(long)]
    data: PathBuf,
    /// Network whose trunk is pre-trained: tiny (= logonet-tiny; the tiny nets default to 32³ crops), ulkanet-tiny,
    /// ulkanet-s, logonet-s, logonet-l (any name `logonet info` knows).
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Output channels of the trunk (the segmentation classes of the network to fine-tune; the reference
    /// pre-trains with 14, BTCV's). With the fine-tuning class count every trunk tensor loads in
    /// `logonet train --init`; otherwise the nets' last convolutions are re-initialised there.
    #[arg(long, default_value_t = 14)]
    out_channels: usize,
    /// Number of k-means clusterers (the paper: 1, 20, 40, 80).
    #[arg(long, default_value_t = 20)]
    clusterers: usize,
    /// Smallest k of a clusterer.
    #[arg(long, default_value_t = 80)]
    k_min: usize,
    /// Largest k of a clusterer.
    #[arg(long, default_value_t = 500)]
    k_max: usize,
    /// Slices masked per anchor.
    #[arg(long, default_value_t = 5)]
    mask_length: usize,
    /// Fraction of slices used as anchors.
    #[arg(long, default_value_t = 0.1)]
    phi1: f64,
    /// Probability of zeroing a tile of a masked slice.
    #[arg(long, default_value_t = 0.7)]
    phi2: f64,
    /// Ablation: no masking (the loss counts every slice).
    #[arg(long)]
    no_mask: bool,
    /// Passes over the crops.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Crop edge in voxels (default 32 for tiny, 96 otherwise).
    #[arg(long)]
    crop: Option<usize>,
    /// Crops per optimizer step (default: 1, the reference, or 2 where one crop leaves a single value per
    /// channel at the network's bottleneck, as a 32³ crop does).
    #[arg(long)]
    batch: Option<usize>,
    /// Random crops per volume.
    #[arg(long, default_value_t = 4)]
    crops_per_volume: usize,
    /// Intensity scaling: ct (−1000..1000 HU → 0..1), percentile (0.5/99.5 percentiles → 0..1) or zscore
    /// (non-zero voxels to mean 0, sd 1: what `logonet train --recipe mri` feeds the network).
    #[arg(long, default_value = "ct")]
    intensity: String,
    /// Fraction of all slices each clusterer is fitted on.
    #[arg(long, default_value_t = 0.1)]
    kmeans_subset: f64,
    /// k-means mini-batch size.
    #[arg(long, default_value_t = 1024)]
    kmeans_batch: usize,
    /// k-means passes over its subset.
    #[arg(long, default_value_t = 20)]
    kmeans_epochs: usize,
    /// Mini-batch k-means loop: gemm (scikit-learn's update, GEMM assignments) or linfa (linfa-clustering's
    /// incremental k-means from the same k-means++ seeds; slower at large slices).
    #[arg(long, default_value = "gemm")]
    kmeans_backend: KMeansBackend,
    /// Use the clusterers saved in this folder instead of fitting new ones (default: the ones in OUT/clusterers
    /// when they were fitted with the same settings on slices of the same size).
    #[arg(long)]
    clusterers_from: Option<PathBuf>,
    /// Only fit (and save) the clusterers, print their inertia and time, and stop.
    #[arg(long)]
    kmeans_only: bool,
    /// With --kmeans-only: also write the slice matrix as .npy (for scripts/kmeans_sklearn_compare.py).
    #[arg(long)]
    dump_slices: Option<PathBuf>,
    /// Stop training (not clustering) after this many seconds, saving the checkpoint of the last step.
    #[arg(long)]
    time_limit_s: Option<f64>,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Seed of crops, clusterers, masks and order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// Writes a C-order f32 matrix as a NumPy `.npy` file.
fn write_npy(path: &std::path::Path, a: &ndarray::Array2<f32>) -> anyhow::Result<()> {
    let (n, d) = a.dim();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + n * d * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in a.iter() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    logonet::error::write_atomic(path, &bytes)?;
    Ok(())
}

/// Runs `logonet pretrain`.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.out_channels >= 1, "--out-channels must be at least 1");
    let net = NetConfig::from_name(&args.model)?
        .with_out_channels(args.out_channels)
        .with_in_channels(1);
    let edge = args
        .crop
        .unwrap_or(if args.model.ends_with("tiny") { 32 } else { 96 });
    let crop = [edge; 3];
    let batch = args.batch.unwrap_or_else(|| trainer::min_batch(&net, crop));
    // Fail before any data is read or any clusterer fitted.
    trainer::check_batch_shape(&net, crop, batch)?;
    let intensity = match args.intensity.as_str() {
        "ct" => Intensity::Ct,
        "percentile" | "mri" => Intensity::Percentile,
        "zscore" => Intensity::ZScore,
        other => anyhow::bail!("unknown intensity scaling {other:?} (ct, percentile, zscore)"),
    };
    let kmeans = KMeansConfig {
        n_clusterers: args.clusterers,
        k_min: args.k_min,
        k_max: args.k_max,
        subset_fraction: args.kmeans_subset,
        batch_size: args.kmeans_batch,
        max_epochs: args.kmeans_epochs,
        seed: args.seed,
        backend: args.kmeans_backend,
        ..KMeansConfig::default()
    };
    let cfg = PretrainConfig {
        net,
        crop,
        mask: (!args.no_mask).then_some(MaskConfig {
            phi_1: args.phi1,
            phi_2: args.phi2,
            mask_length: args.mask_length,
        }),
        kmeans: kmeans.clone(),
        class_size: None,
        epochs: args.epochs,
        batch,
        time_limit_secs: args.time_limit_s,
        optim: AdamWConfig {
            lr: args.lr,
            ..AdamWConfig::default()
        },
        seed: args.seed,
    };
    let bars = Bars::new();
    let cancel = CancelToken::new();
    let crops = data::load_crops(
        &args.data,
        crop,
        args.crops_per_volume,
        intensity,
        args.seed,
        &bars,
        &cancel,
    )
    .with_context(|| format!("loading crops from {}", args.data.display()))?;
    bars.finish();
    eprintln!(
        "{} crops of {crop:?} from {}",
        crops.len(),
        args.data.display()
    );

    if args.kmeans_only {
        let slices = trainer::all_slices(&crops)?;
        if let Some(p) = &args.dump_slices {
            write_npy(p, &slices)?;
            eprintln!(
                "wrote {} slices of {} values to {}",
                slices.nrows(),
                slices.ncols(),
                p.display()
            );
        }
        let start = std::time::Instant::now();
        let bank = ClustererBank::fit(slices.view(), [edge, edge], &kmeans, &bars, &cancel)?;
        bars.finish();
        let secs = start.elapsed().as_secs_f64();
        bank.save(&args.out.join("clusterers"))?;
        for (i, (k, inertia)) in bank.meta.ks.iter().zip(&bank.meta.inertias).enumerate() {
            println!(
                "clusterer {i}: k={k} subset={} inertia={inertia:.2}",
                bank.meta.subset_sizes[i]
            );
        }
        println!("fitted {} clusterers in {secs:.2} s", bank.len());
        return Ok(());
    }

    let saved = args.out.join("clusterers");
    let bank = match &args.clusterers_from {
        Some(dir) => Some(
            ClustererBank::load(dir)
                .with_context(|| format!("loading clusterers from {}", dir.display()))?,
        ),
        None => match ClustererBank::load(&saved) {
            Ok(b) if b.meta.config == kmeans && b.meta.slice_dims == [edge, edge] => {
                eprintln!("reusing {} clusterers from {}", b.len(), saved.display());
                Some(b)
            }
            _ => None,
        },
    };
    let device = candle_core::Device::Cpu;
    let outcome = trainer::pretrain(&crops, &cfg, bank, &args.out, &device, &bars, &cancel)?;
    bars.finish();
    if let (Some(first), Some(last)) = (outcome.step_losses.first(), outcome.step_losses.last()) {
        println!(
            "{} steps of {batch} crop(s); loss of the first step {first:.5}, of the last {last:.5}",
            outcome.step_losses.len()
        );
    }
    for e in &outcome.epochs {
        println!(
            "epoch {}: loss {:.5} ({:.1} s)",
            e.epoch, e.mean_loss, e.duration_secs
        );
    }
    if outcome.stopped_by_time_limit {
        println!(
            "stopped by --time-limit-s after {} steps",
            outcome.step_losses.len()
        );
    }
    println!("checkpoint: {}", outcome.checkpoint.display());
    Ok(())
}
