//! Dataset discovery (MSD, nnU-Net v2, BTCV, paired folders), grid checks, and the load/save helpers.

use logonet::volume::dataset::{DatasetKind, check_grids, discover};
use logonet::volume::io::{load_image, load_labels, save_image, save_labels};
use logonet::volume::phantom::{PhantomConfig, phantom};
use logonet::volume::{Affine, Volume};
use std::path::Path;

fn write_pair(img: &Path, lab: &Path, shift_mm: f64) {
    let (i, mut l) = phantom(&PhantomConfig {
        dims: [12, 10, 8],
        spacing_mm: [30.0, 36.0, 30.0],
        seed: 1,
        noise_hu: 0.0,
    });
    save_image(img, &i).unwrap();
    l.ras_from_ijk.0[0][3] += shift_mm;
    save_labels(lab, &l).unwrap();
}

#[test]
fn msd_layout_with_label_names() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("imagesTr")).unwrap();
    std::fs::create_dir_all(d.path().join("labelsTr")).unwrap();
    for c in ["spleen_2", "spleen_10"] {
        write_pair(
            &d.path().join(format!("imagesTr/{c}.nii.gz")),
            &d.path().join(format!("labelsTr/{c}.nii.gz")),
            0.0,
        );
    }
    std::fs::write(
        d.path().join("dataset.json"),
        r#"{"name": "Spleen", "labels": {"0": "background", "1": "spleen"},
            "training": [{"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"},
                         {"image": "./imagesTr/spleen_10.nii.gz", "label": "./labelsTr/spleen_10.nii.gz"}],
            "test": ["./imagesTs/spleen_1.nii.gz"]}"#,
    )
    .unwrap();
    let ds = discover(d.path()).unwrap();
    assert_eq!(ds.kind, DatasetKind::Msd);
    assert_eq!(ds.cases.len(), 2);
    assert_eq!(ds.cases[0].id, "spleen_10");
    assert_eq!(ds.labels.name(1), "spleen");
    assert!(check_grids(&ds, 1e-3).is_empty());
}

#[test]
fn nnunet_btcv_paired_layouts_and_grid_mismatch() {
    // nnU-Net v2
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("imagesTr")).unwrap();
    std::fs::create_dir_all(d.path().join("labelsTr")).unwrap();
    write_pair(
        &d.path().join("imagesTr/case_001_0000.nii.gz"),
        &d.path().join("labelsTr/case_001.nii.gz"),
        0.0,
    );
    std::fs::write(d.path().join("dataset.json"), r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumor": 2}, "numTraining": 1, "file_ending": ".nii.gz"}"#).unwrap();
    let ds = discover(d.path()).unwrap();
    assert_eq!(ds.kind, DatasetKind::NnUnet);
    assert_eq!(
        (ds.cases[0].id.as_str(), ds.labels.name(2).as_str()),
        ("case_001", "tumor")
    );
    assert!(ds.cases[0].label.is_some());

    // BTCV in img/ + label/, with one label grid shifted by 5 mm.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("img")).unwrap();
    std::fs::create_dir_all(d.path().join("label")).unwrap();
    write_pair(
        &d.path().join("img/img0001.nii.gz"),
        &d.path().join("label/label0001.nii.gz"),
        0.0,
    );
    write_pair(
        &d.path().join("img/img0002.nii.gz"),
        &d.path().join("label/label0002.nii.gz"),
        5.0,
    );
    let ds = discover(d.path()).unwrap();
    assert_eq!(ds.kind, DatasetKind::Btcv);
    assert_eq!(ds.cases.len(), 2);
    assert_eq!(ds.labels.name(6), "liver");
    let bad = check_grids(&ds, 1e-3);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].id, "0002");

    // Paired files.
    let d = tempfile::tempdir().unwrap();
    write_pair(
        &d.path().join("p1_image.nii.gz"),
        &d.path().join("p1_label.nii.gz"),
        0.0,
    );
    write_pair(
        &d.path().join("p2_image.nii"),
        &d.path().join("unrelated.nii.gz"),
        0.0,
    );
    let ds = discover(d.path()).unwrap();
    assert_eq!(ds.kind, DatasetKind::Paired);
    assert_eq!(ds.cases.len(), 2);
    assert!(ds.cases[0].label.is_some() && ds.cases[1].label.is_none());

    // Nothing there.
    assert!(discover(tempfile::tempdir().unwrap().path()).is_err());
}

#[test]
fn load_save_helpers() {
    let d = tempfile::tempdir().unwrap();
    let v = Volume::new(
        vec![1.5f32, -2.0, 3.0, 4.0],
        [1, 2, 2],
        Affine::from_spacing_origin([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),
    )
    .unwrap();
    let p = d.path().join("x.nii.gz");
    save_image(&p, &v).unwrap();
    assert_eq!(load_image(&p).unwrap(), v);
    let l = v.map(|x| x.abs() as u16);
    let q = d.path().join("l.nii");
    save_labels(&q, &l).unwrap();
    assert_eq!(load_labels(&q).unwrap(), l);
    assert!(save_image(&d.path().join("x.png"), &v).is_err());
    assert!(load_image(&d.path().join("missing.nii.gz")).is_err());
    // No temporary files are left behind by the atomic writes.
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}
