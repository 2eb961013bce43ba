//! Helpers shared by the `nets_*` integration tests: fixture paths and comparisons.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// `tests/fixtures/<group>/<name>` in the workspace.
pub fn fixture(group: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
        .join(group)
        .join(name)
}

/// All tensors of a safetensors fixture on the CPU.
pub fn load(group: &str, name: &str) -> HashMap<String, Tensor> {
    let path = fixture(group, name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
}

/// Reference weights `<name>.weights.safetensors` and io `<name>.io.safetensors` of `tests/fixtures/reference`.
pub fn reference(name: &str) -> (HashMap<String, Tensor>, HashMap<String, Tensor>) {
    (
        load("reference", &format!("{name}.weights.safetensors")),
        load("reference", &format!("{name}.io.safetensors")),
    )
}

/// Max |a - b| (after a shape check), in f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Asserts `max |a - b| <= tol` with a readable message.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let d = max_abs_diff(a, b);
    println!("{what}: max abs diff {d:.3e} (tolerance {tol:.0e})");
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
}
