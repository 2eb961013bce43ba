//! A deterministic synthetic abdominal CT phantom with the 13 BTCV organs.
//!
//! The anatomy is defined in millimetres in a canonical adult abdomen (body 320 mm wide, 230 mm deep, a
//! 240 mm stretch from the lower thorax to the iliac crests) in RAS coordinates (+x = patient right,
//! +y = anterior, +z = superior), centred on the origin. The canonical body is scaled to the field of view
//! (`dims × spacing_mm`), so any size and spacing gives a complete abdomen. The seed jitters every organ's
//! position, size and attenuation a little (a different "patient" per seed) and drives the noise.
//!
//! Intensities are Hounsfield units of a portal-venous contrast CT: air −1000, fat about −100, muscle 40,
//! liver 60, spleen 55, kidneys 150, aorta 200, bone 250..700. Each voxel's intensity is the mean of 2×2×2
//! sub-samples (partial-volume blur at organ borders); the label is the organ at the voxel centre.
//! Label values follow BTCV: 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver,
//! 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal and splenic veins, 11 pancreas, 12 right adrenal gland,
//! 13 left adrenal gland.

// Numeric code indexes several parallel arrays by axis; range loops read clearest here.
#![allow(clippy::needless_range_loop)]

use super::{Affine, ImageVolume, LabelVolume, Volume};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal};
use rayon::prelude::*;

/// How to build the phantom.
#[derive(Clone, Debug, PartialEq)]
pub struct PhantomConfig {
    /// Voxels along i (right-left), j (anterior-posterior) and k (superior-inferior).
    pub dims: [usize; 3],
    /// Voxel size in mm along i, j, k.
    pub spacing_mm: [f64; 3],
    /// Seed for the anatomical jitter and the noise.
    pub seed: u64,
    /// Standard deviation of the additive Gaussian noise in HU (0 = noise-free).
    pub noise_hu: f32,
}

impl Default for PhantomConfig {
    /// 128×128×96 voxels of 3×3×2.5 mm (a 384 mm field of view, 240 mm long), seed 0, 12 HU noise.
    fn default() -> Self {
        Self {
            dims: [128, 128, 96],
            spacing_mm: [3.0, 3.0, 2.5],
            seed: 0,
            noise_hu: 12.0,
        }
    }
}

/// Canonical body half-axes in mm (x, y) and half-length in z.
const BODY_HALF_MM: [f64; 3] = [160.0, 115.0, 120.0];
/// The canonical field of view the body is scaled into (x/y: the body fills 320 of 380 mm).
const CANON_FOV_XY_MM: f64 = 380.0;

/// A shape in canonical millimetres.
#[derive(Clone, Debug)]
enum Shape {
    /// Ellipsoid: centre, half-axes, rotation about z then about x (radians).
    Ellipsoid {
        c: [f64; 3],
        r: [f64; 3],
        rot_z: f64,
        rot_x: f64,
    },
    /// A tube of radius `r` around a polyline (capsules at the joints).
    Tube { pts: Vec<[f64; 3]>, r: f64 },
}

impl Shape {
    fn ellipsoid(c: [f64; 3], r: [f64; 3], rot_z_deg: f64, rot_x_deg: f64) -> Self {
        Shape::Ellipsoid {
            c,
            r,
            rot_z: rot_z_deg.to_radians(),
            rot_x: rot_x_deg.to_radians(),
        }
    }

    /// Normalised "distance": < 1 inside (ellipsoid quadratic form, or distance / radius for tubes).
    fn level(&self, p: [f64; 3]) -> f64 {
        match self {
            Shape::Ellipsoid { c, r, rot_z, rot_x } => {
                let d = [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
                let (sz, cz) = rot_z.sin_cos();
                let (x, y) = (cz * d[0] + sz * d[1], -sz * d[0] + cz * d[1]);
                let (sx, cx) = rot_x.sin_cos();
                let (y, z) = (cx * y + sx * d[2], -sx * y + cx * d[2]);
                ((x / r[0]).powi(2) + (y / r[1]).powi(2) + (z / r[2]).powi(2)).sqrt()
            }
            Shape::Tube { pts, r } => {
                let mut best = f64::INFINITY;
                for w in pts.windows(2) {
                    best = best.min(dist_to_segment(p, w[0], w[1]));
                }
                best / r
            }
        }
    }

    /// Axis-aligned bounding box (min, max) in canonical mm.
    fn bbox(&self) -> ([f64; 3], [f64; 3]) {
        match self {
            Shape::Ellipsoid { c, r, .. } => {
                let m = r[0].max(r[1]).max(r[2]);
                (
                    [c[0] - m, c[1] - m, c[2] - m],
                    [c[0] + m, c[1] + m, c[2] + m],
                )
            }
            Shape::Tube { pts, r } => {
                let mut lo = [f64::INFINITY; 3];
                let mut hi = [f64::NEG_INFINITY; 3];
                for p in pts {
                    for a in 0..3 {
                        lo[a] = lo[a].min(p[a] - r);
                        hi[a] = hi[a].max(p[a] + r);
                    }
                }
                (lo, hi)
            }
        }
    }
}

fn dist_to_segment(p: [f64; 3], a: [f64; 3], b: [f64; 3]) -> f64 {
    let ab = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let ap = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
    let len2 = ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2];
    let t = if len2 > 0.0 {
        ((ap[0] * ab[0] + ap[1] * ab[1] + ap[2] * ab[2]) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let d = [ap[0] - t * ab[0], ap[1] - t * ab[1], ap[2] - t * ab[2]];
    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
}

/// One labelled organ: its shape(s), attenuation, and an optional hollow interior.
#[derive(Clone, Debug)]
struct Organ {
    label: u16,
    shapes: Vec<Shape>,
    hu: f64,
    bbox: ([f64; 3], [f64; 3]),
}

impl Organ {
    fn new(label: u16, hu: f64, shapes: Vec<Shape>) -> Self {
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for s in &shapes {
            let (a, b) = s.bbox();
            for i in 0..3 {
                lo[i] = lo[i].min(a[i]);
                hi[i] = hi[i].max(b[i]);
            }
        }
        Self {
            label,
            shapes,
            hu,
            bbox: (lo, hi),
        }
    }

    fn level(&self, p: [f64; 3]) -> f64 {
        let (lo, hi) = &self.bbox;
        if (0..3).any(|a| p[a] < lo[a] || p[a] > hi[a]) {
            return f64::INFINITY;
        }
        self.shapes
            .iter()
            .map(|s| s.level(p))
            .fold(f64::INFINITY, f64::min)
    }
}

/// The whole anatomy of one seeded "patient".
struct Anatomy {
    /// Organs in priority order (the first that contains a point wins).
    organs: Vec<Organ>,
    /// Small gas/fluid bowel blobs in the lower abdomen: (centre, radius, HU).
    bowel: Vec<([f64; 3], f64, f64)>,
}

impl Anatomy {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        // Per-patient jitter: position ±`mm`, size factor 1 ± `rel`, HU ± `hu`.
        let mut jp = |mm: f64| -> [f64; 3] { std::array::from_fn(|_| rng.gen_range(-mm..=mm)) };
        let shift = jp(4.0);
        let liver_j = jp(5.0);
        let spleen_j = jp(5.0);
        let kid_j = jp(4.0);
        let stomach_j = jp(6.0);
        let panc_j = jp(3.0);
        let mut rng2 =
            ChaCha8Rng::seed_from_u64(seed.wrapping_mul(6364136223846793005).wrapping_add(1));
        let mut js = |rel: f64| -> f64 { 1.0 + rng2.gen_range(-rel..=rel) };
        let liver_s = js(0.08);
        let spleen_s = js(0.12);
        let kid_s = js(0.06);
        let stomach_s = js(0.12);
        let gb_s = js(0.2);
        let mut rng3 = ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x5151));
        let mut jh = |hu: f64| -> f64 { rng3.gen_range(-hu..=hu) };
        let add = |a: [f64; 3], b: [f64; 3]| -> [f64; 3] {
            [
                a[0] + b[0] + shift[0],
                a[1] + b[1] + shift[1],
                a[2] + b[2] + shift[2],
            ]
        };
        let mul = |r: [f64; 3], s: f64| -> [f64; 3] { [r[0] * s, r[1] * s, r[2] * s] };
        let z3 = [0.0; 3];

        // Vessels (drawn over everything else).
        let aorta = Organ::new(
            8,
            200.0 + jh(15.0),
            vec![Shape::Tube {
                pts: vec![
                    add([-12.0, -35.0, -125.0], z3),
                    add([-14.0, -33.0, 20.0], z3),
                    add([-18.0, -40.0, 125.0], z3),
                ],
                r: 12.0,
            }],
        );
        let ivc = Organ::new(
            9,
            120.0 + jh(10.0),
            vec![Shape::Tube {
                pts: vec![
                    add([24.0, -28.0, -125.0], z3),
                    add([26.0, -25.0, 10.0], z3),
                    add([30.0, -20.0, 70.0], z3),
                    add([28.0, -22.0, 125.0], z3),
                ],
                r: 10.5,
            }],
        );
        let veins = Organ::new(
            10,
            160.0 + jh(12.0),
            vec![
                // Splenic vein: spleen hilum, behind the pancreas, to the portal confluence.
                Shape::Tube {
                    pts: vec![
                        add([-78.0, -28.0, 28.0], spleen_j),
                        add([-45.0, -14.0, 18.0], panc_j),
                        add([-5.0, -6.0, 10.0], panc_j),
                        add([12.0, -6.0, 10.0], panc_j),
                    ],
                    r: 5.0,
                },
                // Portal vein: confluence up and right into the liver hilum.
                Shape::Tube {
                    pts: vec![
                        add([12.0, -6.0, 10.0], panc_j),
                        add([35.0, 2.0, 30.0], liver_j),
                        add([55.0, 5.0, 42.0], liver_j),
                    ],
                    r: 7.0,
                },
            ],
        );
        let esophagus = Organ::new(
            5,
            40.0 + jh(8.0),
            vec![Shape::Tube {
                pts: vec![
                    add([-8.0, -45.0, 125.0], z3),
                    add([-12.0, -38.0, 95.0], z3),
                    add([-28.0, -15.0, 74.0], stomach_j),
                ],
                r: 8.0,
            }],
        );
        let adrenal_r = Organ::new(
            12,
            30.0 + jh(6.0),
            vec![Shape::ellipsoid(
                add([42.0, -38.0, 52.0], kid_j),
                [5.0, 14.0, 16.0],
                30.0,
                0.0,
            )],
        );
        let adrenal_l = Organ::new(
            13,
            30.0 + jh(6.0),
            vec![Shape::ellipsoid(
                add([-38.0, -33.0, 45.0], kid_j),
                [5.0, 14.0, 16.0],
                -30.0,
                0.0,
            )],
        );
        let gallbladder = Organ::new(
            4,
            12.0 + jh(6.0),
            vec![Shape::ellipsoid(
                add([52.0, 48.0, 5.0], liver_j),
                mul([14.0, 16.0, 30.0], gb_s),
                20.0,
                -25.0,
            )],
        );
        let pancreas = Organ::new(
            11,
            45.0 + jh(8.0),
            vec![
                Shape::Tube {
                    pts: vec![
                        add([-82.0, -22.0, 30.0], panc_j),
                        add([-50.0, -4.0, 20.0], panc_j),
                        add([-10.0, 6.0, 12.0], panc_j),
                    ],
                    r: 10.0,
                },
                Shape::ellipsoid(add([18.0, 6.0, 2.0], panc_j), [18.0, 14.0, 20.0], 0.0, 0.0),
            ],
        );
        let kidney_r = Organ::new(
            2,
            150.0 + jh(15.0),
            vec![Shape::ellipsoid(
                add([68.0, -48.0, -22.0], kid_j),
                mul([26.0, 30.0, 52.0], kid_s),
                -25.0,
                10.0,
            )],
        );
        let kidney_l = Organ::new(
            3,
            150.0 + jh(15.0),
            vec![Shape::ellipsoid(
                add([-68.0, -45.0, -5.0], kid_j),
                mul([26.0, 30.0, 52.0], kid_s),
                25.0,
                10.0,
            )],
        );
        let spleen = Organ::new(
            1,
            55.0 + jh(8.0),
            vec![Shape::ellipsoid(
                add([-95.0, -35.0, 58.0], spleen_j),
                mul([28.0, 55.0, 50.0], spleen_s),
                -35.0,
                0.0,
            )],
        );
        let stomach = Organ::new(
            7,
            25.0 + jh(8.0),
            vec![
                Shape::ellipsoid(
                    add([-45.0, 30.0, 60.0], stomach_j),
                    mul([40.0, 38.0, 45.0], stomach_s),
                    -20.0,
                    0.0,
                ),
                Shape::ellipsoid(
                    add([-10.0, 55.0, 20.0], stomach_j),
                    mul([45.0, 22.0, 22.0], stomach_s),
                    15.0,
                    0.0,
                ),
            ],
        );
        let liver = Organ::new(
            6,
            60.0 + jh(8.0),
            vec![
                Shape::ellipsoid(
                    add([70.0, 5.0, 50.0], liver_j),
                    mul([78.0, 90.0, 68.0], liver_s),
                    0.0,
                    0.0,
                ),
                // Left lobe reaching across the midline, anterior to the stomach.
                Shape::ellipsoid(
                    add([-5.0, 45.0, 75.0], liver_j),
                    mul([55.0, 35.0, 35.0], liver_s),
                    10.0,
                    0.0,
                ),
            ],
        );
        let organs = vec![
            aorta,
            ivc,
            veins,
            esophagus,
            adrenal_r,
            adrenal_l,
            gallbladder,
            pancreas,
            kidney_r,
            kidney_l,
            spleen,
            stomach,
            liver,
        ];

        // Bowel loops below the liver and stomach: seeded blobs of fluid or gas.
        let mut rng4 = ChaCha8Rng::seed_from_u64(seed.wrapping_add(0xb0e1));
        let bowel = (0..60)
            .map(|_| {
                let c = [
                    rng4.gen_range(-110.0..110.0),
                    rng4.gen_range(-10.0..90.0),
                    rng4.gen_range(-120.0..10.0),
                ];
                let r = rng4.gen_range(10.0..22.0);
                let hu = if rng4.gen_bool(0.3) {
                    -850.0
                } else {
                    rng4.gen_range(5.0..40.0)
                };
                (c, r, hu)
            })
            .collect();
        Self { organs, bowel }
    }

    /// Label and HU at canonical point `p` (mm).
    fn sample(&self, p: [f64; 3]) -> (u16, f64) {
        let [x, y, z] = p;
        // Body outline: an ellipse, a little flatter at the back.
        let by = if y < 0.0 {
            BODY_HALF_MM[1] * 0.92
        } else {
            BODY_HALF_MM[1]
        };
        let e = ((x / BODY_HALF_MM[0]).powi(2) + (y / by).powi(2)).sqrt();
        if e > 1.0 {
            return (0, -1000.0);
        }
        // Subcutaneous fat (about 15 mm) and the muscular wall (about 10 mm).
        if e > 0.90 {
            return (0, -105.0);
        }
        // Spine (vertebral body, canal, posterior elements) and paraspinal muscles.
        let vb = ((x / 22.0).powi(2) + ((y + 62.0) / 19.0).powi(2)).sqrt();
        // Intervertebral discs every 30 mm.
        let disc = (z.rem_euclid(30.0) - 15.0).abs() < 2.5;
        if vb < 1.0 {
            return (
                0,
                if disc {
                    90.0
                } else if vb > 0.85 {
                    650.0
                } else {
                    260.0
                },
            );
        }
        let canal = ((x / 9.0).powi(2) + ((y + 92.0) / 8.0).powi(2)).sqrt();
        if canal < 1.0 {
            return (0, 15.0);
        }
        let posterior = ((x / 28.0).powi(2) + ((y + 92.0) / 14.0).powi(2)).sqrt();
        let spinous = ((x / 6.0).powi(2) + ((y + 108.0) / 12.0).powi(2)).sqrt();
        if (posterior < 1.0 || spinous < 1.0) && !disc {
            return (0, 500.0);
        }
        if e > 0.84 {
            return (0, 42.0);
        }
        // Ribs: thin bony arcs just inside the wall in the upper abdomen, every 28 mm.
        if z > -10.0 && e > 0.78 && (z.rem_euclid(28.0) - 14.0).abs() < 4.0 && y > -100.0 {
            return (0, 600.0);
        }
        for o in &self.organs {
            if o.level(p) < 1.0 {
                let mut hu = o.hu;
                match o.label {
                    // Stomach: 4 mm wall, fluid content, an air cap at the top front.
                    7 if o.level(p) < 0.88 => {
                        hu = if z > 75.0 && y > 35.0 { -900.0 } else { 12.0 };
                    }
                    // Kidneys: medulla a little darker than the cortex.
                    2 | 3 if o.level(p) < 0.6 => hu -= 40.0,
                    _ => {}
                }
                return (o.label, hu);
            }
        }
        let paraspinal = ((x.abs() - 38.0) / 24.0).powi(2) + ((y + 88.0) / 20.0).powi(2) < 1.0;
        let psoas = z < 0.0
            && ((x.abs() - 35.0) / (12.0 - z * 0.08)).powi(2)
                + ((y + 55.0) / (11.0 - z * 0.06)).powi(2)
                < 1.0;
        if paraspinal || psoas {
            return (0, 45.0);
        }
        for &(c, r, hu) in &self.bowel {
            let d2 = (x - c[0]).powi(2) + (y - c[1]).powi(2) + (z - c[2]).powi(2);
            if d2 < r * r {
                return (0, hu);
            }
        }
        // Mesenteric and retroperitoneal fat.
        (0, -95.0)
    }
}

/// The synthetic CT and its label map on a RAS grid centred on the body.
///
/// Deterministic: the same config gives bit-identical volumes on every run and thread count.
pub fn phantom(cfg: &PhantomConfig) -> (ImageVolume, LabelVolume) {
    let dims = cfg.dims;
    let sp: [f64; 3] = std::array::from_fn(|a| {
        if cfg.spacing_mm[a].is_finite() && cfg.spacing_mm[a] > 0.0 {
            cfg.spacing_mm[a]
        } else {
            1.0
        }
    });
    let origin: [f64; 3] =
        std::array::from_fn(|a| -(dims[a].saturating_sub(1) as f64) * sp[a] / 2.0);
    let affine = Affine::from_spacing_origin(sp, origin);
    // World mm -> canonical mm.
    let fov: [f64; 3] = std::array::from_fn(|a| dims[a] as f64 * sp[a]);
    let s_xy = (fov[0].min(fov[1]) / CANON_FOV_XY_MM).max(1e-9);
    let s_z = (fov[2] / (2.0 * BODY_HALF_MM[2])).max(1e-9);
    let scale = [s_xy, s_xy, s_z];
    let anatomy = Anatomy::new(cfg.seed);
    let [ni, nj, nk] = dims;
    let plane = nj * nk;
    let mut image = vec![0f32; ni * plane];
    let mut labels = vec![0u16; ni * plane];
    image
        .par_chunks_mut(plane.max(1))
        .zip(labels.par_chunks_mut(plane.max(1)))
        .enumerate()
        .for_each(|(i, (img, lab))| {
            let noise = Normal::new(0.0f32, cfg.noise_hu.max(0.0)).ok();
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(i as u64 + 1);
            for j in 0..nj {
                for k in 0..nk {
                    let centre = [i as f64, j as f64, k as f64];
                    let canon = |v: [f64; 3]| -> [f64; 3] {
                        std::array::from_fn(|a| (origin[a] + v[a] * sp[a]) / scale[a])
                    };
                    let (label, _) = anatomy.sample(canon(centre));
                    // Partial volume: mean of 2x2x2 sub-samples at ±1/4 voxel.
                    let mut hu = 0.0;
                    for d in 0..8 {
                        let off = [
                            (d & 1) as f64 - 0.5,
                            ((d >> 1) & 1) as f64 - 0.5,
                            ((d >> 2) & 1) as f64 - 0.5,
                        ];
                        let v = [
                            centre[0] + off[0] * 0.5,
                            centre[1] + off[1] * 0.5,
                            centre[2] + off[2] * 0.5,
                        ];
                        hu += anatomy.sample(canon(v)).1;
                    }
                    hu /= 8.0;
                    let mut v = hu as f32;
                    if let Some(n) = noise.as_ref().filter(|_| cfg.noise_hu > 0.0 && hu > -990.0) {
                        v += n.sample(&mut rng);
                    }
                    img[j * nk + k] = v;
                    lab[j * nk + k] = label;
                }
            }
        });
    (
        Volume {
            data: image,
            dims,
            ras_from_ijk: affine,
        },
        Volume {
            data: labels,
            dims,
            ras_from_ijk: affine,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_organs_present_and_plausible() {
        let cfg = PhantomConfig {
            dims: [64, 64, 48],
            spacing_mm: [6.0, 6.0, 5.0],
            seed: 3,
            noise_hu: 0.0,
        };
        let (img, lab) = phantom(&cfg);
        let mut count = [0usize; 14];
        let mut sum = [0f64; 14];
        for (&l, &v) in lab.data.iter().zip(&img.data) {
            count[l as usize] += 1;
            sum[l as usize] += v as f64;
        }
        for l in 1..14 {
            assert!(count[l] > 0, "label {l} missing");
        }
        assert!(
            count[6] > count[1] && count[6] > count[2],
            "liver is the largest organ"
        );
        let mean = |l: usize| sum[l] / count[l] as f64;
        assert!((mean(6) - 60.0).abs() < 20.0, "liver {}", mean(6));
        assert!(mean(8) > 100.0, "aorta {}", mean(8));
        // Air in the corners.
        assert_eq!(img.data[0], -1000.0);
        // Liver on the patient's right (+x in RAS): its centroid has positive x.
        let mut cx = 0.0;
        for i in 0..64 {
            for j in 0..64 {
                for k in 0..48 {
                    if lab.data[lab.index(i, j, k)] == 6 {
                        cx += lab.ras_from_ijk.apply([i as f64, j as f64, k as f64])[0];
                    }
                }
            }
        }
        assert!(cx / count[6] as f64 > 20.0);
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let cfg = PhantomConfig {
            dims: [24, 20, 16],
            spacing_mm: [16.0, 19.0, 15.0],
            seed: 7,
            noise_hu: 10.0,
        };
        let a = phantom(&cfg);
        let b = phantom(&cfg);
        assert_eq!(a, b);
        let c = phantom(&PhantomConfig { seed: 8, ..cfg });
        assert_ne!(a.0.data, c.0.data);
    }
}
