//! Real volumes (gated on `LOGONET_DATA`, e.g. `LOGONET_DATA=/work/shared/data`): every NIfTI file loads
//! with a sane geometry, labels land on the right organs, and the MONAI chain on the whole CT gives the
//! shapes MONAI gave (README of tests/fixtures/pipeline, "extra" entries).

use logonet::volume::nifti::{ReadOptions, read_image, read_labels};
use logonet::volume::transforms::{PreprocessConfig, foreground_box, preprocess};
use logonet::volume::{ImageVolume, LabelVolume};
use std::path::{Path, PathBuf};

fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("LOGONET_DATA") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("LOGONET_DATA is not set: skipping the real-data tests");
            None
        }
    }
}

fn nifti_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            nifti_files(&p, out);
        } else {
            let n = p.to_string_lossy().to_ascii_lowercase();
            if n.ends_with(".nii") || n.ends_with(".nii.gz") {
                out.push(p);
            }
        }
    }
}

#[test]
fn every_nifti_loads() {
    let Some(dir) = data_dir() else { return };
    let mut files = Vec::new();
    nifti_files(&dir, &mut files);
    files.sort();
    assert!(
        files.len() >= 20,
        "found only {} NIfTI files under {}",
        files.len(),
        dir.display()
    );
    for f in &files {
        let img = read_image(f, &ReadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let v = &img.volume;
        assert!(
            !v.is_empty() && v.ras_from_ijk.is_valid(),
            "{}",
            f.display()
        );
        assert!(
            v.spacing_mm().iter().all(|&s| s > 0.05 && s < 20.0),
            "{}: spacing {:?}",
            f.display(),
            v.spacing_mm()
        );
        assert!(
            !v.ras_from_ijk.orientation_code().contains(&'?'),
            "{}",
            f.display()
        );
        let name = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_ascii_lowercase();
        if name.contains("label") || name.starts_with("seg_") {
            let l = read_labels(f, &ReadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                l.volume.data.iter().any(|&x| x > 0),
                "{}: empty label map",
                f.display()
            );
        }
    }
    eprintln!("loaded {} NIfTI files", files.len());
}

/// Mean image value and mean world x (RAS: + = patient right) over the voxels of `label`.
fn organ_stats(img: &ImageVolume, lab: &LabelVolume, label: u16) -> (f64, f64, usize) {
    let (mut hu, mut x, mut n) = (0.0, 0.0, 0usize);
    for i in 0..lab.dims[0] {
        for j in 0..lab.dims[1] {
            for k in 0..lab.dims[2] {
                let idx = lab.index(i, j, k);
                if lab.data[idx] == label {
                    hu += img.data[idx] as f64;
                    x += lab.ras_from_ijk.apply([i as f64, j as f64, k as f64])[0];
                    n += 1;
                }
            }
        }
    }
    (hu / n.max(1) as f64, x / n.max(1) as f64, n)
}

#[test]
fn ct_labels_land_on_organs() {
    let Some(dir) = data_dir() else { return };
    let d = dir.join("ct_abdomen_totalseg");
    let img = read_image(&d.join("ct_full_3mm.nii.gz"), &ReadOptions::default())
        .unwrap()
        .volume;
    let lab = read_labels(
        &d.join("label_full_btcv13_derived.nii.gz"),
        &ReadOptions::default(),
    )
    .unwrap()
    .volume;
    assert_eq!(img.dims, [122, 101, 112]);
    assert!(img.same_grid(&lab, 1e-4));
    assert_eq!(img.ras_from_ijk.orientation_code(), ['R', 'A', 'S']);
    let (liver_hu, liver_x, n_liver) = organ_stats(&img, &lab, 6);
    let (spleen_hu, spleen_x, _) = organ_stats(&img, &lab, 1);
    let (aorta_hu, _, _) = organ_stats(&img, &lab, 8);
    let (rk_hu, rk_x, _) = organ_stats(&img, &lab, 2);
    let (_, lk_x, _) = organ_stats(&img, &lab, 3);
    assert!(n_liver > 1000);
    assert!(
        (30.0..200.0).contains(&liver_hu),
        "liver mean HU {liver_hu}"
    );
    assert!(
        (30.0..200.0).contains(&spleen_hu),
        "spleen mean HU {spleen_hu}"
    );
    assert!(
        (20.0..400.0).contains(&aorta_hu),
        "aorta mean HU {aorta_hu}"
    );
    assert!(
        (-50.0..400.0).contains(&rk_hu),
        "right kidney mean HU {rk_hu}"
    );
    // Liver and right kidney on the patient's right, spleen and left kidney on the left.
    assert!(
        liver_x > spleen_x && rk_x > lk_x,
        "liver x {liver_x}, spleen x {spleen_x}, kidneys {rk_x} / {lk_x}"
    );
}

#[test]
fn whole_ct_chain_shapes_match_monai() {
    let Some(dir) = data_dir() else { return };
    let d = dir.join("ct_abdomen_totalseg");
    let img = read_image(&d.join("ct_full_3mm.nii.gz"), &ReadOptions::default())
        .unwrap()
        .volume;
    let lab = read_labels(
        &d.join("label_full_btcv13_derived.nii.gz"),
        &ReadOptions::default(),
    )
    .unwrap()
    .volume;
    // transforms_ct_full_p3x3x4: spacing -> [122, 101, 84], crop -> [122, 97, 84] from (0, 0, 0).
    let mut cfg = PreprocessConfig::btcv_ct();
    cfg.spacing_mm = Some([3.0, 3.0, 4.0]);
    let p = preprocess(&img, Some(&lab), &cfg).unwrap();
    assert_eq!(p.record.spaced_dims, [122, 101, 84]);
    assert_eq!(p.image.dims, [122, 97, 84]);
    assert_eq!(p.record.crop.map(|b| b.start), Some([0, 0, 0]));
    // transforms_ct_full_p1.5x1.5x2: spacing -> [243, 201, 168], crop -> [243, 193, 168].
    let p = preprocess(&img, Some(&lab), &PreprocessConfig::btcv_ct()).unwrap();
    assert_eq!(p.record.spaced_dims, [243, 201, 168]);
    assert_eq!(p.image.dims, [243, 193, 168]);
    assert!(foreground_box(&p.image).is_some());
    // Back on the original grid: the organs are where they were.
    let back = p.record.invert_labels(p.labels.as_ref().unwrap()).unwrap();
    assert_eq!((back.dims, back.ras_from_ijk), (lab.dims, lab.ras_from_ijk));
    let bad = back
        .data
        .iter()
        .zip(&lab.data)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        bad * 100 < lab.len(),
        "{bad} of {} voxels differ after preprocess + inverse",
        lab.len()
    );
}
