//! `logonet check parity`: the six reference fixtures (`tests/fixtures/reference`) on a chosen device, max abs
//! diff per fixture against the PyTorch outputs. It lets a machine with a GPU but no Rust toolchain verify the
//! CUDA build with the binary alone.

use crate::device::{DeviceArg, describe};
use anyhow::Context as _;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use logonet::nets::van3d::{AttentionModule3D, Block3D, SpatialAttention3D, Van3d};
use logonet::nets::{Logonet, Ulkanet, logonet as lg, ulkanet};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Self-checks.
#[derive(clap::Subcommand, Debug)]
pub enum CheckCommand {
    /// Run the reference fixtures and print the max abs diff of each against PyTorch (exit code 1 if any
    /// exceeds the tolerance).
    Parity(ParityArgs),
}

/// Arguments of `logonet check parity`.
#[derive(clap::Args, Debug)]
pub struct ParityArgs {
    /// Folder with `<name>.weights.safetensors` and `<name>.io.safetensors`.
    #[arg(long, default_value = "tests/fixtures/reference")]
    pub fixtures: PathBuf,
    /// Device to run on.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Largest allowed max abs diff.
    #[arg(long, default_value_t = 1e-4)]
    pub tol: f64,
    /// Allow TF32 tensor cores on CUDA (expect larger differences).
    #[arg(long)]
    pub tf32: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a check.
pub fn run(cmd: CheckCommand) -> anyhow::Result<()> {
    match cmd {
        CheckCommand::Parity(a) => parity(&a),
    }
}

type Tensors = HashMap<String, Tensor>;

fn load(dir: &Path, file: &str, device: &Device) -> anyhow::Result<Tensors> {
    let path = dir.join(file);
    let t = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| anyhow::anyhow!("cannot read the fixture ({e}): {}", path.display()))?;
    // Integer tensors (shapes, BatchNorm counters) stay on the CPU.
    t.into_iter()
        .map(|(k, v)| {
            let v = match v.dtype() {
                DType::F32 | DType::F64 => v.to_device(device)?,
                _ => v,
            };
            Ok((k, v))
        })
        .collect()
}

fn get<'a>(io: &'a Tensors, key: &str) -> anyhow::Result<&'a Tensor> {
    io.get(key)
        .with_context(|| format!("fixture has no tensor {key}"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    anyhow::ensure!(
        a.dims() == b.dims(),
        "shape {:?} differs from the reference {:?}",
        a.dims(),
        b.dims()
    );
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_device(&Device::Cpu)?
        .to_scalar::<f64>()?;
    Ok(d)
}

/// Compared outputs of one fixture: `(output name, max abs diff)`.
fn run_fixture(name: &str, dir: &Path, device: &Device) -> anyhow::Result<Vec<(String, f64)>> {
    let w = load(dir, &format!("{name}.weights.safetensors"), device)?;
    let io = load(dir, &format!("{name}.io.safetensors"), device)?;
    let vb = VarBuilder::from_tensors(w, DType::F32, device);
    let mut out = Vec::new();
    let mut cmp = |what: &str, y: &Tensor, key: &str| -> anyhow::Result<()> {
        out.push((what.to_string(), max_abs_diff(y, get(&io, key)?)?));
        Ok(())
    };
    match name {
        "lka" => {
            let m = AttentionModule3D::new(vb, 8)?;
            cmp("y", &m.forward_t(get(&io, "input.x")?, false)?, "output.y")?;
        }
        "spatial_attention" => {
            let m = SpatialAttention3D::new(vb, 8)?;
            cmp("y", &m.forward_t(get(&io, "input.x")?, false)?, "output.y")?;
        }
        "block3d" => {
            let m = Block3D::new(vb, 8, 4)?;
            let dhw: Vec<i64> = get(&io, "input.dhw")?.to_vec1()?;
            anyhow::ensure!(dhw.len() == 3, "input.dhw must hold 3 sizes");
            let dhw = [dhw[0] as usize, dhw[1] as usize, dhw[2] as usize];
            let y = m.forward_tokens(get(&io, "input.tokens")?, dhw, false)?;
            cmp("tokens", &y, "output.tokens")?;
        }
        "van3d_encoder" => {
            let m = Van3d::new(vb, 1, &[8, 16, 32, 64], &[8, 8, 4, 4], &[1, 1, 1, 1])?;
            let outs = m.forward_t(get(&io, "input.x")?, false)?;
            for (i, o) in outs.iter().enumerate() {
                let key = format!("output.stage{}", i + 1);
                cmp(&format!("stage{}", i + 1), o, &key)?;
            }
        }
        "ulkanet_tiny" => {
            let net = Ulkanet::new(&ulkanet::Config::tiny(), vb)?;
            let y = net.forward_t(get(&io, "input.x")?, false)?;
            cmp("logits", &y, "output.logits")?;
        }
        "logonet_tiny" => {
            let net = Logonet::new(&lg::Config::tiny(), vb)?;
            let p = net.forward_parts(get(&io, "input.x")?, false)?;
            cmp("global_out", &p.global, "output.global_out")?;
            cmp("local_reassembled", &p.local, "output.local_reassembled")?;
            // (i, j, k) order with k fastest: van0_0_0 is part 0, van1_0_1 is part 5.
            cmp("local_000_out", &p.local_parts[0], "output.local_000_out")?;
            cmp("local_101_out", &p.local_parts[5], "output.local_101_out")?;
            cmp("logits", &p.logits, "output.logits")?;
        }
        other => anyhow::bail!("unknown fixture {other}"),
    }
    Ok(out)
}

/// The fixtures in the order of `tests/fixtures/reference/README.md`.
pub const FIXTURES: [&str; 6] = [
    "lka",
    "spatial_attention",
    "block3d",
    "van3d_encoder",
    "ulkanet_tiny",
    "logonet_tiny",
];

fn parity(a: &ParityArgs) -> anyhow::Result<()> {
    crate::device::set_tf32(a.tf32)?;
    let device = a.device.open()?;
    let mut rows = Vec::new();
    let mut failed = 0usize;
    for name in FIXTURES {
        let t0 = Instant::now();
        let res = run_fixture(name, &a.fixtures, &device);
        let secs = t0.elapsed().as_secs_f64();
        match res {
            Ok(outs) => {
                let worst = outs.iter().map(|(_, d)| *d).fold(0.0, f64::max);
                let ok = worst <= a.tol;
                failed += usize::from(!ok);
                rows.push(serde_json::json!({
                    "fixture": name, "max_abs_diff": worst, "ok": ok, "seconds": secs,
                    "outputs": outs.iter().map(|(k, d)| serde_json::json!({"output": k, "max_abs_diff": d}))
                        .collect::<Vec<_>>(),
                }));
                if !a.json {
                    let detail: Vec<String> =
                        outs.iter().map(|(k, d)| format!("{k} {d:.2e}")).collect();
                    println!(
                        "{name:<18} max abs diff {worst:.3e}  {}  {secs:6.2} s  ({})",
                        if ok { "ok  " } else { "FAIL" },
                        detail.join(", ")
                    );
                }
            }
            Err(e) => {
                failed += 1;
                rows.push(
                    serde_json::json!({"fixture": name, "error": format!("{e:#}"), "ok": false}),
                );
                if !a.json {
                    println!("{name:<18} ERROR {e:#}");
                }
            }
        }
    }
    if a.json {
        let out = serde_json::json!({
            "device": describe(&device), "tol": a.tol, "tf32": a.tf32, "fixtures": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "device {}: {}/{} fixtures within {:.0e}",
            describe(&device),
            FIXTURES.len() - failed,
            FIXTURES.len(),
            a.tol
        );
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} fixture(s) failed the parity check in {}",
        a.fixtures.display()
    );
    Ok(())
}
