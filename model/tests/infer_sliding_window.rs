//! Sliding-window inference against MONAI (`tests/fixtures/pipeline/sliding_window.io.safetensors`):
//! window placement and the Gaussian importance map exactly, blending invariants with simple predictors.

use candle_core::{DType, Device, Tensor};
use logonet::infer::{
    Blend, SlidingWindowConfig, WindowPlan, importance_map, sliding_window_argmax,
    sliding_window_inference,
};
use logonet::job::{CancelToken, NoProgress, ProgressEvent};
use std::collections::HashMap;
use std::sync::Mutex;

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/pipeline/sliding_window.io.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).expect("fixture")
}

#[test]
fn window_starts_match_monai() {
    let t = fixture();
    for (key, overlap) in [
        ("constant_ov050", 0.5),
        ("gaussian_ov050", 0.5),
        ("constant_ov025", 0.25),
    ] {
        let want: Vec<Vec<i64>> = t[&format!("windows.{key}")].to_vec2().unwrap();
        let plan = WindowPlan::new([48, 56, 12], [32, 32, 32], overlap).unwrap();
        let got: Vec<Vec<i64>> = plan
            .windows()
            .iter()
            .map(|w| w.iter().map(|&v| v as i64).collect())
            .collect();
        assert_eq!(got, want, "{key}");
        assert_eq!(plan.pad_lo, [0, 0, 10]);
        assert_eq!(plan.pad_hi, [0, 0, 10]);
    }
    // The paper's setting: roi 96, overlap 0.5 -> interval 48.
    let plan = WindowPlan::new([200, 96, 97], [96, 96, 96], 0.5).unwrap();
    assert_eq!(plan.starts[0], vec![0, 48, 96, 104]);
    assert_eq!(plan.starts[1], vec![0]);
    assert_eq!(plan.starts[2], vec![0, 1]);
    assert!(WindowPlan::new([10, 10, 10], [8, 8, 8], 1.0).is_err());
}

#[test]
fn gaussian_importance_map_matches_monai() {
    let t = fixture();
    let want: Vec<f32> = t["importance_map.gaussian"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let got = importance_map([32, 32, 32], Blend::Gaussian { sigma_scale: 0.125 });
    assert_eq!(got.len(), want.len());
    let max_ulps = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a.to_bits() as i64 - b.to_bits() as i64).abs())
        .max()
        .unwrap();
    assert!(max_ulps <= 1, "importance map differs by {max_ulps} ulp");
    assert!(
        importance_map([4, 5, 6], Blend::Constant)
            .iter()
            .all(|&v| v == 1.0)
    );
}

/// A pointwise "network": channel c = x · (c + 1) − c. Blending must reproduce it exactly (up to f32).
fn pointwise(x: &Tensor) -> logonet::Result<Tensor> {
    let chans: Vec<Tensor> = (0..3)
        .map(|c| x.affine(c as f64 + 1.0, -(c as f64)))
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::cat(&chans, 1)?)
}

fn input(dims: (usize, usize, usize)) -> Tensor {
    Tensor::randn(0f32, 1.0, (1, 1, dims.0, dims.1, dims.2), &Device::Cpu).unwrap()
}

#[test]
fn blending_reproduces_a_pointwise_predictor() {
    let x = input((40, 23, 9));
    let want = pointwise(&x).unwrap();
    for (blend, overlap, tta) in [
        (Blend::Constant, 0.5, false),
        (Blend::Gaussian { sigma_scale: 0.125 }, 0.25, false),
        (Blend::Constant, 0.6, true),
    ] {
        let cfg = SlidingWindowConfig {
            roi_size: [16, 16, 16],
            overlap,
            sw_batch_size: 3,
            blend,
            padding_value: 0.0,
            tta_mirror: tta,
        };
        let got = sliding_window_inference(&x, &cfg, pointwise, &NoProgress, &CancelToken::new())
            .unwrap();
        assert_eq!(got.dims(), &[1, 3, 40, 23, 9]);
        let diff = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{blend:?} overlap {overlap}: {diff}");
    }
}

#[test]
fn argmax_equals_argmax_of_logits_and_progress_counts_windows() {
    let x = input((37, 30, 20));
    // A predictor whose winner depends on the window position (sum of the window), so blending matters.
    let pred = |b: &Tensor| -> logonet::Result<Tensor> {
        let m = b
            .mean_keepdim(4)?
            .mean_keepdim(3)?
            .mean_keepdim(2)?
            .broadcast_as(b.shape())?;
        Ok(Tensor::cat(
            &[b.clone(), (b * 0.5)?.broadcast_add(&m)?, b.neg()?],
            1,
        )?)
    };
    let cfg = SlidingWindowConfig {
        roi_size: [16, 12, 24],
        overlap: 0.5,
        sw_batch_size: 2,
        ..Default::default()
    };
    let logits =
        sliding_window_inference(&x, &cfg, pred, &NoProgress, &CancelToken::new()).unwrap();
    let want: Vec<u32> = logits
        .argmax(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let events = Mutex::new(Vec::new());
    let progress = |e: ProgressEvent| events.lock().unwrap().push(e);
    let got = sliding_window_argmax(&x, &cfg, pred, &progress, &CancelToken::new()).unwrap();
    assert_eq!(got.iter().map(|&v| v as u32).collect::<Vec<_>>(), want);
    let n = WindowPlan::new([37, 30, 20], cfg.roi_size, 0.5)
        .unwrap()
        .windows()
        .len() as u64;
    let events = events.into_inner().unwrap();
    assert_eq!(events.last().map(|e| (e.done, e.total)), Some((n, n)));
}

#[test]
fn cancellation_stops_between_batches() {
    let x = input((40, 40, 40));
    let cancel = CancelToken::new();
    let mut calls = 0;
    let cfg = SlidingWindowConfig {
        roi_size: [16, 16, 16],
        sw_batch_size: 1,
        ..Default::default()
    };
    let res = sliding_window_inference(
        &x,
        &cfg,
        |b: &Tensor| {
            calls += 1;
            if calls == 2 {
                cancel.cancel();
            }
            pointwise(b)
        },
        &NoProgress,
        &cancel,
    );
    assert!(matches!(res, Err(logonet::Error::Cancelled)));
    assert_eq!(calls, 2);
}

#[test]
fn wrong_predictor_output_is_an_error() {
    let x = input((20, 20, 20));
    let cfg = SlidingWindowConfig {
        roi_size: [16, 16, 16],
        ..Default::default()
    };
    let res = sliding_window_inference(
        &x,
        &cfg,
        |b: &Tensor| Ok(b.narrow(2, 0, 8)?),
        &NoProgress,
        &CancelToken::new(),
    );
    assert!(res.is_err());
}
