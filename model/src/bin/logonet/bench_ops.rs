//! `logonet bench ops`: wall time, CPU time and GFLOP/s of the 3D ops on the shapes LoGoNet uses.

use super::OpsArgs;
use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use logonet::ops::{self, Conv3dParams};
use std::time::Instant;

/// One measurement.
#[derive(serde::Serialize, Debug)]
struct Row {
    case: String,
    pass: &'static str,
    wall_ms: f64,
    cpu_s: f64,
    /// Kernel part of `cpu_s` (page faults of fresh buffers, mostly).
    sys_s: f64,
    gflop: Option<f64>,
    gflops_wall: Option<f64>,
    gflops_per_core: Option<f64>,
}

/// CPU seconds of this process (all threads): the sum of the per-thread run times in
/// `/proc/self/task/*/schedstat` (nanoseconds; the rayon pool's threads live as long as the process), or
/// user + system time from `/proc/self/stat` (100 Hz ticks) where schedstat is missing.
fn cpu_seconds() -> f64 {
    let sched = std::fs::read_dir("/proc/self/task").ok().and_then(|d| {
        let mut ns = 0u64;
        for e in d.flatten() {
            let s = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(ns as f64 * 1e-9)
    });
    sched.unwrap_or_else(cpu_seconds_stat)
}

/// User + system CPU seconds of this process (all threads), from `/proc/self/stat` (100 Hz ticks).
fn cpu_seconds_stat() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the full line are utime and stime; `rest` starts at field 3.
    let tick = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}

/// System (kernel) CPU seconds of this process: page faults of fresh allocations show up here.
fn sys_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    s.rfind(')')
        .and_then(|i| s[i + 2..].split_whitespace().nth(12))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |t| t / 100.0)
}

/// Runs `f` once to warm up, then `reps` times; returns the fastest wall time and the CPU time of that run.
fn measure(
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64, f64)> {
    f()?;
    let mut best = (f64::INFINITY, f64::NAN, f64::NAN);
    for _ in 0..reps.max(1) {
        let (c0, s0, t0) = (cpu_seconds(), sys_seconds(), Instant::now());
        f()?;
        let (wall, cpu, sys) = (
            t0.elapsed().as_secs_f64(),
            cpu_seconds() - c0,
            sys_seconds() - s0,
        );
        if wall < best.0 {
            best = (wall, cpu, sys);
        }
    }
    Ok(best)
}

fn row(
    case: &str,
    pass: &'static str,
    (wall, cpu, sys): (f64, f64, f64),
    gflop: Option<f64>,
) -> Row {
    Row {
        case: case.to_string(),
        pass,
        wall_ms: wall * 1e3,
        cpu_s: cpu,
        sys_s: sys,
        gflop,
        gflops_wall: gflop.map(|g| g / wall),
        gflops_per_core: gflop.map(|g| g / cpu.max(1e-9)),
    }
}

fn randn(dims: &[usize]) -> anyhow::Result<Tensor> {
    Ok(Tensor::randn(0f32, 1f32, dims, &Device::Cpu)?)
}

fn conv_case(
    rows: &mut Vec<Row>,
    reps: usize,
    name: &str,
    x: [usize; 5],
    w: [usize; 5],
    p: Conv3dParams,
) -> anyhow::Result<()> {
    let (xt, wt) = (randn(&x)?, (randn(&w)? * 0.05)?);
    let gflop = ops::conv3d_flops(x, w, &p)? / 1e9;
    let y = ops::conv3d(&xt, &wt, None, &p)?;
    let dy = y.randn_like(0.0, 1.0)?;
    rows.push(row(
        name,
        "forward",
        measure(reps, || {
            let _out = ops::conv3d(&xt, &wt, None, &p)?;
            Ok(())
        })?,
        Some(gflop),
    ));
    let dx = measure(reps, || {
        let _out = ops::conv3d_backward(&xt, &wt, &dy, &p, true, false)?;
        Ok(())
    })?;
    rows.push(row(name, "input-grad", dx, Some(gflop)));
    let dw = measure(reps, || {
        let _out = ops::conv3d_backward(&xt, &wt, &dy, &p, false, true)?;
        Ok(())
    })?;
    rows.push(row(name, "weight-grad", dw, Some(gflop)));
    Ok(())
}

type Op = Box<dyn Fn(&Tensor) -> logonet::Result<ops::OpRun>>;

/// Norm/activation/upsampling/pooling case: three rows.
/// * `forward`: the op alone.
/// * `fwd+bwd(g)`: forward, then the op's own backward kernels for a fixed random upstream gradient `g` (what
///   PyTorch's `y.backward(g)` runs for a leaf input: the op's backward, nothing else).
/// * `fwd+bwd autograd`: forward + `y.sum_all().backward()` through candle's autograd, which adds candle's
///   sum, the broadcast of its gradient and the `zeros_like + add` that candle's `GradStore` runs for every
///   gradient it accumulates (single-threaded, a full pass over memory each).
fn elementwise_case(
    rows: &mut Vec<Row>,
    reps: usize,
    name: &str,
    dims: &[usize],
    op: Op,
) -> anyhow::Result<()> {
    let x = Var::from_tensor(&randn(dims)?)?;
    rows.push(row(
        name,
        "forward",
        measure(reps, || {
            let _out = op(x.as_tensor())?;
            Ok(())
        })?,
        None,
    ));
    let g = op(x.as_tensor())?.y.randn_like(0.0, 1.0)?;
    let fb = measure(reps, || {
        let run = op(x.as_tensor())?;
        let grads = run.backward(&g)?;
        anyhow::ensure!(!grads.is_empty(), "no gradient");
        Ok(())
    })?;
    rows.push(row(name, "fwd+bwd(g)", fb, None));
    let fb = measure(reps, || {
        let y = op(x.as_tensor())?.y;
        let g = y.sum_all()?.backward()?;
        g.get(x.as_tensor()).context("no gradient")?;
        Ok(())
    })?;
    rows.push(row(name, "fwd+bwd autograd", fb, None));
    Ok(())
}

/// Runs all cases and prints a table or JSON.
pub fn run(a: &OpsArgs) -> anyhow::Result<()> {
    let keep = |n: &str| a.filter.as_deref().is_none_or(|f| n.contains(f));
    let mut rows = Vec::new();
    let r = a.reps;
    let conv_cases: [(&str, [usize; 5], [usize; 5], Conv3dParams); 10] = [
        (
            "conv3d 3^3 64->64 1x64x48^3",
            [1, 64, 48, 48, 48],
            [64, 64, 3, 3, 3],
            Conv3dParams::iso(1, 1, 1, 1),
        ),
        (
            "conv3d 3^3 1->32 1x1x96^3",
            [1, 1, 96, 96, 96],
            [32, 1, 3, 3, 3],
            Conv3dParams::iso(1, 1, 1, 1),
        ),
        (
            "conv3d 3^3 96->14 1x96x96^3",
            [1, 96, 96, 96, 96],
            [14, 96, 3, 3, 3],
            Conv3dParams::iso(1, 1, 1, 1),
        ),
        (
            "conv3d 1^3 64->512 1x64x24^3",
            [1, 64, 24, 24, 24],
            [512, 64, 1, 1, 1],
            Conv3dParams::iso(1, 0, 1, 1),
        ),
        (
            "conv3d 1^3 512->64 1x512x24^3",
            [1, 512, 24, 24, 24],
            [64, 512, 1, 1, 1],
            Conv3dParams::iso(1, 0, 1, 1),
        ),
        (
            "conv3d 1^3 128->1024 1x128x12^3",
            [1, 128, 12, 12, 12],
            [1024, 128, 1, 1, 1],
            Conv3dParams::iso(1, 0, 1, 1),
        ),
        (
            "conv3d 1^3 512->2048 1x512x3^3",
            [1, 512, 3, 3, 3],
            [2048, 512, 1, 1, 1],
            Conv3dParams::iso(1, 0, 1, 1),
        ),
        (
            "conv3d 7^3 s4 1->64 1x1x96^3",
            [1, 1, 96, 96, 96],
            [64, 1, 7, 7, 7],
            Conv3dParams::iso(4, 3, 1, 1),
        ),
        (
            "depthwise 5^3 1x64x48^3",
            [1, 64, 48, 48, 48],
            [64, 1, 5, 5, 5],
            Conv3dParams::iso(1, 2, 1, 64),
        ),
        (
            "depthwise 7^3 dil3 1x64x48^3",
            [1, 64, 48, 48, 48],
            [64, 1, 7, 7, 7],
            Conv3dParams::iso(1, 9, 3, 64),
        ),
    ];
    for (name, x, w, p) in conv_cases {
        if keep(name) {
            conv_case(&mut rows, r, name, x, w, p)?;
        }
    }
    let c = 32;
    let dims = [1, c, 96, 96, 96];
    let dev = Device::Cpu;
    let pc = |v: f32| Tensor::full(v, c, &dev);
    let (w, b, rm, rv) = (pc(1.1)?, pc(0.1)?, pc(0.05)?, pc(0.9)?);
    let cases: Vec<(&str, Vec<usize>, Op)> = vec![
        ("batch_norm_eval 1x32x96^3", dims.to_vec(), {
            let (w, b, rm, rv) = (w.clone(), b.clone(), rm.clone(), rv.clone());
            Box::new(move |x| ops::batch_norm_eval_run(x, Some(&w), Some(&b), &rm, &rv, 1e-5))
        }),
        ("batch_norm_train 1x32x96^3", dims.to_vec(), {
            let (w, b) = (w.clone(), b.clone());
            Box::new(move |x| Ok(ops::batch_norm_train_run(x, Some(&w), Some(&b), 1e-5)?.0))
        }),
        ("instance_norm3d 1x32x96^3", dims.to_vec(), {
            let (w, b) = (w.clone(), b.clone());
            Box::new(move |x| ops::instance_norm3d_run(x, Some(&w), Some(&b), 1e-5))
        }),
        ("layer_norm_channels 1x32x96^3", dims.to_vec(), {
            let (w, b) = (w.clone(), b.clone());
            Box::new(move |x| ops::layer_norm_channels_run(x, &w, &b, 1e-5))
        }),
        ("layer_norm_last 1x96^3x32", vec![1, 96 * 96 * 96, c], {
            let (w, b) = (w.clone(), b.clone());
            Box::new(move |x| ops::layer_norm_last_run(x, &w, &b, 1e-5))
        }),
        ("gelu 1x32x96^3", dims.to_vec(), Box::new(ops::gelu_run)),
        (
            "leaky_relu 1x32x96^3",
            dims.to_vec(),
            Box::new(|x| ops::leaky_relu_run(x, 0.01)),
        ),
        (
            "upsample_trilinear2x 1x32x48^3",
            vec![1, c, 48, 48, 48],
            Box::new(ops::upsample_trilinear2x_run),
        ),
        (
            "upsample_nearest2x 1x32x48^3",
            vec![1, c, 48, 48, 48],
            Box::new(ops::upsample_nearest2x_run),
        ),
        (
            "max_pool3d 2^3 s2 1x32x96^3",
            dims.to_vec(),
            Box::new(|x| ops::max_pool3d_run(x, [2; 3], [2; 3], [0; 3])),
        ),
        (
            "avg_pool3d 3^3 s2 p1 1x32x96^3",
            dims.to_vec(),
            Box::new(|x| ops::avg_pool3d_run(x, [3; 3], [2; 3], [1; 3])),
        ),
    ];
    for (name, d, op) in cases {
        if keep(name) {
            elementwise_case(&mut rows, r, name, &d, op)?;
        }
    }
    let threads = rayon::current_num_threads();
    if a.json {
        let v = serde_json::json!({ "threads": threads, "dtype": format!("{:?}", DType::F32), "rows": rows });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "logonet bench ops: f32, {threads} rayon threads, fastest of {} runs",
        r.max(1)
    );
    println!(
        "{:<34} {:<17} {:>10} {:>8} {:>8} {:>10} {:>12}",
        "case", "pass", "wall ms", "CPU s", "sys s", "GFLOP/s", "GFLOP/s/core"
    );
    for x in &rows {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "{:<34} {:<17} {:>10.1} {:>8.3} {:>8.3} {:>10} {:>12}",
            x.case,
            x.pass,
            x.wall_ms,
            x.cpu_s,
            x.sys_s,
            f(x.gflops_wall),
            f(x.gflops_per_core)
        );
    }
    Ok(())
}
