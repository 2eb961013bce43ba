//! DICOM series loading against the real data in `LOGONET_DATA` (skipped with a note when unset):
//! J2K vs uncompressed copies, the dcm2niix NIfTI of the same series, the shuffled 12-slice CT_small series in
//! every transfer syntax, a DICOM SEG on its source CT, and pydicom's assorted test files.

use std::path::{Path, PathBuf};

use logonet::volume::dicom::{SeriesKind, load_dicom_image, load_seg, load_series, scan_series};
use logonet::volume::{Affine, ImageVolume};
use nifti::{IntoNdArray, NiftiObject, ReaderOptions};

fn data_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("LOGONET_DATA") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("skipping {test}: set LOGONET_DATA=/path/to/shared/data to run it");
            None
        }
    }
}

/// A NIfTI file as a volume (C order over i, j, k) with nibabel's affine.
fn read_nifti(path: &Path) -> ImageVolume {
    let obj = ReaderOptions::new().read_file(path).unwrap();
    let a = obj.header().affine::<f64>();
    let affine = Affine(std::array::from_fn(|r| std::array::from_fn(|c| a[(r, c)])));
    let arr = obj.into_volume().into_ndarray::<f32>().unwrap();
    let sh = arr.shape().to_vec();
    let dims = [sh[0], sh[1], sh[2]];
    let mut data = Vec::with_capacity(arr.len());
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                data.push(arr[[i, j, k]]);
            }
        }
    }
    ImageVolume::new(data, dims, affine).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn single_series(dir: &Path) -> (ImageVolume, Vec<String>) {
    let series = scan_series(dir).unwrap();
    assert_eq!(series.len(), 1, "{series:#?}");
    load_series(&series[0]).unwrap()
}

#[test]
fn totalseg_series_j2k_and_uncompressed_match_dcm2niix() {
    let Some(data) = data_dir("totalseg_series_j2k_and_uncompressed_match_dcm2niix") else {
        return;
    };
    let root = data.join("ct_dicom_series_totalseg");
    // The J2K originals have blank UIDs: still one series of 20 slices.
    let series = scan_series(&root.join("dicom_j2k_lossless")).unwrap();
    assert_eq!(series.len(), 1, "{series:#?}");
    assert_eq!(series[0].series_uid, "");
    assert_eq!(
        (series[0].rows, series[0].cols, series[0].slices),
        (512, 512, 20)
    );
    let (j2k, warnings) = load_series(&series[0]).unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("SliceThickness 3")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("irregular")),
        "{warnings:?}"
    );
    let (plain, _) = single_series(&root.join("dicom_uncompressed_explicit_le"));
    assert_eq!(j2k.dims, [512, 512, 20]);
    assert_eq!(j2k.dims, plain.dims);
    assert_eq!(max_abs_diff(&j2k.data, &plain.data), 0.0);
    assert!(j2k.ras_from_ijk.max_abs_diff(&plain.ras_from_ijk) < 1e-9);

    let nii = read_nifti(&root.join("ct_from_dicom.nii.gz"));
    assert_eq!(nii.dims, plain.dims);
    let d = plain.ras_from_ijk.max_abs_diff(&nii.ras_from_ijk);
    assert!(
        d < 1e-3,
        "affine differs by {d}: ours {:?}, NIfTI {:?}",
        plain.ras_from_ijk,
        nii.ras_from_ijk
    );
    assert_eq!(max_abs_diff(&plain.data, &nii.data), 0.0);
    assert_eq!(
        plain.spacing_mm().map(|s| (s * 1e4).round() / 1e4),
        [0.9766, 0.9766, 2.0]
    );
}

#[test]
fn ctsmall_12_slices_all_syntaxes_sorted_by_position() {
    let Some(data) = data_dir("ctsmall_12_slices_all_syntaxes_sorted_by_position") else {
        return;
    };
    let root = data.join("dicom_series_ctsmall_12slices");
    let (plain, _) = single_series(&root.join("plain"));
    assert_eq!(plain.dims, [128, 128, 12]);
    let plane = 128 * 128;
    let means: Vec<f64> = (0..12)
        .map(|k| {
            let mut s = 0.0;
            for i in 0..128 {
                for j in 0..128 {
                    s += plain.data[plain.index(i, j, k)] as f64;
                }
            }
            s / plane as f64
        })
        .collect();
    assert!((means[0] - -119.07).abs() < 0.01, "{means:?}");
    for k in 1..12 {
        assert!((means[k] - means[k - 1] - 10.0).abs() < 1e-6, "{means:?}");
    }
    for syntax in ["rle", "jpegll", "j2k"] {
        let (v, _) = single_series(&root.join(syntax));
        assert_eq!(v.dims, plain.dims, "{syntax}");
        assert_eq!(max_abs_diff(&v.data, &plain.data), 0.0, "{syntax}");
        assert!(
            v.ras_from_ijk.max_abs_diff(&plain.ras_from_ijk) < 1e-9,
            "{syntax}"
        );
    }
    // JPEG-LS: identical when the build has a decoder, otherwise an error that names the transfer syntax.
    let jls = scan_series(&root.join("jls")).unwrap();
    assert_eq!(jls.len(), 1);
    match load_series(&jls[0]) {
        Ok((v, _)) => assert_eq!(max_abs_diff(&v.data, &plain.data), 0.0),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("unsupported transfer syntax") && msg.contains("JPEG-LS"),
                "{msg}"
            );
        }
    }
    // The five folders share their UIDs: scanning them together must not silently merge them into one volume.
    let all = scan_series(&root).unwrap();
    for s in &all {
        if let Ok((v, _)) = load_series(s) {
            assert_eq!(v.dims, [128, 128, 12], "{}", s.summary());
        }
    }
}

#[test]
fn seg_lands_on_the_liver() {
    let Some(data) = data_dir("seg_lands_on_the_liver") else {
        return;
    };
    let root = data.join("ct_3slice_dcmqi");
    let series = scan_series(&root.join("dicom")).unwrap();
    assert_eq!(series.len(), 1);
    let (ct, _) = load_series(&series[0]).unwrap();
    assert_eq!(ct.dims, [512, 512, 3]);
    let ct_nii = read_nifti(&root.join("ct.nii.gz"));
    assert!(
        ct.same_grid(&ct_nii, 1e-3),
        "ours {:?}, NIfTI {:?}",
        ct.ras_from_ijk,
        ct_nii.ras_from_ijk
    );
    assert_eq!(max_abs_diff(&ct.data, &ct_nii.data), 0.0);

    let seg_path = root.join("dicom_seg_liver.dcm");
    let seg_series = scan_series(&seg_path).unwrap();
    assert_eq!(seg_series.len(), 1);
    assert_eq!(seg_series[0].kind, SeriesKind::Segmentation);
    let seg = load_seg(&seg_path, &ct, &series[0]).unwrap();
    assert!(seg.warnings.is_empty(), "{:?}", seg.warnings);
    assert!(!seg.table.labels.is_empty());
    eprintln!("SEG segments: {:?}", seg.table.labels);
    let truth = read_nifti(&root.join("label_liver1_spine2_heart3.nii.gz"));
    assert!(truth.same_grid(&seg.labels, 1e-3));
    let (mut inter, mut a, mut b) = (0usize, 0usize, 0usize);
    for (s, t) in seg.labels.data.iter().zip(&truth.data) {
        let (s, t) = (*s == 1, *t == 1.0);
        inter += (s && t) as usize;
        a += s as usize;
        b += t as usize;
    }
    let dice = 2.0 * inter as f64 / (a + b) as f64;
    eprintln!("SEG liver Dice vs NIfTI label: {dice:.6} ({a} vs {b} voxels)");
    assert!(b > 1000 && dice > 0.9, "Dice {dice}");
}

#[test]
fn pydicom_misc_files_decode_or_fail_clearly() {
    let Some(data) = data_dir("pydicom_misc_files_decode_or_fail_clearly") else {
        return;
    };
    let dir = data.join("dicom_misc_small/pydicom");
    let ct = load_dicom_image(&dir.join("CT_small.dcm")).unwrap();
    assert_eq!(ct.dims, [128, 128, 1]);
    let mr = load_dicom_image(&dir.join("MR_small.dcm")).unwrap();
    assert_eq!(mr.dims, [64, 64, 1]);
    for f in [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
    ] {
        let v = load_dicom_image(&dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(max_abs_diff(&v.data, &mr.data), 0.0, "{f}");
        assert!(v.ras_from_ijk.max_abs_diff(&mr.ras_from_ijk) < 1e-9, "{f}");
    }
    let j2k = load_dicom_image(&dir.join("MR_small_jp2klossless.dcm")).unwrap();
    assert_eq!(max_abs_diff(&j2k.data, &mr.data), 0.0);
    // Not decodable by the pure-Rust codecs (or colour): each must fail with a message, never panic.
    for f in [
        "JPEG-lossy.dcm",
        "JPGExtended.dcm",
        "JPEGLSNearLossless_16.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_rle.dcm",
        "JPEG2000.dcm",
        "image_dfl.dcm",
    ] {
        match load_dicom_image(&dir.join(f)) {
            Ok(v) => eprintln!("{f}: loaded {:?}", v.dims),
            Err(e) => {
                let msg = e.to_string();
                eprintln!("{f}: {msg}");
                assert!(msg.ends_with(f), "path last: {msg}");
            }
        }
    }
    let e = load_dicom_image(&dir.join("MR_small_jpeg_ls_lossless.dcm"));
    if let Err(e) = e {
        assert!(e.to_string().contains("JPEG-LS"), "{e}");
    }
    let e = load_dicom_image(&dir.join("SC_rgb_rle.dcm"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
    // Enhanced multi-frame CT and MR.
    for f in ["eCT_Supplemental.dcm", "emri_small.dcm"] {
        let s = scan_series(&dir.join(f)).unwrap();
        assert_eq!(s[0].kind, SeriesKind::MultiFrame, "{f}");
        match load_series(&s[0]) {
            Ok((v, w)) => eprintln!("{f}: {:?} {:?} warnings {w:?}", v.dims, v.spacing_mm()),
            Err(e) => eprintln!("{f}: {e}"),
        }
    }
    let s = scan_series(&dir.join("liver_1frame.dcm")).unwrap();
    assert_eq!(s[0].kind, SeriesKind::Segmentation);
    // The whole folder holds many series: load_dicom_image refuses and lists them.
    let e = load_dicom_image(&dir).unwrap_err().to_string();
    assert!(e.contains("choose one"), "{e}");
}
