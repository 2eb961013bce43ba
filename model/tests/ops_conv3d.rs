//! conv3d fast kernels against the naive f64 loop (forward) and finite differences (input, weight and bias
//! gradients), over fixed and random geometries, plus argument validation and conv_transpose3d.

mod lcg_support;
use lcg_support::rand_vec;

use candle_core::{DType, Device, Tensor, Var};
use logonet::ops::{self, Conv3dParams, reference};
use proptest::prelude::*;

fn tensor(v: &[f64], dims: [usize; 5]) -> Tensor {
    Tensor::from_slice(v, &dims, &Device::Cpu).unwrap()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

struct Case {
    x: [usize; 5],
    w: [usize; 5],
    p: Conv3dParams,
    bias: bool,
}

fn check_forward(case: &Case, seed: u64) {
    let xv = rand_vec(case.x.iter().product(), seed);
    let wv = rand_vec(case.w.iter().product(), seed + 1);
    let bv = rand_vec(case.w[0], seed + 2);
    let b = case.bias.then_some(bv.as_slice());
    let (want, dims) = reference::conv3d_naive_f64(&xv, case.x, &wv, case.w, b, &case.p).unwrap();
    let bt = Tensor::from_slice(&bv, case.w[0], &Device::Cpu).unwrap();
    let y = ops::conv3d(
        &tensor(&xv, case.x),
        &tensor(&wv, case.w),
        case.bias.then_some(&bt),
        &case.p,
    )
    .unwrap();
    assert_eq!(y.dims(), dims);
    let got = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let d = max_diff(&got, &want);
    assert!(
        d < 1e-12,
        "f64 forward {:?} {:?} {:?}: max diff {d}",
        case.x,
        case.w,
        case.p
    );
    // f32 path.
    let y32 = ops::conv3d(
        &tensor(&xv, case.x).to_dtype(DType::F32).unwrap(),
        &tensor(&wv, case.w).to_dtype(DType::F32).unwrap(),
        case.bias.then(|| bt.to_dtype(DType::F32).unwrap()).as_ref(),
        &case.p,
    )
    .unwrap();
    let got32: Vec<f64> = reference::to_vec_f32(&y32)
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let scale = (case.w[1] * case.w[2] * case.w[3] * case.w[4]) as f64;
    let d32 = max_diff(&got32, &want);
    assert!(
        d32 < 1e-6 * scale.max(1.0),
        "f32 forward {:?} {:?}: max diff {d32}",
        case.x,
        case.w
    );
}

/// Gradients of `L = Σ y·r` from autograd vs central differences at a few coordinates (f64).
fn check_grads(case: &Case, seed: u64, probes: usize) {
    let xv = rand_vec(case.x.iter().product(), seed);
    let wv = rand_vec(case.w.iter().product(), seed + 1);
    let bv = rand_vec(case.w[0], seed + 2);
    let (y0, ydims) = reference::conv3d_naive_f64(&xv, case.x, &wv, case.w, None, &case.p).unwrap();
    let rv = rand_vec(y0.len(), seed + 3);
    let r = tensor(&rv, ydims);
    let x = Var::from_tensor(&tensor(&xv, case.x)).unwrap();
    let w = Var::from_tensor(&tensor(&wv, case.w)).unwrap();
    let b = Var::from_tensor(&Tensor::from_slice(&bv, case.w[0], &Device::Cpu).unwrap()).unwrap();
    let y = ops::conv3d(
        x.as_tensor(),
        w.as_tensor(),
        case.bias.then_some(b.as_tensor()),
        &case.p,
    )
    .unwrap();
    let loss = (y * &r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let gx = grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let gw = grads
        .get(w.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let loss_at = |xv: &[f64], wv: &[f64]| -> f64 {
        let (y, _) = reference::conv3d_naive_f64(xv, case.x, wv, case.w, None, &case.p).unwrap();
        y.iter().zip(&rv).map(|(a, b)| a * b).sum()
    };
    let h = 1e-4;
    let pick = rand_vec(2 * probes, seed + 4);
    for k in 0..probes {
        let i = ((pick[k] + 1.0) / 2.0 * xv.len() as f64) as usize % xv.len();
        let (mut xp, mut xm) = (xv.clone(), xv.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (loss_at(&xp, &wv) - loss_at(&xm, &wv)) / (2.0 * h);
        assert!(
            (fd - gx[i]).abs() < 1e-7 * (1.0 + fd.abs()),
            "dx[{i}] {:?}: fd {fd} vs {}",
            case.p,
            gx[i]
        );
        let j = ((pick[probes + k] + 1.0) / 2.0 * wv.len() as f64) as usize % wv.len();
        let (mut wp, mut wm) = (wv.clone(), wv.clone());
        wp[j] += h;
        wm[j] -= h;
        let fd = (loss_at(&xv, &wp) - loss_at(&xv, &wm)) / (2.0 * h);
        assert!(
            (fd - gw[j]).abs() < 1e-7 * (1.0 + fd.abs()),
            "dw[{j}] {:?}: fd {fd} vs {}",
            case.p,
            gw[j]
        );
    }
    if case.bias {
        let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        let o = ydims[1];
        let per: usize = ydims[2..].iter().product();
        for (oc, g) in gb.iter().enumerate() {
            let want: f64 = (0..ydims[0])
                .flat_map(|n| rv[(n * o + oc) * per..][..per].iter())
                .sum();
            assert!(
                (want - g).abs() < 1e-9 * (1.0 + want.abs()),
                "db[{oc}]: {want} vs {g}"
            );
        }
    }
}

/// f32 input and weight gradients (the AVX-512 kernels) against the f64 ones (checked against finite
/// differences by [`check_grads`]): max abs diff below `tol · terms`, with `terms` the number of products
/// summed per element.
fn check_grads_f32(case: &Case, seed: u64) {
    let xv = rand_vec(case.x.iter().product(), seed);
    let wv = rand_vec(case.w.iter().product(), seed + 1);
    let (y0, ydims) = reference::conv3d_naive_f64(&xv, case.x, &wv, case.w, None, &case.p).unwrap();
    let dyv = rand_vec(y0.len(), seed + 3);
    let (x, w, dy) = (
        tensor(&xv, case.x),
        tensor(&wv, case.w),
        tensor(&dyv, ydims),
    );
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let (dx64, dw64) = ops::conv3d_backward(&x, &w, &dy, &case.p, true, true).unwrap();
    let (dx32, dw32) =
        ops::conv3d_backward(&f32(&x), &f32(&w), &f32(&dy), &case.p, true, true).unwrap();
    let v64 = |t: Option<Tensor>| t.unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let v32 = |t: Option<Tensor>| -> Vec<f64> {
        reference::to_vec_f32(&t.unwrap())
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let og = case.w[0] / case.p.groups;
    let kt: usize = case.w[2..].iter().product();
    let osp: usize = ydims[2..].iter().product();
    let d = max_diff(&v32(dx32), &v64(dx64));
    assert!(
        d < 2e-6 * (og * kt) as f64,
        "f32 dx {:?} {:?} {:?}: max diff {d}",
        case.x,
        case.w,
        case.p
    );
    let d = max_diff(&v32(dw32), &v64(dw64));
    assert!(
        d < 2e-6 * (case.x[0] * osp) as f64,
        "f32 dw {:?} {:?} {:?}: max diff {d}",
        case.x,
        case.w,
        case.p
    );
}

/// Depthwise geometries that the register-blocked AVX-512 kernels take (stride 1, kH <= 7, kW <= 16): odd
/// sizes, rows wider than one 48-lane chunk (masked tails), several row blocks per dilation class, padding
/// smaller and larger than the kernel's reach, a channel multiplier, and a strided case (fallback path).
#[test]
fn depthwise_kernels_f32_and_f64() {
    let p = |s: [usize; 3], pad: [usize; 3], d: [usize; 3], g: usize| Conv3dParams {
        stride: s,
        padding: pad,
        dilation: d,
        groups: g,
    };
    let cases = [
        (
            [1, 3, 7, 9, 37],
            [3, 1, 5, 5, 5],
            p([1; 3], [2; 3], [1; 3], 3),
        ),
        (
            [2, 2, 9, 23, 53],
            [2, 1, 7, 7, 7],
            p([1; 3], [9; 3], [3; 3], 2),
        ),
        (
            [1, 2, 5, 14, 70],
            [2, 1, 3, 4, 5],
            p([1; 3], [1, 0, 3], [1, 2, 1], 2),
        ),
        (
            [1, 2, 4, 13, 17],
            [4, 1, 2, 6, 16],
            p([1; 3], [1, 3, 8], [1, 1, 1], 2),
        ),
        (
            [1, 1, 3, 8, 5],
            [1, 1, 1, 1, 1],
            p([1; 3], [0; 3], [1; 3], 1),
        ),
        (
            [1, 2, 6, 11, 19],
            [2, 1, 3, 3, 3],
            p([1; 3], [0, 4, 0], [2; 3], 2),
        ),
        (
            [1, 2, 7, 9, 21],
            [2, 1, 5, 5, 5],
            p([2, 1, 2], [2; 3], [1; 3], 2),
        ),
    ];
    for (i, (x, w, p)) in cases.into_iter().enumerate() {
        let case = Case {
            x,
            w,
            p,
            bias: i % 2 == 0,
        };
        check_forward(&case, 300 + i as u64);
        check_grads(&case, 400 + i as u64, 2);
        check_grads_f32(&case, 500 + i as u64);
    }
}

/// Dense geometries that the channel-blocked AVX-512 kernel takes (groups 1, stride 1, >= 8 channels on
/// both sides, so also the input gradient): each of its register shapes (16, 32 and 48 output channels per
/// tile), channel counts that are not multiples of 16, rows shorter and longer than a position block,
/// anisotropic kernels, dilation and padding, bias.
#[test]
fn dense_blocked_kernel_f32_and_f64() {
    let p = |pad: [usize; 3], d: [usize; 3]| Conv3dParams {
        stride: [1; 3],
        padding: pad,
        dilation: d,
        groups: 1,
    };
    let cases = [
        ([1, 9, 5, 6, 29], [10, 9, 3, 3, 3], p([1; 3], [1; 3])),
        (
            [1, 20, 4, 5, 13],
            [33, 20, 3, 2, 3],
            p([1, 2, 0], [1, 2, 1]),
        ),
        ([2, 16, 5, 7, 26], [32, 16, 3, 3, 3], p([2; 3], [2; 3])),
        ([1, 8, 3, 4, 5], [8, 8, 1, 1, 1], p([0; 3], [1; 3])),
        (
            [1, 17, 6, 5, 40],
            [40, 17, 2, 3, 5],
            p([0, 1, 3], [2, 1, 1]),
        ),
    ];
    for (i, (x, w, p)) in cases.into_iter().enumerate() {
        let case = Case {
            x,
            w,
            p,
            bias: i % 2 == 0,
        };
        check_forward(&case, 600 + i as u64);
        check_grads(&case, 700 + i as u64, 2);
        check_grads_f32(&case, 800 + i as u64);
    }
}

/// A volume large enough that the blocked kernel copies the input in several z-slabs (slab boundaries and
/// the halo planes between them).
#[test]
fn dense_blocked_kernel_several_slabs() {
    let case = Case {
        x: [1, 8, 30, 128, 128],
        w: [8, 8, 3, 1, 1],
        p: Conv3dParams::iso(1, 0, 1, 1),
        bias: true,
    };
    let case = Case {
        p: Conv3dParams {
            padding: [1, 0, 0],
            ..case.p
        },
        ..case
    };
    check_forward(&case, 900);
    check_grads_f32(&case, 901);
}

fn cases() -> Vec<Case> {
    let p = |s: [usize; 3], pad: [usize; 3], d: [usize; 3], g: usize| Conv3dParams {
        stride: s,
        padding: pad,
        dilation: d,
        groups: g,
    };
    vec![
        Case {
            x: [1, 3, 5, 6, 7],
            w: [4, 3, 3, 3, 3],
            p: Conv3dParams::iso(1, 1, 1, 1),
            bias: true,
        },
        Case {
            x: [2, 1, 6, 5, 4],
            w: [5, 1, 3, 3, 3],
            p: Conv3dParams::iso(1, 1, 1, 1),
            bias: false,
        },
        Case {
            x: [1, 4, 7, 7, 7],
            w: [4, 1, 5, 5, 5],
            p: Conv3dParams::iso(1, 2, 1, 4),
            bias: true,
        },
        Case {
            x: [1, 2, 9, 10, 11],
            w: [2, 1, 3, 3, 3],
            p: Conv3dParams::iso(1, 3, 3, 2),
            bias: true,
        },
        Case {
            x: [1, 3, 8, 7, 6],
            w: [6, 3, 3, 3, 3],
            p: Conv3dParams::iso(2, 1, 1, 1),
            bias: true,
        },
        Case {
            x: [1, 4, 6, 7, 5],
            w: [6, 2, 3, 2, 1],
            p: p([1, 2, 1], [1, 0, 0], [1, 1, 1], 2),
            bias: true,
        },
        Case {
            x: [1, 2, 7, 8, 9],
            w: [4, 1, 2, 3, 3],
            p: p([2, 1, 3], [0, 1, 2], [2, 1, 2], 2),
            bias: false,
        },
        Case {
            x: [2, 5, 4, 4, 4],
            w: [3, 5, 1, 1, 1],
            p: Conv3dParams::iso(1, 0, 1, 1),
            bias: true,
        },
        Case {
            x: [1, 2, 3, 4, 5],
            w: [2, 2, 1, 1, 1],
            p: Conv3dParams::iso(1, 1, 1, 1),
            bias: false,
        },
        Case {
            x: [1, 3, 6, 6, 6],
            w: [6, 1, 3, 3, 3],
            p: Conv3dParams::iso(1, 1, 1, 3),
            bias: true,
        },
    ]
}

#[test]
fn forward_matches_naive() {
    for (i, c) in cases().iter().enumerate() {
        check_forward(c, 10 + i as u64);
    }
}

#[test]
fn gradients_match_finite_differences() {
    for (i, c) in cases().iter().enumerate() {
        check_grads(c, 100 + i as u64, 6);
        check_grads_f32(c, 200 + i as u64);
    }
}

#[test]
fn large_dense_matches_naive() {
    // Several slabs per (sample, group): exercises slab boundaries of the gemm path.
    let c = Case {
        x: [1, 16, 12, 20, 24],
        w: [8, 16, 3, 3, 3],
        p: Conv3dParams::iso(1, 1, 1, 1),
        bias: true,
    };
    check_forward(&c, 7);
    check_grads(&c, 8, 3);
}

#[test]
fn rejects_bad_arguments() {
    let x = Tensor::zeros((1, 4, 5, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((4, 4, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let bad = |r: logonet::Result<Tensor>| matches!(r, Err(logonet::Error::InvalidArgument { .. }));
    assert!(bad(ops::conv3d(
        &x,
        &w,
        None,
        &Conv3dParams::iso(1, 1, 1, 2)
    )));
    assert!(bad(ops::conv3d(
        &x,
        &w,
        None,
        &Conv3dParams::iso(0, 1, 1, 1)
    )));
    assert!(bad(ops::conv3d(
        &x,
        &w,
        None,
        &Conv3dParams::iso(1, 1, 0, 1)
    )));
    assert!(bad(ops::conv3d(
        &x,
        &w,
        None,
        &Conv3dParams::iso(1, 1, 1, 0)
    )));
    assert!(bad(ops::conv3d(
        &x,
        &w,
        None,
        &Conv3dParams::iso(1, 0, 4, 1)
    )));
    let b = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    assert!(bad(ops::conv3d(&x, &w, Some(&b), &Conv3dParams::default())));
    let x0 = Tensor::zeros((1, 4, 0, 5, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(bad(ops::conv3d(&x0, &w, None, &Conv3dParams::default())));
    let x4 = Tensor::zeros((4, 5, 5, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(bad(ops::conv3d(&x4, &w, None, &Conv3dParams::default())));
    let w64 = w.to_dtype(DType::F64).unwrap();
    assert!(bad(ops::conv3d(&x, &w64, None, &Conv3dParams::default())));
    let xi = x.to_dtype(DType::U32).unwrap();
    assert!(bad(ops::conv3d(&xi, &w, None, &Conv3dParams::default())));
}

/// A case proptest found: a width-1 input with a dilated 3-tap kernel and padding 2, where one tap reads no
/// input column (its valid range is empty); im2col and col2im used to slice from a negative start.
#[test]
fn tap_with_no_valid_column() {
    let i: Vec<usize> = [(3usize, 1usize, 0usize), (1, 1, 1), (3, 2, 2)]
        .iter()
        .map(|&(k, d, p)| (d * (k - 1) + 1).saturating_sub(2 * p).max(1))
        .collect();
    let case = Case {
        x: [1, 1, i[0], i[1], i[2]],
        w: [1, 1, 3, 1, 3],
        p: Conv3dParams {
            stride: [1; 3],
            padding: [0, 1, 2],
            dilation: [1, 1, 2],
            groups: 1,
        },
        bias: false,
    };
    check_forward(&case, 0);
    check_grads(&case, 0, 2);
}

proptest! {
    // Deterministic: a fixed seed, and no regression files written into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0106_04e7),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]
    #[test]
    fn random_geometries(
        n in 1usize..3, cg in 1usize..4, og in 1usize..4, groups in 1usize..4,
        k in prop::array::uniform3(1usize..4), s in prop::array::uniform3(1usize..3),
        d in prop::array::uniform3(1usize..3), pad in prop::array::uniform3(0usize..3),
        extra in prop::array::uniform3(0usize..5), bias: bool, seed in 0u64..1000,
    ) {
        let i: Vec<usize> = (0..3).map(|a| (d[a] * (k[a] - 1) + 1).saturating_sub(2 * pad[a]).max(1) + extra[a]).collect();
        let case = Case {
            x: [n, cg * groups, i[0], i[1], i[2]],
            w: [og * groups, cg, k[0], k[1], k[2]],
            p: Conv3dParams { stride: s, padding: pad, dilation: d, groups },
            bias,
        };
        check_forward(&case, seed);
        check_grads(&case, seed, 2);
        check_grads_f32(&case, seed);
    }
}

/// Gradients are computed only for tensors that take part in autograd: with a plain (non-variable) input,
/// the input gradient is skipped and the weight gradient is unchanged.
#[test]
fn input_gradient_skipped_for_constant_input() {
    let case = Case {
        x: [1, 2, 4, 5, 6],
        w: [3, 2, 3, 3, 3],
        p: Conv3dParams::iso(1, 1, 1, 1),
        bias: false,
    };
    let xv = rand_vec(case.x.iter().product(), 1);
    let wv = rand_vec(case.w.iter().product(), 2);
    let x = tensor(&xv, case.x);
    let wvar = Var::from_tensor(&tensor(&wv, case.w)).unwrap();
    let xvar = Var::from_tensor(&x).unwrap();
    let loss = |x: &Tensor| {
        ops::conv3d(x, wvar.as_tensor(), None, &case.p)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let g_const = loss(&x).backward().unwrap();
    assert!(g_const.get(&x).is_none());
    let g_var = loss(xvar.as_tensor()).backward().unwrap();
    assert!(g_var.get(xvar.as_tensor()).is_some());
    let a = g_const.get(wvar.as_tensor()).unwrap();
    let b = g_var.get(wvar.as_tensor()).unwrap();
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
}
