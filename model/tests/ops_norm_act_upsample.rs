//! Fused norms, activations and ×2 upsampling against the reference ops: forward values (f64 and f32) and
//! gradients of `Σ y·r` with respect to the input and the affine parameters (f64 autograd through the reference).

use candle_core::{DType, Device, Tensor, Var};
use logonet::ops::{self, reference};

fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn t(v: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_slice(v, dims, &Device::Cpu).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

type OpFn = dyn Fn(&[Tensor]) -> Tensor;

/// Compares `fast` and `slow` (same inputs: `inputs[0]` is x) in value and in the gradient of `Σ y·r` for every
/// input; then `fast` in f32 against `slow` in f64.
fn compare(name: &str, inputs: &[(Vec<f64>, Vec<usize>)], fast: &OpFn, slow: &OpFn, tol32: f64) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|(v, d)| Var::from_tensor(&t(v, d)).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let yf = fast(&ts);
    let ys = slow(&ts);
    assert_eq!(yf.dims(), ys.dims(), "{name}: shape");
    let d = max_diff(&vals(&yf), &vals(&ys));
    assert!(d < 1e-10, "{name}: forward diff {d}");
    let r = t(&rand_vec(yf.elem_count(), 99), yf.dims());
    let gf = (yf * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = (ys * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        let a = vals(
            gf.get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no fast grad for input {i}")),
        );
        let b = vals(
            gs.get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no reference grad for input {i}")),
        );
        let d = max_diff(&a, &b);
        // candle's own gelu_erf backward (the yardstick for "gelu") is accurate to about 2e-7 only.
        let tol = if name == "gelu" { 1e-6 } else { 1e-9 };
        assert!(d < tol, "{name}: grad of input {i} differs by {d}");
    }
    let t32: Vec<Tensor> = ts.iter().map(|x| x.to_dtype(DType::F32).unwrap()).collect();
    let y32 = fast(&t32);
    assert_eq!(y32.dtype(), DType::F32);
    let d = max_diff(&vals(&y32), &vals(&slow(&ts)));
    assert!(d < tol32, "{name}: f32 forward diff {d}");
}

const X: [usize; 5] = [2, 3, 4, 5, 6];

fn x_in(seed: u64) -> (Vec<f64>, Vec<usize>) {
    (
        rand_vec(X.iter().product(), seed)
            .iter()
            .map(|v| 2.0 * v + 0.3)
            .collect(),
        X.to_vec(),
    )
}

fn per_c(seed: u64, offset: f64) -> (Vec<f64>, Vec<usize>) {
    (
        rand_vec(3, seed).iter().map(|v| v * 0.5 + offset).collect(),
        vec![3],
    )
}

#[test]
fn batch_norm_eval_matches_reference() {
    let rm = t(&rand_vec(3, 5), &[3]);
    let rv = t(
        &rand_vec(3, 6)
            .iter()
            .map(|v| v * 0.4 + 1.0)
            .collect::<Vec<_>>(),
        &[3],
    );
    let (rm2, rv2) = (rm.clone(), rv.clone());
    compare(
        "batch_norm_eval",
        &[x_in(1), per_c(2, 1.0), per_c(3, 0.0)],
        &move |a| {
            let (m, v) = (
                rm.to_dtype(a[0].dtype()).unwrap(),
                rv.to_dtype(a[0].dtype()).unwrap(),
            );
            ops::batch_norm_eval(&a[0], Some(&a[1]), Some(&a[2]), &m, &v, 1e-5).unwrap()
        },
        &move |a| {
            reference::batch_norm_eval(&a[0], Some(&a[1]), Some(&a[2]), &rm2, &rv2, 1e-5).unwrap()
        },
        1e-5,
    );
}

#[test]
fn batch_norm_train_matches_reference() {
    compare(
        "batch_norm_train",
        &[x_in(11), per_c(12, 1.0), per_c(13, 0.0)],
        &|a| {
            ops::batch_norm_train(&a[0], Some(&a[1]), Some(&a[2]), 1e-5)
                .unwrap()
                .0
        },
        &|a| {
            reference::batch_norm_train(&a[0], Some(&a[1]), Some(&a[2]), 1e-5)
                .unwrap()
                .0
        },
        1e-5,
    );
    let (x, _) = x_in(14);
    let x = t(&x, &X);
    let (_, m, v) = ops::batch_norm_train(&x, None, None, 1e-5).unwrap();
    let (_, m2, v2) = reference::batch_norm_train(&x, None, None, 1e-5).unwrap();
    assert!(max_diff(&vals(&m), &vals(&m2)) < 1e-12);
    assert!(max_diff(&vals(&v), &vals(&v2)) < 1e-12);
}

#[test]
fn instance_norm_matches_reference() {
    compare(
        "instance_norm3d",
        &[x_in(21), per_c(22, 1.0), per_c(23, 0.0)],
        &|a| ops::instance_norm3d(&a[0], Some(&a[1]), Some(&a[2]), 1e-5).unwrap(),
        &|a| reference::instance_norm3d(&a[0], Some(&a[1]), Some(&a[2]), 1e-5).unwrap(),
        1e-5,
    );
    compare(
        "instance_norm3d (no affine)",
        &[x_in(24)],
        &|a| ops::instance_norm3d(&a[0], None, None, 1e-5).unwrap(),
        &|a| reference::instance_norm3d(&a[0], None, None, 1e-5).unwrap(),
        1e-5,
    );
}

#[test]
fn layer_norms_match_reference() {
    compare(
        "layer_norm_channels",
        &[x_in(31), per_c(32, 1.0), per_c(33, 0.0)],
        &|a| ops::layer_norm_channels(&a[0], &a[1], &a[2], 1e-5).unwrap(),
        &|a| reference::layer_norm_channels(&a[0], &a[1], &a[2], 1e-5).unwrap(),
        1e-5,
    );
    // Large inner size: several column blocks per sample.
    let big = vec![1usize, 4, 9, 11, 13];
    compare(
        "layer_norm_channels (blocks)",
        &[
            (rand_vec(big.iter().product(), 34), big),
            (rand_vec(4, 35), vec![4]),
            (rand_vec(4, 36), vec![4]),
        ],
        &|a| ops::layer_norm_channels(&a[0], &a[1], &a[2], 1e-5).unwrap(),
        &|a| reference::layer_norm_channels(&a[0], &a[1], &a[2], 1e-5).unwrap(),
        1e-5,
    );
    let tok = vec![2usize, 70, 7];
    compare(
        "layer_norm_last",
        &[
            (rand_vec(2 * 70 * 7, 37), tok),
            (rand_vec(7, 38), vec![7]),
            (rand_vec(7, 39), vec![7]),
        ],
        &|a| ops::layer_norm_last(&a[0], &a[1], &a[2], 1e-5).unwrap(),
        &|a| reference::layer_norm_last(&a[0], &a[1], &a[2], 1e-5).unwrap(),
        1e-5,
    );
}

#[test]
fn activations_match_reference() {
    let wide = || {
        (
            rand_vec(X.iter().product(), 41)
                .iter()
                .map(|v| v * 6.0)
                .collect::<Vec<_>>(),
            X.to_vec(),
        )
    };
    compare(
        "gelu",
        &[wide()],
        &|a| ops::gelu(&a[0]).unwrap(),
        &|a| a[0].gelu_erf().unwrap(),
        2e-6,
    );
    compare(
        "leaky_relu",
        &[wide()],
        &|a| ops::leaky_relu(&a[0], 0.01).unwrap(),
        &|a| reference::leaky_relu(&a[0], 0.01).unwrap(),
        1e-6,
    );
}

#[test]
fn upsampling_matches_reference() {
    for dims in [X.to_vec(), vec![1, 2, 1, 3, 1], vec![1, 1, 3, 1, 4]] {
        let x = (rand_vec(dims.iter().product(), 51), dims);
        compare(
            "upsample_trilinear2x",
            std::slice::from_ref(&x),
            &|a| ops::upsample_trilinear2x(&a[0]).unwrap(),
            &|a| reference::upsample_trilinear2x(&a[0]).unwrap(),
            1e-6,
        );
        compare(
            "upsample_nearest2x",
            &[x],
            &|a| ops::upsample_nearest2x(&a[0]).unwrap(),
            &|a| reference::upsample_nearest2x(&a[0]).unwrap(),
            1e-7,
        );
    }
}

#[test]
fn rejects_bad_arguments() {
    let bad = |r: logonet::Result<Tensor>| matches!(r, Err(logonet::Error::InvalidArgument { .. }));
    let x = Tensor::zeros((1, 3, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let c4 = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
    let c3 = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    let c3d = c3.to_dtype(DType::F64).unwrap();
    assert!(bad(ops::batch_norm_eval(
        &x,
        Some(&c4),
        None,
        &c3,
        &c3,
        1e-5
    )));
    assert!(bad(ops::batch_norm_eval(&x, None, None, &c3d, &c3, 1e-5)));
    assert!(bad(ops::layer_norm_channels(&x, &c4, &c3, 1e-5)));
    assert!(bad(ops::layer_norm_last(&x, &c3, &c3, 1e-5)));
    assert!(bad(ops::instance_norm3d(
        &x.flatten_all().unwrap(),
        None,
        None,
        1e-5
    )));
    let one = Tensor::zeros((1, 3, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        ops::batch_norm_train(&one, None, None, 1e-5),
        Err(logonet::Error::InvalidArgument { .. })
    ));
    assert!(bad(ops::upsample_trilinear2x(&x.flatten_all().unwrap())));
    let empty = Tensor::zeros((1, 3, 0, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(bad(ops::upsample_nearest2x(&empty)));
}
