//! Drives the real LoGoNet Studio app headlessly with egui_kittest (wgpu on lavapipe, no display): finds
//! widgets by their accessible labels, changes slices, window presets and label visibility, opens the metrics
//! table and the compare view, and records snapshots of the main screens (`UPDATE_SNAPSHOTS=1` to re-record).

use std::time::Duration;

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use logonet::volume::LabelVolume;
use logonet_studio::actions::{Action, LabelTarget};
use logonet_studio::state::Layout;
use logonet_studio::{StartOptions, StudioApp};
use logonet_viewer::window_level::Preset;

/// Start options of most tests: no dialogs, and no bundled model, so that what the tests see does not depend
/// on the model shipped in `assets/models` (the first-launch test below uses it).
fn options() -> StartOptions {
    StartOptions {
        dialogs: false,
        no_bundled_model: true,
        ..Default::default()
    }
}

/// The app after its start-up load has finished.
fn app_harness(options: StartOptions) -> Harness<'static, StudioApp> {
    let mut h = Harness::builder()
        .with_size([1280.0, 800.0])
        .wgpu()
        .build_eframe(move |cc| StudioApp::new(cc, options));
    wait_idle(&mut h);
    h
}

fn wait_idle(h: &mut Harness<'static, StudioApp>) {
    // Generous: the machine running the tests may be shared by several builds.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while std::time::Instant::now() < deadline {
        h.step();
        if !h.state().is_busy() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!h.state().is_busy(), "background job did not finish");
    h.run_steps(3);
}

/// A prediction that disagrees with the ground truth: every label shifted by 3 voxels along i.
fn shifted(gt: &LabelVolume) -> LabelVolume {
    let mut pred = gt.clone();
    let [ni, nj, nk] = gt.dims;
    for i in 0..ni {
        for j in 0..nj {
            for k in 0..nk {
                let src = if i >= 3 {
                    gt.data[gt.index(i - 3, j, k)]
                } else {
                    0
                };
                let at = pred.index(i, j, k);
                pred.data[at] = src;
            }
        }
    }
    pred
}

fn with_prediction(h: &mut Harness<'static, StudioApp>) {
    let gt = h.state().doc.as_ref().and_then(|d| d.gt.clone());
    let Some(gt) = gt else {
        panic!("the default sample has a ground truth")
    };
    h.state_mut()
        .set_labels(shifted(&gt), LabelTarget::Prediction);
    h.run_steps(3);
}

#[test]
fn menu_bar_has_the_five_menus() {
    let mut h = app_harness(options());
    for name in ["File", "Segmentation", "Training", "View", "Help"] {
        h.get_by_label(name);
    }
    h.get_by_label("File").click();
    h.run_steps(2);
    h.get_by_label("Open image…");
    h.get_by_label("Open DICOM folder…");
    h.get_by_label("Save segmentation…");
}

#[test]
fn default_sample_loads_with_ground_truth_and_legend() {
    let h = app_harness(options());
    let doc = h
        .state()
        .doc
        .as_ref()
        .map(|d| (d.gt.is_some(), d.present.clone(), d.is_ct));
    let Some((has_gt, present, is_ct)) = doc else {
        panic!("no document after start-up")
    };
    assert!(has_gt && is_ct);
    assert!(present.contains(&6), "liver in the phantom: {present:?}");
    h.get_by_label("liver");
    h.get_by_label("spleen");
    h.get_by_label("No model loaded");
    assert_eq!(h.state().view.preset, Some(Preset::Abdomen));
}

#[test]
fn slice_sliders_move_the_linked_crosshair() {
    let mut h = app_harness(options());
    let before = h.state().view.cursor;
    h.get_by_role_and_label(Role::Slider, "Axial slice")
        .set_value_accesskit(10.0);
    h.run_steps(2);
    let after = h.state().view.cursor;
    assert_eq!(after[2], 10, "axial slice runs along k for a RAS volume");
    assert_eq!(&after[..2], &before[..2]);
    h.get_by_role_and_label(Role::Slider, "Sagittal slice")
        .set_value_accesskit(20.0);
    h.get_by_role_and_label(Role::Slider, "Coronal slice")
        .set_value_accesskit(30.0);
    h.run_steps(2);
    assert_eq!(h.state().view.cursor, [20, 30, 10]);
    // Each view re-rendered its texture for the new slices, and only a bounded number of times.
    for v in &h.state().views {
        assert!(
            v.uploads >= 2 && v.uploads <= 8,
            "{}: {} uploads",
            v.id,
            v.uploads
        );
    }
}

#[test]
fn mouse_wheel_pages_the_hovered_view() {
    let mut h = app_harness(options());
    let k0 = h.state().view.cursor[2];
    let axial = h.get_by_role_and_label(Role::Slider, "Axial slice").rect();
    // The axial view fills the left half below its slider.
    let p = egui::pos2(axial.center().x, axial.max.y + 200.0);
    h.hover_at(p);
    h.run_steps(1);
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Line,
        delta: egui::vec2(0.0, 1.0),
        phase: egui::TouchPhase::Move,
        modifiers: Default::default(),
        source: egui::MouseWheelSource::Wheel,
    });
    h.run_steps(2);
    assert_eq!(h.state().view.cursor[2], k0 + 1);
    assert!(
        h.state().hovered.is_some(),
        "readout has a voxel under the pointer"
    );
}

#[test]
fn window_presets_change_the_window() {
    let mut h = app_harness(options());
    h.get_by_label("Lung").click();
    h.run_steps(2);
    assert_eq!(h.state().view.window, Preset::Lung.window());
    assert_eq!(h.state().view.preset, Some(Preset::Lung));
    h.get_by_label("Bone").click();
    h.run_steps(2);
    assert_eq!(h.state().view.window, Preset::Bone.window());
}

#[test]
fn label_checkbox_toggles_visibility() {
    let mut h = app_harness(options());
    assert!(!h.state().view.overlay.hidden.contains(&1));
    h.get_by_label("spleen").click();
    h.run_steps(2);
    assert!(h.state().view.overlay.hidden.contains(&1));
    h.get_by_label("spleen").click();
    h.run_steps(2);
    assert!(!h.state().view.overlay.hidden.contains(&1));
}

#[test]
fn metrics_table_shows_dice_per_label() {
    let mut h = app_harness(options());
    with_prediction(&mut h);
    let rows = h
        .state()
        .doc
        .as_ref()
        .map(|d| d.metrics.clone())
        .unwrap_or_default();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r.dice >= 0.0 && r.dice < 1.0),
        "a shifted prediction is imperfect: {rows:?}"
    );
    let mean = logonet_viewer::metrics_table::mean_dice(&rows).unwrap_or(0.0);
    assert!(mean > 0.3 && mean < 1.0, "mean Dice {mean}");
    h.get_by_label("Metrics").click();
    h.run_steps(3);
    assert!(h.state().view.show_metrics);
    h.get_by_label("Dice");
    h.get_by_label("Mean");
    h.get_by_label("HD95 (mm)");
}

#[test]
fn segmentation_without_model_says_so() {
    let mut h = app_harness(StartOptions {
        no_bundled_model: true,
        ..options()
    });
    let ctx = h.ctx.clone();
    h.state_mut().handle_action(&ctx, Action::RunSegmentation);
    h.run_steps(2);
    assert!(
        h.state()
            .messages
            .iter()
            .any(|m| m.is_error && m.text.contains("No model loaded"))
    );
    h.get_by_label_contains("No model loaded: Segmentation > Load model");
}

#[test]
fn opening_a_missing_file_shows_an_error_in_window() {
    let mut h = app_harness(options());
    let ctx = h.ctx.clone();
    h.state_mut()
        .handle_action(&ctx, Action::OpenImage("/nonexistent/ct.nii.gz".into()));
    wait_idle(&mut h);
    assert!(
        h.state().messages.iter().any(|m| m.is_error),
        "an error message is shown"
    );
    assert!(h.state().doc.is_some(), "the previous image stays open");
    h.get_by_label("Dismiss").click();
    h.run_steps(2);
    assert!(h.state().messages.is_empty());
}

#[test]
fn snapshot_three_views() {
    let mut h = app_harness(options());
    h.snapshot("three_views");
}

#[test]
fn snapshot_compare_with_difference_and_metrics() {
    let mut h = app_harness(options());
    with_prediction(&mut h);
    h.state_mut().view.layout = Layout::Compare;
    h.run_steps(2);
    h.get_by_label("Difference overlay").click();
    h.run_steps(2);
    assert!(h.state().view.compare_difference);
    h.get_by_label("Difference (TP green, FP red, FN blue)");
    h.snapshot("compare_difference");
    h.state_mut().view.show_metrics = true;
    h.state_mut().view.layout = Layout::ThreeViews;
    h.state_mut().view.overlay.outline = true;
    h.run_steps(3);
    h.snapshot("prediction_outline_metrics");
}

/// A random-weight tiny LoGoNet saved as a bundle (BTCV labels, CT recipe, 64³ windows so it runs in seconds).
fn tiny_bundle(dir: &std::path::Path) -> std::path::PathBuf {
    use logonet::infer::bundle::{Bundle, BundleMeta, FORMAT_VERSION, Preprocess};
    use logonet::infer::sliding_window::SlidingWindowConfig;
    use logonet::nets::{NetConfig, checkpoint};
    let net = match NetConfig::from_name("logonet-tiny") {
        Ok(n) => n,
        Err(e) => panic!("tiny config: {e}"),
    };
    let loaded = match checkpoint::new_net(&net, &candle_core::Device::Cpu) {
        Ok(l) => l,
        Err(e) => panic!("tiny net: {e}"),
    };
    let tensors = match loaded.varmap.data().lock() {
        Ok(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect(),
        Err(_) => panic!("varmap lock"),
    };
    let bundle = Bundle {
        meta: BundleMeta {
            format_version: FORMAT_VERSION,
            name: "tiny test model".into(),
            net,
            labels: logonet::volume::LabelTable::btcv(),
            preprocess: Preprocess::btcv_ct(),
            sliding_window: SlidingWindowConfig {
                roi_size: [64, 64, 64],
                sw_batch_size: 1,
                ..Default::default()
            },
            notes: "random weights (ui test)".into(),
        },
        tensors,
    };
    let path = dir.join("tiny.safetensors");
    if let Err(e) = bundle.save(&path) {
        panic!("save bundle: {e}");
    }
    path
}

fn with_model(dir: &std::path::Path, dims: [usize; 3]) -> Harness<'static, StudioApp> {
    let h = app_harness(StartOptions {
        model: Some(tiny_bundle(dir)),
        phantom_dims: Some(dims),
        ..options()
    });
    assert!(h.state().model.is_some(), "{:?}", messages(&h));
    h
}

fn messages(h: &Harness<'static, StudioApp>) -> Vec<String> {
    h.state().messages.iter().map(|m| m.text.clone()).collect()
}

#[test]
fn segmentation_runs_to_completion_and_shows_metrics() {
    let Ok(dir) = tempfile::tempdir() else { return };
    let mut h = with_model(dir.path(), [64, 64, 32]);
    h.get_by_label_contains("Model: tiny test model");
    h.get_by_label("Run segmentation").click();
    h.step();
    assert!(h.state().segment_job.is_some());
    wait_idle(&mut h);
    let doc = h
        .state()
        .doc
        .as_ref()
        .map(|d| (d.pred.clone(), d.image.dims));
    let Some((Some(pred), dims)) = doc else {
        panic!("no prediction: {:?}", messages(&h))
    };
    assert_eq!(pred.dims, dims, "prediction lies on the input grid");
    assert!(pred.data.iter().all(|&v| v < 14));
    // The phantom has a ground truth, so the metrics table (with HD95) is filled.
    let rows = h
        .state()
        .doc
        .as_ref()
        .map(|d| d.metrics.clone())
        .unwrap_or_default();
    assert!(!rows.is_empty(), "metrics rows");
    h.get_by_label("Metrics").click();
    h.run_steps(3);
    h.get_by_label("HD95 (mm)");
    // Save on the input grid and read back.
    let out = dir.path().join("pred.nii.gz");
    let ctx = h.ctx.clone();
    h.state_mut()
        .handle_action(&ctx, Action::SaveSegmentation(out.clone()));
    wait_idle(&mut h);
    match logonet::volume::io::load_labels(&out) {
        Ok(back) => assert_eq!(back.data, pred.data),
        Err(e) => panic!("saved segmentation: {e}"),
    }
}

#[test]
fn segmentation_can_be_cancelled() {
    let Ok(dir) = tempfile::tempdir() else { return };
    let mut h = with_model(dir.path(), [160, 160, 96]);
    h.get_by_label("Run segmentation").click();
    h.step();
    assert!(h.state().segment_job.is_some());
    h.run_steps(2);
    match h.query_all_by_label("Cancel").next() {
        Some(cancel) => cancel.click(),
        None => panic!("no Cancel button while segmenting"),
    }
    wait_idle(&mut h);
    assert!(
        h.state().doc.as_ref().is_some_and(|d| d.pred.is_none()),
        "cancelled run left no prediction"
    );
    assert!(
        messages(&h).iter().any(|m| m.contains("cancelled")),
        "{:?}",
        messages(&h)
    );
}

/// First launch as a user gets it: the default sample and the model bundled in `assets/models` (trained on
/// phantoms by `scripts/train-bundled-model.sh`); Segment runs to completion on the default sample.
/// Only what is certain is checked (the prediction's grid and label range, a filled metrics table), not the
/// model's accuracy.
#[test]
fn first_launch_segments_the_default_sample_with_the_bundled_model() {
    let Some(bundled) = logonet_studio::backend::bundled_model_path() else {
        panic!("no bundled model in assets/models (scripts/train-bundled-model.sh makes it)")
    };
    let mut h = app_harness(StartOptions {
        dialogs: false,
        ..Default::default()
    });
    let model = h
        .state()
        .model
        .as_ref()
        .map(|m| (m.path.clone(), m.name.clone()));
    let Some((path, name)) = model else {
        panic!("bundled model not loaded: {:?}", messages(&h))
    };
    assert_eq!(path, bundled);
    h.get_by_label_contains(&format!("Model: {name}"));
    h.get_by_label("Run segmentation").click();
    h.step();
    assert!(h.state().segment_job.is_some());
    wait_idle(&mut h);
    let doc = h
        .state()
        .doc
        .as_ref()
        .map(|d| (d.pred.clone(), d.image.dims, d.metrics.len()));
    let Some((Some(pred), dims, rows)) = doc else {
        panic!("no prediction: {:?}", messages(&h))
    };
    assert_eq!(pred.dims, dims, "prediction lies on the input grid");
    assert!(pred.data.iter().all(|&v| v < 14));
    assert!(rows > 0, "metrics against the ground truth");
    assert!(
        !messages(&h).iter().any(|m| m.contains("failed")),
        "{:?}",
        messages(&h)
    );
}
