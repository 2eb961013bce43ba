//! End to end through the `logonet` binary: phantom → inspect → convert → predict with a bundle → eval,
//! plus the exit codes and messages of bad input.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use logonet::infer::{Blend, Bundle, BundleMeta, SlidingWindowConfig};
use logonet::nets::{AnyNet, NetConfig};
use logonet::volume::LabelTable;
use std::path::Path;
use std::process::{Command, Output};

fn logonet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logonet"))
        .args(args)
        .output()
        .expect("the logonet binary runs")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = logonet(args);
    assert!(
        out.status.success(),
        "logonet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A tiny LoGoNet bundle with random weights (enough to check geometry and plumbing, not accuracy).
fn tiny_bundle(path: &Path) {
    let cfg = NetConfig::from_name("logonet-tiny").expect("known model name");
    let varmap = VarMap::new();
    AnyNet::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .expect("tiny net");
    let tensors = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let mut preprocess = logonet::infer::Preprocess::btcv_ct();
    preprocess.spacing_mm = Some([8.0, 8.0, 8.0]);
    let bundle = Bundle {
        meta: BundleMeta {
            format_version: logonet::infer::bundle::FORMAT_VERSION,
            name: "tiny random".into(),
            net: cfg,
            labels: LabelTable::btcv(),
            preprocess,
            sliding_window: SlidingWindowConfig {
                roi_size: [32, 32, 32],
                overlap: 0.25,
                sw_batch_size: 2,
                blend: Blend::Constant,
                padding_value: 0.0,
                tta_mirror: false,
            },
            notes: String::new(),
        },
        tensors,
    };
    bundle.save(path).expect("bundle saved");
}

#[test]
fn phantom_inspect_convert_predict_eval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("img.nii.gz");
    let lab = dir.path().join("lab.nii.gz");
    let out = logonet(&[
        "phantom",
        "-o",
        s(&img),
        "--labels",
        s(&lab),
        "--size",
        "48",
        "40",
        "32",
        "--spacing",
        "6",
        "6",
        "8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let info = ok_json(&["inspect", s(&img), "--json"]);
    assert_eq!(info["dims"], serde_json::json!([48, 40, 32]));
    assert_eq!(info["spacing_mm"], serde_json::json!([6.0, 6.0, 8.0]));
    assert_eq!(info["orientation"], "RAS");
    let labels = ok_json(&["inspect", s(&lab), "--json"]);
    assert_eq!(labels["label_map"], true);

    // Resampling to 12 mm halves i and j, and k goes 32·8/12 → 21 or 22 voxels (MONAI rounds the extent).
    let conv = dir.path().join("img12.nii.gz");
    let out = logonet(&["convert", s(&img), s(&conv), "--spacing", "12", "12", "12"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = ok_json(&["inspect", s(&conv), "--json"]);
    assert_eq!(info["spacing_mm"], serde_json::json!([12.0, 12.0, 12.0]));
    let dims: Vec<u64> = serde_json::from_value(info["dims"].clone()).expect("dims");
    assert_eq!(&dims[..2], &[24, 20]);
    assert!((21..=22).contains(&dims[2]), "{dims:?}");

    // Predict with a bundle: the output is a label map on the input grid.
    let bundle = dir.path().join("tiny.safetensors");
    tiny_bundle(&bundle);
    let pred = dir.path().join("pred.nii.gz");
    let out = logonet(&["predict", "-i", s(&img), "-o", s(&pred), "-m", s(&bundle)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = ok_json(&["inspect", s(&pred), "--json"]);
    assert_eq!(info["dims"], serde_json::json!([48, 40, 32]));
    assert_eq!(info["spacing_mm"], serde_json::json!([6.0, 6.0, 8.0]));

    // Eval: the ground truth against itself is perfect; the table names the BTCV organs.
    let table = ok_json(&["eval", "--pred", s(&lab), "--gt", s(&lab), "--json"]);
    let rows = table["labels"].as_array().expect("labels array");
    assert!(rows.len() >= 10, "{rows:?}");
    assert_eq!(rows[0]["name"], "spleen");
    for row in rows {
        assert_eq!(row["dice"], 1.0, "{row}");
    }
    // And the random prediction against the truth runs and gives Dice in [0, 1] or null (NaN).
    let table = ok_json(&["eval", "--pred", s(&pred), "--gt", s(&lab), "--json"]);
    for row in table["labels"].as_array().expect("labels array") {
        if let Some(d) = row["dice"].as_f64() {
            assert!((0.0..=1.0).contains(&d), "{row}");
        }
    }
}

#[test]
fn info_reports_the_papers_counts() {
    let out = logonet(&["info", "--model", "logonet-s", "--size", "96"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("67,579,560"), "{text}");
    assert!(text.contains("246.99 G"), "{text}");
}

#[test]
fn bad_input_fails_cleanly_with_the_path_last() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.nii.gz");
    let out = logonet(&["inspect", s(&missing)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim_end().ends_with(s(&missing)), "path last: {err}");
    assert!(!err.contains("panicked"), "{err}");

    let garbage = dir.path().join("garbage.nii.gz");
    std::fs::write(&garbage, b"\x1f\x8bnot really gzip").expect("write");
    let out = logonet(&["inspect", s(&garbage)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("garbage.nii.gz") && !err.contains("panicked"),
        "{err}"
    );

    let out = logonet(&["info", "--model", "no-such-model"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
