//! CUDA bodies of the 3D ops' custom-op slots (`cuda_fwd`), compiled with the `cuda` feature.
//!
//! * conv3d forward, input gradient (also the forward pass of `conv_transpose3d`) and weight gradient run
//!   on cuDNN's N-d convolutions (feature `cudnn`): NCDHW tensors, per-axis stride, padding and dilation,
//!   a group count for grouped and depthwise convolutions, f32 and f64. cuDNN's heuristics pick the
//!   algorithm (like PyTorch with `cudnn.benchmark = False`). f32 convolutions use plain FMA arithmetic by
//!   default so that results match the CPU kernels within 1e-4; [`set_allow_tf32`] lets cuDNN use TF32
//!   tensor cores instead (PyTorch's default for convolutions).
//! * The bias of the forward op is added with candle's own broadcast add on the same stream.
//! * Without `cudnn` the functions return an error; [`super::conv3d`] then never reaches them because it
//!   sends CUDA tensors to [`super::reference`] (candle's cuDNN-free conv2d).
//!
//! Norms, activations and upsampling on CUDA tensors go to [`super::reference`] (candle ops, which have
//! CUDA kernels), so they need nothing here.

use super::Conv3dParams;
use candle_core::{CudaStorage, Layout, Shape};
use std::sync::atomic::{AtomicBool, Ordering};

static ALLOW_TF32: AtomicBool = AtomicBool::new(false);

/// Lets cuDNN use TF32 tensor cores for f32 convolutions (faster on Ampere and later, about 1e-3 relative
/// error instead of f32's 1e-7). Off by default. Also switches candle's f32 matmuls to reduced precision.
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(allow);
}

/// Whether f32 convolutions may use TF32 tensor cores (see [`set_allow_tf32`]).
pub fn allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}

/// Whether conv3d has a native CUDA kernel in this build (the `cudnn` feature).
pub const HAS_CUDA_CONV3D: bool = cfg!(feature = "cudnn");

/// The five dimensions of a rank-5 layout.
fn dims5(l: &Layout, what: &str) -> candle_core::Result<[usize; 5]> {
    match *l.dims() {
        [a, b, c, d, e] => Ok([a, b, c, d, e]),
        ref other => candle_core::bail!("{what} must be rank 5, got {other:?}"),
    }
}

/// conv3d forward on CUDA: `x [N, C, D, H, W]`, `w [O, C/g, kD, kH, kW]`, optional `bias [O]`.
pub(crate) fn conv3d_fwd(
    p: &Conv3dParams,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let xd = dims5(x.1, "conv3d input")?;
    let wd = dims5(w.1, "conv3d weight")?;
    let out = p
        .output_size([xd[2], xd[3], xd[4]], [wd[2], wd[3], wd[4]])
        .map_err(candle_core::Error::wrap)?;
    let yd = [xd[0], wd[0], out[0], out[1], out[2]];
    let y = imp::run(imp::Kind::Forward, p, xd, wd, yd, x, w)?;
    let y = match bias {
        Some((b, bl)) => add_bias(&y, yd, b, bl)?,
        None => y,
    };
    Ok((y, Shape::from(yd.to_vec())))
}

/// Input gradient on CUDA: `(dy [N, O, D', H', W'], w) -> dx [x_dims]`.
pub(crate) fn conv3d_input_grad(
    p: &Conv3dParams,
    x_dims: [usize; 5],
    dy: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
) -> candle_core::Result<(CudaStorage, Shape)> {
    let yd = dims5(dy.1, "conv3d output gradient")?;
    let wd = dims5(w.1, "conv3d weight")?;
    let dx = imp::run(imp::Kind::InputGrad, p, x_dims, wd, yd, dy, w)?;
    Ok((dx, Shape::from(x_dims.to_vec())))
}

/// Weight gradient on CUDA: `(x, dy) -> dw [w_dims]`.
pub(crate) fn conv3d_weight_grad(
    p: &Conv3dParams,
    w_dims: [usize; 5],
    x: (&CudaStorage, &Layout),
    dy: (&CudaStorage, &Layout),
) -> candle_core::Result<(CudaStorage, Shape)> {
    let xd = dims5(x.1, "conv3d input")?;
    let yd = dims5(dy.1, "conv3d output gradient")?;
    let dw = imp::run(imp::Kind::WeightGrad, p, xd, w_dims, yd, x, dy)?;
    Ok((dw, Shape::from(w_dims.to_vec())))
}

/// `y [N, O, ...] + bias [O]` broadcast over batch and space, with candle's CUDA binary kernel.
fn add_bias(
    y: &CudaStorage,
    yd: [usize; 5],
    b: &CudaStorage,
    bl: &Layout,
) -> candle_core::Result<CudaStorage> {
    use candle_core::backend::BackendStorage as _;
    if bl.dims() != [yd[1]] {
        candle_core::bail!("conv3d: bias must be [{}], got {:?}", yd[1], bl.dims());
    }
    let yl = Layout::contiguous(yd.as_slice());
    let bl = Layout::new(
        Shape::from(vec![1, yd[1], 1, 1, 1]),
        vec![yd[1], bl.stride()[0], 1, 1, 1],
        bl.start_offset(),
    )
    .broadcast_as(yd.as_slice())?;
    y.binary_impl::<candle_core::op::Add>(b, &yl, &bl)
}

#[cfg(feature = "cudnn")]
mod imp {
    //! cuDNN N-d convolutions through cudarc's safe API.

    use super::super::Conv3dParams;
    use super::allow_tf32;
    use candle_core::backend::BackendStorage as _;
    use candle_core::cuda_backend::cudarc::cudnn::{
        ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnDataType,
        FilterDescriptor, TensorDescriptor, sys,
    };
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
    use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
    use candle_core::{CudaStorage, DType, Layout, WithDType};
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Arc;

    // cuDNN handles are neither Send nor Sync: one per thread and device, as candle does.
    thread_local! {
        static CUDNN: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    }

    fn handle(dev: &CudaDevice) -> candle_core::Result<Arc<Cudnn>> {
        CUDNN.with(|m| {
            if let Some(h) = m.borrow().get(&dev.id()) {
                return Ok(h.clone());
            }
            let h = Cudnn::new(dev.cuda_stream()).map_err(candle_core::Error::wrap)?;
            m.borrow_mut().insert(dev.id(), h.clone());
            Ok(h)
        })
    }

    /// Which of the three convolution problems to solve.
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Kind {
        /// `(x, w) -> y`.
        Forward,
        /// `(dy, w) -> dx`.
        InputGrad,
        /// `(x, dy) -> dw`.
        WeightGrad,
    }

    /// Runs one convolution problem of geometry `x_dims`, `w_dims`, `y_dims` on the two operands `a`, `b`
    /// (their meaning depends on `kind`) and returns the freshly allocated result.
    pub(super) fn run(
        kind: Kind,
        p: &Conv3dParams,
        x_dims: [usize; 5],
        w_dims: [usize; 5],
        y_dims: [usize; 5],
        a: (&CudaStorage, &Layout),
        b: (&CudaStorage, &Layout),
    ) -> candle_core::Result<CudaStorage> {
        let (da, db) = (a.0.dtype(), b.0.dtype());
        if da != db {
            candle_core::bail!("conv3d (cuda): dtype mismatch {da:?} vs {db:?}");
        }
        match da {
            DType::F32 => go::<f32>(kind, p, x_dims, w_dims, y_dims, a, b),
            DType::F64 => go::<f64>(kind, p, x_dims, w_dims, y_dims, a, b),
            dt => candle_core::bail!("conv3d (cuda): only f32 and f64 are supported, got {dt:?}"),
        }
    }

    fn to_i32(v: &[usize]) -> candle_core::Result<Vec<i32>> {
        v.iter()
            .map(|&x| {
                i32::try_from(x).map_err(|_| {
                    candle_core::Error::Msg(format!("conv3d (cuda): size {x} exceeds i32"))
                })
            })
            .collect()
    }

    fn contiguous_strides(d: [usize; 5]) -> [usize; 5] {
        [
            d[1] * d[2] * d[3] * d[4],
            d[2] * d[3] * d[4],
            d[3] * d[4],
            d[4],
            1,
        ]
    }

    fn tensor_desc<T: CudnnDataType>(
        h: &Arc<Cudnn>,
        d: [usize; 5],
    ) -> candle_core::Result<TensorDescriptor<T>> {
        h.create_nd_tensor::<T>(&to_i32(&d)?, &to_i32(&contiguous_strides(d))?)
            .map_err(candle_core::Error::wrap)
    }

    /// The contiguous view of an operand (the ops make their inputs contiguous before applying).
    fn view<'a, T: CudaDType + DeviceRepr>(
        s: &'a CudaStorage,
        l: &Layout,
        what: &str,
    ) -> candle_core::Result<CudaView<'a, T>> {
        let (start, end) = l.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg(format!("conv3d (cuda): {what} must be contiguous"))
        })?;
        Ok(s.as_cuda_slice::<T>()?.slice(start..end))
    }

    struct Descs<T> {
        conv: ConvDescriptor<T>,
        x: TensorDescriptor<T>,
        w: FilterDescriptor<T>,
        y: TensorDescriptor<T>,
    }

    fn descs<T: CudnnDataType>(
        h: &Arc<Cudnn>,
        p: &Conv3dParams,
        x_dims: [usize; 5],
        w_dims: [usize; 5],
        y_dims: [usize; 5],
    ) -> candle_core::Result<Descs<T>> {
        let e = candle_core::Error::wrap;
        let mut conv = h
            .create_convnd::<T>(
                &to_i32(&p.padding)?,
                &to_i32(&p.stride)?,
                &to_i32(&p.dilation)?,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(e)?;
        conv.set_group_count(to_i32(&[p.groups])?[0]).map_err(e)?;
        let math = if T::DATA_TYPE == sys::cudnnDataType_t::CUDNN_DATA_FLOAT && allow_tf32() {
            sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        };
        conv.set_math_type(math).map_err(e)?;
        let wd = to_i32(&w_dims)?;
        let w = h
            .create_5d_filter::<T>(
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                [wd[0], wd[1], wd[2], wd[3], wd[4]],
            )
            .map_err(e)?;
        Ok(Descs {
            conv,
            x: tensor_desc::<T>(h, x_dims)?,
            w,
            y: tensor_desc::<T>(h, y_dims)?,
        })
    }

    fn workspace(dev: &CudaDevice, bytes: usize) -> candle_core::Result<CudaSlice<u8>> {
        // SAFETY: scratch memory that cuDNN writes before it reads.
        unsafe { dev.alloc::<u8>(bytes.max(1)) }
    }

    fn go<T>(
        kind: Kind,
        p: &Conv3dParams,
        x_dims: [usize; 5],
        w_dims: [usize; 5],
        y_dims: [usize; 5],
        a: (&CudaStorage, &Layout),
        b: (&CudaStorage, &Layout),
    ) -> candle_core::Result<CudaStorage>
    where
        T: CudnnDataType + CudaDType + DeviceRepr + WithDType,
    {
        let e = candle_core::Error::wrap;
        let dev = a.0.device.clone();
        let h = handle(&dev)?;
        let d = descs::<T>(&h, p, x_dims, w_dims, y_dims)?;
        let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
        let out_len: usize = match kind {
            Kind::Forward => y_dims.iter().product(),
            Kind::InputGrad => x_dims.iter().product(),
            Kind::WeightGrad => w_dims.iter().product(),
        };
        // SAFETY: cuDNN overwrites every element (beta = 0).
        let mut out = unsafe { dev.alloc::<T>(out_len) }?;
        match kind {
            Kind::Forward => {
                let (x, w) = (
                    view::<T>(a.0, a.1, "input")?,
                    view::<T>(b.0, b.1, "weight")?,
                );
                let op = ConvForward {
                    conv: &d.conv,
                    x: &d.x,
                    w: &d.w,
                    y: &d.y,
                };
                let algo = op.pick_algorithm().map_err(e)?;
                let mut ws = workspace(&dev, op.get_workspace_size(algo).map_err(e)?)?;
                // SAFETY: the descriptors describe exactly these contiguous buffers.
                unsafe { op.launch(algo, Some(&mut ws), (one, zero), &x, &w, &mut out) }
                    .map_err(e)?;
            }
            Kind::InputGrad => {
                let (dy, w) = (
                    view::<T>(a.0, a.1, "output gradient")?,
                    view::<T>(b.0, b.1, "weight")?,
                );
                let op = ConvBackwardData {
                    conv: &d.conv,
                    dx: &d.x,
                    w: &d.w,
                    dy: &d.y,
                };
                let algo = op.pick_algorithm().map_err(e)?;
                let mut ws = workspace(&dev, op.get_workspace_size(algo).map_err(e)?)?;
                // SAFETY: as above.
                unsafe { op.launch(algo, Some(&mut ws), (one, zero), &mut out, &w, &dy) }
                    .map_err(e)?;
            }
            Kind::WeightGrad => {
                let (x, dy) = (
                    view::<T>(a.0, a.1, "input")?,
                    view::<T>(b.0, b.1, "output gradient")?,
                );
                let op = ConvBackwardFilter {
                    conv: &d.conv,
                    x: &d.x,
                    dw: &d.w,
                    dy: &d.y,
                };
                let algo = op.pick_algorithm().map_err(e)?;
                let mut ws = workspace(&dev, op.get_workspace_size(algo).map_err(e)?)?;
                // SAFETY: as above.
                unsafe { op.launch(algo, Some(&mut ws), (one, zero), &x, &mut out, &dy) }
                    .map_err(e)?;
            }
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}

#[cfg(not(feature = "cudnn"))]
mod imp {
    use super::super::Conv3dParams;
    use candle_core::{CudaStorage, Layout};

    #[derive(Clone, Copy, Debug)]
    pub(super) enum Kind {
        Forward,
        InputGrad,
        WeightGrad,
    }

    pub(super) fn run(
        kind: Kind,
        _: &Conv3dParams,
        _: [usize; 5],
        _: [usize; 5],
        _: [usize; 5],
        _: (&CudaStorage, &Layout),
        _: (&CudaStorage, &Layout),
    ) -> candle_core::Result<CudaStorage> {
        candle_core::bail!(
            "conv3d {kind:?} on CUDA needs the `cudnn` feature (this build has `cuda` only)"
        )
    }
}
