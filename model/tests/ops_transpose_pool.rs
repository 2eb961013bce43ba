//! conv_transpose3d and max/avg pool3d: forward against naive f64 loops, gradients against central finite
//! differences (f64), and argument validation.

mod lcg_support;
use lcg_support::rand_vec;

use candle_core::{DType, Device, Tensor, Var};
use logonet::ops::{self, ConvTranspose3dParams};

fn t(v: &[f64], d: &[usize]) -> Tensor {
    Tensor::from_slice(v, d, &Device::Cpu).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// Naive transposed conv (scatter form), returns output and its dims.
fn naive_ct(
    x: &[f64],
    xd: [usize; 5],
    w: &[f64],
    wd: [usize; 5],
    b: &[f64],
    p: &ConvTranspose3dParams,
) -> (Vec<f64>, [usize; 5]) {
    let out = p
        .output_size([xd[2], xd[3], xd[4]], [wd[2], wd[3], wd[4]])
        .unwrap();
    let (cig, cog) = (xd[1] / p.groups, wd[1]);
    let co_all = cog * p.groups;
    let yd = [xd[0], co_all, out[0], out[1], out[2]];
    let mut y = vec![0.0; yd.iter().product()];
    for n in 0..xd[0] {
        for co in 0..co_all {
            for v in &mut y[(n * co_all + co) * out.iter().product::<usize>()..]
                [..out.iter().product::<usize>()]
            {
                *v = b[co];
            }
        }
        for ci in 0..xd[1] {
            let g = ci / cig;
            for i0 in 0..xd[2] {
                for i1 in 0..xd[3] {
                    for i2 in 0..xd[4] {
                        let xv = x[(((n * xd[1] + ci) * xd[2] + i0) * xd[3] + i1) * xd[4] + i2];
                        for cl in 0..cog {
                            let co = g * cog + cl;
                            for a in 0..wd[2] {
                                for bb in 0..wd[3] {
                                    for c in 0..wd[4] {
                                        let o = [
                                            (i0 * p.stride[0] + a * p.dilation[0]) as isize
                                                - p.padding[0] as isize,
                                            (i1 * p.stride[1] + bb * p.dilation[1]) as isize
                                                - p.padding[1] as isize,
                                            (i2 * p.stride[2] + c * p.dilation[2]) as isize
                                                - p.padding[2] as isize,
                                        ];
                                        if (0..3).any(|k| o[k] < 0 || o[k] >= out[k] as isize) {
                                            continue;
                                        }
                                        let wv = w[(((ci * cog + cl) * wd[2] + a) * wd[3] + bb)
                                            * wd[4]
                                            + c];
                                        let yi = (((n * co_all + co) * out[0] + o[0] as usize)
                                            * out[1]
                                            + o[1] as usize)
                                            * out[2]
                                            + o[2] as usize;
                                        y[yi] += xv * wv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (y, yd)
}

/// Checks autograd gradients of `Σ f(inputs)·r` against central differences at a few coordinates.
fn fd_check(
    name: &str,
    inputs: &[(Vec<f64>, Vec<usize>)],
    f: &dyn Fn(&[Tensor]) -> Tensor,
    probes: usize,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|(v, d)| Var::from_tensor(&t(v, d)).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let r = t(&rand_vec(y.elem_count(), 77), y.dims());
    let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let loss = |vs: &[Vec<f64>]| -> f64 {
        let ts: Vec<Tensor> = vs.iter().zip(inputs).map(|(v, (_, d))| t(v, d)).collect();
        (f(&ts) * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let base: Vec<Vec<f64>> = inputs.iter().map(|(v, _)| v.clone()).collect();
    for (k, var) in vars.iter().enumerate() {
        let g = vals(
            grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no grad for input {k}")),
        );
        let pick = rand_vec(probes, 5 + k as u64);
        for p in pick {
            let i = ((p + 1.0) / 2.0 * g.len() as f64) as usize % g.len();
            let h = 1e-5;
            let (mut a, mut b) = (base.clone(), base.clone());
            a[k][i] += h;
            b[k][i] -= h;
            let fd = (loss(&a) - loss(&b)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name}: d input{k}[{i}]: fd {fd} vs {}",
                g[i]
            );
        }
    }
}

#[test]
fn conv_transpose3d_matches_naive_and_fd() {
    let cases = [
        (
            [1, 4, 3, 4, 5],
            [4, 3, 2, 2, 2],
            ConvTranspose3dParams::iso(2, 0),
        ),
        (
            [2, 4, 3, 3, 4],
            [4, 2, 3, 3, 3],
            ConvTranspose3dParams {
                stride: [2; 3],
                padding: [1; 3],
                output_padding: [1, 0, 1],
                dilation: [1; 3],
                groups: 2,
            },
        ),
        (
            [1, 2, 3, 2, 3],
            [2, 3, 3, 3, 3],
            ConvTranspose3dParams::iso(1, 1),
        ),
        (
            [1, 3, 2, 3, 2],
            [3, 2, 2, 3, 2],
            ConvTranspose3dParams {
                stride: [3, 2, 1],
                padding: [0, 1, 0],
                output_padding: [2, 1, 0],
                dilation: [1, 2, 1],
                groups: 1,
            },
        ),
    ];
    for (i, (xd, wd, p)) in cases.into_iter().enumerate() {
        let xv = rand_vec(xd.iter().product(), 10 + i as u64);
        let wv = rand_vec(wd.iter().product(), 20 + i as u64);
        let co = wd[1] * p.groups;
        let bv = rand_vec(co, 30 + i as u64);
        let (want, yd) = naive_ct(&xv, xd, &wv, wd, &bv, &p);
        let y =
            ops::conv_transpose3d(&t(&xv, &xd), &t(&wv, &wd), Some(&t(&bv, &[co])), &p).unwrap();
        assert_eq!(y.dims(), yd);
        let d = vals(&y)
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(d < 1e-12, "case {i}: forward diff {d}");
        fd_check(
            "conv_transpose3d",
            &[(xv, xd.to_vec()), (wv, wd.to_vec()), (bv, vec![co])],
            &|a| ops::conv_transpose3d(&a[0], &a[1], Some(&a[2]), &p).unwrap(),
            6,
        );
    }
}

fn naive_pool(
    x: &[f64],
    d: [usize; 5],
    k: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
    max: bool,
) -> Vec<f64> {
    let o: Vec<usize> = (0..3)
        .map(|a| (d[2 + a] + 2 * p[a] - k[a]) / s[a] + 1)
        .collect();
    let mut y = Vec::new();
    for nc in 0..d[0] * d[1] {
        for z in 0..o[0] {
            for yy in 0..o[1] {
                for xx in 0..o[2] {
                    let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                    for a in 0..k[0] {
                        for b in 0..k[1] {
                            for c in 0..k[2] {
                                let i = [
                                    (z * s[0] + a) as isize - p[0] as isize,
                                    (yy * s[1] + b) as isize - p[1] as isize,
                                    (xx * s[2] + c) as isize - p[2] as isize,
                                ];
                                if (0..3).any(|q| i[q] < 0 || i[q] >= d[2 + q] as isize) {
                                    continue;
                                }
                                let v = x[((nc * d[2] + i[0] as usize) * d[3] + i[1] as usize)
                                    * d[4]
                                    + i[2] as usize];
                                acc = if max { acc.max(v) } else { acc + v };
                            }
                        }
                    }
                    y.push(if max {
                        acc
                    } else {
                        acc / (k[0] * k[1] * k[2]) as f64
                    });
                }
            }
        }
    }
    y
}

#[test]
fn pools_match_naive_and_fd() {
    let d = [2, 3, 5, 6, 7];
    let xv = rand_vec(d.iter().product(), 3);
    for (k, s, p) in [
        ([2, 2, 2], [2, 2, 2], [0, 0, 0]),
        ([3, 3, 3], [2, 2, 2], [1, 1, 1]),
        ([3, 2, 1], [1, 2, 1], [1, 0, 0]),
    ] {
        for max in [true, false] {
            let f = |x: &Tensor| {
                if max {
                    ops::max_pool3d(x, k, s, p)
                } else {
                    ops::avg_pool3d(x, k, s, p)
                }
            };
            let y = f(&t(&xv, &d)).unwrap();
            let want = naive_pool(&xv, d, k, s, p, max);
            let diff = vals(&y)
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert_eq!(y.elem_count(), want.len());
            assert!(diff < 1e-12, "pool {k:?} {s:?} {p:?} max={max}: {diff}");
            fd_check(
                "pool3d",
                &[(xv.clone(), d.to_vec())],
                &|a| f(&a[0]).unwrap(),
                8,
            );
        }
    }
}

/// Pools on odd sizes in f32 against the naive f64 loops; max pooling propagates NaN (as PyTorch) and sends
/// the gradient to the NaN; ties send it to the first maximum.
#[test]
fn pools_odd_sizes_f32_nan_and_ties() {
    let d = [1, 2, 9, 8, 11];
    let xv: Vec<f64> = rand_vec(d.iter().product(), 5)
        .iter()
        .map(|v| (*v as f32) as f64)
        .collect();
    let x32 = t(&xv, &d).to_dtype(DType::F32).unwrap();
    for (k, s, p) in [
        ([3, 3, 3], [2, 2, 2], [1, 1, 1]),
        ([2, 3, 4], [3, 1, 2], [1, 1, 2]),
    ] {
        for max in [true, false] {
            let y = if max {
                ops::max_pool3d(&x32, k, s, p)
            } else {
                ops::avg_pool3d(&x32, k, s, p)
            }
            .unwrap();
            let want = naive_pool(&xv, d, k, s, p, max);
            let diff = vals(&y.to_dtype(DType::F64).unwrap())
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-6, "f32 pool {k:?} {s:?} {p:?} max={max}: {diff}");
        }
    }
    // One 2x2x2 window: a tie between positions 1 and 6, then a NaN at position 5.
    let mut v = vec![0.0, 3.0, 1.0, 2.0, -1.0, 0.5, 3.0, 1.0];
    let x = Var::from_tensor(&t(&v, &[1, 1, 2, 2, 2])).unwrap();
    let y = ops::max_pool3d(x.as_tensor(), [2; 3], [2; 3], [0; 3]).unwrap();
    assert_eq!(vals(&y), vec![3.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        vals(g.get(x.as_tensor()).unwrap()),
        vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    v[5] = f64::NAN;
    let x = Var::from_tensor(&t(&v, &[1, 1, 2, 2, 2])).unwrap();
    let y = ops::max_pool3d(x.as_tensor(), [2; 3], [2; 3], [0; 3]).unwrap();
    assert!(vals(&y)[0].is_nan());
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(vals(g.get(x.as_tensor()).unwrap())[5], 1.0);
}

#[test]
fn rejects_bad_arguments() {
    let bad = |r: logonet::Result<Tensor>| matches!(r, Err(logonet::Error::InvalidArgument { .. }));
    let x = Tensor::zeros((1, 4, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((4, 2, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let mut p = ConvTranspose3dParams::iso(2, 0);
    assert!(ops::conv_transpose3d(&x, &w, None, &p).is_ok());
    p.output_padding = [2, 0, 0];
    assert!(bad(ops::conv_transpose3d(&x, &w, None, &p)));
    let w3 = Tensor::zeros((3, 2, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(bad(ops::conv_transpose3d(
        &x,
        &w3,
        None,
        &ConvTranspose3dParams::iso(2, 0)
    )));
    let b = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    assert!(bad(ops::conv_transpose3d(
        &x,
        &w,
        Some(&b),
        &ConvTranspose3dParams::iso(2, 0)
    )));
    assert!(bad(ops::conv_transpose3d(
        &x,
        &w,
        None,
        &ConvTranspose3dParams::iso(0, 0)
    )));
    assert!(bad(ops::conv_transpose3d(
        &x,
        &w,
        None,
        &ConvTranspose3dParams::iso(1, 5)
    )));
    assert!(bad(ops::max_pool3d(&x, [0, 2, 2], [1; 3], [0; 3])));
    assert!(bad(ops::max_pool3d(&x, [2; 3], [1; 3], [2; 3])));
    assert!(bad(ops::avg_pool3d(&x, [5; 3], [1; 3], [0; 3])));
    assert!(bad(ops::avg_pool3d(
        &x.flatten_all().unwrap(),
        [2; 3],
        [1; 3],
        [0; 3]
    )));
}
