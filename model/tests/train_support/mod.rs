//! Set-up shared by the `train_*` and `pretrain_*` integration tests (used through `mod train_support;`):
//! the labelled phantom sample, fixture loading and tensor comparisons.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use logonet::train::Sample;
use logonet::volume::phantom::{PhantomConfig, phantom};
use std::collections::HashMap;

/// The phantom's whole field of view (384 × 384 × 240 mm) on a `dims` grid, windowed to 0..1
/// (−175..250 HU), 5 HU noise, labels reduced to 0 background, 1 spleen, 2 kidneys, 3 liver (the rest
/// background). 32³ gives 12 × 12 × 7.5 mm voxels.
pub fn phantom_sample(seed: u64, dims: [usize; 3]) -> Sample {
    phantom_sample_labels(seed, dims, |l| match l {
        1 => 1,
        2 | 3 => 2,
        6 => 3,
        _ => 0,
    })
}

/// [`phantom_sample`] with another reduction of the phantom's BTCV labels.
pub fn phantom_sample_labels(seed: u64, dims: [usize; 3], map: impl Fn(u16) -> u16) -> Sample {
    let spacing_mm = [
        384.0 / dims[0] as f64,
        384.0 / dims[1] as f64,
        240.0 / dims[2] as f64,
    ];
    let (img, lab) = phantom(&PhantomConfig {
        dims,
        spacing_mm,
        seed,
        noise_hu: 5.0,
    });
    let image: Vec<f32> = img
        .data
        .iter()
        .map(|&hu| ((hu + 175.0) / 425.0).clamp(0.0, 1.0))
        .collect();
    let label: Vec<u16> = lab.data.iter().map(|&l| map(l)).collect();
    Sample::new(image, label, 1, img.dims).unwrap()
}

/// Voxels per label value `0..classes`.
pub fn label_counts(sample: &Sample, classes: usize) -> Vec<usize> {
    (0..classes)
        .map(|c| sample.label.iter().filter(|&&l| l as usize == c).count())
        .collect()
}

/// All tensors of `tests/fixtures/<rel>` on the CPU.
pub fn load_fixture(rel: &str) -> HashMap<String, Tensor> {
    let path = format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load fixture {path}: {e}"))
}

/// Max |a − b| (the shapes must be equal).
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    max_abs_flat(a, b)
}

/// Max |a − b| over all elements in C order (the shapes need only hold as many elements).
pub fn max_abs_flat(a: &Tensor, b: &Tensor) -> f32 {
    let a = a
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a.len(), b.len(), "element counts differ");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Max |a − b| over two state dicts with the same names.
pub fn max_diff_maps(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f32 {
    assert_eq!(a.len(), b.len(), "different tensor sets");
    a.iter()
        .map(|(k, x)| max_abs(x, &b[k]))
        .fold(0f32, f32::max)
}

/// A test knob from the environment (`name=value`), `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
