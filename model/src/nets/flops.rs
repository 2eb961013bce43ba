//! Parameter and multiply-accumulate counts without running (or even allocating) a network.
//!
//! * [`ShapeRecorder`]: a `VarBuilder` backend that hands out zero-stride dummy tensors and records the name
//!   and shape of every variable a network asks for, so that LoGoNet-L (172.6 M parameters) can be
//!   "built" in microseconds to count its parameters and MACs.
//! * [`MacCounter`]: what each layer's `macs(...)` reports. The paper's "FLOPs (G)" column is a
//!   [thop](https://github.com/Lyken17/pytorch-OpCounter) **MAC** count (spec §4): convolutions count
//!   `out_elems · (Cin/groups) · k³` (bias not counted), every affine BatchNorm/LayerNorm counts 4 ops per
//!   element (2 per element for a non-affine InstanceNorm), and GELU, LeakyReLU, trilinear upsampling,
//!   concatenation, layer scales and the LKA product count 0. With that convention LoGoNet-S at 96³ gives
//!   246.99 G, the number the paper reports (see the `nets_counts` test).

use super::layers::is_trainable;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The kind of a counted operation, used for the per-op breakdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// A dense (groups = 1) convolution with a cubic kernel and isotropic stride.
    DenseConv {
        /// Kernel size per axis.
        kernel: usize,
        /// Stride per axis.
        stride: usize,
    },
    /// A depthwise convolution.
    DepthwiseConv {
        /// Kernel size per axis.
        kernel: usize,
        /// Dilation per axis.
        dilation: usize,
    },
    /// A normalisation layer (BatchNorm, LayerNorm, InstanceNorm).
    Norm,
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpKind::DenseConv { kernel, stride } => {
                write!(f, "dense conv {kernel}^3 stride {stride}")
            }
            OpKind::DepthwiseConv { kernel, dilation } => {
                write!(f, "depthwise conv {kernel}^3 dilation {dilation}")
            }
            OpKind::Norm => write!(f, "normalisation"),
        }
    }
}

/// Accumulates multiply-accumulate counts, by op kind and by network part.
#[derive(Clone, Debug, Default)]
pub struct MacCounter {
    /// Convolution MACs, `out_elems · (Cin/groups) · k³`.
    pub conv_macs: u64,
    /// Convolution bias additions (one per output element); not part of the thop total.
    pub conv_bias_adds: u64,
    /// thop's normalisation count: 4 per element (affine) or 2 (non-affine).
    pub norm_ops: u64,
    /// Convolution MACs per op kind.
    pub by_kind: BTreeMap<OpKind, u64>,
    /// Convolution MACs per network part (see [`MacCounter::set_part`]).
    pub by_part: BTreeMap<String, u64>,
    part: String,
}

impl MacCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attributes the following convolutions to `part` (e.g. "global encoder").
    pub fn set_part(&mut self, part: impl Into<String>) {
        self.part = part.into();
    }

    /// The current part name.
    pub fn part(&self) -> &str {
        &self.part
    }

    /// Records a convolution.
    pub fn add_conv(&mut self, kind: OpKind, macs: u64, bias_adds: u64) {
        self.conv_macs += macs;
        self.conv_bias_adds += bias_adds;
        *self.by_kind.entry(kind).or_default() += macs;
        *self.by_part.entry(self.part.clone()).or_default() += macs;
    }

    /// Records a normalisation of `elems` elements (thop: 2 per element, ×2 if affine).
    pub fn add_norm(&mut self, elems: u64, affine: bool) {
        let ops = 2 * elems * if affine { 2 } else { 1 };
        self.norm_ops += ops;
        *self.by_kind.entry(OpKind::Norm).or_default() += ops;
    }

    /// The thop count the paper reports as "FLOPs (G)": convolution MACs + normalisation ops.
    pub fn thop_macs(&self) -> u64 {
        self.conv_macs + self.norm_ops
    }
}

/// One variable a network asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarShape {
    /// Full PyTorch-style name, e.g. `van.van3d.norm1.weight`.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its dtype (I64 for `num_batches_tracked`).
    pub dtype: DType,
}

/// A `VarBuilder` backend that records names and shapes and returns zero-stride dummy tensors, so a network
/// of any size can be constructed without allocating its weights. Such a network must not be run.
#[derive(Clone, Debug, Default)]
pub struct ShapeRecorder {
    vars: Arc<Mutex<Vec<VarShape>>>,
}

impl ShapeRecorder {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A CPU `VarBuilder` (F32) that records into this recorder.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, Device::Cpu)
    }

    /// Everything recorded so far, in request order.
    pub fn vars(&self) -> Vec<VarShape> {
        self.vars.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Number of trainable parameters (BatchNorm buffers excluded), as PyTorch's
    /// `sum(p.numel() for p in model.parameters())`.
    pub fn param_count(&self) -> u64 {
        self.vars()
            .iter()
            .filter(|v| is_trainable(&v.name))
            .map(|v| v.shape.iter().product::<usize>() as u64)
            .sum()
    }
}

impl SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut v) = self.vars.lock() {
            v.push(VarShape {
                name: name.to_string(),
                shape: s.dims().to_vec(),
                dtype,
            });
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("ShapeRecorder cannot return {name} without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
