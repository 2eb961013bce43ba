//! `logonet bench infer`: whole-volume sliding-window inference speed (windows/s) and peak memory.

use anyhow::Context as _;
use candle_core::Tensor;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use logonet::infer::predict::preprocess;
use logonet::infer::{
    Blend, Bundle, Preprocess, SlidingWindowConfig, WindowPlan, sliding_window_argmax,
};
use logonet::job::CancelToken;
use logonet::nets::{AnyNet, InferenceNet, NetConfig};
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
    /// Only run the first N windows (in MONAI's order) through the network, without blending: per-window
    /// figures for volumes that take too long as a whole.
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
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
    if let Some(n) = args.threads {
        // SAFETY: set before any other thread exists (see `bench model`).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
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
            let net = InferenceNet::new(&b.build_net(&device)?)?;
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
            let net = InferenceNet::new(&AnyNet::new(
                &cfg,
                VarBuilder::from_varmap(&varmap, DType::F32, &device),
            )?)?;
            drop(varmap);
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
    let plan = WindowPlan::new(img.dims, sw.roi_size, sw.overlap)?;
    let windows = plan.windows().len();
    let x = img.to_tensor(&device)?;
    let cpu0 = crate::bench_model::cpu_seconds();
    let t1 = std::time::Instant::now();
    let ran = match args.max_windows {
        Some(n) => {
            // The first n windows of the plan, sw_batch at a time, network only (no blending).
            let roi = sw.roi_size;
            let starts: Vec<[usize; 3]> = plan.windows().into_iter().take(n).collect();
            let bars = crate::progress::Bars::new();
            let mut done = 0;
            for chunk in starts.chunks(sw.sw_batch_size.max(1)) {
                let crops = chunk
                    .iter()
                    .map(|s| {
                        let pad = |d: usize| s[d].min(img.dims[d].saturating_sub(roi[d]));
                        Ok(x.narrow(2, pad(0), roi[0].min(img.dims[0]))?
                            .narrow(3, pad(1), roi[1].min(img.dims[1]))?
                            .narrow(4, pad(2), roi[2].min(img.dims[2]))?)
                    })
                    .collect::<anyhow::Result<Vec<Tensor>>>()?;
                let batch = Tensor::cat(&crops, 0)?;
                if batch.dims()[2..] != roi[..] {
                    anyhow::bail!(
                        "--max-windows needs a volume at least as large as the window {roi:?} (model grid {:?})",
                        img.dims
                    );
                }
                let y = net.forward(&batch)?;
                let _ = y.dims();
                done += chunk.len();
                logonet::job::Progress::report(
                    &bars,
                    logonet::job::ProgressEvent {
                        stage: "windows".into(),
                        done: done as u64,
                        total: starts.len() as u64,
                    },
                );
            }
            bars.finish();
            done
        }
        None => {
            let bars = crate::progress::Bars::new();
            let labels =
                sliding_window_argmax(&x, &sw, |b| net.forward(b), &bars, &CancelToken::new());
            bars.finish();
            let _labels = labels?;
            windows
        }
    };
    let infer_s = t1.elapsed().as_secs_f64();
    let cpu_s = match (cpu0, crate::bench_model::cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let what = if args.max_windows.is_some() {
        "first windows, network only (no blending)"
    } else {
        "whole volume (sliding window, blending, argmax)"
    };
    let report = serde_json::json!({
        "volume": source,
        "input_dims": volume.dims,
        "model_grid_dims": img.dims,
        "model": name,
        "roi": sw.roi_size,
        "overlap": sw.overlap,
        "sw_batch_size": sw.sw_batch_size,
        "windows": windows,
        "windows_run": ran,
        "measured": what,
        "preprocess_s": preprocess_s,
        "inference_s": infer_s,
        "inference_cpu_s": cpu_s,
        "windows_per_s": ran as f64 / infer_s,
        "s_per_window": infer_s / ran.max(1) as f64,
        "estimated_whole_volume_s": infer_s / ran.max(1) as f64 * windows as f64,
        "peak_rss_mib": peak_rss_mib(),
        "load_average_1m": crate::bench_model::load_average(),
        "device": format!("{device:?}"),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {:?} -> model grid {:?}; {} of {} windows of {:?} ({what}) in {:.2} s (CPU {:.1} s) = {:.3} windows/s, {:.2} s/window (preprocess {:.2} s); peak RSS {} MiB",
            name,
            volume.dims,
            img.dims,
            ran,
            windows,
            sw.roi_size,
            infer_s,
            cpu_s,
            ran as f64 / infer_s,
            infer_s / ran.max(1) as f64,
            preprocess_s,
            peak_rss_mib()
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "?".into())
        );
    }
    Ok(())
}
