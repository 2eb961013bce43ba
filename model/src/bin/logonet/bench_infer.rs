//! `logonet bench infer`: whole-volume sliding-window inference speed (windows/s) and peak memory.

use anyhow::Context as _;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use logonet::infer::predict::preprocess;
use logonet::infer::{
    Blend, Bundle, Preprocess, SlidingWindowConfig, WindowPlan, sliding_window_argmax,
};
use logonet::job::CancelToken;
use logonet::nets::{AnyNet, NetConfig, SegmentationNet as _};
use std::path::PathBuf;

/// Arguments of `logonet bench infer`.
#[derive(clap::Args, Debug)]
pub struct InferArgs {
    /// Volume to segment (NIfTI or DICOM folder). Default: `$LOGONET_DATA/ct_abdomen_totalseg/ct_full_3mm.nii.gz`
    /// when `LOGONET_DATA` is set, else the synthetic phantom.
    #[arg(long)]
    pub volume: Option<PathBuf>,
    /// Model bundle; default: a randomly initialised `--net`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Network preset when no bundle is given.
    #[arg(long, default_value = "ulkanet-tiny")]
    pub net: String,
    /// Window size (cubic) when no bundle is given.
    #[arg(long, default_value_t = 96)]
    pub roi: usize,
    /// Window overlap.
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    /// Windows per network call.
    #[arg(long, default_value_t = 4)]
    pub sw_batch: usize,
    /// Gaussian instead of constant blending.
    #[arg(long)]
    pub gaussian: bool,
    /// Run on the first CUDA GPU.
    #[arg(long)]
    pub cuda: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `logonet bench infer`.
pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let device = if args.cuda {
        Device::new_cuda(0).context("CUDA device 0 is not available")?
    } else {
        Device::Cpu
    };
    let (volume, source) = match (&args.volume, std::env::var_os("LOGONET_DATA")) {
        (Some(p), _) => (logonet::volume::io::load_image(p)?, p.display().to_string()),
        (None, Some(d)) => {
            let p = PathBuf::from(d).join("ct_abdomen_totalseg/ct_full_3mm.nii.gz");
            (
                logonet::volume::io::load_image(&p)?,
                p.display().to_string(),
            )
        }
        (None, None) => {
            let (img, _) = logonet::volume::phantom::phantom(&Default::default());
            (img, "phantom (default)".to_string())
        }
    };
    let (net, recipe, mut sw, name) = match &args.model {
        Some(p) => {
            let b = Bundle::load(p)?;
            let net = b.build_net(&device)?;
            (
                net,
                b.meta.preprocess.clone(),
                b.meta.sliding_window.clone(),
                b.meta.name.clone(),
            )
        }
        None => {
            let cfg = NetConfig::from_name(&args.net)?;
            let varmap = VarMap::new();
            let net = AnyNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
            let sw = SlidingWindowConfig {
                roi_size: [args.roi; 3],
                ..Default::default()
            };
            (
                net,
                Preprocess::btcv_ct(),
                sw,
                format!("{} (random weights)", args.net),
            )
        }
    };
    sw.overlap = args.overlap;
    sw.sw_batch_size = args.sw_batch;
    if args.gaussian {
        sw.blend = Blend::Gaussian { sigma_scale: 0.125 };
    }
    let t0 = std::time::Instant::now();
    let (img, _record) = preprocess(&volume, &recipe)?;
    let preprocess_s = t0.elapsed().as_secs_f64();
    let windows = WindowPlan::new(img.dims, sw.roi_size, sw.overlap)?
        .windows()
        .len();
    let x = img.to_tensor(&device)?;
    let bars = crate::progress::Bars::new();
    let t1 = std::time::Instant::now();
    let labels = sliding_window_argmax(
        &x,
        &sw,
        |b| net.forward_t(b, false),
        &bars,
        &CancelToken::new(),
    );
    bars.finish();
    let _labels = labels?;
    let infer_s = t1.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "volume": source,
        "input_dims": volume.dims,
        "model_grid_dims": img.dims,
        "model": name,
        "roi": sw.roi_size,
        "overlap": sw.overlap,
        "sw_batch_size": sw.sw_batch_size,
        "windows": windows,
        "preprocess_s": preprocess_s,
        "inference_s": infer_s,
        "windows_per_s": windows as f64 / infer_s,
        "peak_rss_mib": peak_rss_mib(),
        "device": format!("{device:?}"),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {:?} -> model grid {:?}; {} windows of {:?} in {:.2} s = {:.2} windows/s (preprocess {:.2} s); peak RSS {} MiB",
            name,
            volume.dims,
            img.dims,
            windows,
            sw.roi_size,
            infer_s,
            windows as f64 / infer_s,
            preprocess_s,
            peak_rss_mib()
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "?".into())
        );
    }
    Ok(())
}
