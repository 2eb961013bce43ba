//! Across the crates: a volume made and saved by `logonet`, read back, drawn by `logonet-viewer` the way a
//! radiologist expects, and compared by the app's TP/FP/FN map and `logonet::metrics`.

use logonet::job::{CancelToken, NoProgress};
use logonet::metrics::{MetricsConfig, evaluate};
use logonet::volume::phantom::{PhantomConfig, phantom};
use logonet::volume::{LabelTable, io};
use logonet_studio::state::{DIFF_FN, DIFF_FP, DIFF_TP, difference};
use logonet_viewer::slice_view::{Axis, OverlayStyle, SliceContent, SliceGeometry, render_slice};
use logonet_viewer::window_level::Preset;

const LIVER: u16 = 6;
const SPLEEN: u16 = 1;

/// Centroid (voxel indices) of a label.
fn centroid(labels: &logonet::volume::LabelVolume, value: u16) -> [usize; 3] {
    let [_, nj, nk] = labels.dims;
    let (mut sum, mut n) = ([0usize; 3], 0usize);
    for (idx, &v) in labels.data.iter().enumerate() {
        if v == value {
            let ijk = [idx / (nj * nk), (idx / nk) % nj, idx % nk];
            for a in 0..3 {
                sum[a] += ijk[a];
            }
            n += 1;
        }
    }
    assert!(n > 0, "label {value} is present");
    sum.map(|s| s / n)
}

#[test]
fn saved_phantom_is_drawn_in_radiological_convention_with_its_overlay() {
    let cfg = PhantomConfig {
        dims: [96, 80, 48],
        spacing_mm: [4.0, 4.0, 5.0],
        seed: 1,
        noise_hu: 0.0,
    };
    let (image, labels) = phantom(&cfg);
    let dir = tempfile::tempdir().expect("temp dir");
    let (img_path, lab_path) = (dir.path().join("ct.nii.gz"), dir.path().join("gt.nii.gz"));
    io::save_image(&img_path, &image).expect("save image");
    io::save_labels(&lab_path, &labels).expect("save labels");
    let image = io::load_image(&img_path).expect("load image");
    let labels = io::load_labels(&lab_path).expect("load labels");
    assert!(image.same_grid(&labels, 1e-4));

    let table = LabelTable::btcv();
    let overlay = OverlayStyle {
        opacity: 1.0,
        ..Default::default()
    };
    let content = SliceContent {
        image: &image,
        labels: Some(&labels),
        table: &table,
        window: Preset::Abdomen.window(),
        overlay: &overlay,
        revision: 0,
    };
    let geometry = SliceGeometry::new(Axis::Axial, &image.ras_from_ijk);
    let [w, _h] = geometry.size(image.dims);

    // The liver is in the patient's right and the spleen in the left: on an axial slice in radiological
    // convention the liver appears on the screen's left half and the spleen on the right half.
    for (organ, expect_left) in [(LIVER, true), (SPLEEN, false)] {
        let c = centroid(&labels, organ);
        let [x, y] = geometry.pixel(image.dims, c);
        assert_eq!(
            x < w / 2,
            expect_left,
            "organ {organ} at screen x {x} of {w}"
        );
        // With opacity 1 the pixel shows the organ's colour from the label table.
        let img = render_slice(&content, geometry, c[geometry.fixed]);
        let px = img[(x, y)];
        let [r, g, b] = table.color(organ);
        assert_eq!(
            [px.r(), px.g(), px.b()],
            [r, g, b],
            "organ {organ} colour at ({x}, {y})"
        );
        assert_eq!(geometry.voxel(image.dims, c[geometry.fixed], x, y), c);
    }
}

#[test]
fn difference_map_and_metrics_agree() {
    let (_, gt) = phantom(&PhantomConfig {
        dims: [64, 64, 32],
        spacing_mm: [5.0, 5.0, 6.0],
        seed: 2,
        noise_hu: 0.0,
    });
    // A prediction that misses the spleen and calls part of the background liver.
    let mut pred = gt.clone();
    let mut fp = 0u64;
    for (p, &g) in pred.data.iter_mut().zip(&gt.data) {
        if g == SPLEEN {
            *p = 0;
        }
    }
    for idx in 0..pred.data.len() / 50 {
        if gt.data[idx] == 0 {
            pred.data[idx] = LIVER;
            fp += 1;
        }
    }
    let diff = difference(&pred, &gt, Some(LIVER));
    let count = |v: u16| diff.data.iter().filter(|&&d| d == v).count() as u64;
    let liver_gt = gt.data.iter().filter(|&&g| g == LIVER).count() as u64;
    assert_eq!(count(DIFF_TP), liver_gt);
    assert_eq!(count(DIFF_FP), fp);
    assert_eq!(count(DIFF_FN), 0);

    let table = evaluate(
        &pred,
        &gt,
        &LabelTable::btcv(),
        &MetricsConfig::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .expect("metrics");
    let row = |v: u16| table.labels.iter().find(|r| r.value == v).expect("row");
    let expect_liver = 2.0 * liver_gt as f64 / (2 * liver_gt + fp) as f64;
    assert!((row(LIVER).dice - expect_liver).abs() < 1e-9);
    assert_eq!(row(SPLEEN).dice, 0.0);
}
