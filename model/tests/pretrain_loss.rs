//! `ClusteringLoss2` against the reference values of fixture `pretrain_head` (`loss.*`, `loss2.*`).

use candle_core::{DType, Device, Tensor, Var};
use logonet::pretrain::loss::clustering_loss;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pipeline/pretrain_head.io.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("fixture pretrain_head.io")
}

fn value(io: &HashMap<String, Tensor>, k: &str) -> f64 {
    io[k].to_vec1::<f64>().unwrap()[0]
}

fn loss(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> f64 {
    clustering_loss(logits, targets, mask)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn network_logits_losses_match_reference() {
    let io = fixture();
    let logits = io["output.logits"].to_dtype(DType::F64).unwrap(); // [2, 32, 3, 20]
    let targets = &io["loss.targets"]; // [2, 32, 3]
    let mask = &io["loss.mask_vector"]; // [2, 32]
    let cases = [
        (
            loss(&logits, targets, Some(mask)),
            value(&io, "loss.value_masked"),
        ),
        (
            loss(&logits, targets, None),
            value(&io, "loss.value_unmasked"),
        ),
    ];
    for (got, want) in cases {
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    // batch 1: item 0's logits (the batch-1 network output), targets[:1], mask b0 and mask b1
    let l1 = io["output.logits_batch1"]
        .to_dtype(DType::F64)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let t1 = targets.narrow(0, 0, 1).unwrap();
    let mb0 = io["mask.b0.mask_vector"].clone();
    let mb1 = io["mask.b1.mask_vector"].clone();
    let got = loss(&l1, &t1, Some(&mb0));
    assert!(
        (got - value(&io, "loss.value_masked_batch1")).abs() < 1e-12,
        "{got}"
    );
    let got = loss(&l1, &t1, Some(&mb1));
    assert!(
        (got - value(&io, "loss.value_masked_batch1_maskb1")).abs() < 1e-12,
        "{got}"
    );
    // f32 path
    let got = loss(&io["output.logits"], targets, Some(mask));
    assert!(
        (got - value(&io, "loss.value_masked")).abs() < 1e-5,
        "{got}"
    );
}

#[test]
fn spread_logits_losses_match_reference() {
    let io = fixture();
    let logits = &io["loss2.logits"]; // [2, 32, 3, 20] f64
    let targets = &io["loss2.targets"];
    let mask = &io["loss.mask_vector"];
    let got = loss(logits, targets, Some(mask));
    assert!(
        (got - value(&io, "loss2.value_masked_b2")).abs() < 1e-12,
        "{got}"
    );
    let got = loss(logits, targets, None);
    assert!(
        (got - value(&io, "loss2.value_unmasked_b2")).abs() < 1e-12,
        "{got}"
    );
    let l0 = logits.narrow(0, 0, 1).unwrap();
    let t0 = targets.narrow(0, 0, 1).unwrap();
    let got = loss(&l0, &t0, Some(&io["mask.b0.mask_vector"]));
    assert!(
        (got - value(&io, "loss2.value_masked_b1")).abs() < 1e-12,
        "{got}"
    );
}

#[test]
fn single_clusterer_masked_mean_is_the_true_one() {
    // The reference's C = 1 squeeze bug makes its "masked" value equal the unmasked one (3.62453...); the
    // correct masked mean is 3.44306 (README). We reproduce the unmasked value exactly and the true masked one.
    let io = fixture();
    let l = io["loss2.logits"]
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(2, 0, 1)
        .unwrap(); // [1, 32, 1, 20]
    let t = io["loss2.targets"]
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(2, 0, 1)
        .unwrap(); // [1, 32, 1]
    let unmasked = loss(&l, &t, None);
    assert!(
        (unmasked - value(&io, "loss2.value_c1_b1_unmasked")).abs() < 1e-12,
        "{unmasked}"
    );
    assert!(
        (value(&io, "loss2.value_c1_b1_masked") - value(&io, "loss2.value_c1_b1_unmasked")).abs()
            < 1e-12
    );
    let masked = loss(&l, &t, Some(&io["mask.b0.mask_vector"]));
    assert!((masked - 3.44306).abs() < 1e-5, "{masked}");
}

#[test]
fn unequal_masked_counts_and_gradient() {
    // The reference raises for B = 2 with masks b0 (11 slices) and b1 (12 slices); the masked mean here is
    // the count-weighted mean of the two per-sample masked means.
    let io = fixture();
    let logits = &io["loss2.logits"];
    let targets = &io["loss2.targets"];
    let m = Tensor::cat(&[&io["mask.b0.mask_vector"], &io["mask.b1.mask_vector"]], 0).unwrap();
    let both = loss(logits, targets, Some(&m));
    let per = |b: usize| {
        let mb = m.narrow(0, b, 1).unwrap();
        let n = mb.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        (
            loss(
                &logits.narrow(0, b, 1).unwrap(),
                &targets.narrow(0, b, 1).unwrap(),
                Some(&mb),
            ),
            n,
        )
    };
    let ((l0, n0), (l1, n1)) = (per(0), per(1));
    assert_eq!((n0, n1), (11.0, 12.0));
    assert!((both - (l0 * n0 + l1 * n1) / (n0 + n1)).abs() < 1e-12);

    // Gradient: d/dlogit = 0.1 (p - onehot) / count on selected entries, 0 on unmasked slices.
    let v = Var::from_tensor(&logits.narrow(0, 0, 1).unwrap()).unwrap();
    let mb0 = io["mask.b0.mask_vector"].clone();
    let l = clustering_loss(v.as_tensor(), &targets.narrow(0, 0, 1).unwrap(), Some(&mb0)).unwrap();
    let g = l.backward().unwrap();
    let grad = g.get(v.as_tensor()).unwrap().to_dtype(DType::F64).unwrap();
    let mv = mb0.to_vec2::<f32>().unwrap()[0].clone();
    let gz = grad.get(0).unwrap();
    for (z, &mz) in mv.iter().enumerate() {
        let s = gz
            .get(z)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        if mz == 0.0 {
            assert_eq!(s, 0.0);
        } else {
            assert!(s > 0.0);
        }
    }
    // rows sum to zero (softmax minus one-hot)
    let rowsum = grad
        .sum(3)
        .unwrap()
        .abs()
        .unwrap()
        .max_keepdim(0)
        .unwrap()
        .flatten_all()
        .unwrap();
    assert!(rowsum.max(0).unwrap().to_scalar::<f64>().unwrap() < 1e-12);
}

#[test]
fn rejects_bad_shapes_and_targets() {
    let d = Device::Cpu;
    let logits = Tensor::zeros((1, 4, 2, 5), DType::F32, &d).unwrap();
    let bad = Tensor::zeros((1, 4, 3), DType::I64, &d).unwrap();
    assert!(clustering_loss(&logits, &bad, None).is_err());
    let out_of_range = Tensor::full(5i64, (1, 4, 2), &d).unwrap();
    assert!(clustering_loss(&logits, &out_of_range, None).is_err());
    let ok = Tensor::zeros((1, 4, 2), DType::I64, &d).unwrap();
    let bad_mask = Tensor::zeros((1, 5), DType::F32, &d).unwrap();
    assert!(clustering_loss(&logits, &ok, Some(&bad_mask)).is_err());
    let empty = Tensor::zeros((1, 4), DType::F32, &d).unwrap();
    assert_eq!(loss(&logits, &ok, Some(&empty)), 0.0);
    assert!((loss(&logits, &ok, None) - 5f64.ln()).abs() < 1e-6);
}
