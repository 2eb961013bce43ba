//! `logonet bench load`: how fast a volume is read: a large `.nii.gz` (decompression, decoding, reordering) or a
//! DICOM series (header scan, decoding of every slice in parallel, sorting, assembly). Reports wall time and the
//! process CPU time per load (user + system, all threads).

use logonet::volume::nifti::{self, ReadOptions, WriteOptions};
use logonet::volume::phantom::{PhantomConfig, phantom};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `logonet bench load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The file or DICOM folder to read; default: the largest .nii.gz under $LOGONET_DATA, else a generated
    /// phantom.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Size of the generated phantom (int16, .nii.gz) when no file is used.
    #[arg(long, num_args = 3, value_names = ["X", "Y", "Z"], default_values_t = [512usize, 512, 256])]
    pub size: Vec<usize>,
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn largest_in(dir: &std::path::Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".nii.gz") {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, p));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Runs `logonet bench load`.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let _tmp;
    let path = match (&args.input, std::env::var_os("LOGONET_DATA")) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) if largest_in(std::path::Path::new(&d)).is_some() => {
            largest_in(std::path::Path::new(&d)).unwrap_or_default()
        }
        _ => {
            anyhow::ensure!(
                args.size.len() == 3 && args.size.iter().all(|&d| (1..=2048).contains(&d)),
                "--size needs 3 values in 1..=2048"
            );
            let dims = [args.size[0], args.size[1], args.size[2]];
            eprintln!("generating a {dims:?} phantom ...");
            let (img, _) = phantom(&PhantomConfig {
                dims,
                spacing_mm: [0.8, 0.8, 1.0],
                seed: 0,
                noise_hu: 12.0,
            });
            let dir = tempfile_dir()?;
            let p = dir.join("bench_load_phantom.nii.gz");
            let opts = WriteOptions {
                datatype: Some(nifti::NiftiType::Int16),
                ..WriteOptions::default()
            };
            let t = Instant::now();
            nifti::write_image(&p, &img, &opts)?;
            eprintln!(
                "wrote {} in {:.2} s",
                p.display(),
                t.elapsed().as_secs_f64()
            );
            _tmp = TempDir(dir);
            p
        }
    };
    let is_dicom = path.is_dir() || logonet::volume::io::is_dicom_file(&path);
    let file_bytes = input_bytes(&path);
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut dims = [0; 3];
    for r in 0..=args.repeat.max(1) {
        let c0 = process_cpu_s();
        let t = Instant::now();
        dims = if is_dicom {
            logonet::volume::io::load_image_with(&path, &Default::default())?
                .0
                .dims
        } else {
            nifti::read_image(&path, &ReadOptions::default())?
                .volume
                .dims
        };
        let s = t.elapsed().as_secs_f64();
        let c = process_cpu_s() - c0;
        if r > 0 {
            times.push(s);
            cpu.push(c);
        }
    }
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let cpu_median = cpu[cpu.len() / 2];
    let voxels = dims.iter().product::<usize>() as f64;
    let out = serde_json::json!({
        "file": path, "format": if is_dicom { "dicom" } else { "nifti" }, "file_mb": file_bytes as f64 / 1e6,
        "dims": dims, "median_s": median, "min_s": times[0], "cpu_median_s": cpu_median,
        "mvoxels_per_s": voxels / median / 1e6, "compressed_mb_per_s": file_bytes as f64 / median / 1e6,
        "threads": rayon::current_num_threads(), "load_average": load_average(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "load {} ({}, {:.1} MB, {:?})",
            path.display(),
            if is_dicom { "DICOM" } else { "NIfTI" },
            file_bytes as f64 / 1e6,
            dims
        );
        println!(
            "  median {:.3} s (CPU {:.3} s), min {:.3} s over {} runs: {:.1} Mvoxel/s, {:.1} MB/s on disk; \
             {} threads, load average {}",
            median,
            cpu_median,
            times[0],
            times.len(),
            voxels / median / 1e6,
            file_bytes as f64 / median / 1e6,
            rayon::current_num_threads(),
            load_average()
        );
    }
    Ok(())
}

/// Bytes on disk: the file, or every file under a folder.
fn input_bytes(path: &std::path::Path) -> u64 {
    if !path.is_dir() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| input_bytes(&e.path()))
        .sum()
}

/// User + system CPU seconds of this process so far (all threads), from /proc/self/stat (Linux; 0 elsewhere).
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15 (clock ticks, 100/s).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The 1-minute load average (Linux), as text.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("logonet-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
