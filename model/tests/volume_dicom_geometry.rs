//! Geometry of DICOM slice stacks on synthetic slices (always runs): sorting by position along the normal,
//! the LPS and RAS affines (i = column, j = row, k = slice), spacing and thickness warnings, mixed-series errors.

use logonet::volume::Affine;
use logonet::volume::dicom::{SliceGeometry, stack_geometry};

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn axial(z: f64) -> SliceGeometry {
    SliceGeometry {
        position_lps_mm: [-249.5, -437.5, z],
        orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        pixel_spacing_mm: [0.75, 0.5],
        thickness_mm: Some(2.0),
    }
}

#[test]
fn sorts_by_position_not_input_order() {
    let zs = [4.0, -2.0, 0.0, 2.0, -4.0];
    let slices: Vec<SliceGeometry> = zs.iter().map(|&z| axial(z)).collect();
    let g = stack_geometry(&slices, None).unwrap();
    assert_eq!(g.order, vec![4, 1, 2, 3, 0]);
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    // LPS: i along +x with column spacing (0.5), j along +y with row spacing (0.75), k along +z by 2.
    let want_lps = Affine([
        [0.5, 0.0, 0.0, -249.5],
        [0.0, 0.75, 0.0, -437.5],
        [0.0, 0.0, 2.0, -4.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    assert!(g.lps_from_ijk.max_abs_diff(&want_lps) < 1e-12);
    let want_ras = Affine([
        [-0.5, 0.0, 0.0, 249.5],
        [0.0, -0.75, 0.0, 437.5],
        [0.0, 0.0, 2.0, -4.0],
        [0.0, 0.0, 0.0, 1.0],
    ]);
    assert!(g.ras_from_ijk.max_abs_diff(&want_ras) < 1e-12);
    assert_eq!(g.ras_from_ijk.orientation_code(), ['L', 'P', 'S']);
}

#[test]
fn oblique_and_reversed_normal() {
    // Sagittal-ish: rows along -y (anterior), columns along -z; normal = row x col.
    let (s, c) = (0.3f64.sin(), 0.3f64.cos());
    let row = [0.0, c, s];
    let col = [0.0, s, -c];
    let normal = cross(row, col);
    let slices: Vec<SliceGeometry> = [3usize, 0, 2, 1]
        .iter()
        .map(|&n| SliceGeometry {
            position_lps_mm: std::array::from_fn(|a| 10.0 + 1.5 * n as f64 * normal[a]),
            orientation: [row[0], row[1], row[2], col[0], col[1], col[2]],
            pixel_spacing_mm: [1.0, 1.0],
            thickness_mm: Some(1.5),
        })
        .collect();
    let g = stack_geometry(&slices, None).unwrap();
    assert_eq!(g.order, vec![1, 3, 2, 0]);
    assert!((g.slice_step_mm - 1.5).abs() < 1e-12);
    for (row, n) in g.lps_from_ijk.0.iter().zip(normal) {
        assert!((row[2] - 1.5 * n).abs() < 1e-12);
    }
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    // Voxel (i, j, k) maps to IPP_k + i * row + j * col.
    let p = g.lps_from_ijk.apply([2.0, 3.0, 1.0]);
    for a in 0..3 {
        let want = 10.0 + 1.5 * normal[a] + 2.0 * row[a] + 3.0 * col[a];
        assert!((p[a] - want).abs() < 1e-9);
    }
}

#[test]
fn warns_on_irregular_spacing_and_thickness() {
    let slices: Vec<SliceGeometry> = [0.0, 2.0, 4.0, 7.0].iter().map(|&z| axial(z)).collect();
    let g = stack_geometry(&slices, None).unwrap();
    assert!(
        g.warnings.iter().any(|w| w.contains("irregular")),
        "{:?}",
        g.warnings
    );
    let mut slices: Vec<SliceGeometry> = [0.0, 2.0, 4.0].iter().map(|&z| axial(z)).collect();
    for s in &mut slices {
        s.thickness_mm = Some(3.0);
    }
    let g = stack_geometry(&slices, None).unwrap();
    assert_eq!(g.warnings.len(), 1);
    assert!(
        g.warnings[0].contains("SliceThickness 3"),
        "{:?}",
        g.warnings
    );
    assert!((g.slice_step_mm - 2.0).abs() < 1e-12);
    // 0.5 % off: no warning.
    let slices: Vec<SliceGeometry> = [0.0, 2.0, 4.01, 6.0].iter().map(|&z| axial(z)).collect();
    assert!(stack_geometry(&slices, None).unwrap().warnings.is_empty());
}

#[test]
fn rejects_mixed_series() {
    let slices: Vec<SliceGeometry> = [0.0, 2.0, 2.0, 4.0].iter().map(|&z| axial(z)).collect();
    let e = stack_geometry(&slices, None).unwrap_err();
    assert!(e.contains("share a position"), "{e}");
    let mut slices: Vec<SliceGeometry> = [0.0, 2.0].iter().map(|&z| axial(z)).collect();
    slices[1].orientation = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0];
    assert!(
        stack_geometry(&slices, None)
            .unwrap_err()
            .contains("orientations")
    );
    let mut slices: Vec<SliceGeometry> = [0.0, 2.0].iter().map(|&z| axial(z)).collect();
    slices[1].pixel_spacing_mm = [0.8, 0.5];
    assert!(
        stack_geometry(&slices, None)
            .unwrap_err()
            .contains("pixel spacings")
    );
    assert!(stack_geometry(&[], None).is_err());
    let mut bad = axial(0.0);
    bad.orientation = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    assert!(stack_geometry(&[bad], None).is_err());
}

#[test]
fn single_slice_uses_spacing_between_slices() {
    let g = stack_geometry(&[axial(5.0)], Some(1.25)).unwrap();
    assert!((g.lps_from_ijk.0[2][2] - 1.25).abs() < 1e-12);
    let g = stack_geometry(&[axial(5.0)], None).unwrap();
    assert!((g.lps_from_ijk.0[2][2] - 2.0).abs() < 1e-12); // falls back on the thickness
}

#[test]
fn gantry_tilt_is_kept_as_shear() {
    let slices: Vec<SliceGeometry> = (0..4)
        .map(|n| {
            let mut s = axial(n as f64 * 2.0);
            s.position_lps_mm[1] += 0.2 * n as f64;
            s
        })
        .collect();
    let g = stack_geometry(&slices, None).unwrap();
    assert!(
        g.warnings.iter().any(|w| w.contains("sheared")),
        "{:?}",
        g.warnings
    );
    let last = g.lps_from_ijk.apply([0.0, 0.0, 3.0]);
    assert!((last[1] - (-437.5 + 0.6)).abs() < 1e-9 && (last[2] - 6.0).abs() < 1e-9);
}
