//! Sliding-window inference equivalent to MONAI's `sliding_window_inference` (non-buffered path):
//! the same padding of small volumes, scan intervals, window starts and order, importance maps and
//! float32 blending order, so outputs match MONAI to float32 rounding (golden-tested).
//!
//! Memory is bounded: windows are processed in MONAI's order (dim2 outermost), so once every window starting
//! at a dim2 index has been blended, all rows before the next start are final. The accumulator is a ring of
//! `roi_size[0]` rows of `[C, Y, Z]` logits plus one count row each, and finished rows are handed to a sink
//! (written into a full logit tensor by [`sliding_window_inference`], or turned into labels at once by
//! [`sliding_window_argmax`], which never holds the full `[C, X, Y, Z]` logits).

use crate::job::{CancelToken, Progress, ProgressEvent};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How overlapping window predictions are weighted (MONAI `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blend {
    /// Every voxel of a window weighs 1 (MONAI `"constant"`, the paper's setting).
    Constant,
    /// A separable Gaussian centred on the window, `sigma = sigma_scale · roi` (MONAI `"gaussian"`,
    /// default `sigma_scale` 0.125), not normalised, floored at `max(min, 1e-3)`.
    Gaussian {
        /// Standard deviation as a fraction of the window size.
        sigma_scale: f64,
    },
}

/// Sliding-window settings (MONAI names; defaults are the paper's inference call).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindowConfig {
    /// Window size per spatial dim (default 96³).
    pub roi_size: [usize; 3],
    /// Fraction of overlap between neighbouring windows, in [0, 1) (default 0.5).
    pub overlap: f64,
    /// Windows per predictor call (default 4).
    pub sw_batch_size: usize,
    /// Blending of overlapping windows (default constant).
    pub blend: Blend,
    /// Value used to pad volumes smaller than the window (MONAI `cval`, default 0).
    pub padding_value: f32,
    /// Average the predictions over the 8 mirrorings of each window (nnU-Net test-time augmentation;
    /// 8× slower; default off).
    pub tta_mirror: bool,
}

impl Default for SlidingWindowConfig {
    fn default() -> Self {
        Self {
            roi_size: [96, 96, 96],
            overlap: 0.5,
            sw_batch_size: 4,
            blend: Blend::Constant,
            padding_value: 0.0,
            tta_mirror: false,
        }
    }
}

/// Where the windows go on a padded image: MONAI's placement for one image size.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowPlan {
    /// Spatial size of the input.
    pub image_size: [usize; 3],
    /// Padding before the image per dim (`diff / 2`).
    pub pad_lo: [usize; 3],
    /// Padding after the image per dim (`diff − diff / 2`).
    pub pad_hi: [usize; 3],
    /// Working (padded) size: `max(size, roi)`.
    pub padded_size: [usize; 3],
    /// Scan interval per dim.
    pub interval: [usize; 3],
    /// Window starts per dim, in the padded image.
    pub starts: [Vec<usize>; 3],
}

impl WindowPlan {
    /// MONAI's plan for `image_size` (see the fixture README, section 3).
    pub fn new(image_size: [usize; 3], roi_size: [usize; 3], overlap: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&overlap) {
            return Err(Error::invalid(
                "sliding_window",
                format!("overlap must be in [0, 1), got {overlap}"),
            ));
        }
        if roi_size.contains(&0) || image_size.contains(&0) {
            return Err(Error::invalid(
                "sliding_window",
                format!("empty roi {roi_size:?} or image {image_size:?}"),
            ));
        }
        let mut plan = WindowPlan {
            image_size,
            pad_lo: [0; 3],
            pad_hi: [0; 3],
            padded_size: [0; 3],
            interval: [0; 3],
            starts: Default::default(),
        };
        for d in 0..3 {
            let (roi, size) = (roi_size[d], image_size[d]);
            let diff = roi.saturating_sub(size);
            plan.pad_lo[d] = diff / 2;
            plan.pad_hi[d] = diff - diff / 2;
            let padded = size.max(roi);
            plan.padded_size[d] = padded;
            // Python `int(roi * (1 - overlap))` truncates.
            let interval = if roi == padded {
                roi
            } else {
                ((roi as f64 * (1.0 - overlap)) as usize).max(1)
            };
            plan.interval[d] = interval;
            let mut n = 1;
            while (n - 1) * interval + roi < padded {
                n += 1;
            }
            plan.starts[d] = (0..n)
                .map(|i| i * interval - (i * interval + roi).saturating_sub(padded))
                .collect();
        }
        Ok(plan)
    }

    /// Every window start in MONAI's order (`meshgrid(indexing="ij")`: dim2 outermost, dim4 innermost).
    pub fn windows(&self) -> Vec<[usize; 3]> {
        let mut w = Vec::with_capacity(self.starts.iter().map(Vec::len).product());
        for &a in &self.starts[0] {
            for &b in &self.starts[1] {
                for &c in &self.starts[2] {
                    w.push([a, b, c]);
                }
            }
        }
        w
    }
}

/// The roi-sized importance map, flattened in C order, computed in float32 as MONAI's
/// `compute_importance_map` (Gaussian: not normalised, then clamped below at `max(min, 1e-3)`).
pub fn importance_map(roi_size: [usize; 3], blend: Blend) -> Vec<f32> {
    let n = roi_size.iter().product();
    match blend {
        Blend::Constant => vec![1.0; n],
        Blend::Gaussian { sigma_scale } => {
            let axes: Vec<Vec<f32>> = roi_size
                .iter()
                .map(|&r| {
                    let sigma = r as f64 * sigma_scale;
                    let denom = (-2.0 * sigma * sigma) as f32;
                    (0..r)
                        .map(|i| {
                            let x = i as f32 - (r as f32 - 1.0) / 2.0;
                            // exp evaluated in f64 and rounded: the correctly rounded float32 exp.
                            (((x * x) / denom) as f64).exp() as f32
                        })
                        .collect()
                })
                .collect();
            let mut w = Vec::with_capacity(n);
            for &a in &axes[0] {
                for &b in &axes[1] {
                    let ab = a * b;
                    for &c in &axes[2] {
                        w.push(ab * c);
                    }
                }
            }
            let floor = w.iter().copied().fold(f32::INFINITY, f32::min).max(1e-3);
            for v in &mut w {
                *v = v.max(floor);
            }
            w
        }
    }
}

/// Pads a `[N, C, X, Y, Z]` tensor by `lo`/`hi` voxels per spatial dim with `value`.
fn pad_constant(x: &Tensor, lo: [usize; 3], hi: [usize; 3], value: f32) -> Result<Tensor> {
    let mut x = x.clone();
    for d in 0..3 {
        if lo[d] == 0 && hi[d] == 0 {
            continue;
        }
        let dim = d + 2;
        let mut parts = Vec::with_capacity(3);
        let mut shape = x.dims().to_vec();
        if lo[d] > 0 {
            shape[dim] = lo[d];
            parts.push(Tensor::full(value, shape.as_slice(), x.device())?.to_dtype(x.dtype())?);
        }
        parts.push(x.clone());
        if hi[d] > 0 {
            shape[dim] = hi[d];
            parts.push(Tensor::full(value, shape.as_slice(), x.device())?.to_dtype(x.dtype())?);
        }
        x = Tensor::cat(&parts, dim)?;
    }
    Ok(x)
}

/// Mirrored test-time augmentation: the mean of `flip(predict(flip(x)))` over all 8 subsets of the spatial
/// dims (the identity first).
fn predict_mirrored<F>(x: &Tensor, predictor: &mut F) -> Result<Tensor>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    let mut acc: Option<Tensor> = None;
    for mask in 0u8..8 {
        let dims: Vec<usize> = (0..3)
            .filter(|d| mask & (1 << d) != 0)
            .map(|d| d + 2)
            .collect();
        let y = if dims.is_empty() {
            predictor(x)?
        } else {
            predictor(&x.flip(&dims)?)?.flip(&dims)?
        };
        let y = y.to_dtype(DType::F32)?;
        acc = Some(match acc {
            None => y,
            Some(a) => (a + y)?,
        });
    }
    match acc {
        Some(a) => Ok((a / 8.0)?),
        None => Err(Error::invalid("sliding_window", "no prediction")),
    }
}

/// Receives finished rows: (dim2 index, channels, `[C, Y, Z]` logits).
type RowSink<'a> = dyn FnMut(usize, usize, &[f32]) -> Result<()> + 'a;

/// Runs the windows and hands every finished row (dim2 index `i` of the *unpadded* image) to `sink` as
/// `[C, Y, Z]` blended logits (C order). Returns the number of output channels.
fn run<F>(
    input: &Tensor,
    config: &SlidingWindowConfig,
    mut predictor: F,
    progress: &dyn Progress,
    cancel: &CancelToken,
    sink: &mut RowSink,
) -> Result<usize>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    let dims = input.dims();
    if dims.len() != 5 || dims[0] != 1 {
        return Err(Error::invalid(
            "sliding_window",
            format!("need a [1, C, X, Y, Z] input, got {dims:?}"),
        ));
    }
    if config.sw_batch_size == 0 {
        return Err(Error::invalid(
            "sliding_window",
            "sw_batch_size must be at least 1",
        ));
    }
    let size = [dims[2], dims[3], dims[4]];
    let roi = config.roi_size;
    let plan = WindowPlan::new(size, roi, config.overlap)?;
    let x = pad_constant(input, plan.pad_lo, plan.pad_hi, config.padding_value)?; // [1, Cin, P0, P1, P2]
    let [_, p1, p2] = plan.padded_size;
    let windows = plan.windows();
    let w = importance_map(roi, config.blend);
    let roi_vox = roi[0] * roi[1] * roi[2];
    let plane = p1 * p2;

    let mut channels = 0usize;
    // Ring of roi[0] rows: acc[slot] = [C, P1, P2], count[slot] = [P1, P2].
    let mut acc: Vec<f32> = Vec::new();
    let mut count: Vec<f32> = vec![0.0; roi[0] * plane];
    let mut next_row = 0usize; // first padded row not yet emitted
    let mut row_out: Vec<f32> = Vec::new();

    let mut emit_rows = |upto: usize,
                         next_row: &mut usize,
                         acc: &mut [f32],
                         count: &mut [f32],
                         channels: usize,
                         sink: &mut RowSink|
     -> Result<()> {
        while *next_row < upto {
            let r = *next_row;
            let slot = r % roi[0];
            let a = &mut acc[slot * channels * plane..(slot + 1) * channels * plane];
            let cnt = &mut count[slot * plane..(slot + 1) * plane];
            if r >= plan.pad_lo[0] && r < plan.pad_lo[0] + size[0] {
                row_out.clear();
                for c in 0..channels {
                    for j in 0..size[1] {
                        let off = c * plane + (j + plan.pad_lo[1]) * p2 + plan.pad_lo[2];
                        let coff = (j + plan.pad_lo[1]) * p2 + plan.pad_lo[2];
                        row_out.extend(
                            a[off..off + size[2]]
                                .iter()
                                .zip(&cnt[coff..coff + size[2]])
                                .map(|(v, n)| v / n),
                        );
                    }
                }
                sink(r - plan.pad_lo[0], channels, &row_out)?;
            }
            a.fill(0.0);
            cnt.fill(0.0);
            *next_row += 1;
        }
        Ok(())
    };

    let total = windows.len() as u64;
    let mut done = 0u64;
    progress.report(ProgressEvent {
        stage: "inference".into(),
        done,
        total,
    });
    for chunk in windows.chunks(config.sw_batch_size) {
        cancel.check()?;
        let crops: Vec<Tensor> = chunk
            .iter()
            .map(|s| {
                Ok(x.narrow(2, s[0], roi[0])?
                    .narrow(3, s[1], roi[1])?
                    .narrow(4, s[2], roi[2])?)
            })
            .collect::<Result<_>>()?;
        let batch = Tensor::cat(&crops, 0)?; // [B, Cin, r0, r1, r2]
        let pred = if config.tta_mirror {
            predict_mirrored(&batch, &mut predictor)?
        } else {
            predictor(&batch)?
        };
        let pd = pred.dims().to_vec(); // [B, C, r0, r1, r2]
        if pd.len() != 5 || pd[0] != chunk.len() || pd[2..] != roi[..] {
            return Err(Error::invalid(
                "sliding_window",
                format!(
                    "predictor returned {pd:?} for a batch of {} windows of {roi:?}",
                    chunk.len()
                ),
            ));
        }
        if channels == 0 {
            channels = pd[1];
            acc = vec![0.0; roi[0] * channels * plane];
        } else if pd[1] != channels {
            return Err(Error::invalid(
                "sliding_window",
                format!("predictor channel count changed to {}", pd[1]),
            ));
        }
        let pred: Vec<f32> = pred.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for (b, s) in chunk.iter().enumerate() {
            // All rows before this window's start are final: emit them.
            emit_rows(s[0], &mut next_row, &mut acc, &mut count, channels, sink)?;
            for a in 0..roi[0] {
                let slot = (s[0] + a) % roi[0];
                let wrow = &w[a * roi[1] * roi[2]..(a + 1) * roi[1] * roi[2]];
                let acc_slot = &mut acc[slot * channels * plane..(slot + 1) * channels * plane];
                acc_slot
                    .par_chunks_mut(plane)
                    .enumerate()
                    .for_each(|(c, dst)| {
                        let src = &pred[(b * channels + c) * roi_vox + a * roi[1] * roi[2]..]
                            [..roi[1] * roi[2]];
                        for bb in 0..roi[1] {
                            let d = &mut dst[(s[1] + bb) * p2 + s[2]..][..roi[2]];
                            let sr = &src[bb * roi[2]..(bb + 1) * roi[2]];
                            let wr = &wrow[bb * roi[2]..(bb + 1) * roi[2]];
                            for ((d, &p), &wv) in d.iter_mut().zip(sr).zip(wr) {
                                *d += p * wv;
                            }
                        }
                    });
                let cnt = &mut count[slot * plane..(slot + 1) * plane];
                for bb in 0..roi[1] {
                    let d = &mut cnt[(s[1] + bb) * p2 + s[2]..][..roi[2]];
                    for (d, &wv) in d.iter_mut().zip(&wrow[bb * roi[2]..(bb + 1) * roi[2]]) {
                        *d += wv;
                    }
                }
            }
        }
        done += chunk.len() as u64;
        progress.report(ProgressEvent {
            stage: "inference".into(),
            done,
            total,
        });
    }
    emit_rows(
        plan.padded_size[0],
        &mut next_row,
        &mut acc,
        &mut count,
        channels,
        sink,
    )?;
    Ok(channels)
}

/// MONAI `sliding_window_inference` on a `[1, C_in, X, Y, Z]` input: blended logits `[1, C, X, Y, Z]` (f32,
/// CPU). `predictor` maps `[B, C_in, r0, r1, r2]` to `[B, C, r0, r1, r2]`; cancellation is checked and
/// progress reported between window batches.
pub fn sliding_window_inference<F>(
    input: &Tensor,
    config: &SlidingWindowConfig,
    predictor: F,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<Tensor>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    let d = input.dims().to_vec();
    if d.len() != 5 {
        return Err(Error::invalid(
            "sliding_window",
            format!("need a [1, C, X, Y, Z] input, got {d:?}"),
        ));
    }
    let (x, y, z) = (d[2], d[3], d[4]);
    let mut out: Vec<f32> = Vec::new();
    let mut sink = |i: usize, c: usize, row: &[f32]| -> Result<()> {
        if out.is_empty() {
            out = vec![0.0; c * x * y * z];
        }
        for ch in 0..c {
            out[(ch * x + i) * y * z..][..y * z]
                .copy_from_slice(&row[ch * y * z..(ch + 1) * y * z]);
        }
        Ok(())
    };
    let c = run(input, config, predictor, progress, cancel, &mut sink)?;
    Ok(Tensor::from_vec(out, (1, c, x, y, z), &Device::Cpu)?)
}

/// Sliding-window inference followed by `argmax` over channels (first maximum wins, as `torch.argmax`),
/// without ever holding the full-size logits. Returns labels `[X, Y, Z]` in C order.
pub fn sliding_window_argmax<F>(
    input: &Tensor,
    config: &SlidingWindowConfig,
    predictor: F,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<Vec<u16>>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    let d = input.dims().to_vec();
    if d.len() != 5 {
        return Err(Error::invalid(
            "sliding_window",
            format!("need a [1, C, X, Y, Z] input, got {d:?}"),
        ));
    }
    let (y, z) = (d[3], d[4]);
    let plane = y * z;
    let mut labels = vec![0u16; d[2] * plane];
    let mut sink = |i: usize, c: usize, row: &[f32]| -> Result<()> {
        if c > u16::MAX as usize + 1 {
            return Err(Error::invalid(
                "sliding_window",
                format!("{c} classes do not fit 16-bit labels"),
            ));
        }
        let dst = &mut labels[i * plane..(i + 1) * plane];
        dst.par_iter_mut().enumerate().for_each(|(v, l)| {
            let mut best = row[v];
            let mut arg = 0usize;
            for ch in 1..c {
                let val = row[ch * plane + v];
                if val > best {
                    best = val;
                    arg = ch;
                }
            }
            *l = arg as u16;
        });
        Ok(())
    };
    run(input, config, predictor, progress, cancel, &mut sink)?;
    Ok(labels)
}
