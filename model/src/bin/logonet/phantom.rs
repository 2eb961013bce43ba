//! `logonet phantom`: writes the synthetic abdominal CT phantom and its 13-organ label map.

use logonet::volume::nifti::{self, WriteOptions};
use logonet::volume::phantom::{PhantomConfig, phantom};
use std::path::PathBuf;

/// Arguments of `logonet phantom`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output image (.nii or .nii.gz), HU as int16.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output label map (.nii or .nii.gz), BTCV values 0..=13 as uint8.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Voxels along i, j, k.
    #[arg(long, num_args = 3, value_names = ["X", "Y", "Z"])]
    pub size: Option<Vec<usize>>,
    /// Voxel size in mm along i, j, k.
    #[arg(long, num_args = 3, value_names = ["X", "Y", "Z"])]
    pub spacing: Option<Vec<f64>>,
    /// Seed (anatomical jitter and noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Noise standard deviation in HU.
    #[arg(long)]
    pub noise: Option<f32>,
    /// Write the image as float32 instead of int16.
    #[arg(long)]
    pub float: bool,
}

/// Runs `logonet phantom`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = PhantomConfig {
        seed: args.seed,
        ..PhantomConfig::default()
    };
    if let Some(s) = &args.size {
        anyhow::ensure!(
            s.iter().all(|&d| (1..=4096).contains(&d)),
            "--size must be 1..=4096 per axis, got {s:?}"
        );
        cfg.dims = [s[0], s[1], s[2]];
    }
    if let Some(s) = &args.spacing {
        anyhow::ensure!(
            s.iter().all(|&d| d.is_finite() && d > 0.0),
            "--spacing must be positive, got {s:?}"
        );
        cfg.spacing_mm = [s[0], s[1], s[2]];
    }
    if let Some(n) = args.noise {
        anyhow::ensure!(n.is_finite() && n >= 0.0, "--noise must be >= 0, got {n}");
        cfg.noise_hu = n;
    }
    let (image, labels) = phantom(&cfg);
    let opts = WriteOptions {
        datatype: Some(if args.float {
            nifti::NiftiType::Float32
        } else {
            nifti::NiftiType::Int16
        }),
        ..WriteOptions::default()
    };
    nifti::write_image(&args.output, &image, &opts)?;
    eprintln!(
        "wrote {} ({:?} voxels of {:?} mm)",
        args.output.display(),
        cfg.dims,
        cfg.spacing_mm
    );
    if let Some(p) = &args.labels {
        nifti::write_labels(p, &labels, &WriteOptions::default())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
