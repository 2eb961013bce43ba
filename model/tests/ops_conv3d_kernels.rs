//! Every conv3d forward kernel, forced one at a time (`ops::conv3d_with_kernel`), with and without a fused
//! activation, against the naive f64 loop (`reference::conv3d_naive_f64`) followed by the activation in f64:
//! the pointwise GEMM (1³), the channel-blocked and row AVX-512 kernels (3³ and odd kernels), the depthwise
//! kernel, and the generic im2col/direct path, on odd sizes (rows shorter and longer than a vector or a
//! position block, channel counts that are not multiples of 16, several samples).

mod lcg_support;
use lcg_support::rand_vec;

use candle_core::{DType, Device, Tensor};
use logonet::ops::{self, Conv3dParams, ConvAct, ConvKernel, reference};

/// `act` in f64 (GELU through candle's f64 erf).
fn act_f64(v: Vec<f64>, act: ConvAct) -> Vec<f64> {
    match act {
        ConvAct::None => v,
        ConvAct::LeakyRelu(s) => v
            .into_iter()
            .map(|x| if x < 0.0 { x * s } else { x })
            .collect(),
        ConvAct::Gelu => {
            let n = v.len();
            Tensor::from_vec(v, n, &Device::Cpu)
                .unwrap()
                .gelu_erf()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        }
    }
}

/// Runs `kernel` in f32 (and f64 for the GEMM-based paths) and compares with the f64 reference: f32 within
/// 1e-5 of the output scale (a few ulps of the sums), f64 within 1e-11.
fn check(x: [usize; 5], w: [usize; 5], p: Conv3dParams, kernel: ConvKernel, seed: u64) {
    let xv = rand_vec(x.iter().product(), seed);
    let wv = rand_vec(w.iter().product(), seed + 1);
    let bv = rand_vec(w[0], seed + 2);
    let (want0, dims) = reference::conv3d_naive_f64(&xv, x, &wv, w, Some(&bv), &p).unwrap();
    let scale = want0.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for act in [ConvAct::None, ConvAct::LeakyRelu(0.01), ConvAct::Gelu] {
        let want = act_f64(want0.clone(), act);
        for dt in [DType::F32, DType::F64] {
            let t = |v: &[f64], d: &[usize]| {
                Tensor::from_slice(v, d, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap()
            };
            let (xt, wt, bt) = (t(&xv, &x), t(&wv, &w), t(&bv, &[w[0]]));
            let y = ops::conv3d_with_kernel(&xt, &wt, Some(&bt), &p, act, kernel).unwrap();
            assert_eq!(y.dims(), dims);
            let got = y
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let d = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let tol = if dt == DType::F32 {
                1e-5 * scale
            } else {
                1e-11 * scale
            };
            assert!(
                d <= tol,
                "{kernel:?} {act:?} {dt:?} x {x:?} w {w:?} {p:?}: max diff {d:e} > {tol:e}"
            );
        }
    }
}

fn dense(pad: usize, dil: usize) -> Conv3dParams {
    Conv3dParams::iso(1, pad, dil, 1)
}

#[test]
fn pointwise_kernels_odd_sizes() {
    let cases = [
        ([1, 3, 1, 1, 1], [5, 3, 1, 1, 1]),
        ([2, 7, 3, 3, 3], [17, 7, 1, 1, 1]),
        ([1, 33, 5, 7, 9], [70, 33, 1, 1, 1]),
        ([1, 16, 13, 11, 7], [16, 16, 1, 1, 1]),
        ([2, 64, 6, 6, 6], [9, 64, 1, 1, 1]),
        // More than one column tile (768 positions) and row tiles; a prime position count.
        ([1, 8, 10, 11, 9], [40, 8, 1, 1, 1]),
        ([1, 12, 1, 1, 97], [24, 12, 1, 1, 1]),
    ];
    for (i, (x, w)) in cases.into_iter().enumerate() {
        check(x, w, dense(0, 1), ConvKernel::Pointwise, 10 + 3 * i as u64);
        check(x, w, dense(0, 1), ConvKernel::Blocked, 20 + 3 * i as u64);
        check(x, w, dense(0, 1), ConvKernel::Row, 30 + 3 * i as u64);
        check(x, w, dense(0, 1), ConvKernel::Auto, 50 + 3 * i as u64);
    }
}

#[test]
fn blocked_kernel_odd_sizes_with_epilogue() {
    let cases = [
        ([1, 9, 4, 5, 29], [14, 9, 3, 3, 3], dense(1, 1)),
        ([2, 16, 3, 4, 5], [32, 16, 3, 3, 3], dense(1, 1)),
        ([1, 20, 5, 6, 13], [48, 20, 3, 3, 3], dense(2, 2)),
        ([1, 8, 3, 3, 3], [8, 8, 3, 3, 3], dense(1, 1)),
        ([1, 16, 3, 5, 14], [64, 16, 3, 3, 3], dense(1, 1)),
        ([1, 17, 4, 4, 26], [33, 17, 1, 3, 5], dense(0, 1)),
    ];
    for (i, (x, w, p)) in cases.into_iter().enumerate() {
        let p = if w[2] == 1 {
            Conv3dParams {
                padding: [0, 1, 2],
                ..p
            }
        } else {
            p
        };
        check(x, w, p, ConvKernel::Blocked, 100 + 3 * i as u64);
        check(x, w, p, ConvKernel::Row, 200 + 3 * i as u64);
        check(x, w, p, ConvKernel::Auto, 300 + 3 * i as u64);
        check(x, w, p, ConvKernel::Generic, 400 + 3 * i as u64);
    }
}

#[test]
fn row_kernel_few_input_channels_with_epilogue() {
    // The first layer's shape (one input channel), and a row longer than 48 lanes.
    check(
        [1, 1, 3, 4, 53],
        [6, 1, 3, 3, 3],
        dense(1, 1),
        ConvKernel::Row,
        500,
    );
    check(
        [1, 1, 3, 4, 53],
        [6, 1, 3, 3, 3],
        dense(1, 1),
        ConvKernel::Auto,
        503,
    );
}

#[test]
fn depthwise_kernel_with_epilogue() {
    let cases = [
        (
            [1, 5, 4, 6, 19],
            [5, 1, 3, 3, 3],
            Conv3dParams::iso(1, 1, 1, 5),
        ),
        (
            [2, 3, 5, 5, 7],
            [3, 1, 5, 5, 5],
            Conv3dParams::iso(1, 2, 1, 3),
        ),
        (
            [1, 2, 7, 8, 21],
            [2, 1, 7, 7, 7],
            Conv3dParams::iso(1, 9, 3, 2),
        ),
    ];
    for (i, (x, w, p)) in cases.into_iter().enumerate() {
        check(x, w, p, ConvKernel::Depthwise, 600 + 3 * i as u64);
        check(x, w, p, ConvKernel::DepthwisePadded, 650 + 3 * i as u64);
        check(x, w, p, ConvKernel::DepthwiseMasked, 680 + 3 * i as u64);
        check(x, w, p, ConvKernel::Auto, 700 + 3 * i as u64);
        check(x, w, p, ConvKernel::Generic, 800 + 3 * i as u64);
    }
}

/// Both depthwise kernels (the zero-padded copy and the masked one) forced on edge geometries: rows of
/// 1, 17, 37, 53 and 70 columns (one to three vectors per chunk, partial last vectors, two chunks), D and H
/// smaller than the kernel, padding 0, padding larger than the kernel's reach, dilations along each axis,
/// anisotropic kernels, 1×1×1, a channel multiplier, 20 channels and two samples; and a case with planes
/// wide enough that the padded kernel splits the depth into two slabs (halo planes copied twice).
#[test]
fn depthwise_padded_and_masked_kernels_edge_geometries() {
    let p = |pad: [usize; 3], d: [usize; 3], g: usize| Conv3dParams {
        stride: [1; 3],
        padding: pad,
        dilation: d,
        groups: g,
    };
    let cases = [
        ([1, 3, 2, 3, 17], [3, 1, 5, 5, 5], p([2; 3], [1; 3], 3)),
        ([2, 20, 5, 6, 37], [20, 1, 3, 3, 3], p([1; 3], [1; 3], 20)),
        ([1, 2, 7, 9, 53], [2, 1, 5, 5, 5], p([0; 3], [1; 3], 2)),
        (
            [1, 2, 6, 8, 70],
            [4, 1, 3, 5, 7],
            p([1, 2, 3], [2, 1, 1], 2),
        ),
        (
            [1, 2, 5, 11, 1],
            [2, 1, 3, 7, 1],
            p([4, 9, 0], [1, 3, 1], 2),
        ),
        ([1, 3, 4, 4, 19], [3, 1, 1, 1, 1], p([0; 3], [1; 3], 3)),
        ([1, 1, 9, 13, 40], [1, 1, 7, 7, 7], p([9; 3], [3; 3], 1)),
        (
            [1, 2, 3, 5, 23],
            [2, 1, 2, 4, 6],
            p([3, 4, 5], [1, 1, 2], 2),
        ),
        ([1, 2, 6, 90, 520], [2, 1, 5, 5, 5], p([2; 3], [1; 3], 2)),
    ];
    for (i, (x, w, p)) in cases.into_iter().enumerate() {
        check(x, w, p, ConvKernel::DepthwisePadded, 1000 + 3 * i as u64);
        check(x, w, p, ConvKernel::DepthwiseMasked, 1100 + 3 * i as u64);
    }
}

/// The fused conv + activation equals the two ops one after the other (same kernels, so nearly bit-equal),
/// and the fused form refuses to differentiate.
#[test]
fn fused_activation_matches_separate_ops() {
    let xv: Vec<f32> = rand_vec(2 * 12 * 6 * 7 * 24, 900)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let wv: Vec<f32> = rand_vec(24 * 12 * 27, 901)
        .into_iter()
        .map(|v| v as f32 * 0.3)
        .collect();
    let x = Tensor::from_vec(xv, (2, 12, 6, 7, 24), &Device::Cpu).unwrap();
    let w = Tensor::from_vec(wv, (24, 12, 3, 3, 3), &Device::Cpu).unwrap();
    let p = dense(1, 1);
    let y = ops::conv3d(&x, &w, None, &p).unwrap();
    for (act, sep) in [
        (ConvAct::LeakyRelu(0.01), ops::leaky_relu(&y, 0.01).unwrap()),
        (ConvAct::Gelu, ops::gelu(&y).unwrap()),
    ] {
        let fused = ops::conv3d_act(&x, &w, None, &p, act).unwrap();
        let d = (fused - &sep)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= 1e-6, "{act:?}: {d}");
    }
    // The fused op records no autograd graph: no gradient reaches a variable input through it.
    let xv = candle_core::Var::from_tensor(&x).unwrap();
    let yf = ops::conv3d_act(xv.as_tensor(), &w, None, &p, ConvAct::Gelu).unwrap();
    let grads = yf.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(xv.as_tensor()).is_none());
    let yp = ops::conv3d(xv.as_tensor(), &w, None, &p).unwrap();
    let grads = yp.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(xv.as_tensor()).is_some());
}

#[test]
fn single_input_channel_kernel_strided() {
    let cases = [
        (
            [1, 1, 13, 14, 17],
            [20, 1, 7, 7, 7],
            Conv3dParams::iso(4, 3, 1, 1),
        ),
        (
            [2, 1, 9, 8, 11],
            [70, 1, 3, 3, 3],
            Conv3dParams::iso(2, 1, 1, 1),
        ),
        (
            [1, 1, 5, 6, 23],
            [6, 1, 3, 2, 5],
            Conv3dParams {
                stride: [1, 2, 3],
                padding: [1, 0, 2],
                dilation: [1, 2, 1],
                groups: 1,
            },
        ),
    ];
    for (i, (x, w, p)) in cases.into_iter().enumerate() {
        check(x, w, p, ConvKernel::Single, 1000 + 3 * i as u64);
        check(x, w, p, ConvKernel::Auto, 1100 + 3 * i as u64);
    }
}
