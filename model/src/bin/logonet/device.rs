//! `--device cpu|cuda` for the commands that run networks, with a clear error in a build without CUDA.

use anyhow::Context as _;
use candle_core::Device;

/// Where the network runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceArg {
    /// The CPU.
    #[default]
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`, and `cudnn` for fast conv3d).
    Cuda,
}

impl DeviceArg {
    /// Opens the device; `--device cuda` in a binary built without the `cuda` feature is an error that says
    /// how to get one.
    pub fn open(self) -> anyhow::Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda => {
                if !cfg!(feature = "cuda") {
                    anyhow::bail!(
                        "this logonet binary was built without CUDA support: rebuild it with \
                         `cargo build --release -p logonet --features cudnn` (README, \"CUDA\")"
                    );
                }
                Device::new_cuda(0).context("CUDA device 0 is not available")
            }
        }
    }
}

/// One line describing the device and what runs conv3d on it.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) if cfg!(feature = "cudnn") => "cuda:0 (conv3d: cuDNN)".to_string(),
        Device::Cuda(_) => "cuda:0 (conv3d: candle conv2d slices, no cudnn feature)".to_string(),
        other => format!("{other:?}"),
    }
}

/// Allows TF32 tensor cores for f32 convolutions and matmuls on CUDA (no effect on the CPU or without CUDA).
pub fn set_tf32(allow: bool) -> anyhow::Result<()> {
    #[cfg(feature = "cuda")]
    logonet::ops::cuda::set_allow_tf32(allow);
    #[cfg(not(feature = "cuda"))]
    if allow {
        anyhow::bail!("--tf32 needs a build with the `cuda` feature");
    }
    Ok(())
}
