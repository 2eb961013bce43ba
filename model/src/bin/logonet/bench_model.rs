//! `logonet bench model`: forward time of a whole network on one window, and the process's peak memory.

use crate::info::resolve_config;
use candle_core::{DType, Tensor};
use logonet::nets::{SegmentationNet as _, checkpoint};
use std::path::Path;
use std::time::Instant;

/// Arguments of `logonet bench model`.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Model name (logonet-s, ulkanet-s, logonet-l, logonet-tiny, ...) or a checkpoint path.
    #[arg(long, short, default_value = "logonet-s")]
    pub model: String,
    /// Cubic window size (a multiple of 32).
    #[arg(long, default_value_t = 96)]
    pub size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed forward passes (after one warm-up pass).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the warm-up pass.
    #[arg(long)]
    pub no_warmup: bool,
    /// Train-mode forward (batch statistics) instead of eval mode.
    #[arg(long)]
    pub train: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Device to run on.
    #[arg(long, value_enum, default_value_t = crate::device::DeviceArg::Cpu)]
    pub device: crate::device::DeviceArg,
    /// Allow TF32 tensor cores for f32 convolutions and matmuls on CUDA (PyTorch's default for convs).
    #[arg(long)]
    pub tf32: bool,
}

/// Peak resident set size of this process in bytes (`VmHWM` of /proc/self/status), if available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `logonet bench model`.
pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        // candle's CPU kernels read RAYON_NUM_THREADS; set it before any tensor work, while single-threaded.
        // SAFETY: no other thread exists yet that could read the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    crate::device::set_tf32(args.tf32)?;
    let device = args.device.open()?;
    let path = Path::new(&args.model);
    let loaded = if path.is_file() {
        checkpoint::load_net(path, &device)?
    } else {
        checkpoint::new_net(&resolve_config(&args.model)?, &device)?
    };
    let cfg = &loaded.config;
    let input = [
        args.batch,
        cfg.in_channels(),
        args.size,
        args.size,
        args.size,
    ];
    cfg.check_input(&input)?;
    let macs = loaded.net.macs(input)?;
    let x = Tensor::randn(0f32, 1.0, input.as_slice(), &device)?.to_dtype(DType::F32)?;
    if !args.no_warmup {
        loaded.net.forward_t(&x, args.train)?;
        device.synchronize()?;
    }
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) {
        let t0 = Instant::now();
        let y = loaded.net.forward_t(&x, args.train)?;
        // Make sure the result is materialised (CUDA kernels run asynchronously).
        device.synchronize()?;
        drop(y);
        times.push(t0.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let min = sorted[0];
    let gflop = 2.0 * macs.conv_macs as f64 / 1e9;
    let rss = peak_rss_bytes();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "input": input,
            "train": args.train,
            "threads": threads,
            "runs_s": times,
            "median_s": median,
            "min_s": min,
            "gflop": gflop,
            "gflop_per_s": gflop / median,
            "peak_rss_bytes": rss,
            "device": crate::device::describe(&device),
            "tf32": args.tf32,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("model      {}", cfg.describe());
        println!(
            "input      {input:?}, {} mode, {threads} threads, device {}{}",
            if args.train { "train" } else { "eval" },
            crate::device::describe(&device),
            if args.tf32 { ", TF32 allowed" } else { "" }
        );
        println!(
            "forward    median {median:.3} s, min {min:.3} s over {} runs ({:.1} GFLOP/s)",
            times.len(),
            gflop / median
        );
        match rss {
            Some(b) => println!("peak RSS   {:.2} GB", b as f64 / 1e9),
            None => println!("peak RSS   unavailable (no /proc/self/status)"),
        }
    }
    Ok(())
}
