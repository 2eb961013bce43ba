//! `logonet bench model`: forward time of a whole network on one window, the process's CPU time and peak
//! memory, optionally a per-op-kind time profile.

use crate::info::resolve_config;
use candle_core::{DType, Tensor};
use logonet::nets::inference::profile;
use logonet::nets::{AnyNet, InferenceNet, SegmentationNet, checkpoint};
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
    /// Train-mode forward (batch statistics, autograd graph) instead of eval mode.
    #[arg(long)]
    pub train: bool,
    /// Eval mode layer by layer with the `VarMap` weights (autograd graph recorded, BatchNorm not folded),
    /// instead of the inference form.
    #[arg(long, conflicts_with = "train")]
    pub graph: bool,
    /// Print the wall time per op kind of the last timed run (inference form only).
    #[arg(long, conflicts_with_all = ["train", "graph"])]
    pub profile: bool,
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

/// User + system CPU seconds of this process (all threads), from `/proc/self/stat` (100 Hz ticks).
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the full line are utime and stime; `rest` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The 1-minute load average, if available.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
    let cfg = loaded.config.clone();
    let input = [
        args.batch,
        cfg.in_channels(),
        args.size,
        args.size,
        args.size,
    ];
    cfg.check_input(&input)?;
    let macs = loaded.net.macs(input)?;
    // The network that runs: the inference form (the `VarMap` copy is dropped, as a deployed model holds
    // one set of weights), or the layer-by-layer network for --train / --graph.
    let t_fold = Instant::now();
    let (net, mode): (Box<dyn SegmentationNet>, &str) = if args.train || args.graph {
        let mode = if args.train {
            "train (graph)"
        } else {
            "eval (graph)"
        };
        (Box::new(GraphNet(loaded.net)), mode)
    } else {
        let inf = InferenceNet::new(&loaded.net)?;
        drop(loaded);
        (Box::new(inf), "eval (inference form)")
    };
    let fold_s = t_fold.elapsed().as_secs_f64();
    let x = Tensor::randn(0f32, 1.0, input.as_slice(), &device)?.to_dtype(DType::F32)?;
    if !args.no_warmup {
        net.forward_t(&x, args.train)?;
        device.synchronize()?;
    }
    let runs = args.runs.max(1);
    let mut times = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    let mut prof = Vec::new();
    for r in 0..runs {
        if args.profile && r + 1 == runs {
            profile::start();
        }
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let y = net.forward_t(&x, args.train)?;
        // Make sure the result is materialised (CUDA kernels run asynchronously).
        device.synchronize()?;
        drop(y);
        times.push(t0.elapsed().as_secs_f64());
        cpu.push(match (c0, cpu_seconds()) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        });
        if args.profile && r + 1 == runs {
            prof = profile::take();
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let min = sorted[0];
    let mut cpu_sorted = cpu.clone();
    cpu_sorted.sort_by(f64::total_cmp);
    let cpu_median = cpu_sorted[cpu_sorted.len() / 2];
    let gflop = 2.0 * macs.conv_macs as f64 / 1e9;
    let rss = peak_rss_bytes();
    let load = load_average();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let prof_total: f64 = prof.iter().map(|p| p.1).sum();
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "input": input,
            "mode": mode,
            "train": args.train,
            "threads": threads,
            "fold_s": fold_s,
            "runs_s": times,
            "runs_cpu_s": cpu,
            "median_s": median,
            "min_s": min,
            "median_cpu_s": cpu_median,
            "gflop": gflop,
            "gflop_per_s": gflop / median,
            "peak_rss_bytes": rss,
            "device": crate::device::describe(&device),
            "tf32": args.tf32,
            "load_average_1m": load,
            "profile": prof.iter().map(|(k, s, n)| serde_json::json!({"op": k, "s": s, "calls": n})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("model      {}", cfg.describe());
        println!(
            "input      {input:?}, {mode}, {threads} threads, device {}{} (prepared in {fold_s:.2} s)",
            crate::device::describe(&device),
            if args.tf32 { ", TF32 allowed" } else { "" }
        );
        println!(
            "forward    median {median:.3} s, min {min:.3} s over {} runs ({:.1} GFLOP/s); CPU {cpu_median:.2} s per run",
            times.len(),
            gflop / median
        );
        match rss {
            Some(b) => println!("peak RSS   {:.2} GB", b as f64 / 1e9),
            None => println!("peak RSS   unavailable (no /proc/self/status)"),
        }
        if let Some(l) = load {
            println!("load avg   {l:.2} (1 min, at the end)");
        }
        if !prof.is_empty() {
            println!(
                "profile of the last run (wall s per op kind; {prof_total:.2} s of {:.2} s):",
                times[runs - 1]
            );
            for (k, s, n) in &prof {
                println!(
                    "  {:<36} {:>8.3} s {:>5.1} % {:>5} calls",
                    k,
                    s,
                    100.0 * s / prof_total.max(1e-12),
                    n
                );
            }
        }
    }
    Ok(())
}

/// The layer-by-layer network (`forward_graph`), for `--train` and `--graph`.
struct GraphNet(AnyNet);

impl SegmentationNet for GraphNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> logonet::Result<Tensor> {
        match &self.0 {
            AnyNet::Ulkanet(n) => n.forward_graph(x, train),
            AnyNet::Logonet(n) => n.forward_graph(x, train),
        }
    }

    fn net_config(&self) -> logonet::nets::NetConfig {
        self.0.net_config()
    }

    fn macs(&self, input: [usize; 5]) -> logonet::Result<logonet::nets::flops::MacCounter> {
        self.0.macs(input)
    }
}
