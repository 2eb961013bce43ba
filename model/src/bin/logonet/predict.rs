//! `logonet predict`: segment a NIfTI file, a DICOM folder, or a folder of volumes with a model bundle.

use anyhow::Context as _;
use logonet::infer::{Blend, Bundle, PredictOptions};
use logonet::job::CancelToken;
use logonet::volume::io;
use std::path::{Path, PathBuf};

/// Blending mode on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum BlendArg {
    /// Every window voxel weighs 1 (the paper).
    Constant,
    /// Gaussian weights (sigma 0.125 of the window).
    Gaussian,
}

/// Where the network runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

/// Arguments of `logonet predict`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input: a .nii/.nii.gz file, a DICOM series folder, or a folder of volumes (batch mode).
    #[arg(short, long)]
    pub input: PathBuf,
    /// Output: a .nii.gz file, or a folder (batch mode, or for one input: <name>_seg.nii.gz inside).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Model bundle (.safetensors, or a folder holding model.safetensors).
    #[arg(short, long)]
    pub model: PathBuf,
    /// Window overlap in [0, 1) (default: the bundle's, 0.5 for the paper).
    #[arg(long)]
    pub overlap: Option<f64>,
    /// Windows per network call (default: the bundle's).
    #[arg(long)]
    pub sw_batch: Option<usize>,
    /// Blending of overlapping windows (default: the bundle's).
    #[arg(long, value_enum)]
    pub blend: Option<BlendArg>,
    /// Mirroring test-time augmentation (8 flips per window, 8× slower).
    #[arg(long)]
    pub tta: bool,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// The (input, output) pairs of a run.
fn jobs(input: &Path, output: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let out_name = |p: &Path| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "volume".into());
        let stem = name
            .trim_end_matches(".gz")
            .trim_end_matches(".nii")
            .to_string();
        format!("{stem}_seg.nii.gz")
    };
    if input.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("cannot list {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let volumes: Vec<PathBuf> = entries
            .iter()
            .filter(|p| p.is_file() && io::is_nifti_path(p))
            .cloned()
            .collect();
        if !volumes.is_empty() {
            // A folder of volumes: batch mode into the output folder.
            std::fs::create_dir_all(output)
                .with_context(|| format!("cannot create {}", output.display()))?;
            return Ok(volumes
                .into_iter()
                .map(|v| (output.join(out_name(&v)), v))
                .map(|(o, i)| (i, o))
                .collect());
        }
    }
    // One volume (NIfTI file or DICOM folder).
    let out = if output.is_dir() {
        output.join(out_name(input))
    } else {
        output.to_path_buf()
    };
    Ok(vec![(input.to_path_buf(), out)])
}

/// Runs `logonet predict`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let bundle = Bundle::load(&args.model)?;
    let mut sw = bundle.meta.sliding_window.clone();
    if let Some(o) = args.overlap {
        sw.overlap = o;
    }
    if let Some(b) = args.sw_batch {
        sw.sw_batch_size = b;
    }
    match args.blend {
        Some(BlendArg::Constant) => sw.blend = Blend::Constant,
        Some(BlendArg::Gaussian) => sw.blend = Blend::Gaussian { sigma_scale: 0.125 },
        None => {}
    }
    sw.tta_mirror |= args.tta;
    let device = match args.device {
        DeviceArg::Cpu => candle_core::Device::Cpu,
        DeviceArg::Cuda => crate::device::DeviceArg::Cuda.open()?,
    };
    let options = PredictOptions {
        sliding_window: sw,
        device,
    };
    let jobs = jobs(&args.input, &args.output)?;
    let cancel = CancelToken::new();
    let mut failed = 0usize;
    for (n, (input, output)) in jobs.iter().enumerate() {
        if jobs.len() > 1 {
            eprintln!("[{}/{}] {}", n + 1, jobs.len(), input.display());
        }
        let run_one = || -> anyhow::Result<()> {
            let volume = io::load_image(input)?;
            let bars = crate::progress::Bars::new();
            let t0 = std::time::Instant::now();
            let labels =
                logonet::infer::predict::segment(&volume, &bundle, &options, &bars, &cancel);
            bars.finish();
            let labels = labels?;
            io::save_labels(output, &labels)?;
            eprintln!(
                "wrote {} ({:.1} s)",
                output.display(),
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        };
        if let Err(e) = run_one() {
            if jobs.len() == 1 {
                return Err(e);
            }
            eprintln!("error: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} volumes failed", jobs.len());
    }
    Ok(())
}
