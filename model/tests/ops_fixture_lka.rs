//! The `lka` golden fixture (PyTorch `AttentionModule3D(dim=8)`, eval mode): BN → depthwise 5³ (pad 2) →
//! depthwise 7³ dilation 3 (pad 9) → 1×1×1 conv → `x · attn`, through the fast ops, to 1e-4; its gradient is
//! checked against the same chain through the reference ops.

use candle_core::{Device, Tensor, Var};
use logonet::ops::{self, Conv3dParams, reference};
use std::collections::HashMap;
use std::path::PathBuf;

fn load(name: &str) -> HashMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/reference")
        .join(name);
    candle_core::safetensors::load(&p, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}: {}", p.display()))
}

type Conv = fn(&Tensor, &Tensor, Option<&Tensor>, &Conv3dParams) -> logonet::Result<Tensor>;

fn lka(w: &HashMap<String, Tensor>, x: &Tensor, conv: Conv, fast_bn: bool) -> Tensor {
    let g = |k: &str| w.get(k).unwrap_or_else(|| panic!("missing {k}"));
    let a = if fast_bn {
        ops::batch_norm_eval(
            x,
            Some(g("norm.weight")),
            Some(g("norm.bias")),
            g("norm.running_mean"),
            g("norm.running_var"),
            1e-5,
        )
    } else {
        reference::batch_norm_eval(
            x,
            Some(g("norm.weight")),
            Some(g("norm.bias")),
            g("norm.running_mean"),
            g("norm.running_var"),
            1e-5,
        )
    }
    .unwrap();
    let a = conv(
        &a,
        g("conv0.weight"),
        Some(g("conv0.bias")),
        &Conv3dParams::iso(1, 2, 1, 8),
    )
    .unwrap();
    let a = conv(
        &a,
        g("conv_spatial.weight"),
        Some(g("conv_spatial.bias")),
        &Conv3dParams::iso(1, 9, 3, 8),
    )
    .unwrap();
    let a = conv(
        &a,
        g("conv1.weight"),
        Some(g("conv1.bias")),
        &Conv3dParams::default(),
    )
    .unwrap();
    (x * a).unwrap()
}

#[test]
fn lka_fixture_matches_pytorch() {
    let w = load("lka.weights.safetensors");
    let io = load("lka.io.safetensors");
    let x = &io["input.x"];
    let want = &io["output.y"];
    let got = lka(&w, x, ops::conv3d, true);
    let d = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d <= 1e-4, "lka: max abs diff {d}");
}

#[test]
fn lka_gradient_matches_reference_chain() {
    let w: HashMap<String, Tensor> = load("lka.weights.safetensors")
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, v)| (k, v.to_dtype(candle_core::DType::F64).unwrap()))
        .collect();
    let io = load("lka.io.safetensors");
    let x = Var::from_tensor(&io["input.x"].to_dtype(candle_core::DType::F64).unwrap()).unwrap();
    let gf = lka(&w, x.as_tensor(), ops::conv3d, true)
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gs = lka(&w, x.as_tensor(), reference::conv3d, false)
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let a = gf.get(x.as_tensor()).unwrap();
    let b = gs.get(x.as_tensor()).unwrap();
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        d < 1e-9,
        "lka input gradient differs from the reference chain by {d}"
    );
}
