//! `logonet bench train`: wall time of one training step (train-mode forward, DiceCE, backward, AdamW) on
//! random data, and the process's peak resident memory. Reference (PyTorch 2.x CPU, LoGoNet-S, one 96³ crop):
//! about 37 CPU-seconds per step and 6.7 GB peak.

use anyhow::Context as _;
use logonet::nets::NetConfig;
use logonet::train::trainer::{TrainConfig, Trainer};
use std::time::Instant;

/// Arguments of `logonet bench train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Network name (logonet-tiny, logonet-s, ulkanet-s, ...).
    #[arg(long, default_value = "logonet-s")]
    pub model: String,
    /// Cubic crop size.
    #[arg(long, default_value_t = 96)]
    pub size: usize,
    /// Crops per step.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 1)]
    pub steps: usize,
    /// Classes.
    #[arg(long, default_value_t = 14)]
    pub classes: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) of this process in seconds, if known.
fn cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Runs `logonet bench train`.
pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let dev = candle_core::Device::Cpu;
    let name = a.model.as_str();
    let net = NetConfig::from_name(name)?.with_out_channels(a.classes);
    let mut t = Trainer::new(
        &net,
        TrainConfig {
            schedule: logonet::train::trainer::ScheduleKind::Constant,
            ..Default::default()
        },
        &dev,
    )?;
    let s = a.size;
    let x = candle_core::Tensor::randn(0f32, 1.0, (a.batch, 1, s, s, s), &dev)?;
    // Labels: blocks of classes so every class occurs.
    let n = a.batch * s * s * s;
    let lab: Vec<u32> = (0..n)
        .map(|i| ((i / (s * s)) % s * a.classes / s) as u32)
        .collect();
    let y = candle_core::Tensor::from_vec(lab, (a.batch, 1, s, s, s), &dev)?;
    let t0 = Instant::now();
    let c0 = cpu_secs();
    t.train_step(&x, &y).context("warm-up step")?;
    let warm_secs = t0.elapsed().as_secs_f64();
    let warm_cpu = c0.zip(cpu_secs()).map(|(a, b)| b - a);
    let mut times = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..a.steps {
        let c0 = cpu_secs();
        let t0 = Instant::now();
        t.train_step(&x, &y)?;
        times.push(t0.elapsed().as_secs_f64());
        if let Some(d) = c0.zip(cpu_secs()).map(|(a, b)| b - a) {
            cpus.push(d);
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let peak = peak_rss_bytes().map(|b| b as f64 / 1e9);
    let threads = rayon::current_num_threads();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": name, "size": s, "batch": a.batch, "threads": threads,
                "warmup_step_secs": warm_secs, "warmup_step_cpu_secs": warm_cpu,
                "step_secs": mean(&times), "step_cpu_secs": mean(&cpus), "peak_rss_gb": peak,
            })
        );
    } else {
        println!(
            "train step {name} batch {} at {s}^3 on {threads} threads",
            a.batch
        );
        println!(
            "  warm-up step: {warm_secs:.2} s wall, {:.2} CPU-s",
            warm_cpu.unwrap_or(f64::NAN)
        );
        println!(
            "  step (mean of {}): {:.2} s wall, {:.2} CPU-s",
            times.len(),
            mean(&times),
            mean(&cpus)
        );
        println!("  peak RSS: {:.2} GB", peak.unwrap_or(f64::NAN));
    }
    Ok(())
}
