//! `logonet-studio`: starts the desktop program.
//!
//! `logonet-studio [--open IMAGE] [--gt LABELS] [--model BUNDLE] [--segment] [--screenshot PNG] [--compare]
//! [--metrics] [--bench-frames N] [--phantom-dims IxJxK] [--size WxH] [--renderer glow|wgpu]`

use std::path::PathBuf;

use clap::Parser;
use logonet_studio::{StartOptions, StudioApp};

/// LoGoNet Studio: inspect a CT/MRI volume, segment it, compare with the ground truth.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Image to open: a NIfTI file or a DICOM folder (default: the embedded synthetic phantom).
    #[arg(long)]
    open: Option<PathBuf>,
    /// Ground-truth label map (NIfTI) on the image grid.
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Model bundle to load.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Segment the image once it is loaded.
    #[arg(long)]
    segment: bool,
    /// Save a PNG screenshot after the first complete frame (after segmentation with --segment), then exit.
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// Start in the compare layout (ground truth | prediction with the difference overlay).
    #[arg(long)]
    compare: bool,
    /// Start with the metrics table (Dice, HD95, volumes) open.
    #[arg(long)]
    metrics: bool,
    /// Page through axial slices for N frames, print frame times, then exit.
    #[arg(long, value_name = "N")]
    bench_frames: Option<usize>,
    /// Use a synthetic phantom of size IxJxK (e.g. 512x512x300) instead of the default sample.
    #[arg(long, value_name = "IxJxK", value_parser = parse_dims)]
    phantom_dims: Option<[usize; 3]>,
    /// Window size in points, WxH.
    #[arg(long, default_value = "1280x800", value_parser = parse_size)]
    size: [f32; 2],
    /// Renderer: glow (OpenGL) or wgpu (Vulkan, or OpenGL without a Vulkan driver). Default: glow, and wgpu
    /// when OpenGL cannot start.
    #[arg(long, value_enum)]
    renderer: Option<RendererArg>,
}

/// Which eframe renderer draws the window.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RendererArg {
    /// egui-wgpu: Vulkan when there is a Vulkan driver (lavapipe under Xvfb), else OpenGL.
    Wgpu,
    /// egui_glow: OpenGL through glutin (GLX/EGL; llvmpipe under Xvfb).
    Glow,
}

fn parse_dims(s: &str) -> Result<[usize; 3], String> {
    let v: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>().map_err(|e| format!("{e}: {s}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [i, j, k] if *i > 0 && *j > 0 && *k > 0 => Ok([*i, *j, *k]),
        _ => Err(format!("expected IxJxK with positive sizes: {s}")),
    }
}

fn parse_size(s: &str) -> Result<[f32; 2], String> {
    let v: Vec<f32> = s
        .split('x')
        .map(|p| p.trim().parse::<f32>().map_err(|e| format!("{e}: {s}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [w, h] if *w >= 200.0 && *h >= 200.0 => Ok([*w, *h]),
        _ => Err(format!("expected WxH (at least 200x200): {s}")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = StartOptions {
        open: args.open,
        gt: args.gt,
        model: args.model,
        segment: args.segment,
        screenshot: args.screenshot,
        bench_frames: args.bench_frames,
        phantom_dims: args.phantom_dims,
        dialogs: true,
        recent_file: logonet_studio::state::RecentFiles::default_file(),
        no_bundled_model: false,
        compare: args.compare,
        metrics: args.metrics,
        cleared_background: true,
    };
    let size = args.size;
    match args.renderer {
        Some(renderer) => run(renderer, size, options),
        // OpenGL first: under software rendering (Mesa's llvmpipe) egui_glow's fragment shader is about five
        // times cheaper per pixel than egui-wgpu's (docs/APP.md, "Frame time"). Without OpenGL, wgpu.
        None => run(RendererArg::Glow, size, options.clone()).or_else(|e| {
            eprintln!("The OpenGL renderer could not start ({e:#}); trying wgpu.");
            run(RendererArg::Wgpu, size, options)
        }),
    }
}

/// Opens the window with `renderer` and runs the app until it is closed.
fn run(renderer: RendererArg, size: [f32; 2], options: StartOptions) -> anyhow::Result<()> {
    let mut wgpu_options = eframe::WgpuConfiguration::default();
    let mut glow_options = eframe::egui_glow::GlowConfiguration::default();
    if options.bench_frames.is_some() {
        // Benchmarks measure our frame time, not the display's refresh rate.
        wgpu_options.surface.present_mode = eframe::wgpu::PresentMode::AutoNoVsync;
        glow_options.vsync = false;
    }
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size(size)
            .with_title("LoGoNet Studio")
            .with_drag_and_drop(true),
        wgpu_options,
        glow_options,
        renderer: match renderer {
            RendererArg::Wgpu => eframe::Renderer::Wgpu,
            RendererArg::Glow => eframe::Renderer::Glow,
        },
        // The UI has no gradients to dither, and under software rendering every instruction of the fragment
        // shader is paid on each pixel of every frame.
        dithering: false,
        ..Default::default()
    };
    eframe::run_native(
        "LoGoNet Studio",
        native,
        Box::new(move |cc| Ok(Box::new(StudioApp::new(cc, options)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot start the window with the {renderer:?} renderer: {e}"))
}
