//! End to end: phantom CT → bundle (tiny ULKANet, random weights) → `segment` → a label map on the input grid
//! with the input affine → NIfTI round trip → metrics table. Plus geometry invariants of the preprocessing
//! and its inverse with a thresholding "network".

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use logonet::infer::predict::{model_grid, segment, segment_with};
use logonet::infer::{Blend, Bundle, BundleMeta, PredictOptions, SlidingWindowConfig};
use logonet::job::{CancelToken, NoProgress};
use logonet::metrics::{MetricsConfig, evaluate};
use logonet::nets::{AnyNet, NetConfig};
use logonet::volume::phantom::{PhantomConfig, phantom};
use logonet::volume::{Affine, ImageVolume, LabelTable, Volume};

fn small_phantom() -> (ImageVolume, logonet::volume::LabelVolume) {
    phantom(&PhantomConfig {
        dims: [40, 36, 24],
        spacing_mm: [9.5, 9.5, 10.0],
        seed: 3,
        noise_hu: 0.0,
    })
}

fn recipe(spacing: Option<[f64; 3]>) -> logonet::infer::Preprocess {
    let mut p = logonet::infer::Preprocess::btcv_ct();
    p.spacing_mm = spacing;
    p
}

/// The same image stored with voxel axes 0 and 1 reversed (LPS), same world positions.
fn flip_ij<T: Copy>(v: &Volume<T>) -> Volume<T> {
    let [ni, nj, nk] = v.dims;
    let mut data = Vec::with_capacity(v.data.len());
    for i in 0..ni {
        for j in 0..nj {
            for k in 0..nk {
                data.push(v.data[v.index(ni - 1 - i, nj - 1 - j, k)]);
            }
        }
    }
    let mut a = v.ras_from_ijk;
    let far = a.apply([(ni - 1) as f64, (nj - 1) as f64, 0.0]);
    for (row, f) in a.0.iter_mut().zip(far) {
        row[0] = -row[0];
        row[1] = -row[1];
        row[3] = f;
    }
    Volume {
        data,
        dims: v.dims,
        ras_from_ijk: a,
    }
}

/// A "network" that labels voxels brighter than 0.5 (after intensity scaling) as 1.
fn threshold(x: &Tensor) -> logonet::Result<Tensor> {
    let fg = (x - 0.5)?;
    Ok(Tensor::cat(&[fg.neg()?, fg], 1)?)
}

fn options(roi: usize) -> PredictOptions {
    PredictOptions {
        sliding_window: SlidingWindowConfig {
            roi_size: [roi; 3],
            sw_batch_size: 2,
            ..Default::default()
        },
        device: Device::Cpu,
    }
}

#[test]
fn geometry_round_trips_through_preprocessing() {
    let (img, _) = small_phantom();
    // Without resampling, segmenting with a threshold equals thresholding the scaled input.
    let labels = segment_with(
        &img,
        &recipe(None),
        &options(16),
        threshold,
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(labels.dims, img.dims);
    assert_eq!(labels.ras_from_ijk, img.ras_from_ijk);
    let want: Vec<u16> = img
        .data
        .iter()
        .map(|&hu| u16::from((hu + 175.0) / 425.0 > 0.5))
        .collect();
    assert_eq!(labels.data, want);
    // An LPS copy gives the same labels at the same world positions, with resampling too.
    let lps = flip_ij(&img);
    assert_eq!(lps.ras_from_ijk.orientation_code(), ['L', 'P', 'S']);
    // Spacings chosen so that no voxel centre maps exactly halfway between two (ties may round either way).
    for spacing in [None, Some([7.3, 8.3, 12.7])] {
        let a = segment_with(
            &img,
            &recipe(spacing),
            &options(16),
            threshold,
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        let b = segment_with(
            &lps,
            &recipe(spacing),
            &options(16),
            threshold,
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(b.ras_from_ijk, lps.ras_from_ijk);
        assert_eq!(flip_ij(&b).data, a.data, "spacing {spacing:?}");
    }
    // The model grid is RAS at the recipe spacing, MONAI's shape rule.
    let g = model_grid(lps.dims, &lps.ras_from_ijk, &recipe(Some([7.0, 8.0, 12.0]))).unwrap();
    assert!(
        g.ras_from_ijk.max_abs_diff(
            &model_grid(img.dims, &img.ras_from_ijk, &recipe(Some([7.0, 8.0, 12.0])))
                .unwrap()
                .ras_from_ijk
        ) < 1e-9
    );
    assert_eq!(Affine(g.ras_from_ijk.0).orientation_code(), ['R', 'A', 'S']);
    assert_eq!(
        g.dims,
        [
            (39.0f64 * 9.5 / 7.0 + 1.0).round() as usize,
            (35.0f64 * 9.5 / 8.0 + 1.0).round() as usize,
            20
        ]
    );
}

#[test]
fn phantom_to_bundle_to_segmentation_to_metrics() {
    let (img, gt) = small_phantom();
    let cfg = NetConfig::from_name("ulkanet-tiny").unwrap();
    let varmap = VarMap::new();
    let _net = AnyNet::new(
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let tensors = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let bundle = Bundle {
        meta: BundleMeta {
            format_version: logonet::infer::bundle::FORMAT_VERSION,
            name: "tiny test".into(),
            net: cfg.clone(),
            labels: LabelTable::btcv(),
            preprocess: recipe(Some([12.0, 12.0, 12.0])),
            sliding_window: SlidingWindowConfig {
                roi_size: [32, 32, 32],
                overlap: 0.25,
                sw_batch_size: 2,
                blend: Blend::Gaussian { sigma_scale: 0.125 },
                padding_value: 0.0,
                tta_mirror: false,
            },
            notes: String::new(),
        },
        tensors,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    bundle.save(&path).unwrap();
    let loaded = Bundle::load(dir.path()).unwrap();
    assert_eq!(loaded.meta, bundle.meta);
    assert_eq!(loaded.tensors.len(), bundle.tensors.len());
    let opts = PredictOptions {
        sliding_window: loaded.meta.sliding_window.clone(),
        device: Device::Cpu,
    };
    let labels = segment(&img, &loaded, &opts, &NoProgress, &CancelToken::new()).unwrap();
    assert_eq!(labels.dims, img.dims);
    assert_eq!(labels.ras_from_ijk, img.ras_from_ijk);
    assert!(labels.data.iter().all(|&v| v < 14));
    // NIfTI round trip keeps the input affine.
    let out = dir.path().join("seg.nii.gz");
    logonet::volume::io::save_labels(&out, &labels).unwrap();
    let back = logonet::volume::io::load_labels(&out).unwrap();
    assert_eq!(back.dims, img.dims);
    assert!(back.ras_from_ijk.max_abs_diff(&img.ras_from_ijk) < 1e-4);
    assert_eq!(back.data, labels.data);
    let table = evaluate(
        &back,
        &gt,
        &LabelTable::btcv(),
        &MetricsConfig::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(table.labels.len(), 13);
    assert!(
        table
            .labels
            .iter()
            .all(|l| l.dice.is_nan() || (0.0..=1.0).contains(&l.dice))
    );
    // A phantom against itself: perfect scores.
    let self_table = evaluate(
        &gt,
        &gt,
        &LabelTable::btcv(),
        &MetricsConfig::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    for l in &self_table.labels {
        if l.volume_gt_ml > 0.0 {
            assert_eq!((l.dice, l.hd95_mm, l.nsd), (1.0, 0.0, 1.0), "{}", l.name);
        }
    }
}
