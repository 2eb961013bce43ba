//! Parity of the preprocessing chain with MONAI on a real CT block (fixture `transforms_ct_sub`, see
//! tests/fixtures/pipeline README section 5): NIfTI reading, Orientationd("RAS"), Spacingd(1.5, 1.5, 2),
//! ScaleIntensityRanged(-175, 250, 0, 1, clip) and CropForegroundd; labels and shapes exact, images to 1e-4.

use logonet::volume::nifti::{ReadOptions, read_image, read_labels};
use logonet::volume::orient::to_ras;
use logonet::volume::resample::{resample_image, resample_nearest, spacing_grid};
use logonet::volume::transforms::{
    PreprocessConfig, crop, foreground_box, preprocess, scale_intensity_range,
};
use logonet::volume::{Affine, ImageVolume, LabelVolume, Volume};
use safetensors::SafeTensors;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pipeline")
}

struct Fx {
    bytes: Vec<u8>,
}

impl Fx {
    fn load() -> Self {
        Self {
            bytes: std::fs::read(fixtures().join("transforms_ct_sub.io.safetensors"))
                .expect("fixture"),
        }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("safetensors")
    }
    fn shape(&self, name: &str) -> [usize; 3] {
        let st = self.st();
        let t = st.tensor(name).expect(name);
        let s = t.shape();
        [s[1], s[2], s[3]]
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st.tensor(name).expect(name);
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    fn u8s(&self, name: &str) -> Vec<u16> {
        let st = self.st();
        st.tensor(name)
            .expect(name)
            .data()
            .iter()
            .map(|&b| b as u16)
            .collect()
    }
    fn affine(&self, name: &str) -> Affine {
        let st = self.st();
        let v: Vec<f64> = st
            .tensor(name)
            .expect(name)
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Affine(std::array::from_fn(|r| {
            std::array::from_fn(|c| v[r * 4 + c])
        }))
    }
    fn image(&self, step: &str) -> ImageVolume {
        let dims = self.shape(&format!("{step}.image"));
        Volume::new(
            self.f32s(&format!("{step}.image")),
            dims,
            self.affine(&format!("{step}.affine")),
        )
        .unwrap()
    }
    fn label(&self, step: &str) -> LabelVolume {
        let dims = self.shape(&format!("{step}.label"));
        Volume::new(
            self.u8s(&format!("{step}.label")),
            dims,
            self.affine(&format!("{step}.affine")),
        )
        .unwrap()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn mismatches(a: &[u16], b: &[u16]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[test]
fn nifti_inputs_match_fixture_arrays() {
    let fx = Fx::load();
    let img = read_image(
        &fixtures().join("transforms_ct_sub.input_image.nii.gz"),
        &ReadOptions::default(),
    )
    .unwrap();
    let lab = read_labels(
        &fixtures().join("transforms_ct_sub.input_label.nii.gz"),
        &ReadOptions::default(),
    )
    .unwrap();
    let want = fx.image("input");
    assert_eq!(img.volume.dims, want.dims);
    assert_eq!(img.volume.data, want.data);
    assert!(
        img.volume.ras_from_ijk.max_abs_diff(&want.ras_from_ijk) < 1e-4,
        "{:?} vs {:?}",
        img.volume.ras_from_ijk,
        want.ras_from_ijk
    );
    assert_eq!(img.volume.ras_from_ijk.orientation_code(), ['L', 'P', 'S']);
    assert_eq!(lab.volume.data, fx.label("input").data);
}

#[test]
fn chain_matches_monai_step_by_step() {
    let fx = Fx::load();
    let input = fx.image("input");
    let input_l = fx.label("input");

    // Orientation: exact.
    let (o_img, _) = to_ras(&input).unwrap();
    let (o_lab, _) = to_ras(&input_l).unwrap();
    let want = fx.image("output.orientation");
    assert_eq!(o_img.dims, want.dims);
    assert_eq!(o_img.data, want.data);
    assert!(o_img.ras_from_ijk.max_abs_diff(&want.ras_from_ijk) < 1e-9);
    assert_eq!(o_lab.data, fx.label("output.orientation").data);

    // Spacing: shapes and affine exact, image to 1e-4, labels exact.
    let (dims, aff) = spacing_grid(o_img.dims, &o_img.ras_from_ijk, [1.5, 1.5, 2.0]).unwrap();
    let want = fx.image("output.spacing");
    assert_eq!(dims, want.dims);
    assert!(aff.max_abs_diff(&want.ras_from_ijk) < 1e-9, "{aff:?}");
    let s_img = resample_image(&o_img, dims, &aff).unwrap();
    let d = max_diff(&s_img.data, &want.data);
    assert!(d <= 1e-4, "spacing image max abs diff {d}");
    let s_lab = resample_nearest(&o_lab, dims, &aff).unwrap();
    assert_eq!(mismatches(&s_lab.data, &fx.label("output.spacing").data), 0);

    // ScaleIntensityRange.
    let mut sc = s_img.clone();
    scale_intensity_range(&mut sc, -175.0, 250.0, 0.0, 1.0, true).unwrap();
    let want = fx.image("output.scale_intensity");
    let d = max_diff(&sc.data, &want.data);
    assert!(d <= 1e-6, "scale max abs diff {d}");

    // CropForeground on the fixture's own scaled image (box semantics exact).
    let b = foreground_box(&want).unwrap();
    assert_eq!((b.start, b.end), ([4, 0, 0], [79, 81, 30]));
    let c = crop(&want, &b).unwrap();
    let wc = fx.image("output.crop_foreground");
    assert_eq!(c.dims, wc.dims);
    assert_eq!(c.data, wc.data);
    assert!(c.ras_from_ijk.max_abs_diff(&wc.ras_from_ijk) < 1e-9);
}

#[test]
fn whole_chain_and_alternative_orientation() {
    let fx = Fx::load();
    let want = fx.image("output.crop_foreground");
    let want_l = fx.label("output.crop_foreground");
    for step in ["input", "input_alt"] {
        let img = fx.image(step);
        let lab = fx.label(step);
        let p = preprocess(&img, Some(&lab), &PreprocessConfig::btcv_ct()).unwrap();
        assert_eq!(p.image.dims, want.dims, "{step}");
        let d = max_diff(&p.image.data, &want.data);
        assert!(d <= 1e-4, "{step}: max abs diff {d}");
        assert_eq!(
            mismatches(&p.labels.as_ref().unwrap().data, &want_l.data),
            0,
            "{step}"
        );
        assert!(
            p.image.ras_from_ijk.max_abs_diff(&want.ras_from_ijk) < 1e-9,
            "{step}"
        );
        // Inverse: back on the original grid, exactly the original dims and affine; labels mostly recovered.
        let back = p.record.invert_labels(p.labels.as_ref().unwrap()).unwrap();
        assert_eq!(back.dims, lab.dims);
        assert_eq!(back.ras_from_ijk, lab.ras_from_ijk);
        let bad = mismatches(&back.data, &lab.data);
        // Voxels outside the foreground crop (4 of 79 columns of air at 1.5 mm) become background.
        assert!(
            bad * 100 < lab.len(),
            "{step}: {bad} of {} label voxels differ after the round trip",
            lab.len()
        );
    }
}
