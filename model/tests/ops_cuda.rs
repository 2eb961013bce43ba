//! conv3d on CUDA (cuDNN, feature `cudnn`) against the CPU kernels: forward, input gradient and weight gradient
//! over dense, grouped, depthwise, strided, dilated, padded and anisotropic cases, `conv_transpose3d`, and
//! autograd through a CUDA convolution. Compiled only with `--features cudnn`; each test prints a note and
//! returns when no CUDA device is present (build the test binary here with `cargo test --features cudnn
//! --no-run` and run it on a GPU machine).
#![cfg(feature = "cudnn")]

use candle_core::{DType, Device, Tensor, Var};
use logonet::ops::{self, Conv3dParams, ConvTranspose3dParams};

fn cuda() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            println!("no CUDA device, test skipped: {e}");
            None
        }
    }
}

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
fn rand(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("tensor")
}

/// max |a - b| / max(1, max |b|), both moved to the CPU.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let scale = scale.to_scalar::<f64>().unwrap().max(1.0);
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    d.to_scalar::<f64>().unwrap() / scale
}

struct Case {
    x: [usize; 5],
    o: usize,
    k: [usize; 3],
    p: Conv3dParams,
}

fn cases() -> Vec<Case> {
    let p = |s: [usize; 3], pad: [usize; 3], d: [usize; 3], g: usize| Conv3dParams {
        stride: s,
        padding: pad,
        dilation: d,
        groups: g,
    };
    vec![
        // Dense 3^3, as in the decoders.
        Case {
            x: [1, 8, 12, 10, 9],
            o: 6,
            k: [3; 3],
            p: p([1; 3], [1; 3], [1; 3], 1),
        },
        // Batch 2, 1x1x1.
        Case {
            x: [2, 5, 7, 6, 5],
            o: 4,
            k: [1; 3],
            p: p([1; 3], [0; 3], [1; 3], 1),
        },
        // Patch embedding 7^3 stride 4 pad 3.
        Case {
            x: [1, 1, 17, 16, 18],
            o: 8,
            k: [7; 3],
            p: p([4; 3], [3; 3], [1; 3], 1),
        },
        // Stride 2, odd sizes.
        Case {
            x: [1, 4, 9, 11, 7],
            o: 6,
            k: [3; 3],
            p: p([2; 3], [1; 3], [1; 3], 1),
        },
        // Depthwise 5^3 and 7^3 dilation 3 (LKA).
        Case {
            x: [1, 8, 10, 9, 11],
            o: 8,
            k: [5; 3],
            p: p([1; 3], [2; 3], [1; 3], 8),
        },
        Case {
            x: [1, 4, 20, 19, 21],
            o: 4,
            k: [7; 3],
            p: p([1; 3], [9; 3], [3; 3], 4),
        },
        // Grouped, anisotropic kernel, stride, padding and dilation.
        Case {
            x: [2, 6, 11, 9, 13],
            o: 9,
            k: [3, 2, 4],
            p: p([1, 2, 3], [2, 0, 1], [2, 1, 2], 3),
        },
    ]
}

#[test]
fn conv3d_forward_and_gradients_match_cpu() {
    let Some(gpu) = cuda() else { return };
    for (i, c) in cases().iter().enumerate() {
        let cg = c.x[1] / c.p.groups;
        let w_dims = [c.o, cg, c.k[0], c.k[1], c.k[2]];
        let x = rand(&c.x, 10 + i as u64);
        let w = rand(&w_dims, 20 + i as u64);
        let b = rand(&[c.o], 30 + i as u64);
        let y_cpu = ops::conv3d(&x, &w, Some(&b), &c.p).unwrap();
        let (xg, wg, bg) = (
            x.to_device(&gpu).unwrap(),
            w.to_device(&gpu).unwrap(),
            b.to_device(&gpu).unwrap(),
        );
        let y_gpu = ops::conv3d(&xg, &wg, Some(&bg), &c.p).unwrap();
        assert!(y_gpu.device().is_cuda());
        let d = rel_diff(&y_gpu, &y_cpu);
        println!("case {i} {:?} forward rel diff {d:.2e}", c.p);
        assert!(d < 1e-4, "case {i}: forward differs by {d:e}");

        let dy = rand(y_cpu.dims(), 40 + i as u64);
        let (dx_cpu, dw_cpu) = ops::conv3d_backward(&x, &w, &dy, &c.p, true, true).unwrap();
        let dyg = dy.to_device(&gpu).unwrap();
        let (dx_gpu, dw_gpu) = ops::conv3d_backward(&xg, &wg, &dyg, &c.p, true, true).unwrap();
        let (ddx, ddw) = (
            rel_diff(&dx_gpu.unwrap(), &dx_cpu.unwrap()),
            rel_diff(&dw_gpu.unwrap(), &dw_cpu.unwrap()),
        );
        println!("case {i} input-grad rel diff {ddx:.2e}, weight-grad rel diff {ddw:.2e}");
        assert!(ddx < 1e-4 && ddw < 1e-4, "case {i}: gradients differ");
    }
}

#[test]
fn conv3d_f64_matches_cpu() {
    let Some(gpu) = cuda() else { return };
    let p = Conv3dParams::iso(1, 1, 1, 1);
    let x = rand(&[1, 3, 6, 7, 5], 1).to_dtype(DType::F64).unwrap();
    let w = rand(&[4, 3, 3, 3, 3], 2).to_dtype(DType::F64).unwrap();
    let y_cpu = ops::conv3d(&x, &w, None, &p).unwrap();
    let y_gpu = ops::conv3d(
        &x.to_device(&gpu).unwrap(),
        &w.to_device(&gpu).unwrap(),
        None,
        &p,
    )
    .unwrap();
    assert_eq!(y_gpu.dtype(), DType::F64);
    assert!(rel_diff(&y_gpu, &y_cpu) < 1e-12);
}

#[test]
fn autograd_through_cuda_conv3d_matches_cpu() {
    let Some(gpu) = cuda() else { return };
    let p = Conv3dParams::iso(1, 1, 1, 2);
    let (x, w, b) = (
        rand(&[1, 4, 8, 7, 6], 3),
        rand(&[6, 2, 3, 3, 3], 4),
        rand(&[6], 5),
    );
    let grads = |dev: &Device| {
        let (xv, wv, bv) = (
            Var::from_tensor(&x.to_device(dev).unwrap()).unwrap(),
            Var::from_tensor(&w.to_device(dev).unwrap()).unwrap(),
            Var::from_tensor(&b.to_device(dev).unwrap()).unwrap(),
        );
        let y = ops::conv3d(xv.as_tensor(), wv.as_tensor(), Some(bv.as_tensor()), &p).unwrap();
        let loss = y.sqr().unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        [&xv, &wv, &bv].map(|v| g.get(v.as_tensor()).expect("gradient").clone())
    };
    let (gc, gg) = (grads(&Device::Cpu), grads(&gpu));
    for (name, (a, b)) in ["x", "w", "bias"].iter().zip(gg.iter().zip(gc.iter())) {
        let d = rel_diff(a, b);
        println!("d loss / d {name}: rel diff {d:.2e}");
        assert!(d < 1e-4, "gradient of {name} differs by {d:e}");
    }
}

#[test]
fn conv_transpose3d_matches_cpu() {
    let Some(gpu) = cuda() else { return };
    for (k, s) in [(2, 2), (3, 2)] {
        let p = ConvTranspose3dParams::iso(s, 0);
        let (x, w, b) = (
            rand(&[1, 6, 5, 4, 6], 7),
            rand(&[6, 3, k, k, k], 8),
            rand(&[3], 9),
        );
        let y_cpu = ops::conv_transpose3d(&x, &w, Some(&b), &p).unwrap();
        let y_gpu = ops::conv_transpose3d(
            &x.to_device(&gpu).unwrap(),
            &w.to_device(&gpu).unwrap(),
            Some(&b.to_device(&gpu).unwrap()),
            &p,
        )
        .unwrap();
        let d = rel_diff(&y_gpu, &y_cpu);
        println!("conv_transpose3d k{k} s{s}: rel diff {d:.2e}");
        assert!(d < 1e-4);
    }
}
