//! NIfTI-1 reading and writing (`.nii`, `.nii.gz`).
//!
//! The header is parsed by the `nifti` crate (both byte orders); the affine follows nibabel's rule
//! (sform if `sform_code > 0`, else qform if `qform_code > 0`, else the pixdim "base" affine), as the
//! `nifti` crate's `nalgebra_affine` does. The voxel data are decoded here, for every real scalar datatype
//! (u8, i8, u16, i16, u32, i32, u64, i64, f32, f64) in either byte order, with `scl_slope`/`scl_inter`
//! applied as nibabel does (a slope of 0 or non-finite means "no scaling"). NIfTI stores voxels in Fortran
//! order (i fastest); volumes here are C order over (i, j, k), so the reader and writer transpose.
//!
//! Every problem with a file is an [`Error::Format`] naming the problem and, last, the path: truncated or
//! corrupt gzip, wrong magic, NIfTI-2 or a `.hdr`/`.img` pair, dims that do not match the file size, absurd
//! dims (allocation is capped by [`ReadOptions::max_voxels`]), zero/negative/NaN spacing, a singular or
//! non-finite affine, unsupported datatypes. Non-finite voxels are counted ([`NiftiImage::nonfinite_voxels`]).
//! Writes are atomic (temporary file + rename).

// Numeric code indexes several parallel arrays by axis; range loops read clearest here.
#![allow(clippy::needless_range_loop)]

use super::{Affine, Volume};
use crate::error::write_atomic;
use crate::{Error, Result};
use nifti::Endianness;
pub use nifti::{NiftiHeader, NiftiType};
use std::io::Read as _;
use std::path::Path;

/// Default cap on the voxels of one frame (2^30 ≈ 1.07 G voxels, 4 GiB as f32).
pub const DEFAULT_MAX_VOXELS: usize = 1 << 30;

/// The largest expansion a deflate stream can achieve (1032:1), rounded up.
const MAX_DEFLATE_RATIO: u128 = 1040;

/// Options for reading.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// Which frame of a 4-D (or higher) file to read (0-based; 3-D files have one frame).
    pub frame: usize,
    /// Refuse files whose frame has more voxels than this (protects against absurd dims).
    pub max_voxels: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            frame: 0,
            max_voxels: DEFAULT_MAX_VOXELS,
        }
    }
}

/// What the header says about a file.
#[derive(Clone, Debug)]
pub struct NiftiInfo {
    /// The parsed header (byte order already resolved), kept to write outputs with the same metadata.
    pub header: NiftiHeader,
    /// Spatial dims (i, j, k); missing trailing dims are 1.
    pub dims: [usize; 3],
    /// Number of frames (product of dims 4..7; 1 for 3-D files).
    pub frames: usize,
    /// The on-disk voxel type.
    pub datatype: NiftiType,
    /// nibabel's affine (sform > qform > pixdim).
    pub ras_from_ijk: Affine,
    /// Whether the file is big-endian.
    pub big_endian: bool,
}

/// A volume read from a NIfTI file, with its header.
#[derive(Clone, Debug)]
pub struct NiftiImage<T> {
    /// The voxels (C order over i, j, k) and the affine.
    pub volume: Volume<T>,
    /// The header and file facts.
    pub info: NiftiInfo,
    /// How many voxels are NaN or infinite (kept as they are in the image).
    pub nonfinite_voxels: usize,
}

/// How to write.
#[derive(Clone, Debug)]
pub struct WriteOptions<'a> {
    /// A header to take the metadata from (description, intent, units, xform codes); dims, datatype, scaling
    /// and the affine are always set from the volume.
    pub reference: Option<&'a NiftiHeader>,
    /// On-disk type; `None` = float32 for images, uint8 (or uint16 when a label exceeds 255) for label maps.
    pub datatype: Option<NiftiType>,
    /// gzip level 0..=9 when the path ends in `.gz` (nibabel uses 1).
    pub compression_level: u32,
}

impl Default for WriteOptions<'_> {
    fn default() -> Self {
        Self {
            reference: None,
            datatype: None,
            compression_level: 1,
        }
    }
}

fn fmt_err(msg: impl Into<String>, path: &Path) -> Error {
    Error::format(msg, path)
}

fn is_gz(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Reads the first `n` bytes of the decompressed stream (or the raw bytes).
fn decompressed_prefix(bytes: &[u8], n: usize, path: &Path) -> Result<Vec<u8>> {
    if !is_gz(bytes) {
        return Ok(bytes[..n.min(bytes.len())].to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(n as u64)
        .read_to_end(&mut out)
        .map_err(|e| fmt_err(format!("corrupt gzip stream ({e})"), path))?;
    Ok(out)
}

/// Parses and validates a NIfTI-1 header from the start of a file's (decompressed) bytes.
fn parse_header(head: &[u8], path: &Path) -> Result<NiftiInfo> {
    if head.len() < 348 {
        return Err(fmt_err(
            format!("truncated header ({} of 348 bytes)", head.len()),
            path,
        ));
    }
    let le = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let be = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if le == 540 || be == 540 {
        return Err(fmt_err(
            "NIfTI-2 files are not supported (convert to NIfTI-1)",
            path,
        ));
    }
    if le != 348 && be != 348 {
        return Err(fmt_err("not a NIfTI-1 file (sizeof_hdr is not 348)", path));
    }
    let mut header = NiftiHeader::from_reader(&head[..348]).map_err(|e| match e {
        nifti::NiftiError::InvalidFormat => fmt_err("not a NIfTI-1 file (wrong magic)", path),
        e => fmt_err(format!("invalid NIfTI header ({e})"), path),
    })?;
    if &header.magic == b"ni1\0" {
        return Err(fmt_err(
            "a .hdr/.img pair is not supported (convert to a single .nii file)",
            path,
        ));
    }
    let ndim = header.dim[0] as usize;
    if !(1..=7).contains(&ndim) {
        return Err(fmt_err(
            format!("invalid dim[0] = {}", header.dim[0] as i16),
            path,
        ));
    }
    let mut all = [1usize; 7];
    for a in 0..ndim {
        let d = header.dim[a + 1] as i16;
        if d < 1 {
            return Err(fmt_err(format!("invalid dim[{}] = {d}", a + 1), path));
        }
        all[a] = d as usize;
    }
    let dims = [all[0], all[1], all[2]];
    let frames = all[3..].iter().product::<usize>();
    let datatype = NiftiType::from_u16_checked(header.datatype)
        .ok_or_else(|| fmt_err(format!("unknown datatype code {}", header.datatype), path))?;
    match datatype {
        NiftiType::Uint8
        | NiftiType::Int8
        | NiftiType::Uint16
        | NiftiType::Int16
        | NiftiType::Uint32
        | NiftiType::Int32
        | NiftiType::Uint64
        | NiftiType::Int64
        | NiftiType::Float32
        | NiftiType::Float64 => {}
        t => {
            return Err(fmt_err(
                format!("unsupported datatype {t:?} (only real scalar voxels)"),
                path,
            ));
        }
    }
    // Spacing along the three spatial axes must be usable.
    for a in 0..3 {
        let p = header.pixdim[a + 1];
        if !p.is_finite() || (a < ndim && p == 0.0 && header.sform_code <= 0) {
            return Err(fmt_err(
                format!("invalid voxel spacing pixdim[{}] = {p}", a + 1),
                path,
            ));
        }
    }
    // nibabel fixes these on load: qfac must be ±1, pixdims are taken as absolute values.
    header.fix();
    for a in 1..4 {
        header.pixdim[a] = header.pixdim[a].abs();
    }
    let m = if header.sform_code > 0 {
        header.sform_affine::<f64>()
    } else if header.qform_code > 0 {
        let q = [
            header.quatern_b,
            header.quatern_c,
            header.quatern_d,
            header.quatern_x,
            header.quatern_y,
            header.quatern_z,
        ];
        if q.iter().any(|v| !v.is_finite()) {
            return Err(fmt_err("non-finite qform parameters", path));
        }
        let (b, c, d) = (q[0] as f64, q[1] as f64, q[2] as f64);
        // The nifti crate panics below −3·f32::EPSILON (nibabel raises); refuse earlier.
        if 1.0 - (b * b + c * c + d * d) < -(f32::EPSILON as f64) {
            return Err(fmt_err(
                format!("invalid qform quaternion ({b}, {c}, {d})"),
                path,
            ));
        }
        header.qform_affine::<f64>()
    } else {
        // nibabel's base affine uses all dims the header declares; only the spatial part matters here.
        let mut h = header.clone();
        h.dim[0] = h.dim[0].min(3);
        h.affine::<f64>()
    };
    let mut aff = Affine::identity();
    for r in 0..4 {
        for c in 0..4 {
            aff.0[r][c] = m[(r, c)];
        }
    }
    if !aff.is_valid() {
        return Err(fmt_err(
            format!("the affine is singular or not finite ({:?})", aff.0),
            path,
        ));
    }
    let big_endian = header.endianness == Endianness::Big;
    Ok(NiftiInfo {
        header,
        dims,
        frames,
        datatype,
        ras_from_ijk: aff,
        big_endian,
    })
}

trait FromCode: Sized {
    fn from_u16_checked(code: i16) -> Option<Self>;
}

impl FromCode for NiftiType {
    fn from_u16_checked(code: i16) -> Option<Self> {
        use NiftiType::*;
        Some(match code {
            2 => Uint8,
            4 => Int16,
            8 => Int32,
            16 => Float32,
            32 => Complex64,
            64 => Float64,
            128 => Rgb24,
            256 => Int8,
            512 => Uint16,
            768 => Uint32,
            1024 => Int64,
            1280 => Uint64,
            1536 => Float128,
            1792 => Complex128,
            2048 => Complex256,
            2304 => Rgba32,
            _ => return None,
        })
    }
}

/// Reads only the header of a `.nii`/`.nii.gz` file.
pub fn read_info(path: &Path) -> Result<NiftiInfo> {
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::io("cannot open NIfTI file", e, path))?;
    let mut start = Vec::new();
    // 348 bytes of header compress to far less than 64 KiB.
    (&mut f)
        .take(1 << 16)
        .read_to_end(&mut start)
        .map_err(|e| Error::io("cannot read NIfTI file", e, path))?;
    let head = if is_gz(&start) {
        let mut out = Vec::new();
        let mut dec =
            flate2::read::MultiGzDecoder::new(std::io::Read::chain(&start[..], f)).take(348);
        dec.read_to_end(&mut out)
            .map_err(|e| fmt_err(format!("corrupt gzip stream ({e})"), path))?;
        out
    } else {
        start
    };
    parse_header(&head, path)
}

/// Decoded voxels of one frame in file (Fortran) order, as f64 after scaling.
struct Raw {
    info: NiftiInfo,
    /// Voxel values, Fortran order, scaled.
    values: Vec<f64>,
}

fn decode(bytes: &[u8], path: &Path, opts: &ReadOptions) -> Result<Raw> {
    let head = decompressed_prefix(bytes, 348, path)?;
    let info = parse_header(&head, path)?;
    let [ni, nj, nk] = info.dims;
    let nvox = ni
        .checked_mul(nj)
        .and_then(|v| v.checked_mul(nk))
        .filter(|&n| n <= opts.max_voxels)
        .ok_or_else(|| {
            fmt_err(
                format!(
                    "dims {:?} exceed the limit of {} voxels per volume",
                    info.dims, opts.max_voxels
                ),
                path,
            )
        })?;
    if opts.frame >= info.frames {
        return Err(fmt_err(
            format!(
                "frame {} requested but the file has {} frame(s)",
                opts.frame, info.frames
            ),
            path,
        ));
    }
    let bpv = info.datatype.size_of();
    let vox_offset = info.header.vox_offset;
    if !vox_offset.is_finite() || !(0.0..=1e9).contains(&vox_offset) {
        return Err(fmt_err(format!("invalid vox_offset {vox_offset}"), path));
    }
    let offset = (vox_offset as usize).max(352);
    let frame_bytes = nvox
        .checked_mul(bpv)
        .ok_or_else(|| fmt_err(format!("dims {:?} overflow", info.dims), path))?;
    let too_big = || {
        fmt_err(
            format!(
                "dims {:?} × frame {} overflow the addressable size",
                info.dims, opts.frame
            ),
            path,
        )
    };
    let start = opts
        .frame
        .checked_mul(frame_bytes)
        .and_then(|v| v.checked_add(offset))
        .ok_or_else(too_big)?;
    let end = start.checked_add(frame_bytes).ok_or_else(too_big)?;
    let total_needed = offset as u128 + (nvox as u128) * (info.frames as u128) * (bpv as u128);
    let data: std::borrow::Cow<[u8]> = if is_gz(bytes) {
        // Deflate expands at most ~1032:1: a header asking for more than that is truncated (or absurd), which
        // is known before allocating or inflating anything.
        if end as u128 > (bytes.len() as u128) * MAX_DEFLATE_RATIO {
            return Err(fmt_err(
                format!(
                    "truncated file: {} compressed bytes cannot hold dims {:?} × {} frame(s) of {:?} ({end} bytes)",
                    bytes.len(),
                    info.dims,
                    info.frames,
                    info.datatype
                ),
                path,
            ));
        }
        let mut dec = flate2::read::MultiGzDecoder::new(bytes);
        let mut skip = std::io::sink();
        let skipped = std::io::copy(&mut (&mut dec).take(start as u64), &mut skip)
            .map_err(|e| fmt_err(format!("corrupt gzip stream ({e})"), path))?;
        if skipped < start as u64 {
            return Err(fmt_err(
                format!("truncated file: {skipped} bytes, the header needs {end}"),
                path,
            ));
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(frame_bytes).map_err(|_| {
            fmt_err(
                format!(
                    "cannot allocate {frame_bytes} bytes for dims {:?}",
                    info.dims
                ),
                path,
            )
        })?;
        dec.take(frame_bytes as u64)
            .read_to_end(&mut buf)
            .map_err(|e| fmt_err(format!("corrupt gzip stream ({e})"), path))?;
        if buf.len() < frame_bytes {
            return Err(fmt_err(
                format!(
                    "truncated file: {} bytes of voxel data, dims {:?} × {} frame(s) need {}",
                    start - offset + buf.len(),
                    info.dims,
                    info.frames,
                    total_needed - offset as u128
                ),
                path,
            ));
        }
        std::borrow::Cow::Owned(buf)
    } else {
        if (bytes.len() as u128) < total_needed {
            return Err(fmt_err(
                format!(
                    "truncated file: {} bytes, dims {:?} × {} frame(s) of {:?} need {total_needed}",
                    bytes.len(),
                    info.dims,
                    info.frames,
                    info.datatype
                ),
                path,
            ));
        }
        std::borrow::Cow::Borrowed(&bytes[start..end])
    };
    let values = decode_values(&data, info.datatype, info.big_endian, nvox)?;
    let (slope, inter) = (info.header.scl_slope as f64, info.header.scl_inter as f64);
    let mut values = values;
    if slope.is_finite() && slope != 0.0 && !(slope == 1.0 && inter == 0.0) {
        if !inter.is_finite() {
            return Err(fmt_err(format!("invalid scl_inter {inter}"), path));
        }
        for v in &mut values {
            *v = *v * slope + inter;
        }
    }
    Ok(Raw { info, values })
}

fn decode_values(data: &[u8], t: NiftiType, big: bool, n: usize) -> Result<Vec<f64>> {
    macro_rules! conv {
        ($ty:ty, $sz:expr) => {{
            data.chunks_exact($sz)
                .take(n)
                .map(|c| {
                    let arr: [u8; $sz] = c.try_into().unwrap_or([0; $sz]);
                    (if big {
                        <$ty>::from_be_bytes(arr)
                    } else {
                        <$ty>::from_le_bytes(arr)
                    }) as f64
                })
                .collect::<Vec<f64>>()
        }};
    }
    Ok(match t {
        NiftiType::Uint8 => data.iter().take(n).map(|&b| b as f64).collect(),
        NiftiType::Int8 => data.iter().take(n).map(|&b| b as i8 as f64).collect(),
        NiftiType::Uint16 => conv!(u16, 2),
        NiftiType::Int16 => conv!(i16, 2),
        NiftiType::Uint32 => conv!(u32, 4),
        NiftiType::Int32 => conv!(i32, 4),
        NiftiType::Uint64 => conv!(u64, 8),
        NiftiType::Int64 => conv!(i64, 8),
        NiftiType::Float32 => conv!(f32, 4),
        NiftiType::Float64 => conv!(f64, 8),
        t => {
            return Err(Error::invalid(
                "nifti::decode",
                format!("unsupported datatype {t:?}"),
            ));
        }
    })
}

/// Fortran order (i fastest) to C order (k fastest), blocked for cache friendliness.
pub(crate) fn fortran_to_c<S: Copy + Send + Sync, T: Copy + Default + Send>(
    src: &[S],
    dims: [usize; 3],
    f: impl Fn(S) -> T + Sync,
) -> Vec<T> {
    use rayon::prelude::*;
    let [ni, nj, nk] = dims;
    let mut out = vec![T::default(); ni * nj * nk];
    const B: usize = 32;
    if out.is_empty() {
        return out;
    }
    // Parallel over blocks of i (each block of i owns a contiguous range of the output).
    out.par_chunks_mut(B * nj * nk)
        .enumerate()
        .for_each(|(bi, chunk)| {
            let i0 = bi * B;
            let i1 = (i0 + B).min(ni);
            for j in 0..nj {
                for k0 in (0..nk).step_by(B) {
                    let k1 = (k0 + B).min(nk);
                    for k in k0..k1 {
                        let base = (k * nj + j) * ni;
                        for i in i0..i1 {
                            chunk[((i - i0) * nj + j) * nk + k] = f(src[base + i]);
                        }
                    }
                }
            }
        });
    out
}

/// C order (k fastest) to Fortran order (i fastest).
pub(crate) fn c_to_fortran<T: Copy + Default + Send + Sync>(src: &[T], dims: [usize; 3]) -> Vec<T> {
    use rayon::prelude::*;
    let [ni, nj, nk] = dims;
    let mut out = vec![T::default(); ni * nj * nk];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(ni * nj)
        .enumerate()
        .for_each(|(k, plane)| {
            for j in 0..nj {
                for i in 0..ni {
                    plane[j * ni + i] = src[(i * nj + j) * nk + k];
                }
            }
        });
    out
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("cannot read NIfTI file", e, path))
}

/// Decodes an image from the bytes of a `.nii` or `.nii.gz` file (`path` only names it in errors).
pub fn decode_image(bytes: &[u8], path: &Path, opts: &ReadOptions) -> Result<NiftiImage<f32>> {
    let raw = decode(bytes, path, opts)?;
    let dims = raw.info.dims;
    let data = fortran_to_c(&raw.values, dims, |v| v as f32);
    let nonfinite_voxels = data.iter().filter(|v| !v.is_finite()).count();
    let volume = Volume::new(data, dims, raw.info.ras_from_ijk)?;
    Ok(NiftiImage {
        volume,
        info: raw.info,
        nonfinite_voxels,
    })
}

/// Decodes a label map: every voxel must be a non-negative integer ≤ 65535 (within 1e-3 after scaling).
pub fn decode_labels(bytes: &[u8], path: &Path, opts: &ReadOptions) -> Result<NiftiImage<u16>> {
    let raw = decode(bytes, path, opts)?;
    let dims = raw.info.dims;
    if let Some((idx, v)) = raw.values.iter().enumerate().find(|(_, v)| {
        let r = v.round();
        !(v.is_finite() && (0.0..=65535.0).contains(&r) && (*v - r).abs() <= 1e-3)
    }) {
        let (i, j, k) = (
            idx % dims[0],
            (idx / dims[0]) % dims[1],
            idx / (dims[0] * dims[1]),
        );
        return Err(fmt_err(
            format!("not a label map: value {v} at voxel ({i}, {j}, {k})"),
            path,
        ));
    }
    let data = fortran_to_c(&raw.values, dims, |v| v.round() as u16);
    let volume = Volume::new(data, dims, raw.info.ras_from_ijk)?;
    Ok(NiftiImage {
        volume,
        info: raw.info,
        nonfinite_voxels: 0,
    })
}

/// Reads an image (any datatype, scaled to f32) from a `.nii`/`.nii.gz` file.
pub fn read_image(path: &Path, opts: &ReadOptions) -> Result<NiftiImage<f32>> {
    decode_image(&read_bytes(path)?, path, opts)
}

/// Reads a label map from a `.nii`/`.nii.gz` file.
pub fn read_labels(path: &Path, opts: &ReadOptions) -> Result<NiftiImage<u16>> {
    decode_labels(&read_bytes(path)?, path, opts)
}

fn is_gz_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Serialises a header (little-endian, 348 bytes) followed by the 4-byte empty extension block.
fn header_bytes(h: &NiftiHeader) -> Vec<u8> {
    let mut w = Vec::with_capacity(352);
    let i32b = |w: &mut Vec<u8>, v: i32| w.extend_from_slice(&v.to_le_bytes());
    let i16b = |w: &mut Vec<u8>, v: i16| w.extend_from_slice(&v.to_le_bytes());
    let f32b = |w: &mut Vec<u8>, v: f32| w.extend_from_slice(&v.to_le_bytes());
    i32b(&mut w, 348);
    w.extend_from_slice(&h.data_type);
    w.extend_from_slice(&h.db_name);
    i32b(&mut w, h.extents);
    i16b(&mut w, h.session_error);
    w.push(h.regular);
    w.push(h.dim_info);
    for d in h.dim {
        w.extend_from_slice(&d.to_le_bytes());
    }
    f32b(&mut w, h.intent_p1);
    f32b(&mut w, h.intent_p2);
    f32b(&mut w, h.intent_p3);
    i16b(&mut w, h.intent_code);
    i16b(&mut w, h.datatype);
    i16b(&mut w, h.bitpix);
    i16b(&mut w, h.slice_start);
    for p in h.pixdim {
        f32b(&mut w, p);
    }
    f32b(&mut w, h.vox_offset);
    f32b(&mut w, h.scl_slope);
    f32b(&mut w, h.scl_inter);
    i16b(&mut w, h.slice_end);
    w.push(h.slice_code);
    w.push(h.xyzt_units);
    f32b(&mut w, h.cal_max);
    f32b(&mut w, h.cal_min);
    f32b(&mut w, h.slice_duration);
    f32b(&mut w, h.toffset);
    i32b(&mut w, h.glmax);
    i32b(&mut w, h.glmin);
    let mut descrip = h.descrip.clone();
    descrip.resize(80, 0);
    w.extend_from_slice(&descrip);
    w.extend_from_slice(&h.aux_file);
    i16b(&mut w, h.qform_code);
    i16b(&mut w, h.sform_code);
    for q in [
        h.quatern_b,
        h.quatern_c,
        h.quatern_d,
        h.quatern_x,
        h.quatern_y,
        h.quatern_z,
    ] {
        f32b(&mut w, q);
    }
    for v in h.srow_x.iter().chain(&h.srow_y).chain(&h.srow_z) {
        f32b(&mut w, *v);
    }
    w.extend_from_slice(&h.intent_name);
    w.extend_from_slice(b"n+1\0");
    debug_assert_eq!(w.len(), 348);
    w.extend_from_slice(&[0, 0, 0, 0]);
    w
}

/// The header for writing `dims` voxels of `datatype` with geometry `affine`.
fn make_header(
    dims: [usize; 3],
    affine: &Affine,
    datatype: NiftiType,
    reference: Option<&NiftiHeader>,
) -> Result<NiftiHeader> {
    if !affine.is_valid() {
        return Err(Error::invalid(
            "nifti::write",
            format!("the affine is singular or not finite: {:?}", affine.0),
        ));
    }
    if dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(Error::invalid(
            "nifti::write",
            format!("dims {dims:?} cannot be stored in NIfTI-1 (1..=32767)"),
        ));
    }
    let mut h = reference.cloned().unwrap_or_default();
    if reference.is_none() {
        h.descrip = b"LoGoNet Studio".to_vec();
        h.xyzt_units = 2; // mm
        // New files: sform and qform both "aligned" (2), as nibabel's sform.
        h.sform_code = 0;
        h.qform_code = 0;
    } else {
        h.xyzt_units = (h.xyzt_units & !0x07) | 2;
    }
    h.descrip.resize(80, 0);
    h.sizeof_hdr = 348;
    h.dim = [
        3,
        dims[0] as u16,
        dims[1] as u16,
        dims[2] as u16,
        1,
        1,
        1,
        1,
    ];
    h.datatype = datatype as i16;
    h.bitpix = (datatype.size_of() * 8) as i16;
    h.vox_offset = 352.0;
    h.scl_slope = 1.0;
    h.scl_inter = 0.0;
    h.cal_min = 0.0;
    h.cal_max = 0.0;
    h.magic = *b"n+1\0";
    h.endianness = Endianness::Little;
    let m = nalgebra::Matrix4::<f64>::from_fn(|r, c| affine.0[r][c]);
    let code = |c: i16| if c > 0 { c } else { 2 };
    let (scode, qcode) = (
        code(h.sform_code),
        code(if h.qform_code > 0 {
            h.qform_code
        } else {
            h.sform_code
        }),
    );
    h.set_sform(&m, nifti::XForm::AlignedAnat);
    h.set_qform(&m, nifti::XForm::AlignedAnat);
    h.sform_code = scode;
    h.qform_code = qcode;
    for p in &mut h.pixdim[4..] {
        *p = 1.0;
    }
    Ok(h)
}

fn encode(h: &NiftiHeader, data: Vec<u8>, gz: bool, level: u32) -> Result<Vec<u8>> {
    let mut bytes = header_bytes(h);
    bytes.extend_from_slice(&data);
    if !gz {
        return Ok(bytes);
    }
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::new(level.min(9)),
    );
    enc.write_all(&bytes)
        .map_err(|e| Error::invalid("nifti::write", format!("gzip failed: {e}")))?;
    enc.finish()
        .map_err(|e| Error::invalid("nifti::write", format!("gzip failed: {e}")))
}

/// Encodes an image as NIfTI-1 bytes (gzip-compressed when `gz`).
pub fn encode_image(vol: &Volume<f32>, opts: &WriteOptions, gz: bool) -> Result<Vec<u8>> {
    let t = opts.datatype.unwrap_or(NiftiType::Float32);
    let h = make_header(vol.dims, &vol.ras_from_ijk, t, opts.reference)?;
    let f = c_to_fortran(&vol.data, vol.dims);
    let data = encode_values(&f, t)?;
    encode(&h, data, gz, opts.compression_level)
}

/// Encodes a label map as NIfTI-1 bytes (uint8 when every label fits, else uint16, unless a type is given).
pub fn encode_labels(vol: &Volume<u16>, opts: &WriteOptions, gz: bool) -> Result<Vec<u8>> {
    let max = vol.data.iter().copied().max().unwrap_or(0);
    let t = opts.datatype.unwrap_or(if max <= 255 {
        NiftiType::Uint8
    } else {
        NiftiType::Uint16
    });
    let h = make_header(vol.dims, &vol.ras_from_ijk, t, opts.reference)?;
    let f: Vec<f32> = c_to_fortran(&vol.data, vol.dims)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let data = encode_values(&f, t)?;
    encode(&h, data, gz, opts.compression_level)
}

fn encode_values(f: &[f32], t: NiftiType) -> Result<Vec<u8>> {
    macro_rules! ints {
        ($ty:ty) => {
            f.iter()
                .flat_map(|&v| {
                    (v.round().clamp(<$ty>::MIN as f32, <$ty>::MAX as f32) as $ty).to_le_bytes()
                })
                .collect()
        };
    }
    Ok(match t {
        NiftiType::Uint8 => ints!(u8),
        NiftiType::Int8 => ints!(i8),
        NiftiType::Uint16 => ints!(u16),
        NiftiType::Int16 => ints!(i16),
        NiftiType::Int32 => ints!(i32),
        NiftiType::Uint32 => ints!(u32),
        NiftiType::Float32 => f.iter().flat_map(|v| v.to_le_bytes()).collect(),
        NiftiType::Float64 => f.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
        t => {
            return Err(Error::invalid(
                "nifti::write",
                format!("cannot write datatype {t:?}"),
            ));
        }
    })
}

/// Writes an image atomically; `.gz` paths are gzip-compressed.
pub fn write_image(path: &Path, vol: &Volume<f32>, opts: &WriteOptions) -> Result<()> {
    write_atomic(path, &encode_image(vol, opts, is_gz_path(path))?)
}

/// Writes a label map atomically (uint8/uint16); `.gz` paths are gzip-compressed.
pub fn write_labels(path: &Path, vol: &Volume<u16>, opts: &WriteOptions) -> Result<()> {
    write_atomic(path, &encode_labels(vol, opts, is_gz_path(path))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_round_trip() {
        let dims = [5, 3, 4];
        let c: Vec<f32> = (0..60).map(|v| v as f32).collect();
        let f = c_to_fortran(&c, dims);
        // voxel (1, 2, 3): C index (1*3+2)*4+3 = 23; F index 1 + 5*(2 + 3*3) = 56
        assert_eq!(f[56], 23.0);
        assert_eq!(fortran_to_c(&f, dims, |v| v), c);
    }
}
