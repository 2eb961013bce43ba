//! DiceCE / Dice / CE against MONAI 1.6.1 (`tests/fixtures/pipeline/dice_ce_loss.io.safetensors`, all 8
//! outputs; fixture README §2), plus a finite-difference check of the gradient.

use candle_core::{DType, Device, Tensor, Var};
use logonet::train::loss::{self, DiceCeConfig, Reduction};
use std::collections::HashMap;

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/pipeline/dice_ce_loss.io.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).expect("fixture dice_ce_loss")
}

fn scalar(t: &Tensor) -> f32 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

fn check(name: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(g.len(), w.len(), "{name}: element count");
    let max = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max <= tol,
        "{name}: max abs diff {max} > {tol} (got {:?}, want {:?})",
        &g[..g.len().min(4)],
        &w[..4.min(w.len())]
    );
}

#[test]
fn dice_ce_matches_monai_fixture() {
    let f = fixture();
    let logits = &f["input.logits"];
    let label_u8 = &f["input.label"];
    // MONAI pipelines pass the label as float; both dtypes must give the same result.
    let label = label_u8.to_dtype(DType::F32).unwrap();
    let tol = 2e-6;

    let d = DiceCeConfig::default();
    check(
        "dicece",
        &loss::dice_ce_loss(logits, &label, &d).unwrap(),
        &f["output.dicece"],
        tol,
    );
    check(
        "dicece(u8 label)",
        &loss::dice_ce_loss(logits, label_u8, &d).unwrap(),
        &f["output.dicece"],
        tol,
    );
    check(
        "dice",
        &loss::dice_loss(logits, &label, &d).unwrap(),
        &f["output.dice"],
        tol,
    );
    check(
        "ce",
        &loss::cross_entropy(logits, &label).unwrap(),
        &f["output.ce"],
        tol,
    );

    let l0 = DiceCeConfig {
        lambda_dice: 0.0,
        ..d
    };
    check(
        "dicece_lambda_dice0",
        &loss::dice_ce_loss(logits, &label, &l0).unwrap(),
        &f["output.dicece_lambda_dice0"],
        tol,
    );
    let c0 = DiceCeConfig {
        lambda_ce: 0.0,
        ..d
    };
    check(
        "dicece_lambda_ce0",
        &loss::dice_ce_loss(logits, &label, &c0).unwrap(),
        &f["output.dicece_lambda_ce0"],
        tol,
    );

    let none = DiceCeConfig {
        reduction: Reduction::None,
        ..d
    };
    let per = loss::dice_loss(logits, &label, &none).unwrap();
    assert_eq!(per.dims(), &[2, 14, 1, 1, 1]);
    check("dice_none", &per, &f["output.dice_none"], tol);
    // Item 1 has no class 13: the smoothing terms do not give 0 loss.
    let v = per.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!((v[27] - 0.99999994).abs() < 1e-6, "empty class: {}", v[27]);

    let nobg = DiceCeConfig {
        include_background: false,
        ..d
    };
    check(
        "dice_nobg",
        &loss::dice_loss(logits, &label, &nobg).unwrap(),
        &f["output.dice_nobg"],
        tol,
    );
    let batch = DiceCeConfig { batch: true, ..d };
    check(
        "dicece_batch",
        &loss::dice_ce_loss(logits, &label, &batch).unwrap(),
        &f["output.dicece_batch"],
        tol,
    );

    // Reference values written in the fixture README.
    assert!((scalar(&f["output.dicece"]) - 5.1795025).abs() < 1e-6);
}

#[test]
fn dice_ce_rejects_bad_labels_and_shapes() {
    let dev = Device::Cpu;
    let logits = Tensor::zeros((1, 3, 2, 2, 2), DType::F32, &dev).unwrap();
    let bad = Tensor::full(3f32, (1, 1, 2, 2, 2), &dev).unwrap();
    assert!(loss::dice_ce_loss(&logits, &bad, &DiceCeConfig::default()).is_err());
    let neg = Tensor::full(-1f32, (1, 1, 2, 2, 2), &dev).unwrap();
    assert!(loss::cross_entropy(&logits, &neg).is_err());
    let wrong = Tensor::zeros((1, 1, 2, 2, 3), DType::F32, &dev).unwrap();
    assert!(loss::dice_loss(&logits, &wrong, &DiceCeConfig::default()).is_err());
    let none = DiceCeConfig {
        reduction: Reduction::None,
        ..Default::default()
    };
    let ok = Tensor::zeros((1, 1, 2, 2, 2), DType::F32, &dev).unwrap();
    assert!(loss::dice_ce_loss(&logits, &ok, &none).is_err());
}

#[test]
fn dice_ce_gradient_matches_finite_differences() {
    let dev = Device::Cpu;
    let f = fixture();
    // A small slice of the fixture in f64 for a clean finite-difference check.
    let logits = f["input.logits"]
        .narrow(2, 0, 4)
        .unwrap()
        .narrow(3, 0, 4)
        .unwrap()
        .narrow(4, 0, 4)
        .unwrap();
    let logits = logits.to_dtype(DType::F64).unwrap();
    let label = f["input.label"]
        .narrow(2, 0, 4)
        .unwrap()
        .narrow(3, 0, 4)
        .unwrap()
        .narrow(4, 0, 4)
        .unwrap();
    let cfg = DiceCeConfig::default();
    let var = Var::from_tensor(&logits).unwrap();
    let l = loss::dice_ce_loss(var.as_tensor(), &label, &cfg).unwrap();
    let grads = l.backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let base = logits.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-6;
    for &i in &[0usize, 17, 200, 513, 1000, 1791] {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let eval = |v: Vec<f64>| {
            let t = Tensor::from_vec(v, logits.shape(), &dev).unwrap();
            loss::dice_ce_loss(&t, &label, &cfg)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let fd = (eval(plus) - eval(minus)) / (2.0 * eps);
        assert!(
            (fd - g[i]).abs() < 1e-7,
            "element {i}: autograd {} vs finite difference {fd}",
            g[i]
        );
    }
}
