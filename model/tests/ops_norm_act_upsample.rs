//! Fused norms, activations and ×2 upsampling against the reference ops: forward values (f64 and f32) and
//! gradients of `Σ y·r` with respect to the input and the affine parameters (f64 autograd through the reference).

mod lcg_support;
use lcg_support::rand_vec;

use candle_core::{DType, Device, Tensor, Var};
use logonet::ops::{self, reference};

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
    // Large inner size with 40 channels: several column blocks of 819 positions per sample, a partial last one.
    let big = vec![2usize, 40, 9, 11, 13];
    compare(
        "layer_norm_channels (blocks)",
        &[
            (rand_vec(big.iter().product(), 34), big),
            (rand_vec(40, 35), vec![40]),
            (rand_vec(40, 36), vec![40]),
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
    // 45 channels (one 32-lane chunk plus a remainder), more rows than one task's 256.
    let tok = vec![3usize, 300, 45];
    compare(
        "layer_norm_last (45 channels)",
        &[
            (rand_vec(3 * 300 * 45, 40), tok),
            (rand_vec(45, 41), vec![45]),
            (rand_vec(45, 42), vec![45]),
        ],
        &|a| ops::layer_norm_last(&a[0], &a[1], &a[2], 1e-5).unwrap(),
        &|a| reference::layer_norm_last(&a[0], &a[1], &a[2], 1e-5).unwrap(),
        1e-5,
    );
}

/// The f32 token LayerNorm (AVX-512 kernels for C ≤ 64, the generic loops above): forward and the gradients
/// of `Σ y·r` for x, weight and bias in f32 against the f64 reference, for channel counts of one partial
/// vector, exact vectors, a partial last vector, the largest in-register row and one past it; rows spanning
/// several parallel tasks, a large mean (centred variance) on some rows.
#[test]
fn layer_norm_last_f32_matches_reference() {
    for (i, c) in [1usize, 7, 16, 32, 45, 64, 65].into_iter().enumerate() {
        let rows = 613;
        let seed = 900 + 10 * i as u64;
        let xv: Vec<f64> = rand_vec(rows * c, seed)
            .iter()
            .enumerate()
            .map(|(k, v)| {
                let off = if (k / c) % 5 == 0 { 30.0 } else { 0.2 };
                (2.0 * v + off) as f32 as f64
            })
            .collect();
        let wv: Vec<f64> = rand_vec(c, seed + 1)
            .iter()
            .map(|v| (v + 1.0) as f32 as f64)
            .collect();
        let bv: Vec<f64> = rand_vec(c, seed + 2)
            .iter()
            .map(|v| *v as f32 as f64)
            .collect();
        let r = t(&rand_vec(rows * c, seed + 3), &[rows, c]);
        let run = |dt: DType, fast: bool| {
            let vars = [
                Var::from_tensor(&t(&xv, &[rows, c]).to_dtype(dt).unwrap()).unwrap(),
                Var::from_tensor(&t(&wv, &[c]).to_dtype(dt).unwrap()).unwrap(),
                Var::from_tensor(&t(&bv, &[c]).to_dtype(dt).unwrap()).unwrap(),
            ];
            let (x, w, b) = (
                vars[0].as_tensor(),
                vars[1].as_tensor(),
                vars[2].as_tensor(),
            );
            let y = if fast {
                ops::layer_norm_last(x, w, b, 1e-5).unwrap()
            } else {
                reference::layer_norm_last(x, w, b, 1e-5).unwrap()
            };
            let gs = (&y * r.to_dtype(dt).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let grads: Vec<Vec<f64>> = vars
                .iter()
                .map(|v| vals(gs.get(v.as_tensor()).unwrap()))
                .collect();
            (vals(&y), grads)
        };
        let (y32, g32) = run(DType::F32, true);
        let (y64, g64) = run(DType::F64, false);
        let d = max_diff(&y32, &y64);
        assert!(d < 5e-5, "c={c}: f32 forward diff {d}");
        // dx is O(1); dweight/dbias are sums over `rows` products of O(1) values.
        for (k, (a, b)) in g32.iter().zip(&g64).enumerate() {
            let tol = if k == 0 { 1e-4 } else { 1e-5 * rows as f64 };
            let d = max_diff(a, b);
            assert!(d < tol, "c={c}: f32 grad of input {k} differs by {d}");
        }
    }
}

/// Odd sizes that split a channel into several parallel pieces (65 231 elements per channel, > 32 768) and
/// waves of groups in the backward.
#[test]
fn batch_and_instance_norm_odd_sizes_match_reference() {
    let d = vec![1usize, 2, 37, 41, 43];
    let x = || (rand_vec(d.iter().product(), 61), d.clone());
    let pc = |seed| (rand_vec(2, seed), vec![2]);
    compare(
        "batch_norm_train (pieces)",
        &[x(), pc(62), pc(63)],
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
    compare(
        "instance_norm3d (pieces)",
        &[x(), pc(64), pc(65)],
        &|a| ops::instance_norm3d(&a[0], Some(&a[1]), Some(&a[2]), 1e-5).unwrap(),
        &|a| reference::instance_norm3d(&a[0], Some(&a[1]), Some(&a[2]), 1e-5).unwrap(),
        1e-5,
    );
    // Many small groups: several groups per wave, a spatial size below one 32-lane chunk.
    let small = vec![3usize, 5, 3, 1, 7];
    compare(
        "instance_norm3d (small groups)",
        &[(rand_vec(small.iter().product(), 66), small)],
        &|a| ops::instance_norm3d(&a[0], None, None, 1e-5).unwrap(),
        &|a| reference::instance_norm3d(&a[0], None, None, 1e-5).unwrap(),
        1e-5,
    );
}

/// f32 statistics of data with a large mean and small spread (CT-like offsets): the one-pass statistics must
/// not cancel. Compared with the f64 reference on the same (f32-representable) values.
#[test]
fn f32_norms_with_large_mean_stay_accurate() {
    let d = [1usize, 3, 20, 30, 40];
    let v: Vec<f64> = rand_vec(d.iter().product(), 71)
        .iter()
        .map(|r| (1000.0 + 0.01 * r) as f32 as f64)
        .collect();
    let x64 = t(&v, &d);
    let x32 = x64.to_dtype(DType::F32).unwrap();
    let (y32, m32, v32) = ops::batch_norm_train(&x32, None, None, 1e-5).unwrap();
    let (y64, m64, v64) = reference::batch_norm_train(&x64, None, None, 1e-5).unwrap();
    assert!(max_diff(&vals(&m32), &vals(&m64)) < 1e-3);
    // Variance is about 3.3e-5: its relative error must stay small.
    let (a, b) = (vals(&v32), vals(&v64));
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 1e-3 * q, "variance {p} vs {q}");
    }
    // Normalised values are O(1); f32 rounding of x (1000 ± 0.01: ulp 6e-5) bounds the agreement.
    let d = max_diff(&vals(&y32), &vals(&y64));
    assert!(d < 2e-2, "normalised diff {d}");
    let yi = ops::instance_norm3d(&x32, None, None, 1e-5).unwrap();
    let d = max_diff(&vals(&yi), &vals(&y64));
    assert!(d < 2e-2, "instance norm diff {d}");
}

/// Central finite differences of `Σ y·r` (f64) for the fused norms, independent of the reference ops.
#[test]
fn norms_match_finite_differences() {
    let d = [2usize, 3, 2, 3, 4];
    let xv = rand_vec(d.iter().product(), 81);
    let r = t(&rand_vec(xv.len(), 82), &d);
    let w = t(&[0.7, 1.3, -0.4], &[3]);
    let b = t(&[0.1, -0.2, 0.3], &[3]);
    type F<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
    let cases: Vec<(&str, F)> = vec![
        (
            "batch_norm_train",
            Box::new(|x| {
                ops::batch_norm_train(x, Some(&w), Some(&b), 1e-5)
                    .unwrap()
                    .0
            }),
        ),
        (
            "instance_norm3d",
            Box::new(|x| ops::instance_norm3d(x, Some(&w), Some(&b), 1e-5).unwrap()),
        ),
        (
            "layer_norm_channels",
            Box::new(|x| ops::layer_norm_channels(x, &w, &b, 1e-5).unwrap()),
        ),
        ("gelu", Box::new(|x| ops::gelu(x).unwrap())),
        (
            "upsample_trilinear2x",
            Box::new(|x| ops::upsample_trilinear2x(x).unwrap()),
        ),
    ];
    for (name, f) in cases {
        let loss = |v: &[f64]| -> f64 {
            let y = f(&t(v, &d));
            let rr = if y.dims() == r.dims() {
                r.clone()
            } else {
                t(&rand_vec(y.elem_count(), 83), y.dims())
            };
            (y * rr)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let x = Var::from_tensor(&t(&xv, &d)).unwrap();
        let y = f(x.as_tensor());
        let rr = if y.dims() == r.dims() {
            r.clone()
        } else {
            t(&rand_vec(y.elem_count(), 83), y.dims())
        };
        let grads = (y * rr).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = vals(grads.get(x.as_tensor()).unwrap());
        let h = 1e-5;
        for i in (0..xv.len()).step_by(7) {
            let (mut p, mut m) = (xv.clone(), xv.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&p) - loss(&m)) / (2.0 * h);
            assert!(
                (fd - gx[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name}: d/dx[{i}] autograd {} vs finite difference {fd}",
                gx[i]
            );
        }
    }
}

/// The benchmark hook ([`ops::OpRun::backward`]) runs the same kernels as autograd.
#[test]
fn op_run_backward_equals_autograd() {
    let d = [1usize, 3, 4, 5, 6];
    let x = Var::from_tensor(&t(&rand_vec(d.iter().product(), 91), &d)).unwrap();
    let w = t(&[0.7, 1.3, -0.4], &[3]);
    let b = t(&[0.1, -0.2, 0.3], &[3]);
    let runs: Vec<(&str, ops::OpRun)> = vec![
        ("gelu", ops::gelu_run(x.as_tensor()).unwrap()),
        (
            "layer_norm_channels",
            ops::layer_norm_channels_run(x.as_tensor(), &w, &b, 1e-5).unwrap(),
        ),
        (
            "instance_norm3d",
            ops::instance_norm3d_run(x.as_tensor(), Some(&w), Some(&b), 1e-5).unwrap(),
        ),
        (
            "upsample_nearest2x",
            ops::upsample_nearest2x_run(x.as_tensor()).unwrap(),
        ),
        (
            "max_pool3d",
            ops::max_pool3d_run(x.as_tensor(), [2; 3], [2; 3], [0; 3]).unwrap(),
        ),
    ];
    for (name, run) in runs {
        let g = t(&rand_vec(run.y.elem_count(), 92), run.y.dims());
        let direct = run.backward(&g).unwrap();
        let auto = (&run.y * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dx = vals(auto.get(x.as_tensor()).unwrap());
        assert_eq!(direct[0].dims(), x.dims(), "{name}");
        assert!(max_diff(&vals(&direct[0]), &dx) < 1e-12, "{name}");
    }
}

/// f32 GELU and its derivative against f64 over a wide range (vectorised erf: absolute error ≤ 1.5e-7 in Φ).
#[test]
fn gelu_f32_accuracy() {
    let xs: Vec<f64> = (0..20001).map(|i| -10.0 + i as f64 * 1e-3).collect();
    let x64 = t(&xs, &[xs.len()]);
    let x32 = x64.to_dtype(DType::F32).unwrap();
    let d = max_diff(
        &vals(&ops::gelu(&x32).unwrap()),
        &vals(&ops::gelu(&x64).unwrap()),
    );
    assert!(d < 2e-6, "gelu f32 forward {d}");
    let g = |x: &Tensor| {
        let v = Var::from_tensor(x).unwrap();
        let gr = ops::gelu(v.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        vals(gr.get(v.as_tensor()).unwrap())
    };
    let d = max_diff(&g(&x32), &g(&x64));
    assert!(d < 2e-6, "gelu f32 derivative {d}");
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
    for dims in [
        X.to_vec(),
        vec![1, 2, 1, 3, 1],
        vec![1, 1, 3, 1, 4],
        vec![1, 1, 2, 2, 2],
        vec![1, 2, 5, 7, 9],
    ] {
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
    // One value per channel: PyTorch refuses InstanceNorm and train-mode BatchNorm there too.
    assert!(bad(ops::instance_norm3d(&one, None, None, 1e-5)));
    let two = Tensor::zeros((2, 3, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
    assert!(ops::batch_norm_train(&two, None, None, 1e-5).is_ok());
    assert!(bad(ops::instance_norm3d(&two, None, None, 1e-5)));
    let empty3 = Tensor::zeros((1, 3, 0, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(bad(ops::layer_norm_channels(&empty3, &c3, &c3, 1e-5)));
    assert!(bad(
        ops::batch_norm_train(&empty3, None, None, 1e-5).map(|r| r.0)
    ));
    assert!(matches!(
        ops::batch_norm_train(&one, None, None, 1e-5),
        Err(logonet::Error::InvalidArgument { .. })
    ));
    assert!(bad(ops::upsample_trilinear2x(&x.flatten_all().unwrap())));
    let empty = Tensor::zeros((1, 3, 0, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(bad(ops::upsample_nearest2x(&empty)));
}
