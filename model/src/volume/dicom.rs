//! DICOM in: series discovery, slice assembly with exact geometry, enhanced multi-frame CT/MR and DICOM SEG.
//!
//! * [`scan_series`] walks a folder (or takes one file), reads only headers and groups image files into series
//!   without trusting UIDs alone (blank UIDs are common after anonymisation): the grouping key combines
//!   SeriesInstanceUID, StudyInstanceUID, FrameOfReferenceUID, modality, series number and description,
//!   image orientation and matrix size. DICOM SEG objects are reported as their own entries.
//! * [`load_series`] decodes the files (in parallel), sorts slices by ImagePositionPatient projected on the slice
//!   normal (row × column direction cosines) — never by file name or InstanceNumber — takes the slice step from the
//!   positions, applies the modality LUT (rescale slope/intercept) and builds `ras_from_ijk` with i = column index,
//!   j = row index, k = slice index along the normal, exactly as dcm2niix / nibabel write it.
//! * [`load_seg`] places the 1-bit (or fractional) frames of a DICOM SEG on the grid of a loaded image: segment
//!   numbers become label values and segment labels the names of a [`LabelTable`].
//!
//! The geometry math ([`stack_geometry`]) is separate from file access so that it is tested on synthetic slices.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ::dicom::core::Tag;
use ::dicom::encoding::transfer_syntax::TransferSyntaxIndex;
use ::dicom::transfer_syntax::TransferSyntaxRegistry;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use rayon::prelude::*;

use super::labels::{LabelInfo, LabelTable, default_color};
use super::{Affine, ImageVolume, LabelVolume, Volume};
use crate::job::{CancelToken, NoProgress, Progress, ProgressEvent};
use crate::{Error, Result};

/// SOP Class UID of Segmentation Storage.
const SEG_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// Relative tolerance on slice gaps before a spacing is called irregular (1 %).
const SPACING_TOLERANCE: f64 = 0.01;

/// What kind of object a [`SeriesInfo`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKind {
    /// Classic single-frame images, one slice per file.
    Image,
    /// One enhanced multi-frame file (per-frame functional groups give each frame's position).
    MultiFrame,
    /// A DICOM Segmentation object: load it with [`load_seg`] on top of its source image.
    Segmentation,
}

/// One series found by [`scan_series`].
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesInfo {
    /// The grouping key (all the header fields that must agree within a series).
    pub key: String,
    /// SeriesInstanceUID (may be empty).
    pub series_uid: String,
    /// StudyInstanceUID (may be empty).
    pub study_uid: String,
    /// FrameOfReferenceUID (may be empty).
    pub frame_of_reference_uid: String,
    /// SeriesDescription.
    pub description: String,
    /// Modality ("CT", "MR", "SEG", ...).
    pub modality: String,
    /// SeriesNumber, when present.
    pub series_number: Option<i64>,
    /// Classic images, enhanced multi-frame or segmentation.
    pub kind: SeriesKind,
    /// Names of the transfer syntaxes of the files (usually one).
    pub transfer_syntaxes: Vec<String>,
    /// The files, sorted by path (slice order is decided from positions at load time).
    pub files: Vec<PathBuf>,
    /// Rows of each frame.
    pub rows: usize,
    /// Columns of each frame.
    pub cols: usize,
    /// Number of slices (files for classic images, frames for multi-frame objects and SEG).
    pub slices: usize,
}

impl SeriesInfo {
    /// A one-line human description: "CT 512x512x20 'Abdomen' (series 2, 20 files, JPEG 2000 ...)".
    pub fn summary(&self) -> String {
        let kind = match self.kind {
            SeriesKind::Image => "",
            SeriesKind::MultiFrame => " multi-frame",
            SeriesKind::Segmentation => " segmentation",
        };
        let number = self
            .series_number
            .map(|n| format!("series {n}, "))
            .unwrap_or_default();
        format!(
            "{}{kind} {}x{}x{} '{}' ({number}{} files, {})",
            self.modality,
            self.cols,
            self.rows,
            self.slices,
            self.description,
            self.files.len(),
            self.transfer_syntaxes.join(", ")
        )
    }
}

/// Geometry of one slice (one file or one frame) as DICOM states it, in LPS millimetres.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SliceGeometry {
    /// ImagePositionPatient: the centre of the first transmitted pixel (row 0, column 0).
    pub position_lps_mm: [f64; 3],
    /// ImageOrientationPatient: row direction cosines (along a row, i.e. increasing column), then column
    /// direction cosines (down a column, i.e. increasing row).
    pub orientation: [f64; 6],
    /// PixelSpacing: [between rows (along the column direction), between columns (along the row direction)].
    pub pixel_spacing_mm: [f64; 2],
    /// SliceThickness, when present.
    pub thickness_mm: Option<f64>,
}

/// A sorted stack of slices with its voxel-to-world transforms.
#[derive(Clone, Debug, PartialEq)]
pub struct StackGeometry {
    /// `order[k]` is the index (into the input slice list) of the slice that becomes k.
    pub order: Vec<usize>,
    /// Voxel (i = column, j = row, k = slice) to DICOM patient coordinates (LPS mm).
    pub lps_from_ijk: Affine,
    /// Voxel (i, j, k) to RAS mm (nibabel's affine).
    pub ras_from_ijk: Affine,
    /// The slice step along the normal in mm (positive: k runs along row × column).
    pub slice_step_mm: f64,
    /// Irregular spacing, thickness disagreement, shear, ...
    pub warnings: Vec<String>,
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn normalized(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(a, a).sqrt();
    (n.is_finite() && n > 1e-6).then(|| [a[0] / n, a[1] / n, a[2] / n])
}

/// `ras_from_lps`: DICOM patient coordinates (LPS) to RAS flip the first two axes.
pub fn ras_from_lps(lps: &Affine) -> Affine {
    let mut m = *lps;
    for r in 0..2 {
        for c in 0..4 {
            m.0[r][c] = -m.0[r][c];
        }
    }
    m
}

/// Sorts slices by their position along the slice normal and derives the stack's geometry.
///
/// `spacing_between_mm` (SpacingBetweenSlices) is only used for a single slice. Errors (as text, the caller adds
/// the path): no slices, invalid or differing orientations, differing pixel spacings, several slices at one
/// position (mixed series, echoes or time points).
pub fn stack_geometry(
    slices: &[SliceGeometry],
    spacing_between_mm: Option<f64>,
) -> std::result::Result<StackGeometry, String> {
    let first = slices.first().ok_or_else(|| "no slices".to_string())?;
    let mut warnings = Vec::new();
    let iop = first.orientation;
    let row = normalized([iop[0], iop[1], iop[2]])
        .ok_or_else(|| format!("invalid ImageOrientationPatient {iop:?}"))?;
    let col = normalized([iop[3], iop[4], iop[5]])
        .ok_or_else(|| format!("invalid ImageOrientationPatient {iop:?}"))?;
    if dot(row, col).abs() > 1e-3 {
        return Err(format!(
            "ImageOrientationPatient {iop:?} has non-orthogonal row and column directions"
        ));
    }
    let normal = cross(row, col);
    let ps = first.pixel_spacing_mm;
    if !(ps[0] > 0.0 && ps[1] > 0.0 && ps[0].is_finite() && ps[1].is_finite()) {
        return Err(format!("invalid PixelSpacing {ps:?}"));
    }
    for s in slices {
        let d = s
            .orientation
            .iter()
            .zip(iop.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        if d > 1e-3 {
            return Err(format!(
                "slices have different orientations ({:?} and {iop:?}): not a single series",
                s.orientation
            ));
        }
        let dps = (s.pixel_spacing_mm[0] - ps[0])
            .abs()
            .max((s.pixel_spacing_mm[1] - ps[1]).abs());
        if dps > 1e-3 * ps[0].max(ps[1]) {
            return Err(format!(
                "slices have different pixel spacings ({:?} and {ps:?} mm): not a single series",
                s.pixel_spacing_mm
            ));
        }
    }
    let proj: Vec<f64> = slices
        .iter()
        .map(|s| dot(s.position_lps_mm, normal))
        .collect();
    let mut order: Vec<usize> = (0..slices.len()).collect();
    order.sort_by(|&a, &b| proj[a].total_cmp(&proj[b]));
    let n = slices.len();
    let origin = slices[order[0]].position_lps_mm;
    let (kvec, step) = if n == 1 {
        let step = spacing_between_mm
            .filter(|s| *s > 0.0)
            .or(first.thickness_mm.filter(|t| *t > 0.0))
            .unwrap_or(1.0);
        ([normal[0] * step, normal[1] * step, normal[2] * step], step)
    } else {
        let gaps: Vec<f64> = order.windows(2).map(|w| proj[w[1]] - proj[w[0]]).collect();
        let min_gap = gaps.iter().copied().fold(f64::INFINITY, f64::min);
        let max_gap = gaps.iter().copied().fold(0.0, f64::max);
        let last = slices[order[n - 1]].position_lps_mm;
        let step = (proj[order[n - 1]] - proj[order[0]]) / (n - 1) as f64;
        if min_gap.is_nan() || min_gap <= 1e-3 * step.max(1e-3) || step.is_nan() || step <= 1e-4 {
            let dup = gaps.iter().filter(|g| **g <= 1e-3 * step.max(1e-3)).count();
            return Err(format!(
                "{} of {n} slices share a position with another slice: several series, echoes or time points \
                 are mixed",
                dup + 1
            ));
        }
        if max_gap - step > SPACING_TOLERANCE * step || step - min_gap > SPACING_TOLERANCE * step {
            warnings.push(format!(
                "irregular slice spacing: gaps from {min_gap:.4} to {max_gap:.4} mm (mean step {step:.4} mm); the \
                 volume assumes a uniform step (missing slices?)"
            ));
        }
        let kvec: [f64; 3] = std::array::from_fn(|a| (last[a] - origin[a]) / (n - 1) as f64);
        let in_plane = (dot(kvec, kvec) - step * step).max(0.0).sqrt();
        if in_plane > 1e-3 * step {
            warnings.push(format!(
                "slices are sheared (gantry tilt): each slice moves {in_plane:.3} mm in-plane per {step:.3} mm step; \
                 the affine keeps the shear"
            ));
        }
        (kvec, step)
    };
    if n > 1 {
        let thicknesses: Vec<f64> = slices.iter().filter_map(|s| s.thickness_mm).collect();
        if let Some(&t) = thicknesses.first()
            && (t - step).abs() > SPACING_TOLERANCE * step
        {
            warnings.push(format!(
                "SliceThickness {t} mm differs from the slice step {step:.4} mm given by the positions; using the step"
            ));
        }
    }
    let mut lps = Affine::identity();
    for a in 0..3 {
        lps.0[a][0] = row[a] * ps[1];
        lps.0[a][1] = col[a] * ps[0];
        lps.0[a][2] = kvec[a];
        lps.0[a][3] = origin[a];
    }
    Ok(StackGeometry {
        order,
        lps_from_ijk: lps,
        ras_from_ijk: ras_from_lps(&lps),
        slice_step_mm: step,
        warnings,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Header access

fn trimmed(s: &str) -> String {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string()
}

fn get_str(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| trimmed(&s))
        .filter(|s| !s.is_empty())
}

fn get_f64s(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| !v.is_empty())
}

fn get_int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

fn items(obj: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    obj.get(tag).and_then(|e| e.items())
}

/// An attribute of frame `frame` from the functional groups: per-frame first, then shared.
fn fg_element(obj: &InMemDicomObject, frame: usize, seq: Tag, tag: Tag) -> Option<&InMemElement> {
    fn inner(fg: &InMemDicomObject, seq: Tag, tag: Tag) -> Option<&InMemElement> {
        items(fg, seq)
            .and_then(|s| s.first())
            .and_then(|i| i.get(tag))
    }
    items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|f| f.get(frame))
        .and_then(|f| inner(f, seq, tag))
        .or_else(|| {
            items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
                .and_then(|s| s.first())
                .and_then(|f| inner(f, seq, tag))
        })
}

fn fg_f64s(obj: &InMemDicomObject, frame: usize, seq: Tag, tag: Tag) -> Option<Vec<f64>> {
    fg_element(obj, frame, seq, tag)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| !v.is_empty())
}

fn to3(v: &[f64]) -> Option<[f64; 3]> {
    (v.len() >= 3).then(|| [v[0], v[1], v[2]])
}

/// The geometry of frame `frame`: functional groups first (enhanced objects, SEG), then the top level.
fn frame_geometry(obj: &InMemDicomObject, frame: usize) -> Option<SliceGeometry> {
    let ipp = fg_f64s(
        obj,
        frame,
        tags::PLANE_POSITION_SEQUENCE,
        tags::IMAGE_POSITION_PATIENT,
    )
    .or_else(|| get_f64s(obj, tags::IMAGE_POSITION_PATIENT))?;
    let iop = fg_f64s(
        obj,
        frame,
        tags::PLANE_ORIENTATION_SEQUENCE,
        tags::IMAGE_ORIENTATION_PATIENT,
    )
    .or_else(|| get_f64s(obj, tags::IMAGE_ORIENTATION_PATIENT))?;
    let ps = fg_f64s(
        obj,
        frame,
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::PIXEL_SPACING,
    )
    .or_else(|| get_f64s(obj, tags::PIXEL_SPACING))
    .or_else(|| get_f64s(obj, tags::IMAGER_PIXEL_SPACING))
    .unwrap_or_else(|| vec![1.0, 1.0]);
    let thickness = fg_f64s(
        obj,
        frame,
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::SLICE_THICKNESS,
    )
    .or_else(|| get_f64s(obj, tags::SLICE_THICKNESS))
    .and_then(|v| v.first().copied());
    if iop.len() < 6 || ps.len() < 2 {
        return None;
    }
    Some(SliceGeometry {
        position_lps_mm: to3(&ipp)?,
        orientation: [iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]],
        pixel_spacing_mm: [ps[0], ps[1]],
        thickness_mm: thickness,
    })
}

fn transfer_syntax_uid(obj: &DefaultDicomObject) -> String {
    trimmed(obj.meta().transfer_syntax())
}

/// A transfer syntax's name ("JPEG 2000 Image Compression (Lossless Only)"), or its UID when unknown.
pub fn transfer_syntax_name(uid: &str) -> String {
    TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| uid.to_string())
}

/// Fails with a clear message when this build cannot decode the pixel data of transfer syntax `uid`.
fn check_decodable(uid: &str, path: &Path) -> Result<()> {
    match TransferSyntaxRegistry.get(uid) {
        None => Err(Error::format(
            format!("unsupported transfer syntax: unknown UID {uid}"),
            path,
        )),
        Some(ts) if !ts.can_decode_all() => {
            let hint = if ts.name().contains("JPEG-LS") {
                "; JPEG-LS needs the CharLS codec, which this build does not include"
            } else {
                ""
            };
            Err(Error::format(
                format!(
                    "unsupported transfer syntax {} ({uid}): no decoder in this build{hint}",
                    ts.name()
                ),
                path,
            ))
        }
        Some(_) => Ok(()),
    }
}

/// `rows × cols × frames`, refused when it overflows or exceeds [`super::nifti::DEFAULT_MAX_VOXELS`] (a corrupt
/// or absurd header must not drive an allocation).
fn checked_voxels(rows: usize, cols: usize, frames: usize, path: &Path) -> Result<usize> {
    rows.checked_mul(cols)
        .and_then(|v| v.checked_mul(frames))
        .filter(|&n| n <= super::nifti::DEFAULT_MAX_VOXELS)
        .ok_or_else(|| {
            Error::format(
                format!(
                    "absurd image size: {cols} columns x {rows} rows x {frames} frames exceeds the limit of {} voxels",
                    super::nifti::DEFAULT_MAX_VOXELS
                ),
                path,
            )
        })
}

/// Walks the elements of a Part-10 file and refuses one whose defined length runs past the end of the file.
///
/// The DICOM parser reserves and zero-fills an element's declared length before reading it, so one corrupt length
/// field in a 1 KB file would make it fill gigabytes. Explicit and implicit VR (either byte order) are walked,
/// sequences and items entered, encapsulated pixel data fragments skipped; deflated or unknown transfer syntaxes
/// are left to the parser (their lengths refer to the inflated stream).
fn check_element_lengths(bytes: &[u8], path: &Path) -> Result<()> {
    const UNDEFINED: u32 = u32::MAX;
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Ok(()); // not Part 10: the parser says what is wrong
    }
    let bad = |what: String| Err(Error::format(format!("corrupt DICOM file: {what}"), path));
    let u16_at = |p: usize, big: bool| {
        let b = [bytes[p], bytes[p + 1]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |p: usize, big: bool| {
        let b = [bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    // The file meta group (explicit VR little endian), to find the transfer syntax.
    let mut pos = 132;
    let mut ts = String::new();
    while pos + 8 <= bytes.len() && u16_at(pos, false) == 0x0002 {
        let elem = u16_at(pos + 2, false);
        let (len, hdr) = if !short_vr([bytes[pos + 4], bytes[pos + 5]]) {
            if pos + 12 > bytes.len() {
                return bad("file meta information cut short".into());
            }
            (u32_at(pos + 8, false) as usize, 12)
        } else {
            (u16_at(pos + 6, false) as usize, 8)
        };
        if pos + hdr + len > bytes.len() {
            return bad(format!(
                "meta element (0002,{elem:04X}) claims {len} bytes, {} remain",
                bytes.len().saturating_sub(pos + hdr)
            ));
        }
        if elem == 0x0010 {
            ts = trimmed(&String::from_utf8_lossy(&bytes[pos + hdr..pos + hdr + len]));
        }
        pos += hdr + len;
    }
    let (explicit, big) = match ts.as_str() {
        "1.2.840.10008.1.2" => (false, false),
        "1.2.840.10008.1.2.2" => (true, true),
        // Deflated data sets: the lengths refer to the inflated stream.
        "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" => return Ok(()),
        // Every other known transfer syntax (the compressed ones included) is explicit VR little endian.
        _ if TransferSyntaxRegistry.get(&ts).is_some() => (true, false),
        _ => {
            return Err(Error::format(
                format!("unsupported transfer syntax: unknown UID {ts:?}"),
                path,
            ));
        }
    };
    let end = bytes.len();
    let mut in_fragments = false;
    while pos + 8 <= end {
        let group = u16_at(pos, big);
        let elem = u16_at(pos + 2, big);
        if group == 0xFFFE {
            let len = u32_at(pos + 4, big);
            pos += 8;
            match elem {
                0xE000 if in_fragments => {
                    if len == UNDEFINED || pos + len as usize > end {
                        return bad(format!(
                            "pixel data fragment claims {len} bytes, {} remain",
                            end - pos
                        ));
                    }
                    pos += len as usize;
                }
                0xE000 if len != UNDEFINED && pos + len as usize > end => {
                    return bad(format!(
                        "sequence item claims {len} bytes, {} remain",
                        end - pos
                    ));
                }
                0xE0DD => in_fragments = false,
                _ => {}
            }
            continue;
        }
        let (len, hdr, vr) = if explicit {
            let vr = [bytes[pos + 4], bytes[pos + 5]];
            if !short_vr(vr) {
                if pos + 12 > end {
                    return bad("element header cut short".into());
                }
                (u32_at(pos + 8, big), 12, Some(vr))
            } else {
                (u16_at(pos + 6, big) as u32, 8, Some(vr))
            }
        } else {
            (u32_at(pos + 4, big), 8, None)
        };
        pos += hdr;
        if len == UNDEFINED {
            if (group, elem) == (0x7FE0, 0x0010) {
                in_fragments = true;
            }
            continue; // a sequence (or encapsulated pixel data): walk into it
        }
        let len = len as usize;
        if pos + len > end {
            return bad(format!(
                "element ({group:04X},{elem:04X}) claims {len} bytes, {} remain",
                end - pos
            ));
        }
        // Defined-length sequences are walked into; in implicit VR a value that starts with an item tag is one.
        let is_sequence = match vr {
            Some(vr) => &vr == b"SQ",
            None => len >= 8 && u16_at(pos, big) == 0xFFFE && u16_at(pos + 2, big) == 0xE000,
        };
        if !is_sequence {
            pos += len;
        }
    }
    Ok(())
}

/// Whether an explicit VR has a 2-byte length field. Every other VR, an unknown one included (the parser reads
/// unknown VRs as UN), has 2 reserved bytes and a 4-byte length.
fn short_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// Reads a file and checks its element lengths before the DICOM parser sees it.
fn checked_file(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read DICOM file", e, path))?;
    check_element_lengths(&bytes, path)
}

fn open_header(path: &Path) -> Result<DefaultDicomObject> {
    checked_file(path)?;
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| Error::format(format!("not a readable DICOM file ({e})"), path))
}

fn open_full(path: &Path) -> Result<DefaultDicomObject> {
    checked_file(path)?;
    OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| Error::format(format!("cannot read DICOM file ({e})"), path))
}

// ---------------------------------------------------------------------------------------------------------------
// Scanning

/// Header fields of one file that decide its series.
struct FileHeader {
    path: PathBuf,
    series_uid: String,
    study_uid: String,
    frame_of_reference_uid: String,
    description: String,
    modality: String,
    series_number: Option<i64>,
    kind: SeriesKind,
    transfer_syntax: String,
    rows: usize,
    cols: usize,
    frames: usize,
    orientation_key: String,
}

fn read_file_header(path: &Path) -> Result<Option<FileHeader>> {
    let obj = open_header(path)?;
    let (Some(rows), Some(cols)) = (get_int(&obj, tags::ROWS), get_int(&obj, tags::COLUMNS)) else {
        return Ok(None); // not an image (SR, RT structure set, presentation state, DICOMDIR, ...)
    };
    let sop_class = get_str(&obj, tags::SOP_CLASS_UID)
        .unwrap_or_else(|| trimmed(obj.meta().media_storage_sop_class_uid()));
    let modality = get_str(&obj, tags::MODALITY).unwrap_or_default();
    let frames = get_int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
    let kind = if sop_class == SEG_SOP_CLASS || modality == "SEG" {
        SeriesKind::Segmentation
    } else if frames > 1
        || obj
            .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .is_some()
    {
        SeriesKind::MultiFrame
    } else {
        SeriesKind::Image
    };
    let orientation_key = frame_geometry(&obj, 0)
        .map(|g| {
            g.orientation
                .iter()
                .map(|v| format!("{:.3}", v + 0.0))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Ok(Some(FileHeader {
        path: path.to_path_buf(),
        series_uid: get_str(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        study_uid: get_str(&obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference_uid: get_str(&obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
        description: get_str(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        modality,
        series_number: get_int(&obj, tags::SERIES_NUMBER),
        kind,
        transfer_syntax: transfer_syntax_uid(&obj),
        rows: rows.max(0) as usize,
        cols: cols.max(0) as usize,
        frames,
        orientation_key,
    }))
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot read", e, path))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io("cannot list folder", e, path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

/// Finds the DICOM series under `path` (a folder, searched recursively, or a single file).
///
/// Files that are not DICOM, or DICOM objects without an image (reports, structure sets, DICOMDIR), are skipped.
/// Classic images are grouped by every header field that must agree within a series (not by UIDs alone: blank
/// UIDs are common); each enhanced multi-frame file and each DICOM SEG is its own entry. The result is sorted:
/// images first, then multi-frame objects, then segmentations, each by description and path.
pub fn scan_series(path: &Path) -> Result<Vec<SeriesInfo>> {
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    let headers: Vec<FileHeader> = files
        .par_iter()
        // A file that is not DICOM (a licence, a NIfTI) is skipped.
        .filter_map(|p| read_file_header(p).ok().flatten())
        .collect();
    if headers.is_empty() && files.len() == 1 {
        // A single file that is not a DICOM image: say why.
        read_file_header(&files[0])?;
    }
    let mut groups: BTreeMap<String, Vec<FileHeader>> = BTreeMap::new();
    for h in headers {
        let key = match h.kind {
            SeriesKind::Image => format!(
                "series={}|study={}|for={}|modality={}|number={}|description={}|size={}x{}|orientation={}",
                h.series_uid,
                h.study_uid,
                h.frame_of_reference_uid,
                h.modality,
                h.series_number.map(|n| n.to_string()).unwrap_or_default(),
                h.description,
                h.cols,
                h.rows,
                h.orientation_key
            ),
            SeriesKind::MultiFrame | SeriesKind::Segmentation => {
                format!("file={}", h.path.display())
            }
        };
        groups.entry(key).or_default().push(h);
    }
    let mut out: Vec<SeriesInfo> = groups
        .into_iter()
        .filter_map(|(key, mut hs)| {
            hs.sort_by(|a, b| a.path.cmp(&b.path));
            let first = hs.first()?;
            let mut ts: Vec<String> = hs
                .iter()
                .map(|h| transfer_syntax_name(&h.transfer_syntax))
                .collect();
            ts.sort();
            ts.dedup();
            Some(SeriesInfo {
                key,
                series_uid: first.series_uid.clone(),
                study_uid: first.study_uid.clone(),
                frame_of_reference_uid: first.frame_of_reference_uid.clone(),
                description: first.description.clone(),
                modality: first.modality.clone(),
                series_number: first.series_number,
                kind: first.kind,
                transfer_syntaxes: ts,
                rows: first.rows,
                cols: first.cols,
                slices: hs.iter().map(|h| h.frames).sum(),
                files: hs.into_iter().map(|h| h.path).collect(),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.kind, &a.description, &a.files).cmp(&(b.kind, &b.description, &b.files)));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Loading images

/// One decoded slice: geometry and modality values (HU for CT) in row-major order `[row][column]`.
struct DecodedSlice {
    geometry: Option<SliceGeometry>,
    pixels: Vec<f32>,
    rows: usize,
    cols: usize,
    spacing_between_mm: Option<f64>,
    source: PathBuf,
    /// A warning about this file (geometry that had to be assumed).
    note: Option<String>,
}

/// Geometry for the frames of a multi-frame object that has no per-frame functional groups (no
/// PlanePositionSequence): frames are stacked in stored order along the normal of the top-level
/// ImageOrientationPatient (identity when absent), SpacingBetweenSlices (else SliceThickness, else 1 mm) apart,
/// starting at the top-level ImagePositionPatient (else the origin). Returns the geometries and a warning.
fn stacked_frames_geometry(obj: &InMemDicomObject, frames: usize) -> (Vec<SliceGeometry>, String) {
    let top = frame_geometry(obj, 0);
    let mut assumed = Vec::new();
    let mut g = top.unwrap_or_else(|| {
        assumed.push(
            "no ImagePositionPatient/ImageOrientationPatient: identity orientation at the origin",
        );
        SliceGeometry {
            position_lps_mm: [0.0; 3],
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            pixel_spacing_mm: get_f64s(obj, tags::PIXEL_SPACING)
                .filter(|v| v.len() >= 2)
                .map(|v| [v[0], v[1]])
                .unwrap_or([1.0, 1.0]),
            thickness_mm: get_f64s(obj, tags::SLICE_THICKNESS).and_then(|v| v.first().copied()),
        }
    });
    if get_f64s(obj, tags::PIXEL_SPACING).is_none() && top.is_none() {
        assumed.push("no PixelSpacing: 1 mm pixels");
    }
    let normal = normalized([g.orientation[0], g.orientation[1], g.orientation[2]])
        .zip(normalized([
            g.orientation[3],
            g.orientation[4],
            g.orientation[5],
        ]))
        .and_then(|(r, c)| normalized(cross(r, c)))
        .unwrap_or([0.0, 0.0, 1.0]);
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let (step, from) = match get_f64s(obj, tags::SPACING_BETWEEN_SLICES)
        .and_then(|v| v.first().copied())
        .filter(|&v| positive(v))
    {
        Some(s) => (s, "SpacingBetweenSlices"),
        None => match g.thickness_mm.filter(|&v| positive(v)) {
            Some(t) => (t, "SliceThickness"),
            None => (1.0, "an assumed 1 mm"),
        },
    };
    let p0 = g.position_lps_mm;
    g.thickness_mm = None;
    let geoms = (0..frames)
        .map(|f| SliceGeometry {
            position_lps_mm: std::array::from_fn(|a| p0[a] + f as f64 * step * normal[a]),
            ..g
        })
        .collect();
    let mut note = format!(
        "{frames} frames without per-frame functional groups (no PlanePositionSequence): stacked in stored order, \
         {step} mm apart ({from})"
    );
    for a in assumed {
        note.push_str("; ");
        note.push_str(a);
    }
    (geoms, note)
}

/// Decodes every frame of one file (modality LUT applied).
fn decode_file(path: &Path, cancel: &CancelToken) -> Result<Vec<DecodedSlice>> {
    cancel.check()?;
    let obj = open_full(path)?;
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(Error::format(
            "missing pixel data (no PixelData element)",
            path,
        ));
    }
    let ts = transfer_syntax_uid(&obj);
    check_decodable(&ts, path)?;
    let rows = get_int(&obj, tags::ROWS).unwrap_or(0).max(0) as usize;
    let cols = get_int(&obj, tags::COLUMNS).unwrap_or(0).max(0) as usize;
    let samples = get_int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples != 1 {
        let pi = get_str(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
        return Err(Error::format(
            format!(
                "colour images ({samples} samples per pixel, {pi}) are not supported; need a greyscale CT/MR"
            ),
            path,
        ));
    }
    let bits = get_int(&obj, tags::BITS_ALLOCATED).unwrap_or(16);
    if bits == 1 {
        return Err(Error::format(
            "1-bit pixel data (a segmentation?) is not an image: use load_seg",
            path,
        ));
    }
    let stored = get_int(&obj, tags::BITS_STORED).unwrap_or(bits);
    let high = get_int(&obj, tags::HIGH_BIT).unwrap_or(stored - 1);
    if !matches!(bits, 8 | 16 | 32 | 64)
        || !(1..=bits).contains(&stored)
        || !(0..bits).contains(&high)
    {
        return Err(Error::format(
            format!(
                "invalid pixel layout: BitsAllocated {bits}, BitsStored {stored}, HighBit {high}"
            ),
            path,
        ));
    }
    let frames = get_int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
    let voxels = checked_voxels(rows, cols, frames, path)?;
    if voxels == 0 {
        return Err(Error::format(
            format!("empty image: {cols} columns x {rows} rows"),
            path,
        ));
    }
    let multiframe_geometry = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .is_some();
    let decoded = obj.decode_pixel_data().map_err(|e| {
        Error::format(
            format!(
                "cannot decode pixel data ({}): {e}",
                transfer_syntax_name(&ts)
            ),
            path,
        )
    })?;
    if decoded.rows() as usize != rows || decoded.columns() as usize != cols {
        return Err(Error::format(
            "decoded frame size differs from Rows/Columns",
            path,
        ));
    }
    let spacing_between_mm = get_f64s(&obj, tags::SPACING_BETWEEN_SLICES)
        .or_else(|| {
            fg_f64s(
                &obj,
                0,
                tags::PIXEL_MEASURES_SEQUENCE,
                tags::SPACING_BETWEEN_SLICES,
            )
        })
        .and_then(|v| v.first().copied());
    let n_decoded = decoded.number_of_frames() as usize;
    if n_decoded < frames {
        return Err(Error::format(
            format!("{frames} frames announced, {n_decoded} decoded"),
            path,
        ));
    }
    let (stacked, note) = if frames > 1 && !multiframe_geometry {
        let (g, n) = stacked_frames_geometry(&obj, frames);
        (Some(g), Some(n))
    } else {
        (None, None)
    };
    (0..frames)
        .map(|f| {
            cancel.check()?;
            let pixels: Vec<f32> = decoded.to_vec_frame(f as u32).map_err(|e| {
                Error::format(
                    format!(
                        "cannot convert frame {f} ({}): {e}",
                        transfer_syntax_name(&ts)
                    ),
                    path,
                )
            })?;
            if pixels.len() != rows * cols {
                return Err(Error::format(
                    format!(
                        "frame {f} has {} values, expected {rows}x{cols}",
                        pixels.len()
                    ),
                    path,
                ));
            }
            Ok(DecodedSlice {
                geometry: match &stacked {
                    Some(g) => g.get(f).copied(),
                    None => frame_geometry(&obj, f),
                },
                pixels,
                rows,
                cols,
                spacing_between_mm,
                source: path.to_path_buf(),
                note: note.clone(),
            })
        })
        .collect()
}

/// Puts sorted slices into a volume (i = column, j = row, k = slice).
fn assemble(slices: &[DecodedSlice], order: &[usize], rows: usize, cols: usize) -> Vec<f32> {
    let nk = order.len();
    let mut data = vec![0f32; rows * cols * nk];
    // [i = column][j = row][k]
    data.par_chunks_mut(rows * nk)
        .enumerate()
        .for_each(|(i, plane)| {
            for (k, &s) in order.iter().enumerate() {
                let px = &slices[s].pixels;
                for j in 0..rows {
                    plane[j * nk + k] = px[j * cols + i];
                }
            }
        });
    data
}

/// Loads one series found by [`scan_series`]: see [`load_series_with`].
pub fn load_series(info: &SeriesInfo) -> Result<(ImageVolume, Vec<String>)> {
    load_series_with(info, &NoProgress, &CancelToken::new())
}

/// Loads one image series: decodes its files in parallel, sorts the slices by position along the normal,
/// applies rescale slope/intercept and builds `ras_from_ijk` (i = column, j = row, k = slice).
///
/// Returns the volume and warnings (irregular spacing, SliceThickness disagreeing with the step, shear, missing
/// geometry). Errors: segmentations, mixed series (different sizes, orientations, duplicate positions), missing
/// pixel data, transfer syntaxes without a decoder (named), colour images.
pub fn load_series_with(
    info: &SeriesInfo,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<(ImageVolume, Vec<String>)> {
    let where_ = info
        .files
        .first()
        .and_then(|p| p.parent())
        .unwrap_or(Path::new(""))
        .to_path_buf();
    if info.kind == SeriesKind::Segmentation {
        return Err(Error::format(
            "this is a DICOM SEG, not an image series: use load_seg",
            where_,
        ));
    }
    if info.files.is_empty() {
        return Err(Error::format("series has no files", where_));
    }
    let total = info.files.len() as u64;
    let done = AtomicU64::new(0);
    let per_file: Vec<Vec<DecodedSlice>> = info
        .files
        .par_iter()
        .map(|p| {
            let r = decode_file(p, cancel);
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress.report(ProgressEvent {
                stage: "reading DICOM".into(),
                done: d,
                total,
            });
            r
        })
        .collect::<Result<_>>()?;
    cancel.check()?;
    let slices: Vec<DecodedSlice> = per_file.into_iter().flatten().collect();
    let Some(first) = slices.first() else {
        return Err(Error::format("series has no frames", where_));
    };
    let (rows, cols) = (first.rows, first.cols);
    if let Some(bad) = slices.iter().find(|s| s.rows != rows || s.cols != cols) {
        return Err(Error::format(
            format!(
                "inconsistent image sizes in one series: {}x{} and {}x{} (columns x rows)",
                cols, rows, bad.cols, bad.rows
            ),
            &bad.source,
        ));
    }
    let mut warnings: Vec<String> = Vec::new();
    for n in slices.iter().filter_map(|s| s.note.as_ref()) {
        if !warnings.contains(n) {
            warnings.push(n.clone());
        }
    }
    let geoms: Vec<SliceGeometry> = if slices.iter().all(|s| s.geometry.is_some()) {
        slices.iter().filter_map(|s| s.geometry).collect()
    } else if slices.len() == 1 {
        warnings.push(
            "no ImagePositionPatient/ImageOrientationPatient: identity orientation assumed"
                .to_string(),
        );
        vec![SliceGeometry {
            position_lps_mm: [0.0; 3],
            orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            pixel_spacing_mm: [1.0, 1.0],
            thickness_mm: None,
        }]
    } else {
        let bad = slices
            .iter()
            .find(|s| s.geometry.is_none())
            .map(|s| s.source.clone())
            .unwrap_or(where_.clone());
        return Err(Error::format(
            "missing ImagePositionPatient/ImageOrientationPatient: cannot order the slices",
            bad,
        ));
    };
    let stack = stack_geometry(&geoms, slices[0].spacing_between_mm)
        .map_err(|msg| Error::format(msg, where_.clone()))?;
    warnings.extend(stack.warnings.iter().cloned());
    let data = assemble(&slices, &stack.order, rows, cols);
    let volume = Volume::new(data, [cols, rows, stack.order.len()], stack.ras_from_ijk)?;
    Ok((volume, warnings))
}

/// Loads the single image series under `path` (folder or file).
///
/// Fails when there is none, or when there are several (the message lists them; pick one with [`scan_series`] and
/// [`load_series`]). Segmentations in the folder are ignored.
pub fn load_dicom_image(path: &Path) -> Result<ImageVolume> {
    Ok(load_dicom_image_with_warnings(path)?.0)
}

/// [`load_dicom_image`], returning the loader's warnings as well.
pub fn load_dicom_image_with_warnings(path: &Path) -> Result<(ImageVolume, Vec<String>)> {
    let series: Vec<SeriesInfo> = scan_series(path)?
        .into_iter()
        .filter(|s| s.kind != SeriesKind::Segmentation)
        .collect();
    match series.as_slice() {
        [] => Err(Error::format("no DICOM image series found", path)),
        [one] => load_series(one),
        many => {
            let list: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(n, s)| format!("[{n}] {}", s.summary()))
                .collect();
            Err(Error::format(
                format!(
                    "{} DICOM series found, choose one: {}",
                    many.len(),
                    list.join("; ")
                ),
                path,
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// DICOM SEG

/// A DICOM SEG placed on an image grid.
#[derive(Clone, Debug, PartialEq)]
pub struct DicomSeg {
    /// Segment numbers as label values, on the reference image's grid.
    pub labels: LabelVolume,
    /// Segment labels and recommended display colours.
    pub table: LabelTable,
    /// Frames off the grid, overlapping segments, ...
    pub warnings: Vec<String>,
}

/// CIELab as DICOM encodes it (L in 0..65535 for 0..100, a and b in 0..65535 for -128..127) to sRGB.
fn dicom_lab_to_srgb(lab: &[f64]) -> Option<[u8; 3]> {
    if lab.len() < 3 {
        return None;
    }
    let l = lab[0] / 65535.0 * 100.0;
    let a = lab[1] / 65535.0 * 255.0 - 128.0;
    let b = lab[2] / 65535.0 * 255.0 - 128.0;
    let fy = (l + 16.0) / 116.0;
    let fx = fy + a / 500.0;
    let fz = fy - b / 200.0;
    let finv = |t: f64| {
        if t > 6.0 / 29.0 {
            t * t * t
        } else {
            3.0 * (6.0f64 / 29.0).powi(2) * (t - 4.0 / 29.0)
        }
    };
    // D65 white point.
    let (x, y, z) = (0.950_47 * finv(fx), finv(fy), 1.088_83 * finv(fz));
    let r = 3.240_6 * x - 1.537_2 * y - 0.498_6 * z;
    let g = -0.968_9 * x + 1.875_8 * y + 0.041_5 * z;
    let bl = 0.055_7 * x - 0.204_0 * y + 1.057_0 * z;
    let gamma = |c: f64| {
        let c = c.clamp(0.0, 1.0);
        let v = if c <= 0.003_130_8 {
            12.92 * c
        } else {
            1.055 * c.powf(1.0 / 2.4) - 0.055
        };
        (v * 255.0).round() as u8
    };
    Some([gamma(r), gamma(g), gamma(bl)])
}

/// Reads the SOPInstanceUID and ImagePositionPatient of the source series' files.
fn source_positions(source: &SeriesInfo) -> HashMap<String, [f64; 3]> {
    source
        .files
        .par_iter()
        .filter_map(|p| {
            let obj = open_header(p).ok()?;
            let uid = get_str(&obj, tags::SOP_INSTANCE_UID)?;
            let ipp = to3(&get_f64s(&obj, tags::IMAGE_POSITION_PATIENT)?)?;
            Some((uid, ipp))
        })
        .collect()
}

/// Places the frames of the DICOM SEG `seg_path` on the grid of `reference` (an image loaded from `source`).
///
/// Binary SEG frames are 1-bit, packed across frames (bit 0 of byte 0 first); fractional frames are thresholded
/// at half their maximum. Each frame is placed by its ImagePositionPatient (per-frame PlanePositionSequence), or,
/// when that is missing, by the position of the source image it references (SourceImageSequence). Where segments
/// overlap, the higher segment number wins.
pub fn load_seg(seg_path: &Path, reference: &ImageVolume, source: &SeriesInfo) -> Result<DicomSeg> {
    let obj = open_full(seg_path)?;
    let ts = transfer_syntax_uid(&obj);
    check_decodable(&ts, seg_path)?;
    let rows = get_int(&obj, tags::ROWS).unwrap_or(0).max(0) as usize;
    let cols = get_int(&obj, tags::COLUMNS).unwrap_or(0).max(0) as usize;
    let frames = get_int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
    let bits = get_int(&obj, tags::BITS_ALLOCATED).unwrap_or(1);
    let seg_type = get_str(&obj, tags::SEGMENTATION_TYPE).unwrap_or_else(|| "BINARY".into());
    let segments = items(&obj, tags::SEGMENT_SEQUENCE)
        .ok_or_else(|| Error::format("not a DICOM SEG: no SegmentSequence", seg_path))?;
    let mut table = LabelTable::default();
    for s in segments {
        let Some(number) = get_int(s, tags::SEGMENT_NUMBER) else {
            continue;
        };
        let value = u16::try_from(number).map_err(|_| {
            Error::format(format!("segment number {number} out of range"), seg_path)
        })?;
        let name = get_str(s, tags::SEGMENT_LABEL).unwrap_or_else(|| format!("segment {number}"));
        let color = get_f64s(s, tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE)
            .and_then(|lab| dicom_lab_to_srgb(&lab))
            .unwrap_or_else(|| default_color(value));
        table.labels.push(LabelInfo { value, name, color });
    }
    table.labels.sort_by_key(|l| l.value);

    let pixel = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| Error::format("missing pixel data", seg_path))?;
    if pixel.fragments().is_some() {
        return Err(Error::format(
            format!(
                "encapsulated SEG pixel data ({}) is not supported",
                transfer_syntax_name(&ts)
            ),
            seg_path,
        ));
    }
    let bytes = pixel
        .to_bytes()
        .map_err(|e| Error::format(format!("cannot read pixel data ({e})"), seg_path))?;
    let frame_len = rows * cols;
    let total = checked_voxels(rows, cols, frames, seg_path)?;
    let (needed, fractional_max) = match (bits, seg_type.as_str()) {
        (1, _) => (total.div_ceil(8), None),
        (8, "FRACTIONAL") => {
            let max = get_int(&obj, tags::MAXIMUM_FRACTIONAL_VALUE)
                .unwrap_or(255)
                .max(1);
            (total, Some(max as f64))
        }
        (8, _) => (total, Some(2.0)), // 8-bit binary: any value >= 1
        _ => {
            return Err(Error::format(
                format!("SEG with {bits} bits allocated ({seg_type}) is not supported"),
                seg_path,
            ));
        }
    };
    if bytes.len() < needed {
        return Err(Error::format(
            format!(
                "pixel data too short: {} bytes for {frames} frames of {cols}x{rows}",
                bytes.len()
            ),
            seg_path,
        ));
    }
    let is_set = |f: usize, p: usize| -> bool {
        let b = f * frame_len + p;
        match fractional_max {
            None => bytes[b / 8] >> (b % 8) & 1 == 1,
            Some(max) => bytes[b] as f64 > max / 2.0 - 1e-9,
        }
    };

    let ijk_from_ras = reference
        .ras_from_ijk
        .inverse()
        .ok_or_else(|| Error::invalid("load_seg", "reference image has a singular affine"))?;
    let mut labels = Volume::filled(0u16, reference.dims, reference.ras_from_ijk);
    let mut warnings = Vec::new();
    let mut by_uid: Option<HashMap<String, [f64; 3]>> = None;
    let (mut off_grid, mut outside, mut overlaps, mut unplaced) = (0usize, 0usize, 0usize, 0usize);
    for f in 0..frames {
        let segment = fg_element(
            &obj,
            f,
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            tags::REFERENCED_SEGMENT_NUMBER,
        )
        .and_then(|e| e.to_int::<i64>().ok())
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| {
            Error::format(
                format!("frame {f} has no ReferencedSegmentNumber"),
                seg_path,
            )
        })?;
        let mut geom = frame_geometry(&obj, f);
        if geom.is_none() {
            // Fall back on the referenced source image's position, with the shared orientation and spacing.
            let uid = fg_element(
                &obj,
                f,
                tags::DERIVATION_IMAGE_SEQUENCE,
                tags::SOURCE_IMAGE_SEQUENCE,
            )
            .and_then(|e| e.items())
            .and_then(|it| it.first())
            .and_then(|i| get_str(i, tags::REFERENCED_SOP_INSTANCE_UID));
            let map = by_uid.get_or_insert_with(|| source_positions(source));
            if let (Some(ipp), Some(iop), Some(ps)) = (
                uid.and_then(|u| map.get(&u).copied()),
                fg_f64s(
                    &obj,
                    f,
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    tags::IMAGE_ORIENTATION_PATIENT,
                ),
                fg_f64s(&obj, f, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING),
            ) && iop.len() >= 6
                && ps.len() >= 2
            {
                geom = Some(SliceGeometry {
                    position_lps_mm: ipp,
                    orientation: [iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]],
                    pixel_spacing_mm: [ps[0], ps[1]],
                    thickness_mm: None,
                });
            }
        }
        let Some(g) = geom else {
            unplaced += 1;
            continue;
        };
        let row = [g.orientation[0], g.orientation[1], g.orientation[2]];
        let col = [g.orientation[3], g.orientation[4], g.orientation[5]];
        let [dy, dx] = g.pixel_spacing_mm;
        let p0 = g.position_lps_mm;
        for p in 0..frame_len {
            if !is_set(f, p) {
                continue;
            }
            let (r, c) = ((p / cols) as f64, (p % cols) as f64);
            let lps: [f64; 3] = std::array::from_fn(|a| p0[a] + c * dx * row[a] + r * dy * col[a]);
            let ijk = ijk_from_ras.apply([-lps[0], -lps[1], lps[2]]);
            let rounded = ijk.map(|v| v.round());
            if ijk
                .iter()
                .zip(rounded.iter())
                .any(|(v, r)| (v - r).abs() > 0.1)
            {
                off_grid += 1;
            }
            if rounded
                .iter()
                .zip(reference.dims.iter())
                .any(|(&v, &d)| v < 0.0 || v >= d as f64)
            {
                outside += 1;
                continue;
            }
            let idx = labels.index(
                rounded[0] as usize,
                rounded[1] as usize,
                rounded[2] as usize,
            );
            let old = labels.data[idx];
            if old != 0 && old != segment {
                overlaps += 1;
            }
            labels.data[idx] = old.max(segment);
        }
    }
    if unplaced > 0 {
        warnings.push(format!(
            "{unplaced} of {frames} frames have no position and were skipped"
        ));
    }
    if off_grid > 0 {
        warnings.push(format!(
            "{off_grid} segment pixels lie off the image grid (nearest voxel used)"
        ));
    }
    if outside > 0 {
        warnings.push(format!(
            "{outside} segment pixels lie outside the image and were dropped"
        ));
    }
    if overlaps > 0 {
        warnings.push(format!(
            "{overlaps} voxels belong to several segments (the higher number wins)"
        ));
    }
    Ok(DicomSeg {
        labels,
        table,
        warnings,
    })
}
