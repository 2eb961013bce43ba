//! # logonet-studio
//!
//! LoGoNet Studio, the desktop program: inspect a CT/MRI volume in three linked views, segment it with a
//! LoGoNet model in the background, and compare the prediction with the ground truth.
//!
//! | module | purpose |
//! |---|---|
//! | [`state`] | the open document and view settings (crosshair in voxel indices), recent files |
//! | [`actions`] | user requests queued by panels and menus, carried out after drawing |
//! | [`jobs`] | background jobs: progress over a channel, cancel flag, repaint on every event |
//! | [`backend`] | the only calls into the `logonet` library (I/O, DICOM, models, metrics) |
//! | [`menu`] | the menu bar |
//! | [`panels`] | sidebar, views, compare panes, status bar, windows |
//!
//! The UI thread never does long work: loading, scanning DICOM folders, segmentation and saving are jobs.

pub mod actions;
pub mod backend;
pub mod bench;
pub mod jobs;
pub mod menu;
pub mod panels;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use logonet::volume::{ImageVolume, LabelVolume};
use logonet_viewer::Axis;
use logonet_viewer::slice_view::SliceView;
use logonet_viewer::window_level::{self, Preset};

use crate::actions::{Action, LabelTarget};
use crate::backend::{Model, SeriesInfo};
use crate::jobs::Job;
use crate::panels::windows::Message;
use crate::state::{Document, Layout, OverlaySource, RecentFiles, ViewSettings};

/// How the program was started (command-line options).
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Image to open (NIfTI file or DICOM folder); the embedded sample when `None`.
    pub open: Option<PathBuf>,
    /// Ground truth to open with it.
    pub gt: Option<PathBuf>,
    /// Model bundle to load.
    pub model: Option<PathBuf>,
    /// Segment once everything is loaded.
    pub segment: bool,
    /// Save a screenshot here after the first complete frame (or after segmentation), then exit.
    pub screenshot: Option<PathBuf>,
    /// Page through the axial slices for this many frames, print frame times, then exit.
    pub bench_frames: Option<usize>,
    /// Use a synthetic phantom of these dimensions instead of the default sample (benchmarks).
    pub phantom_dims: Option<[usize; 3]>,
    /// Show native file dialogs (off in tests).
    pub dialogs: bool,
    /// Where recent files are remembered (None: not remembered).
    pub recent_file: Option<PathBuf>,
    /// Do not fall back to the bundled model when no `model` is given (tests of the "no model" path).
    pub no_bundled_model: bool,
    /// Start in the compare layout (ground truth and prediction side by side, difference overlay on).
    pub compare: bool,
    /// Start with the metrics table open.
    pub metrics: bool,
    /// The renderer clears the window to the panel colour before painting (eframe does, with
    /// [`StudioApp::clear_color`]), so the menu, status and side panels leave their background to the clear
    /// instead of painting it: a software rasteriser (llvmpipe) then shades about a quarter fewer pixels a
    /// frame. Off in tests, whose renderer clears to transparent.
    pub cleared_background: bool,
}

/// Result of a load job (one value per job, so the size difference between variants does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Loaded {
    /// A new image (with its ground truth and a model when they were loaded along).
    Image {
        /// The image.
        image: ImageVolume,
        /// Display name.
        name: String,
        /// Source path.
        path: Option<PathBuf>,
        /// Ground truth.
        gt: Option<LabelVolume>,
        /// Model.
        model: Option<Model>,
    },
    /// A label map for the open image.
    Labels(LabelVolume, PathBuf, LabelTarget),
    /// The series of a DICOM folder.
    Series(PathBuf, Vec<SeriesInfo>),
    /// A model bundle.
    Model(Model),
    /// A segmentation was saved.
    Saved(PathBuf),
}

/// Which floating windows are open.
#[derive(Clone, Copy, Debug, Default)]
pub struct Windows {
    /// Training information.
    pub training: bool,
    /// Mouse and keyboard help.
    pub controls: bool,
    /// About.
    pub about: bool,
}

#[derive(Default)]
struct ScreenshotState {
    path: PathBuf,
    ready_frames: u32,
    requested: bool,
    result: Arc<Mutex<Option<Result<(), String>>>>,
}

/// Where the time of one `ui` call went, ms (shown by `--bench-frames`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameProfile {
    /// Polling background jobs and dropped files.
    pub jobs_ms: f64,
    /// Menu bar, message banner and status bar.
    pub bars_ms: f64,
    /// The sidebar (image info, window presets and histogram, legend, segmentation controls).
    pub sidebar_ms: f64,
    /// The central area (slice views or compare panes), slice renders included.
    pub central_ms: f64,
    /// Reading slices with the window applied (all views that re-rendered this frame).
    pub slice_gather_ms: f64,
    /// Composing slice pixels with the label overlay.
    pub slice_compose_ms: f64,
    /// Handing slice images to egui (`TextureHandle::set`).
    pub slice_upload_ms: f64,
    /// Floating windows (metrics table, ...) and queued actions.
    pub windows_ms: f64,
    /// Wall time of the whole `ui` call.
    pub total_ms: f64,
    /// CPU time of the UI thread during the `ui` call (Linux; 0 elsewhere).
    pub cpu_ms: f64,
}

struct BenchState {
    frames: usize,
    done: usize,
    ui_ms: Vec<f64>,
    frame_ms: Vec<f64>,
    /// eframe's CPU time of the previous frame (ui + tessellation + paint submission, vsync excluded).
    eframe_cpu_ms: Vec<f64>,
    profiles: Vec<FrameProfile>,
    last: Option<Instant>,
    /// CPU time of every thread of the process when the first measured frame started.
    threads_at_start: std::collections::BTreeMap<u32, (String, f64)>,
}

pub use bench::thread_cpu_ms;

/// The program.
pub struct StudioApp {
    /// The open image with its label maps.
    pub doc: Option<Document>,
    /// How it is shown.
    pub view: ViewSettings,
    /// The three main views (axial, coronal, sagittal).
    pub views: [SliceView; 3],
    /// The two compare panes (ground truth, prediction/difference).
    pub compare_views: [SliceView; 2],
    /// The loaded model.
    pub model: Option<Arc<Model>>,
    /// The running load (one at a time).
    pub load_job: Option<Job<Loaded>>,
    /// The running segmentation (one at a time).
    pub segment_job: Option<Job<LabelVolume>>,
    /// Messages shown in the banner.
    pub messages: Vec<Message>,
    /// Requests queued during this frame.
    pub actions: Vec<Action>,
    /// Recently opened files.
    pub recent: RecentFiles,
    /// A scanned DICOM folder waiting for the user to pick a series.
    pub dicom_choice: Option<(PathBuf, Vec<SeriesInfo>)>,
    /// Floating windows.
    pub windows: Windows,
    /// The voxel under the pointer.
    pub hovered: Option<[usize; 3]>,
    /// Time spent in the last `ui` call, ms.
    pub frame_ms: f64,
    /// Where the time of the last `ui` call went.
    pub profile: FrameProfile,
    options: StartOptions,
    pending_segment: bool,
    screenshot: Option<ScreenshotState>,
    bench: Option<BenchState>,
    /// eframe's CPU time of the previous frame (ms), when known.
    eframe_cpu_ms: Option<f64>,
}

impl StudioApp {
    /// The app for eframe.
    pub fn new(cc: &eframe::CreationContext<'_>, options: StartOptions) -> Self {
        Self::with_context(&cc.egui_ctx, options)
    }

    /// The app on an egui context (used by `new` and by tests).
    pub fn with_context(ctx: &egui::Context, options: StartOptions) -> Self {
        ctx.set_visuals(egui::Visuals::dark());
        let recent = options
            .recent_file
            .as_deref()
            .map(RecentFiles::load)
            .unwrap_or_default();
        let screenshot = options.screenshot.clone().map(|path| ScreenshotState {
            path,
            ..Default::default()
        });
        let bench = options.bench_frames.map(|frames| BenchState {
            frames,
            done: 0,
            ui_ms: Vec::new(),
            frame_ms: Vec::new(),
            eframe_cpu_ms: Vec::new(),
            profiles: Vec::new(),
            last: None,
            threads_at_start: Default::default(),
        });
        let mut app = Self {
            doc: None,
            view: ViewSettings::for_document(&Document::new(
                ImageVolume {
                    data: vec![0.0],
                    dims: [1, 1, 1],
                    ras_from_ijk: Default::default(),
                },
                String::new(),
                None,
            )),
            views: [
                SliceView::new(Axis::Axial, "axial"),
                SliceView::new(Axis::Coronal, "coronal"),
                SliceView::new(Axis::Sagittal, "sagittal"),
            ],
            compare_views: [
                SliceView::new(Axis::Axial, "compare-gt"),
                SliceView::new(Axis::Axial, "compare-pred"),
            ],
            model: None,
            load_job: None,
            segment_job: None,
            messages: Vec::new(),
            actions: Vec::new(),
            recent,
            dicom_choice: None,
            windows: Windows::default(),
            hovered: None,
            frame_ms: 0.0,
            profile: FrameProfile::default(),
            pending_segment: options.segment,
            screenshot,
            bench,
            eframe_cpu_ms: None,
            options: options.clone(),
        };
        app.start_initial_load(ctx);
        app
    }

    fn start_initial_load(&mut self, ctx: &egui::Context) {
        let StartOptions {
            open,
            gt,
            model,
            phantom_dims,
            no_bundled_model,
            ..
        } = self.options.clone();
        let name = open
            .as_deref()
            .map(file_name)
            .unwrap_or_else(|| "Synthetic abdomen phantom".into());
        if let Some(p) = &open {
            self.recent.push(p);
            self.save_recent();
        }
        self.load_job = Some(Job::spawn(
            ctx,
            format!("Loading {name}"),
            move |progress, cancel| {
                let report = |stage: &str, done, total| {
                    progress.report(logonet::job::ProgressEvent {
                        stage: stage.into(),
                        done,
                        total,
                    })
                };
                report("image", 0, 3);
                let (image, mut gt_map, path) = match (&open, phantom_dims) {
                    (Some(p), _) => (
                        load_image_or_dicom(p, progress, cancel)?,
                        None,
                        Some(p.clone()),
                    ),
                    (None, Some(dims)) => {
                        let (i, l) = backend::phantom(dims, [0.8, 0.8, 1.5]);
                        (i, Some(l), None)
                    }
                    (None, None) => {
                        let s = backend::default_sample()?;
                        (s.image, s.labels, None)
                    }
                };
                cancel.check()?;
                report("ground truth", 1, 3);
                if let Some(g) = &gt {
                    gt_map = Some(backend::load_labels(g)?);
                }
                report("model", 2, 3);
                // No bundle given: the bundled model when the app ships one, else none ("No model loaded").
                let model = if no_bundled_model {
                    model
                } else {
                    model.or_else(backend::bundled_model_path)
                };
                let model = model.as_deref().map(backend::load_model).transpose()?;
                report("done", 3, 3);
                Ok(Loaded::Image {
                    image,
                    name,
                    path,
                    gt: gt_map,
                    model,
                })
            },
        ));
    }

    /// Whether a load or a segmentation is running.
    pub fn is_busy(&self) -> bool {
        self.load_job.is_some() || self.segment_job.is_some()
    }

    /// Sets the window from a preset (the auto preset uses the image's percentiles).
    pub fn set_preset(&mut self, preset: Preset) {
        self.view.window = match (preset, &self.doc) {
            (Preset::Auto, Some(doc)) => window_level::auto_window(&doc.image.data),
            _ => preset.window(),
        };
        self.view.preset = Some(preset);
    }

    /// Shows an error in the banner.
    pub fn error(&mut self, text: impl Into<String>) {
        self.messages.push(Message {
            is_error: true,
            text: text.into(),
        });
    }

    fn info(&mut self, text: impl Into<String>) {
        self.messages.push(Message {
            is_error: false,
            text: text.into(),
        });
    }

    fn save_recent(&mut self) {
        if let Some(f) = self.options.recent_file.clone()
            && let Err(e) = self.recent.save(&f)
        {
            self.error(format!("Cannot remember recent files: {e}"));
        }
    }

    fn start_load(
        &mut self,
        ctx: &egui::Context,
        name: String,
        work: impl FnOnce(
            &dyn logonet::job::Progress,
            &logonet::job::CancelToken,
        ) -> logonet::Result<Loaded>
        + Send
        + 'static,
    ) {
        if self.load_job.is_some() {
            self.error("Another file is still loading: wait or cancel it first.");
            return;
        }
        self.load_job = Some(Job::spawn(ctx, name, work));
    }

    fn pick_file(&self, title: &str, save: bool) -> Option<PathBuf> {
        if !self.options.dialogs {
            return None;
        }
        let dialog = rfd::FileDialog::new()
            .set_title(title)
            .add_filter("NIfTI", &["nii", "gz"])
            .add_filter("All files", &["*"]);
        if save {
            dialog.set_file_name("segmentation.nii.gz").save_file()
        } else {
            dialog.pick_file()
        }
    }

    fn pick_folder(&self, title: &str) -> Option<PathBuf> {
        if !self.options.dialogs {
            return None;
        }
        rfd::FileDialog::new().set_title(title).pick_folder()
    }

    /// Carries out one action (public so tests can drive the app without dialogs).
    pub fn handle_action(&mut self, ctx: &egui::Context, action: Action) {
        match action {
            Action::OpenImageDialog => {
                if let Some(p) = self.pick_file("Open image", false) {
                    self.handle_action(ctx, Action::OpenImage(p));
                }
            }
            Action::OpenDicomDialog => {
                if let Some(p) = self.pick_folder("Open DICOM folder") {
                    self.handle_action(ctx, Action::OpenDicom(p));
                }
            }
            Action::OpenGroundTruthDialog => {
                if let Some(p) = self.pick_file("Open ground truth", false) {
                    self.handle_action(ctx, Action::OpenLabels(p, LabelTarget::GroundTruth));
                }
            }
            Action::OpenPredictionDialog => {
                if let Some(p) = self.pick_file("Open prediction", false) {
                    self.handle_action(ctx, Action::OpenLabels(p, LabelTarget::Prediction));
                }
            }
            Action::OpenModelDialog => {
                if !self.options.dialogs {
                    return;
                }
                let picked = rfd::FileDialog::new()
                    .set_title("Load model bundle")
                    .pick_file();
                if let Some(p) = picked {
                    self.handle_action(ctx, Action::OpenModel(p));
                }
            }
            Action::SaveSegmentationDialog => {
                if let Some(p) = self.pick_file("Save segmentation", true) {
                    self.handle_action(ctx, Action::SaveSegmentation(p));
                }
            }
            Action::OpenPath(p) => {
                if p.is_dir() {
                    self.handle_action(ctx, Action::OpenDicom(p));
                } else if self.doc.is_some() && looks_like_labels(&p) {
                    self.handle_action(ctx, Action::OpenLabels(p, LabelTarget::GroundTruth));
                } else {
                    self.handle_action(ctx, Action::OpenImage(p));
                }
            }
            Action::OpenImage(p) => {
                self.recent.push(&p);
                self.save_recent();
                let name = file_name(&p);
                self.start_load(ctx, format!("Loading {name}"), move |progress, cancel| {
                    let image = load_image_or_dicom(&p, progress, cancel)?;
                    Ok(Loaded::Image {
                        image,
                        name,
                        path: Some(p),
                        gt: None,
                        model: None,
                    })
                });
            }
            Action::OpenLabels(p, target) => {
                self.recent.push(&p);
                self.save_recent();
                let name = file_name(&p);
                self.start_load(ctx, format!("Loading {name}"), move |_, _| {
                    Ok(Loaded::Labels(backend::load_labels(&p)?, p, target))
                });
            }
            Action::OpenDicom(dir) => {
                self.recent.push(&dir);
                self.save_recent();
                let name = file_name(&dir);
                self.start_load(ctx, format!("Scanning {name}"), move |progress, cancel| {
                    let series = backend::scan_series(&dir, progress, cancel)?;
                    Ok(Loaded::Series(dir, series))
                });
            }
            Action::LoadDicomSeries(dir, uid) => {
                let name = file_name(&dir);
                self.start_load(ctx, format!("Loading {name}"), move |progress, cancel| {
                    let (image, gt, _warnings) =
                        backend::load_series(&dir, &uid, progress, cancel)?;
                    Ok(Loaded::Image {
                        image,
                        name,
                        path: Some(dir),
                        gt,
                        model: None,
                    })
                });
            }
            Action::OpenModel(p) => {
                let name = file_name(&p);
                self.start_load(ctx, format!("Loading model {name}"), move |_, _| {
                    Ok(Loaded::Model(backend::load_model(&p)?))
                });
            }
            Action::LoadDefault => {
                self.start_load(ctx, "Loading the default sample".into(), |_, _| {
                    let s = backend::default_sample()?;
                    Ok(Loaded::Image {
                        image: s.image,
                        name: s.name,
                        path: None,
                        gt: s.labels,
                        model: None,
                    })
                });
            }
            Action::RunSegmentation => self.start_segmentation(ctx),
            Action::CancelSegmentation => {
                if let Some(j) = &self.segment_job {
                    j.cancel();
                }
            }
            Action::CancelLoad => {
                if let Some(j) = &self.load_job {
                    j.cancel();
                }
            }
            Action::SaveSegmentation(p) => {
                let Some(pred) = self.doc.as_ref().and_then(|d| d.pred.clone()) else {
                    self.error("Nothing to save: run a segmentation first.");
                    return;
                };
                self.start_load(ctx, format!("Saving {}", file_name(&p)), move |_, _| {
                    backend::save_labels(&p, &pred)?;
                    Ok(Loaded::Saved(p))
                });
            }
            Action::DiffLabelChanged => {
                let label = self.view.diff_label;
                if let Some(doc) = &mut self.doc {
                    doc.labels_changed(label);
                }
            }
            Action::ClearRecent => {
                self.recent = RecentFiles::default();
                self.save_recent();
            }
            Action::Quit => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
        }
    }

    /// Starts segmenting the open image with the loaded model; shows why not when it cannot.
    pub fn start_segmentation(&mut self, ctx: &egui::Context) {
        let Some(model) = self.model.clone() else {
            self.error("No model loaded: Segmentation > Load model… first.");
            return;
        };
        let Some(image) = self.doc.as_ref().map(|d| d.image.clone()) else {
            self.error("No image loaded.");
            return;
        };
        if self.segment_job.is_some() {
            self.error("A segmentation is already running.");
            return;
        }
        self.segment_job = Some(Job::spawn(
            ctx,
            format!("Segmenting with {}", model.name),
            move |progress, cancel| backend::segment(&model, &image, progress, cancel),
        ));
    }

    fn poll_jobs(&mut self) {
        if let Some(job) = &mut self.load_job
            && let Some(result) = job.poll()
        {
            let name = job.name.clone();
            self.load_job = None;
            match result {
                Ok(loaded) => self.on_loaded(loaded),
                Err(logonet::Error::Cancelled) => self.info(format!("{name}: cancelled")),
                Err(e) => self.error(format!("{name} failed: {e}")),
            }
        }
        if let Some(job) = &mut self.segment_job
            && let Some(result) = job.poll()
        {
            self.segment_job = None;
            self.pending_segment = false;
            match result {
                Ok(pred) => self.set_labels(pred, LabelTarget::Prediction),
                Err(logonet::Error::Cancelled) => self.info("Segmentation cancelled"),
                Err(e) => self.error(format!("Segmentation failed: {e}")),
            }
        }
    }

    fn on_loaded(&mut self, loaded: Loaded) {
        match loaded {
            Loaded::Image {
                image,
                name,
                path,
                gt,
                model,
            } => {
                let doc = Document::new(image, name, path);
                self.view = ViewSettings::for_document(&doc);
                if self.options.compare {
                    self.view.layout = Layout::Compare;
                    self.view.compare_difference = true;
                }
                self.view.show_metrics |= self.options.metrics;
                self.doc = Some(doc);
                if let Some(m) = model {
                    self.info(format!("Model loaded: {}", m.name));
                    self.model = Some(Arc::new(m));
                }
                if let Some(g) = gt {
                    self.set_labels(g, LabelTarget::GroundTruth);
                }
                if let Some(doc) = &mut self.doc {
                    doc.labels_changed(self.view.diff_label);
                }
            }
            Loaded::Labels(labels, path, target) => {
                let _ = path;
                self.set_labels(labels, target);
            }
            Loaded::Series(dir, series) => match series.len() {
                0 => self.error(format!("No DICOM series found: {}", dir.display())),
                1 => {
                    let uid = series[0].uid.clone();
                    self.actions.push(Action::LoadDicomSeries(dir, uid));
                }
                _ => self.dicom_choice = Some((dir, series)),
            },
            Loaded::Model(m) => {
                self.info(format!("Model loaded: {}", m.name));
                self.model = Some(Arc::new(m));
            }
            Loaded::Saved(p) => self.info(format!("Segmentation saved: {}", p.display())),
        }
    }

    /// Puts a label map on the open image (checking the grid) and updates the derived maps and metrics.
    pub fn set_labels(&mut self, labels: LabelVolume, target: LabelTarget) {
        let Some(doc) = &mut self.doc else {
            self.error("Open an image before its labels.");
            return;
        };
        if labels.dims != doc.image.dims {
            let msg = format!(
                "Label map {:?} is not on the image grid {:?}",
                labels.dims, doc.image.dims
            );
            self.error(msg);
            return;
        }
        let labels = Arc::new(labels);
        match target {
            LabelTarget::GroundTruth => doc.gt = Some(labels),
            LabelTarget::Prediction => {
                doc.pred = Some(labels);
                self.view.source = OverlaySource::Prediction;
            }
        }
        doc.labels_changed(self.view.diff_label);
    }

    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        for f in dropped {
            let p = f.path();
            if !p.as_os_str().is_empty() {
                self.actions.push(Action::OpenPath(p.to_path_buf()));
            }
        }
    }

    fn screenshot_logic(&mut self, ctx: &egui::Context) {
        let ready = !self.is_busy() && !self.pending_segment;
        let Some(shot) = &mut self.screenshot else {
            return;
        };
        if let Ok(mut guard) = shot.result.lock()
            && let Some(result) = guard.take()
        {
            match result {
                Ok(()) => println!("screenshot saved: {}", shot.path.display()),
                Err(e) => eprintln!("screenshot failed: {e}"),
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        ctx.request_repaint();
        if !ready || shot.requested {
            return;
        }
        shot.ready_frames += 1;
        // Two complete frames after everything is loaded: textures are uploaded and the layout has settled.
        if shot.ready_frames >= 3 {
            shot.requested = true;
            let path = shot.path.clone();
            let result = shot.result.clone();
            let ctx2 = ctx.clone();
            ctx.request_screenshot(move |image| {
                let saved = save_png(&path, &image);
                if let Ok(mut g) = result.lock() {
                    *g = Some(saved);
                }
                ctx2.request_repaint();
            });
        }
    }

    fn bench_logic(&mut self, ctx: &egui::Context, ui_ms: f64) {
        let eframe_cpu_ms = self.eframe_cpu_ms;
        let ready = !self.is_busy();
        let Some(b) = &mut self.bench else { return };
        if !ready {
            return;
        }
        ctx.request_repaint();
        let now = Instant::now();
        if let Some(last) = b.last {
            b.frame_ms
                .push(now.duration_since(last).as_secs_f64() * 1e3);
            b.ui_ms.push(ui_ms);
            b.profiles.push(self.profile);
            if let Some(c) = eframe_cpu_ms {
                b.eframe_cpu_ms.push(c);
            }
        } else {
            b.threads_at_start = bench::process_threads_cpu_ms();
        }
        b.last = Some(now);
        if let Some(doc) = &self.doc {
            let g = logonet_viewer::SliceGeometry::new(Axis::Axial, &doc.image.ras_from_ijk);
            let n = doc.image.dims[g.fixed].max(1);
            self.view.cursor[g.fixed] = (self.view.cursor[g.fixed] + 1) % n;
        }
        b.done += 1;
        if b.done > b.frames {
            let dims = self.doc.as_ref().map(|d| d.image.dims).unwrap_or_default();
            println!(
                "bench: {} frames paging axial slices of a {:?} volume",
                b.ui_ms.len(),
                dims
            );
            println!(
                "bench: ui (CPU, incl. slice render + texture update): {}",
                bench::stats(&mut b.ui_ms)
            );
            println!(
                "bench: frame interval (incl. GPU/present): {}",
                bench::stats(&mut b.frame_ms)
            );
            println!(
                "bench: frame interval under {} ms: {:.1}% of {} frames",
                bench::TARGET_MS,
                100.0 * bench::fraction_under(&b.frame_ms, bench::TARGET_MS),
                b.frame_ms.len()
            );
            println!(
                "bench: eframe CPU per frame (ui + tessellate + paint, vsync excluded): {}",
                bench::stats(&mut b.eframe_cpu_ms)
            );
            type Stage = (&'static str, fn(&FrameProfile) -> f64);
            let stages: [Stage; 10] = [
                ("ui thread CPU time", |p| p.cpu_ms),
                ("ui wall time", |p| p.total_ms),
                ("  jobs + dropped files", |p| p.jobs_ms),
                ("  menu + status bars", |p| p.bars_ms),
                ("  sidebar (incl. histogram, legend)", |p| p.sidebar_ms),
                ("  central views (incl. slices)", |p| p.central_ms),
                ("    slice gather + window", |p| p.slice_gather_ms),
                ("    slice compose + overlay", |p| p.slice_compose_ms),
                ("    slice upload (TextureHandle::set)", |p| {
                    p.slice_upload_ms
                }),
                ("  windows + actions", |p| p.windows_ms),
            ];
            for (name, get) in stages {
                let mut v: Vec<f64> = b.profiles.iter().map(get).collect();
                println!("bench: stage {name}: {}", bench::stats(&mut v));
            }
            let threads = bench::cpu_per_frame_by_thread(
                &b.threads_at_start,
                &bench::process_threads_cpu_ms(),
                b.frame_ms.len(),
            );
            for (name, ms) in threads.iter().take(8) {
                println!("bench: CPU per frame, thread {name}: {ms:.2} ms");
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            self.bench = None;
        }
    }

    /// The whole UI of one frame.
    pub fn ui_frame(&mut self, ui: &mut egui::Ui) {
        let started = Instant::now();
        let cpu_start = if self.bench.is_some() {
            thread_cpu_ms()
        } else {
            None
        };
        let mut profile = FrameProfile::default();
        let mut lap = Instant::now();
        let mut split = || {
            let now = Instant::now();
            let ms = now.duration_since(lap).as_secs_f64() * 1e3;
            lap = now;
            ms
        };
        let ctx = ui.ctx().clone();
        self.poll_jobs();
        self.handle_dropped_files(&ctx);
        profile.jobs_ms = split();

        let panel_frame = egui::Frame::side_top_panel(ui.style());
        let panel_frame = if self.options.cleared_background {
            panel_frame.fill(egui::Color32::TRANSPARENT)
        } else {
            panel_frame
        };
        egui::Panel::top("menu_bar")
            .frame(panel_frame)
            .show(ui, |ui| menu::menu_bar_ui(ui, self));
        if !self.messages.is_empty() {
            egui::Panel::top("messages")
                .frame(panel_frame)
                .show(ui, |ui| panels::windows::messages_ui(ui, self));
        }
        egui::Panel::bottom("status_bar")
            .frame(panel_frame)
            .show(ui, |ui| panels::status::status_ui(ui, self));
        profile.bars_ms = split();
        egui::Panel::left("sidebar")
            .frame(panel_frame)
            .default_size(290.0)
            .resizable(true)
            .show(ui, |ui| {
                if self.options.cleared_background {
                    // Tell the widgets inside what the (cleared, unpainted) background is: the sidebar's
                    // scroll area fades its edges into it.
                    let fill = egui::Frame::NONE.fill(ui.visuals().panel_fill);
                    let info = egui::UiStackInfo::default().with_frame(fill);
                    ui.scope_builder(egui::UiBuilder::new().ui_stack_info(info), |ui| {
                        panels::sidebar::sidebar_ui(ui, self)
                    });
                } else {
                    panels::sidebar::sidebar_ui(ui, self);
                }
            });
        profile.sidebar_ms = split();
        egui::CentralPanel::default().frame(egui::Frame::NONE).show(ui, |ui| {
            // The background is painted (under everything) once the views are laid out, and only where they
            // leave gaps: software rasterisers pay for every pixel, and the views cover most of this area.
            let full = ui.max_rect();
            let background = ui.painter().add(egui::Shape::Noop);
            let hovered = match &self.doc {
                None => {
                    ui.centered_and_justified(|ui| {
                        if self.load_job.is_some() {
                            ui.spinner();
                        } else {
                            ui.label("Open an image (File > Open image…) or drop a NIfTI file / DICOM folder here.");
                        }
                    });
                    None
                }
                Some(doc) => match self.view.layout {
                    Layout::ThreeViews => panels::views::views_ui(ui, doc, &mut self.view, &mut self.views),
                    Layout::Compare => panels::compare::compare_ui(ui, doc, &mut self.view, &mut self.compare_views, &mut self.actions),
                },
            };
            self.hovered = hovered;
            let drawn: &[SliceView] = match (&self.doc, self.view.layout) {
                (None, _) => &[],
                (Some(_), Layout::ThreeViews) => &self.views,
                (Some(_), Layout::Compare) => &self.compare_views,
            };
            // Views paint their whole rectangle; the background reaches one point under their edges.
            let holes: Vec<egui::Rect> = drawn.iter().filter_map(|v| v.last_rect).map(|r| r.shrink(1.0)).collect();
            let fill = egui::Color32::from_gray(12);
            let shapes = logonet_viewer::slice_view::uncovered(full, &holes)
                .into_iter()
                .map(|r| egui::Shape::rect_filled(r, 0.0, fill))
                .collect();
            ui.painter().set(background, egui::Shape::Vec(shapes));
        });
        profile.central_ms = split();
        for sv in self.views.iter().chain(&self.compare_views) {
            if let Some(t) = sv.last_render {
                profile.slice_gather_ms += t.gather_ms;
                profile.slice_compose_ms += t.compose_ms;
                profile.slice_upload_ms += t.upload_ms;
            }
        }
        panels::windows::windows_ui(&ctx, self);
        if ctx.input(|i| !i.raw.hovered_files.is_empty()) {
            let painter = ctx.layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("drop"),
            ));
            let rect = ctx.content_rect();
            painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(160));
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop to open",
                egui::FontId::proportional(28.0),
                egui::Color32::WHITE,
            );
        }

        for action in std::mem::take(&mut self.actions) {
            self.handle_action(&ctx, action);
        }
        if self.pending_segment && !self.is_busy() && self.doc.is_some() {
            if self.model.is_some() {
                self.start_segmentation(&ctx);
            } else {
                self.error("Cannot segment: no model loaded (use --model BUNDLE).");
                self.pending_segment = false;
            }
        }
        profile.windows_ms = split();
        let ui_ms = started.elapsed().as_secs_f64() * 1e3;
        profile.total_ms = ui_ms;
        if let (Some(a), Some(b)) = (cpu_start, thread_cpu_ms()) {
            profile.cpu_ms = b - a;
        }
        self.frame_ms = ui_ms;
        self.profile = profile;
        self.screenshot_logic(&ctx);
        self.bench_logic(&ctx, ui_ms);
    }
}

impl eframe::App for StudioApp {
    /// The panel colour, opaque: with `cleared_background` the clear paints the panels' background.
    fn clear_color(&self, visuals: &egui::Visuals) -> [f32; 4] {
        visuals.panel_fill.to_opaque().to_normalized_gamma_f32()
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.eframe_cpu_ms = frame.info().cpu_usage.map(|s| s as f64 * 1e3);
        self.ui_frame(ui);
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Whether a file name looks like a label map ("…label…", "…seg…", "…gt…", "…mask…").
pub fn looks_like_labels(p: &Path) -> bool {
    let n = file_name(p).to_lowercase();
    ["label", "seg", "gt", "mask", "truth"]
        .iter()
        .any(|k| n.contains(k))
}

fn load_image_or_dicom(
    p: &Path,
    progress: &dyn logonet::job::Progress,
    cancel: &logonet::job::CancelToken,
) -> logonet::Result<ImageVolume> {
    if p.is_dir() {
        let series = backend::scan_series(p, progress, cancel)?;
        let first = series
            .first()
            .ok_or_else(|| logonet::Error::format("no DICOM series found", p))?;
        backend::load_series(p, &first.uid, progress, cancel).map(|(image, _, _)| image)
    } else {
        backend::load_image(p)
    }
}

/// Writes an egui screenshot as PNG.
pub fn save_png(path: &Path, image: &egui::ColorImage) -> Result<(), String> {
    let [w, h] = image.size;
    let bytes: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|c| c.to_srgba_unmultiplied())
        .collect();
    let mut png = Vec::new();
    {
        use image::ImageEncoder as _;
        let encoder = image::codecs::png::PngEncoder::new(&mut png);
        encoder
            .write_image(&bytes, w as u32, h as u32, image::ExtendedColorType::Rgba8)
            .map_err(|e| e.to_string())?;
    }
    logonet::error::write_atomic(path, &png).map_err(|e| e.to_string())
}
