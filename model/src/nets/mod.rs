//! The networks: ULKANet (`VANV412`), the LoGoNet sub-network (`VANV4121`), LoGoNet (`VANV4122GL`) and its
//! InstanceNorm twin (`VANV4121GL`), exactly as the authors' code (see `../shared/spec/logonet.md`;
//! reference `github.com/7Amin/SSL_VAN` @ 3d705fc5). Where the paper and the code disagree we follow the code
//! and say so where it matters.
//!
//! | module | contents |
//! |---|---|
//! | [`layers`] | Conv3d, BatchNorm3d (running stats as variables, train/eval), LayerNorm, CBR pairs |
//! | [`van3d`] | LKA, spatial attention, MLP, `Block3D`, patch embedding, the `VAN3D` encoder |
//! | [`ulkanet`] | ULKANet (`VANV412`) and the `VANV4121` head variant |
//! | [`logonet`] | LoGoNet (`VANV4122GL`, `VANV4121GL`) |
//! | [`checkpoint`] | reference state dicts (safetensors, `.pt/.pth`), our own safetensors checkpoints |
//! | [`flops`] | parameter and MAC counts without allocating |
//! | [`inference`] | eval-only form: BatchNorm folded, no autograd graph, no full-resolution concatenation |
//!
//! Every network takes its weights from a `candle_nn::VarBuilder` under the reference's state-dict names;
//! BatchNorm running statistics are variables too (names ending in [`layers::BUFFER_SUFFIXES`], see
//! [`layers::is_trainable`]). The app and the trainer use the [`SegmentationNet`] trait and [`AnyNet`],
//! built from a [`NetConfig`] (serialisable; [`NetConfig::from_name`] knows `logonet-s`, `ulkanet-s`, ...).

pub mod checkpoint;
pub mod flops;
pub mod inference;
pub mod layers;
pub mod logonet;
pub mod ulkanet;
pub mod van3d;

pub use inference::InferenceNet;
pub use layers::{BUFFER_SUFFIXES, is_trainable};
pub use logonet::Logonet;
pub use ulkanet::Ulkanet;

use crate::{Error, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;
use flops::{MacCounter, ShapeRecorder};
use serde::{Deserialize, Serialize};

/// A segmentation network as the app, the trainer and inference see it.
pub trait SegmentationNet: Send + Sync {
    /// `[N, in_channels, D, H, W]` → logits `[N, out_channels, D, H, W]`. `train = true` uses batch
    /// statistics in every BatchNorm and updates their running statistics (momentum 0.1).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// The configuration the network was built from.
    fn net_config(&self) -> NetConfig;
    /// Multiply-accumulate counts (thop convention) for an input `[N, C, D, H, W]`.
    fn macs(&self, input: [usize; 5]) -> Result<MacCounter>;
}

/// The configuration of any network in this module; serialised into checkpoints (`{"arch": "logonet", ...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum NetConfig {
    /// ULKANet (`VANV412`).
    Ulkanet(ulkanet::Config),
    /// LoGoNet (`VANV4122GL`, or `VANV4121GL` with `fusion_norm: instance`).
    Logonet(logonet::Config),
}

/// The names [`NetConfig::from_name`] accepts.
pub const NET_NAMES: [&str; 8] = [
    "logonet-tiny",
    "logonet-s",
    "logonet-l",
    "logonet-in-s",
    "ulkanet-tiny",
    "ulkanet-s",
    "ulkanet-l",
    "logonet-in-l",
];

impl NetConfig {
    /// A preset by name (case-insensitive): `logonet-{tiny,s,l}`, `logonet-in-{s,l}` (InstanceNorm fusion head),
    /// `ulkanet-{tiny,s,l}`; `logonet` and `ulkanet` alone mean the S variants, `tiny` means `logonet-tiny`. 1 input channel, 14 classes.
    pub fn from_name(name: &str) -> Result<Self> {
        let n = name.trim().to_ascii_lowercase().replace('_', "-");
        let with_in = |mut c: logonet::Config| {
            c.fusion_norm = logonet::FusionNorm::Instance;
            c
        };
        Ok(match n.as_str() {
            "logonet-tiny" | "tiny" => Self::Logonet(logonet::Config::tiny()),
            "logonet-s" | "logonet" => Self::Logonet(logonet::Config::s()),
            "logonet-l" => Self::Logonet(logonet::Config::l()),
            "logonet-in-s" | "logonet-in" => Self::Logonet(with_in(logonet::Config::s())),
            "logonet-in-l" => Self::Logonet(with_in(logonet::Config::l())),
            "ulkanet-tiny" => Self::Ulkanet(ulkanet::Config::tiny()),
            "ulkanet-s" | "ulkanet" => Self::Ulkanet(ulkanet::Config::s()),
            "ulkanet-l" => Self::Ulkanet(ulkanet::Config::l()),
            _ => {
                return Err(Error::invalid(
                    "NetConfig::from_name",
                    format!("unknown model '{name}'; known: {}", NET_NAMES.join(", ")),
                ));
            }
        })
    }

    /// A short human-readable description, e.g. `LoGoNet (VANV4122GL) dims [64, 128, 256, 512] ...`.
    pub fn describe(&self) -> String {
        match self {
            Self::Ulkanet(c) => format!(
                "ULKANet (VANV412) dims {:?} depths {:?} mlp {:?}, {} -> {} channels",
                c.embed_dims, c.depths, c.mlp_ratios, c.in_channels, c.out_channels
            ),
            Self::Logonet(c) => format!(
                "LoGoNet ({}) dims {:?} depths {:?} mlp {:?}, {}^3 local nets of {} stages, {} -> {} channels",
                if c.fusion_norm == logonet::FusionNorm::Batch {
                    "VANV4122GL"
                } else {
                    "VANV4121GL"
                },
                c.embed_dims,
                c.depths,
                c.mlp_ratios,
                c.patch_count,
                c.local_stages,
                c.in_channels,
                c.out_channels
            ),
        }
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        match self {
            Self::Ulkanet(c) => c.in_channels,
            Self::Logonet(c) => c.in_channels,
        }
    }

    /// Output channels (classes).
    pub fn out_channels(&self) -> usize {
        match self {
            Self::Ulkanet(c) => c.out_channels,
            Self::Logonet(c) => c.out_channels,
        }
    }

    /// Sets the number of input channels.
    pub fn with_in_channels(mut self, n: usize) -> Self {
        match &mut self {
            Self::Ulkanet(c) => c.in_channels = n,
            Self::Logonet(c) => c.in_channels = n,
        }
        self
    }

    /// Sets the number of output channels (classes).
    pub fn with_out_channels(mut self, n: usize) -> Self {
        match &mut self {
            Self::Ulkanet(c) => c.out_channels = n,
            Self::Logonet(c) => c.out_channels = n,
        }
        self
    }

    /// Every spatial input size must be a multiple of this (32 for the 4-stage presets).
    pub fn input_multiple(&self) -> usize {
        match self {
            Self::Ulkanet(c) => c.input_multiple(),
            Self::Logonet(c) => c.input_multiple(),
        }
    }

    /// Checks an input shape `[N, C, D, H, W]`; [`Error::InputSize`] for bad spatial sizes.
    pub fn check_input(&self, dims: &[usize]) -> Result<()> {
        match self {
            Self::Ulkanet(c) => c.check_input("ULKANet", dims),
            Self::Logonet(c) => c.check_input(dims),
        }
    }

    /// Builds the network on a shape-only backend (nothing allocated) and returns it with the recorder
    /// that lists every variable; use for parameter and MAC counts of any size.
    pub fn build_shapes_only(&self) -> Result<(AnyNet, ShapeRecorder)> {
        let rec = ShapeRecorder::new();
        let net = AnyNet::new(self, rec.var_builder())?;
        Ok((net, rec))
    }

    /// Number of trainable parameters (as `sum(p.numel() for p in model.parameters())`).
    pub fn param_count(&self) -> Result<u64> {
        Ok(self.build_shapes_only()?.1.param_count())
    }

    /// thop-convention MAC counts for a cubic input of `size`³ with batch 1.
    pub fn macs(&self, size: [usize; 3]) -> Result<MacCounter> {
        let (net, _) = self.build_shapes_only()?;
        net.macs([1, self.in_channels(), size[0], size[1], size[2]])
    }
}

/// Any network of this module.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AnyNet {
    /// ULKANet.
    Ulkanet(Ulkanet),
    /// LoGoNet.
    Logonet(Logonet),
}

impl AnyNet {
    /// Builds the network described by `cfg` with weights from `vb`.
    pub fn new(cfg: &NetConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match cfg {
            NetConfig::Ulkanet(c) => Self::Ulkanet(Ulkanet::new(c, vb)?),
            NetConfig::Logonet(c) => Self::Logonet(Logonet::new(c, vb)?),
        })
    }
}

impl SegmentationNet for AnyNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Ulkanet(n) => n.forward_t(x, train),
            Self::Logonet(n) => n.forward_t(x, train),
        }
    }

    fn net_config(&self) -> NetConfig {
        match self {
            Self::Ulkanet(n) => NetConfig::Ulkanet(n.config().clone()),
            Self::Logonet(n) => NetConfig::Logonet(n.config().clone()),
        }
    }

    fn macs(&self, input: [usize; 5]) -> Result<MacCounter> {
        self.net_config().check_input(&input)?;
        let mut c = MacCounter::new();
        match self {
            Self::Ulkanet(n) => n.macs(&mut c, input)?,
            Self::Logonet(n) => n.macs(&mut c, input)?,
        };
        Ok(c)
    }
}

impl SegmentationNet for Ulkanet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ulkanet::forward_t(self, x, train)
    }

    fn net_config(&self) -> NetConfig {
        NetConfig::Ulkanet(self.config().clone())
    }

    fn macs(&self, input: [usize; 5]) -> Result<MacCounter> {
        let mut c = MacCounter::new();
        Ulkanet::macs(self, &mut c, input)?;
        Ok(c)
    }
}

impl SegmentationNet for Logonet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Logonet::forward_t(self, x, train)
    }

    fn net_config(&self) -> NetConfig {
        NetConfig::Logonet(self.config().clone())
    }

    fn macs(&self, input: [usize; 5]) -> Result<MacCounter> {
        let mut c = MacCounter::new();
        Logonet::macs(self, &mut c, input)?;
        Ok(c)
    }
}
