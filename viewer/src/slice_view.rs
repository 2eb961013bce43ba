//! One orthogonal slice view (axial, coronal or sagittal) of a volume, as in ITK-SNAP and 3D Slicer:
//! the slice through the shared crosshair, shown with the physical aspect ratio of its voxels, a window/level,
//! an optional label overlay (filled or outline, global opacity, per-label visibility), zoom and pan, the
//! crosshair, orientation letters, and mouse interaction:
//!
//! | input | action |
//! |---|---|
//! | left click / drag | move the crosshair (the other views follow: they read the same cursor) |
//! | mouse wheel | page through slices |
//! | ctrl + wheel | zoom about the pointer |
//! | middle drag, shift + left drag | pan |
//! | right drag | window (horizontal) and level (vertical) |
//! | double click | reset zoom and pan |
//!
//! The slice texture is created once per view and only updated when what it shows changes (slice, window,
//! overlay style or content revision), so paging a 512×512×300 CT re-renders one slice per frame at most.

use std::collections::BTreeSet;

use egui::{Color32, ColorImage, Pos2, Rect, Sense, Stroke, TextureHandle, TextureOptions, Vec2};
use logonet::volume::{Affine, ImageVolume, LabelTable, LabelVolume};

use crate::window_level::WindowLevel;

/// The three orthogonal views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Perpendicular to superior-inferior (screen: patient left to the right, posterior down).
    Axial,
    /// Perpendicular to anterior-posterior (screen: patient left to the right, inferior down).
    Coronal,
    /// Perpendicular to left-right (screen: posterior to the right, inferior down).
    Sagittal,
}

impl Axis {
    /// The three views in display order.
    pub const ALL: [Axis; 3] = [Axis::Axial, Axis::Coronal, Axis::Sagittal];

    /// "Axial", "Coronal" or "Sagittal".
    pub fn name(self) -> &'static str {
        match self {
            Axis::Axial => "Axial",
            Axis::Coronal => "Coronal",
            Axis::Sagittal => "Sagittal",
        }
    }

    /// The view's colour, as 3D Slicer colours its slice views (axial red, coronal green, sagittal yellow).
    pub fn color(self) -> Color32 {
        match self {
            Axis::Axial => Color32::from_rgb(230, 80, 80),
            Axis::Coronal => Color32::from_rgb(100, 200, 100),
            Axis::Sagittal => Color32::from_rgb(230, 210, 90),
        }
    }
}

/// How a view maps voxel axes (i, j, k) to the screen, derived from the volume's orientation so that any
/// storage order (RAS, LPS, permuted) is displayed in radiological convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceGeometry {
    /// The voxel axis held fixed (the slice index runs along it).
    pub fixed: usize,
    /// The voxel axis along screen x.
    pub h: usize,
    /// The voxel axis along screen y.
    pub v: usize,
    /// Whether screen x runs against the voxel axis `h`.
    pub flip_h: bool,
    /// Whether screen y runs against the voxel axis `v`.
    pub flip_v: bool,
    /// Orientation letters at the left, right, top and bottom edges.
    pub edge_letters: [char; 4],
}

fn opposite(c: char) -> char {
    match c {
        'R' => 'L',
        'L' => 'R',
        'A' => 'P',
        'P' => 'A',
        'S' => 'I',
        'I' => 'S',
        other => other,
    }
}

impl SliceGeometry {
    /// The mapping of view `axis` for a volume with geometry `ras_from_ijk`.
    pub fn new(axis: Axis, ras_from_ijk: &Affine) -> Self {
        let code = ras_from_ijk.orientation_code();
        let find = |pair: [char; 2]| code.iter().position(|c| pair.contains(c));
        let (lr, ap, si) = match (find(['R', 'L']), find(['A', 'P']), find(['S', 'I'])) {
            (Some(lr), Some(ap), Some(si)) if lr != ap && ap != si && lr != si => (lr, ap, si),
            _ => (0, 1, 2),
        };
        let letter = |axis: usize, fallback: char| {
            if code[axis] == '?' {
                fallback
            } else {
                code[axis]
            }
        };
        // `toward`: the letter screen +x (or +y) should point to. Flip when the voxel axis points the other way.
        let build =
            |fixed: usize, h: usize, toward_h: char, v: usize, toward_v: char, fb: [char; 2]| {
                let (ch, cv) = (letter(h, fb[0]), letter(v, fb[1]));
                let flip_h = ch != toward_h;
                let flip_v = cv != toward_v;
                SliceGeometry {
                    fixed,
                    h,
                    v,
                    flip_h,
                    flip_v,
                    edge_letters: [opposite(toward_h), toward_h, opposite(toward_v), toward_v],
                }
            };
        match axis {
            Axis::Axial => build(si, lr, 'L', ap, 'P', ['L', 'P']),
            Axis::Coronal => build(ap, lr, 'L', si, 'I', ['L', 'I']),
            Axis::Sagittal => build(lr, ap, 'P', si, 'I', ['P', 'I']),
        }
    }

    /// Texture size (width, height) in voxels for a volume of `dims`.
    pub fn size(&self, dims: [usize; 3]) -> [usize; 2] {
        [dims[self.h], dims[self.v]]
    }

    /// The voxel shown at texture pixel (x, y) of slice `slice`.
    pub fn voxel(&self, dims: [usize; 3], slice: usize, x: usize, y: usize) -> [usize; 3] {
        let mut ijk = [0; 3];
        ijk[self.fixed] = slice;
        ijk[self.h] = if self.flip_h { dims[self.h] - 1 - x } else { x };
        ijk[self.v] = if self.flip_v { dims[self.v] - 1 - y } else { y };
        ijk
    }

    /// The texture pixel (x, y) showing voxel `ijk` (its in-plane position).
    pub fn pixel(&self, dims: [usize; 3], ijk: [usize; 3]) -> [usize; 2] {
        let x = if self.flip_h {
            dims[self.h] - 1 - ijk[self.h].min(dims[self.h] - 1)
        } else {
            ijk[self.h]
        };
        let y = if self.flip_v {
            dims[self.v] - 1 - ijk[self.v].min(dims[self.v] - 1)
        } else {
            ijk[self.v]
        };
        [x, y]
    }
}

/// How label maps are drawn over the image.
#[derive(Clone, Debug, PartialEq)]
pub struct OverlayStyle {
    /// Global opacity of the labels, 0..=1.
    pub opacity: f32,
    /// Draw only the outline of each label instead of filling it.
    pub outline: bool,
    /// Label values not drawn.
    pub hidden: BTreeSet<u16>,
}

impl Default for OverlayStyle {
    fn default() -> Self {
        Self {
            opacity: 0.5,
            outline: false,
            hidden: BTreeSet::new(),
        }
    }
}

/// Everything a slice view draws, borrowed from the app state.
pub struct SliceContent<'a> {
    /// The image.
    pub image: &'a ImageVolume,
    /// The label map drawn on top (on the image grid), if any.
    pub labels: Option<&'a LabelVolume>,
    /// Names and colours of the labels.
    pub table: &'a LabelTable,
    /// Display window.
    pub window: WindowLevel,
    /// Overlay style.
    pub overlay: &'a OverlayStyle,
    /// Changes whenever the image, the label map or the table change (so cached textures are refreshed).
    pub revision: u64,
}

/// Zoom and pan of a view, shareable between synchronised panes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewTransform {
    /// Magnification over "fit to view" (1 = the whole slice fits).
    pub zoom: f32,
    /// Offset of the slice centre from the view centre, as a fraction of the view size.
    pub pan: Vec2,
}

impl Default for ViewTransform {
    fn default() -> Self {
        Self {
            zoom: 1.0,
            pan: Vec2::ZERO,
        }
    }
}

/// What happened in a view during one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SliceViewResponse {
    /// The voxel under the pointer, if the pointer is over the slice.
    pub hovered: Option<[usize; 3]>,
    /// Whether the cursor (crosshair or slice) moved.
    pub cursor_changed: bool,
    /// Whether the window/level was dragged.
    pub window_changed: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct RenderKey {
    revision: u64,
    geometry: SliceGeometry,
    slice: usize,
    window: (u32, u32),
    overlay: OverlayStyle,
    /// Which label map (by address: switching ground truth / prediction / difference changes no revision).
    labels: Option<usize>,
}

/// One slice view: its axis and its texture (created on first draw, then updated in place).
pub struct SliceView {
    /// Which orthogonal view this is.
    pub axis: Axis,
    /// A name that keeps the texture and widget ids apart when several views show the same axis.
    pub id: String,
    texture: Option<TextureHandle>,
    key: Option<RenderKey>,
    renderer: SliceRenderer,
    /// Number of texture uploads so far (for tests and frame-time benchmarks).
    pub uploads: u64,
    /// Stage times of the render done by the last `ui` call (None when the texture was up to date).
    pub last_render: Option<RenderTimes>,
    /// The screen rectangle the last `ui` call covered completely (None when it drew nothing opaque).
    pub last_rect: Option<Rect>,
}

impl SliceView {
    /// A view of `axis`; `id` must be unique among views.
    pub fn new(axis: Axis, id: impl Into<String>) -> Self {
        Self {
            axis,
            id: id.into(),
            texture: None,
            key: None,
            renderer: SliceRenderer::default(),
            uploads: 0,
            last_render: None,
            last_rect: None,
        }
    }

    /// Draws the view into the remaining space of `ui` and handles its mouse input. `cursor` is the shared
    /// crosshair in voxel indices (this view shows slice `cursor[fixed]`).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        content: &SliceContent<'_>,
        cursor: &mut [usize; 3],
        transform: &mut ViewTransform,
        window: &mut WindowLevel,
    ) -> SliceViewResponse {
        let mut out = SliceViewResponse::default();
        self.last_render = None;
        self.last_rect = None;
        let dims = content.image.dims;
        if dims.contains(&0) {
            ui.label("empty volume");
            return out;
        }
        for (c, d) in cursor.iter_mut().zip(dims) {
            *c = (*c).min(d - 1);
        }
        let geometry = SliceGeometry::new(self.axis, &content.image.ras_from_ijk);
        let slice = cursor[geometry.fixed];
        self.refresh_texture(ui.ctx(), content, geometry, slice);

        let (rect, response) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
        let painter = ui.painter_at(rect);
        self.last_rect = Some(rect);

        // Physical size of the slice in mm gives the aspect ratio.
        let spacing = content.image.spacing_mm();
        let [w, h] = geometry.size(dims);
        let phys = Vec2::new(
            (w as f64 * spacing[geometry.h]) as f32,
            (h as f64 * spacing[geometry.v]) as f32,
        );
        let fit = (rect.width() / phys.x.max(1e-6)).min(rect.height() / phys.y.max(1e-6));
        let scale = fit * transform.zoom;
        let center = rect.center() + transform.pan * rect.size();
        let img_rect = Rect::from_center_size(center, phys * scale);

        // --- input ---
        let to_pixel = |p: Pos2| -> Option<[usize; 2]> {
            let u = (p.x - img_rect.min.x) / img_rect.width() * w as f32;
            let v = (p.y - img_rect.min.y) / img_rect.height() * h as f32;
            (u >= 0.0 && v >= 0.0 && (u as usize) < w && (v as usize) < h)
                .then_some([u as usize, v as usize])
        };
        if let Some(p) = response.hover_pos() {
            out.hovered = to_pixel(p).map(|[x, y]| geometry.voxel(dims, slice, x, y));
            // One slice (or one zoom step) per wheel event, as ITK-SNAP does, from the raw events.
            let (scroll, ctrl) = ui.input(|i| {
                let steps: f32 = i
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        egui::Event::MouseWheel { delta, .. } if delta.y != 0.0 => {
                            Some(delta.y.signum())
                        }
                        _ => None,
                    })
                    .sum();
                (steps, i.modifiers.command || i.modifiers.ctrl)
            });
            if scroll != 0.0 {
                if ctrl {
                    let factor = (scroll * 0.15).exp();
                    let new_zoom = (transform.zoom * factor).clamp(0.25, 40.0);
                    // Zoom about the pointer: keep the point under it fixed.
                    let rel = p - center;
                    let new_center = p - rel * (new_zoom / transform.zoom);
                    transform.pan = (new_center - rect.center()) / rect.size();
                    transform.zoom = new_zoom;
                } else {
                    let n = dims[geometry.fixed];
                    let new = (slice as i64 + scroll as i64).clamp(0, n as i64 - 1) as usize;
                    if new != cursor[geometry.fixed] {
                        cursor[geometry.fixed] = new;
                        out.cursor_changed = true;
                    }
                }
            }
        }
        let shift = ui.input(|i| i.modifiers.shift);
        if response.double_clicked() {
            *transform = ViewTransform::default();
        } else if response.dragged_by(egui::PointerButton::Middle)
            || (shift && response.dragged_by(egui::PointerButton::Primary))
        {
            transform.pan += response.drag_delta() / rect.size();
        } else if response.dragged_by(egui::PointerButton::Secondary) {
            let d = response.drag_delta();
            window.drag(d.x, d.y, (window.width * 0.004).max(0.01));
            out.window_changed = d != Vec2::ZERO;
        } else if (response.clicked() || response.dragged_by(egui::PointerButton::Primary))
            && let Some([x, y]) = response.interact_pointer_pos().and_then(to_pixel)
        {
            let v = geometry.voxel(dims, slice, x, y);
            if v != *cursor {
                *cursor = v;
                out.cursor_changed = true;
            }
        }

        // --- drawing ---
        // Black only where the (opaque) slice does not cover the view: software rasterisers pay for every
        // pixel drawn, so the view is not filled twice.
        for bar in letterbox(rect, img_rect) {
            painter.rect_filled(bar, 0.0, Color32::BLACK);
        }
        if let Some(tex) = &self.texture {
            let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
            painter.image(tex.id(), img_rect, uv, Color32::WHITE);
        }
        let [cx, cy] = geometry.pixel(dims, *cursor);
        let sx = img_rect.min.x + (cx as f32 + 0.5) / w as f32 * img_rect.width();
        let sy = img_rect.min.y + (cy as f32 + 0.5) / h as f32 * img_rect.height();
        let cross = Stroke::new(1.0, Color32::from_rgba_unmultiplied(120, 170, 255, 200));
        painter.line_segment(
            [Pos2::new(rect.min.x, sy), Pos2::new(rect.max.x, sy)],
            cross,
        );
        painter.line_segment(
            [Pos2::new(sx, rect.min.y), Pos2::new(sx, rect.max.y)],
            cross,
        );

        let font = egui::FontId::proportional(13.0);
        let text_color = Color32::from_gray(220);
        let [l, r, t, b] = geometry.edge_letters;
        let m = 6.0;
        painter.text(
            Pos2::new(rect.min.x + m, rect.center().y),
            egui::Align2::LEFT_CENTER,
            l,
            font.clone(),
            text_color,
        );
        painter.text(
            Pos2::new(rect.max.x - m, rect.center().y),
            egui::Align2::RIGHT_CENTER,
            r,
            font.clone(),
            text_color,
        );
        painter.text(
            Pos2::new(rect.center().x, rect.min.y + m),
            egui::Align2::CENTER_TOP,
            t,
            font.clone(),
            text_color,
        );
        painter.text(
            Pos2::new(rect.center().x, rect.max.y - m),
            egui::Align2::CENTER_BOTTOM,
            b,
            font.clone(),
            text_color,
        );
        let n = dims[geometry.fixed];
        painter.text(
            rect.min + Vec2::new(m, m),
            egui::Align2::LEFT_TOP,
            format!("{} {}/{}", self.axis.name(), slice + 1, n),
            font.clone(),
            self.axis.color(),
        );
        painter.text(
            rect.left_bottom() + Vec2::new(m, -m),
            egui::Align2::LEFT_BOTTOM,
            format!("W {:.0} L {:.0}", window.width, window.center),
            font,
            text_color,
        );
        painter.rect_stroke(
            rect,
            0.0,
            Stroke::new(1.0, self.axis.color()),
            egui::StrokeKind::Inside,
        );
        out
    }

    /// Re-renders the slice into the texture if anything it shows changed; creates the texture the first time.
    fn refresh_texture(
        &mut self,
        ctx: &egui::Context,
        content: &SliceContent<'_>,
        geometry: SliceGeometry,
        slice: usize,
    ) {
        let key = RenderKey {
            revision: content.revision,
            geometry,
            slice,
            window: (
                content.window.center.to_bits(),
                content.window.width.to_bits(),
            ),
            overlay: content.overlay.clone(),
            labels: content.labels.map(|l| l.data.as_ptr() as usize),
        };
        if self.texture.is_some() && self.key.as_ref() == Some(&key) {
            return;
        }
        let (image, mut times) = self.renderer.render(content, geometry, slice);
        let started = std::time::Instant::now();
        match &mut self.texture {
            Some(tex) => tex.set(image, TextureOptions::NEAREST),
            None => {
                self.texture = Some(ctx.load_texture(
                    format!("slice-{}", self.id),
                    image,
                    TextureOptions::NEAREST,
                ))
            }
        }
        times.upload_ms = started.elapsed().as_secs_f64() * 1e3;
        self.last_render = Some(times);
        self.uploads += 1;
        self.key = Some(key);
    }
}

/// The parts of `view` not covered by `image` (at most four bars). Each bar reaches one point under the
/// image, which is drawn over it, so anti-aliased edges look as if the whole view had been filled first.
pub fn letterbox(view: Rect, image: Rect) -> Vec<Rect> {
    let img = image.intersect(view);
    if !(img.width() > 0.0 && img.height() > 0.0) {
        return vec![view];
    }
    let (x0, x1) = (
        (img.min.x + 1.0).min(img.max.x),
        (img.max.x - 1.0).max(img.min.x),
    );
    let (y0, y1) = (
        (img.min.y + 1.0).min(img.max.y),
        (img.max.y - 1.0).max(img.min.y),
    );
    [
        Rect::from_min_max(view.min, Pos2::new(view.max.x, y0)),
        Rect::from_min_max(Pos2::new(view.min.x, y1), view.max),
        Rect::from_min_max(Pos2::new(view.min.x, img.min.y), Pos2::new(x0, img.max.y)),
        Rect::from_min_max(Pos2::new(x1, img.min.y), Pos2::new(view.max.x, img.max.y)),
    ]
    .into_iter()
    .filter(|r| {
        r.min.x < img.min.x || r.max.x > img.max.x || r.min.y < img.min.y || r.max.y > img.max.y
    })
    .filter(|r| r.width() > 0.0 && r.height() > 0.0)
    .collect()
}

/// `full` minus the `holes` (which must not overlap), as disjoint rectangles in horizontal bands.
pub fn uncovered(full: Rect, holes: &[Rect]) -> Vec<Rect> {
    let holes: Vec<Rect> = holes
        .iter()
        .map(|h| h.intersect(full))
        .filter(|h| h.width() > 0.0 && h.height() > 0.0)
        .collect();
    let mut ys: Vec<f32> = vec![full.min.y, full.max.y];
    for h in &holes {
        ys.extend([h.min.y, h.max.y]);
    }
    ys.sort_by(f32::total_cmp);
    ys.dedup();
    let mut out = Vec::new();
    for band in ys.windows(2) {
        let (y0, y1) = (band[0], band[1]);
        let mut spans: Vec<(f32, f32)> = holes
            .iter()
            .filter(|h| h.min.y <= y0 && h.max.y >= y1)
            .map(|h| (h.min.x, h.max.x))
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut x = full.min.x;
        for (a, b) in spans.into_iter().chain([(full.max.x, full.max.x)]) {
            if a > x {
                out.push(Rect::from_min_max(Pos2::new(x, y0), Pos2::new(a, y1)));
            }
            x = x.max(b);
        }
    }
    out
}

/// A colour per label value (index = value), alpha 0 for hidden labels and background.
pub fn label_lut(table: &LabelTable, max_value: u16, hidden: &BTreeSet<u16>) -> Vec<[u8; 4]> {
    (0..=max_value)
        .map(|v| {
            if v == 0 || hidden.contains(&v) {
                [0, 0, 0, 0]
            } else {
                let [r, g, b] = table.color(v);
                [r, g, b, 255]
            }
        })
        .collect()
}

/// Renders slice `slice` of `content` (window/level, then the label overlay) into an RGBA image whose pixel
/// (x, y) is `geometry.voxel(dims, slice, x, y)`. Allocates its working buffers; views keep a
/// [`SliceRenderer`] instead.
pub fn render_slice(
    content: &SliceContent<'_>,
    geometry: SliceGeometry,
    slice: usize,
) -> ColorImage {
    SliceRenderer::default().render(content, geometry, slice).0
}

/// Time spent in the stages of one slice render, ms (for `--bench-frames` profiles).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RenderTimes {
    /// Reading the slice's voxels and labels (window/level applied while reading).
    pub gather_ms: f64,
    /// Composing the RGBA pixels (label overlay through the blend table).
    pub compose_ms: f64,
    /// Handing the image to egui (`TextureHandle::set`; the GPU copy happens when the frame is painted).
    pub upload_ms: f64,
    /// Rows of slab planes copied from the volume by this render (the slab served and the one prefetched).
    pub slab_rows: usize,
}

/// The blended colour of one label over every grey value, as the float formula
/// `under * (1 - t) + over * t + 0.5` (truncated) gives it.
pub fn blend_row(color: [u8; 3], t: f32) -> [Color32; 256] {
    let blend = |under: u8, over: u8| (under as f32 * (1.0 - t) + over as f32 * t + 0.5) as u8;
    std::array::from_fn(|g| {
        let g = g as u8;
        Color32::from_rgb(blend(g, color[0]), blend(g, color[1]), blend(g, color[2]))
    })
}

/// Reusable buffers that render slices without per-voxel float blending and without reallocating per frame:
/// voxels are read in memory order (the in-plane axis with the smaller stride innermost), the window is
/// applied while reading, and labels are blended through a 256-entry table per visible label.
///
/// When the slice axis is the contiguous one (axial slices of a volume stored with k fastest), every voxel of
/// a slice lies on its own cache line, and so do the next slices' voxels: the renderer then serves slices from
/// a slab of [`SLAB`] consecutive slices, copied plane by plane (the same memory traffic as one slice), so
/// paging reads the volume once per [`SLAB`] slices. While it serves one slab it copies the next one (in the
/// paging direction) a few rows per render, spread so that the copy is complete when paging reaches it: paging
/// one slice per frame then never pays for a whole slab copy in one frame. A jump to another slab copies that
/// slab at once (or what is left of it, if it was the one being prefetched).
#[derive(Default)]
pub struct SliceRenderer {
    grey: Vec<u8>,
    labels: Vec<u16>,
    /// The slab slices are served from (always complete).
    slab: Option<Slab>,
    /// The slab being copied ahead of paging (possibly incomplete), or spare buffers.
    next: Option<Slab>,
    /// The last slice rendered from a slab, with the slab's data identity (`first` ignored): the paging
    /// direction.
    last: Option<(SlabKey, usize)>,
    /// Per label value: 0 = not looked up yet, `HIDDEN` = not drawn, otherwise 1 + row in `rows`.
    slot: Vec<u32>,
    rows: Vec<[Color32; 256]>,
}

const HIDDEN: u32 = u32::MAX;

/// Slices per slab (32 u16 labels or two lines of 16 f32 intensities per voxel column).
pub const SLAB: usize = 32;

/// Identity of the data a slab was copied from.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SlabKey {
    image: usize,
    labels: Option<usize>,
    revision: u64,
    dims: [usize; 3],
    first: usize,
}

/// Slices `first..first + len` of the image (and labels), plane by plane, each plane in memory order of the
/// in-plane voxels.
struct Slab {
    key: SlabKey,
    len: usize,
    /// Rows (along the outer in-plane axis) copied so far; the slab is complete at `layout.outer`.
    rows_done: usize,
    image: Vec<f32>,
    labels: Vec<u16>,
}

/// How a slab's planes are laid out: the in-plane axes in memory order, with their strides in the volume.
#[derive(Clone, Copy, Debug)]
struct SlabLayout {
    outer: usize,
    inner: usize,
    s_outer: usize,
    s_inner: usize,
}

/// Columns copied together: `SLAB_BLOCK` voxel columns of a slab stay in L1 while their values are written
/// plane by plane, 64 bytes per plane at a time instead of 4.
const SLAB_BLOCK: usize = 16;

impl Slab {
    /// Starts copying slab `key` (`len` slices) into these buffers (reused).
    fn reset(&mut self, key: SlabKey, len: usize, layout: SlabLayout, with_labels: bool) {
        let n = layout.outer * layout.inner;
        self.key = key;
        self.len = len;
        self.rows_done = 0;
        self.image.clear();
        self.image.resize(len * n, 0.0);
        self.labels.clear();
        if with_labels {
            self.labels.resize(len * n, 0);
        }
    }

    fn empty(key: SlabKey) -> Self {
        Slab {
            key,
            len: 0,
            rows_done: 0,
            image: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn complete(&self, layout: SlabLayout) -> bool {
        self.rows_done >= layout.outer
    }

    /// Copies up to `rows` more rows from the volume; returns how many it copied.
    fn copy_rows(
        &mut self,
        data: &[f32],
        labels: Option<&[u16]>,
        layout: SlabLayout,
        rows: usize,
    ) -> usize {
        let SlabLayout {
            outer,
            inner,
            s_outer,
            s_inner,
        } = layout;
        let n = outer * inner;
        let len = self.len;
        // Slabs are only used when the slice axis has stride 1: slice `first` starts at element `first`.
        let start = self.key.first;
        let begin = self.rows_done;
        let end = (begin + rows).min(outer);
        for vo in begin..end {
            for vi0 in (0..inner).step_by(SLAB_BLOCK) {
                let block = SLAB_BLOCK.min(inner - vi0);
                let p0 = vo * inner + vi0;
                let src0 = start + vo * s_outer + vi0 * s_inner;
                for k in 0..len {
                    let dst = &mut self.image[k * n + p0..k * n + p0 + block];
                    for (b, d) in dst.iter_mut().enumerate() {
                        *d = data[src0 + b * s_inner + k];
                    }
                    if let Some(l) = labels {
                        let dst = &mut self.labels[k * n + p0..k * n + p0 + block];
                        for (b, d) in dst.iter_mut().enumerate() {
                            *d = l[src0 + b * s_inner + k];
                        }
                    }
                }
            }
        }
        self.rows_done = end;
        end - begin
    }
}

impl SliceRenderer {
    /// Renders like [`render_slice`], reusing this renderer's buffers; also returns the stage times.
    pub fn render(
        &mut self,
        content: &SliceContent<'_>,
        geometry: SliceGeometry,
        slice: usize,
    ) -> (ColorImage, RenderTimes) {
        let mut times = RenderTimes::default();
        let started = std::time::Instant::now();
        let dims = content.image.dims;
        let [w, h] = geometry.size(dims);
        let n = w * h;
        let strides = [dims[1] * dims[2], dims[2], 1];
        let base = slice.min(dims[geometry.fixed].saturating_sub(1)) * strides[geometry.fixed];
        let (sh, sv) = (strides[geometry.h], strides[geometry.v]);
        let labels = content.labels.filter(|l| l.dims == dims);
        let window = content.window;
        let data = &content.image.data;
        self.grey.clear();
        self.grey.resize(n, 0);
        self.labels.clear();
        if labels.is_some() {
            self.labels.resize(n, 0);
        }
        // Memory order: the inner loop runs along the in-plane voxel axis with the smaller stride, so an axial
        // slice of an (i, j, k) volume reads rows of j rather than jumping a whole j-k plane per pixel.
        let (outer, inner, s_outer, s_inner, v_inner) = if sv <= sh {
            (w, h, sh, sv, true)
        } else {
            (h, w, sv, sh, false)
        };
        let (flip_outer, flip_inner) = if v_inner {
            (geometry.flip_h, geometry.flip_v)
        } else {
            (geometry.flip_v, geometry.flip_h)
        };
        let slice = slice.min(dims[geometry.fixed].saturating_sub(1));
        let slab_plane = if strides[geometry.fixed] == 1 && dims[geometry.fixed] > 1 {
            let layout = SlabLayout {
                outer,
                inner,
                s_outer,
                s_inner,
            };
            let label_data = labels.map(|l| l.data.as_slice());
            let depth = dims[geometry.fixed];
            let first = slice - slice % SLAB;
            let key_at = |first: usize| SlabKey {
                image: data.as_ptr() as usize,
                labels: labels.map(|l| l.data.as_ptr() as usize),
                revision: content.revision,
                dims,
                first,
            };
            let key = key_at(first);
            if self.slab.as_ref().map(|s| s.key) != Some(key) {
                let mut slab = match self.next.take() {
                    // The prefetched slab: finish what is left of it.
                    Some(next) if next.key == key => next,
                    other => {
                        let mut buffers = other
                            .or_else(|| self.slab.take())
                            .unwrap_or(Slab::empty(key));
                        buffers.reset(key, SLAB.min(depth - first), layout, labels.is_some());
                        buffers
                    }
                };
                times.slab_rows += slab.copy_rows(data, label_data, layout, outer);
                // The old slab's buffers are reused for the next prefetch.
                self.next = self.slab.take().or(self.next.take());
                self.slab = Some(slab);
            }
            // Prefetch the neighbouring slab in the paging direction, spread over the slices left in this one.
            let same_data = |k: &SlabKey| SlabKey { first: 0, ..*k } == key_at(0);
            let backward = matches!(self.last, Some((k, last)) if same_data(&k) && slice < last);
            self.last = Some((key_at(0), slice));
            let len = SLAB.min(depth - first);
            let (target, frames_left) = if backward {
                (first.checked_sub(SLAB), slice - first + 1)
            } else {
                (
                    Some(first + SLAB).filter(|&f| f < depth),
                    first + len - slice,
                )
            };
            if let Some(target) = target {
                let next_key = key_at(target);
                let next = match self.next.take() {
                    Some(next) if next.key == next_key => next,
                    other => {
                        let mut buffers = other.unwrap_or(Slab::empty(next_key));
                        buffers.reset(next_key, SLAB.min(depth - target), layout, labels.is_some());
                        buffers
                    }
                };
                let mut next = next;
                if !next.complete(layout) {
                    let rows = (outer - next.rows_done).div_ceil(frames_left.max(1));
                    times.slab_rows += next.copy_rows(data, label_data, layout, rows);
                }
                self.next = Some(next);
            }
            self.slab.as_ref().map(|s| (s, slice - first))
        } else {
            None
        };
        let (grey, label_buf) = (&mut self.grey, &mut self.labels);
        for vo in 0..outer {
            let row = base + vo * s_outer;
            let o = if flip_outer { outer - 1 - vo } else { vo };
            for vi in 0..inner {
                let i = if flip_inner { inner - 1 - vi } else { vi };
                // Texture pixel (x, y) as y * w + x.
                let dst = if v_inner { i * w + o } else { o * w + i };
                match slab_plane {
                    Some((slab, k)) => {
                        let src = k * n + vo * inner + vi;
                        grey[dst] = window.grey(slab.image[src]);
                        if labels.is_some() {
                            label_buf[dst] = slab.labels[src];
                        }
                    }
                    None => {
                        let src = row + vi * s_inner;
                        grey[dst] = window.grey(data[src]);
                        if let Some(l) = labels {
                            label_buf[dst] = l.data[src];
                        }
                    }
                }
            }
        }
        times.gather_ms = started.elapsed().as_secs_f64() * 1e3;

        let started = std::time::Instant::now();
        let mut pixels = Vec::with_capacity(n);
        match labels {
            None => pixels.extend(self.grey.iter().map(|&g| Color32::from_gray(g))),
            Some(_) => {
                let max = self.labels.iter().copied().max().unwrap_or(0) as usize;
                self.slot.clear();
                self.slot.resize(max + 1, 0);
                self.rows.clear();
                let alpha = content.overlay.opacity.clamp(0.0, 1.0);
                let outline = content.overlay.outline;
                let t = if outline { alpha.max(0.8) } else { alpha };
                let (grey, lab) = (&self.grey, &self.labels);
                for y in 0..h {
                    for x in 0..w {
                        let at = y * w + x;
                        let g = grey[at];
                        let v = lab[at];
                        let mut color = Color32::from_gray(g);
                        if v != 0 {
                            let mut slot = self.slot[v as usize];
                            if slot == 0 {
                                slot = if content.overlay.hidden.contains(&v) {
                                    HIDDEN
                                } else {
                                    self.rows.push(blend_row(content.table.color(v), t));
                                    self.rows.len() as u32
                                };
                                self.slot[v as usize] = slot;
                            }
                            let edge = !outline
                                || x == 0
                                || y == 0
                                || x + 1 == w
                                || y + 1 == h
                                || lab[at - 1] != v
                                || lab[at + 1] != v
                                || lab[at - w] != v
                                || lab[at + w] != v;
                            if slot != HIDDEN && edge {
                                color = self.rows[slot as usize - 1][g as usize];
                            }
                        }
                        pixels.push(color);
                    }
                }
            }
        }
        times.compose_ms = started.elapsed().as_secs_f64() * 1e3;
        (ColorImage::new([w, h], pixels), times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(dims: [usize; 3], affine: Affine) -> ImageVolume {
        let data = (0..dims[0] * dims[1] * dims[2]).map(|v| v as f32).collect();
        ImageVolume {
            data,
            dims,
            ras_from_ijk: affine,
        }
    }

    #[test]
    fn ras_volume_is_shown_radiologically() {
        let a = Affine::from_spacing_origin([1.0, 2.0, 3.0], [0.0; 3]);
        let g = SliceGeometry::new(Axis::Axial, &a);
        assert_eq!((g.fixed, g.h, g.v), (2, 0, 1));
        // i points to R: screen x (toward L) runs against it; j points to A: screen y (toward P) too.
        assert!(g.flip_h && g.flip_v);
        assert_eq!(g.edge_letters, ['R', 'L', 'A', 'P']);
        let s = SliceGeometry::new(Axis::Sagittal, &a);
        assert_eq!((s.fixed, s.h, s.v), (0, 1, 2));
        let c = SliceGeometry::new(Axis::Coronal, &a);
        assert_eq!((c.fixed, c.h, c.v), (1, 0, 2));
    }

    #[test]
    fn lps_volume_needs_no_flip_in_axial() {
        let mut a = Affine::from_spacing_origin([1.0, 1.0, 1.0], [0.0; 3]);
        a.0[0][0] = -1.0;
        a.0[1][1] = -1.0;
        let g = SliceGeometry::new(Axis::Axial, &a);
        assert!(!g.flip_h && !g.flip_v);
    }

    #[test]
    fn pixel_and_voxel_are_inverse() {
        let a = Affine::from_spacing_origin([1.0, 1.0, 2.5], [0.0; 3]);
        let dims = [5, 6, 7];
        for axis in Axis::ALL {
            let g = SliceGeometry::new(axis, &a);
            let [w, h] = g.size(dims);
            for y in 0..h {
                for x in 0..w {
                    let v = g.voxel(dims, 3, x, y);
                    assert_eq!(g.pixel(dims, v), [x, y]);
                    assert_eq!(v[g.fixed], 3);
                }
            }
        }
    }

    #[test]
    fn render_slice_reads_the_right_voxels_and_overlays_labels() {
        let a = Affine::from_spacing_origin([1.0, 1.0, 1.0], [0.0; 3]);
        let image = vol([4, 3, 2], a);
        let mut labels = LabelVolume {
            data: vec![0; 24],
            dims: [4, 3, 2],
            ras_from_ijk: a,
        };
        labels.data[image.index(1, 1, 1)] = 6;
        let table = LabelTable::btcv();
        let overlay = OverlayStyle {
            opacity: 1.0,
            ..Default::default()
        };
        let content = SliceContent {
            image: &image,
            labels: Some(&labels),
            table: &table,
            window: WindowLevel::new(11.5, 23.0),
            overlay: &overlay,
            revision: 0,
        };
        let g = SliceGeometry::new(Axis::Axial, &a);
        let img = render_slice(&content, g, 1);
        assert_eq!(img.size, [4, 3]);
        // Pixel (x, y) shows voxel (3 - x, 2 - y, 1).
        let [x, y] = g.pixel(image.dims, [1, 1, 1]);
        let [r, gg, b] = table.color(6);
        assert_eq!(img.pixels[y * 4 + x], Color32::from_rgb(r, gg, b));
        let expect = WindowLevel::new(11.5, 23.0).grey(image.data[image.index(3, 2, 1)]);
        assert_eq!(img.pixels[0], Color32::from_gray(expect));
        // Hidden labels are not drawn.
        let hidden = OverlayStyle {
            opacity: 1.0,
            hidden: [6].into_iter().collect(),
            ..Default::default()
        };
        let content = SliceContent {
            overlay: &hidden,
            ..content
        };
        let img = render_slice(&content, g, 1);
        assert_eq!(
            img.pixels[y * 4 + x],
            Color32::from_gray(WindowLevel::new(11.5, 23.0).grey(image.data[image.index(1, 1, 1)]))
        );
    }

    /// The renderer before the table-driven one: per-pixel gather in texture order, float blending.
    fn render_reference(
        content: &SliceContent<'_>,
        geometry: SliceGeometry,
        slice: usize,
    ) -> ColorImage {
        let dims = content.image.dims;
        let [w, h] = geometry.size(dims);
        let pixels = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| {
                let ijk = geometry.voxel(dims, slice, x, y);
                let g = content
                    .window
                    .grey(content.image.data[content.image.index(ijk[0], ijk[1], ijk[2])]);
                let mut c = Color32::from_gray(g);
                if let Some(l) = content.labels {
                    let at = |x: usize, y: usize| {
                        let v = geometry.voxel(dims, slice, x, y);
                        l.data[l.index(v[0], v[1], v[2])]
                    };
                    let v = at(x, y);
                    let visible = v != 0 && !content.overlay.hidden.contains(&v);
                    let outline = content.overlay.outline;
                    let edge = !outline
                        || x == 0
                        || y == 0
                        || x + 1 == w
                        || y + 1 == h
                        || at(x - 1, y) != v
                        || at(x + 1, y) != v
                        || at(x, y - 1) != v
                        || at(x, y + 1) != v;
                    if visible && edge {
                        let alpha = content.overlay.opacity.clamp(0.0, 1.0);
                        let t = if outline { alpha.max(0.8) } else { alpha };
                        let [r, gg, b] = content.table.color(v);
                        let blend =
                            |u: u8, o: u8| (u as f32 * (1.0 - t) + o as f32 * t + 0.5) as u8;
                        c = Color32::from_rgb(blend(g, r), blend(g, gg), blend(g, b));
                    }
                }
                c
            })
            .collect();
        ColorImage::new([w, h], pixels)
    }

    #[test]
    fn table_renderer_equals_the_per_pixel_formula() {
        let dims = [9, 7, 6];
        let n = dims[0] * dims[1] * dims[2];
        // Intensities over and beyond the window, with NaN; labels in blobs (for outlines) up to 9 and 300.
        let data: Vec<f32> = (0..n)
            .map(|v| {
                if v % 37 == 5 {
                    f32::NAN
                } else {
                    ((v * 7919) % 611) as f32 - 250.0
                }
            })
            .collect();
        let labels: Vec<u16> = (0..n)
            .map(|v| match (v / 3) % 11 {
                0..=3 => 0,
                10 => 300,
                k => k as u16 - 3,
            })
            .collect();
        let mut lps = Affine::from_spacing_origin([0.8, 0.8, 2.0], [0.0; 3]);
        lps.0[0][0] = -0.8;
        lps.0[1][1] = -0.8;
        // Permuted storage: i runs superior, j right, k anterior.
        let mut permuted = Affine::from_spacing_origin([1.0; 3], [0.0; 3]);
        permuted.0 = [
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let table = LabelTable::btcv();
        let styles = [
            OverlayStyle {
                opacity: 0.37,
                ..Default::default()
            },
            OverlayStyle {
                opacity: 0.3,
                outline: true,
                ..Default::default()
            },
            OverlayStyle {
                opacity: 1.0,
                hidden: [2, 300].into_iter().collect(),
                ..Default::default()
            },
            OverlayStyle {
                opacity: 0.0,
                ..Default::default()
            },
        ];
        let mut renderer = SliceRenderer::default();
        let mut checked = 0;
        for affine in [
            Affine::from_spacing_origin([1.0, 1.0, 2.5], [0.0; 3]),
            lps,
            permuted,
        ] {
            let image = ImageVolume {
                data: data.clone(),
                dims,
                ras_from_ijk: affine,
            };
            let label_map = LabelVolume {
                data: labels.clone(),
                dims,
                ras_from_ijk: affine,
            };
            for style in &styles {
                for with_labels in [true, false] {
                    let content = SliceContent {
                        image: &image,
                        labels: with_labels.then_some(&label_map),
                        table: &table,
                        window: WindowLevel::new(13.0, 301.0),
                        overlay: style,
                        revision: 0,
                    };
                    for axis in Axis::ALL {
                        let g = SliceGeometry::new(axis, &affine);
                        for slice in 0..dims[g.fixed] {
                            let (fast, _) = renderer.render(&content, g, slice);
                            let slow = render_reference(&content, g, slice);
                            assert_eq!(fast.size, slow.size);
                            assert!(
                                fast.pixels == slow.pixels,
                                "{axis:?} slice {slice} {style:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 4 * 2 * (6 + 7 + 9));
    }

    #[test]
    fn slabs_serve_every_slice_in_any_paging_order() {
        let dims = [5, 4, 2 * SLAB + 7];
        let a = Affine::from_spacing_origin([1.0, 1.0, 1.0], [0.0; 3]);
        let image = vol(dims, a);
        let labels = LabelVolume {
            data: (0..image.data.len())
                .map(|v| ((v * 13) % 5) as u16)
                .collect(),
            dims,
            ras_from_ijk: a,
        };
        let other = LabelVolume {
            data: labels.data.iter().map(|v| (v + 1) % 5).collect(),
            ..labels.clone()
        };
        let table = LabelTable::btcv();
        let overlay = OverlayStyle::default();
        let content = SliceContent {
            image: &image,
            labels: Some(&labels),
            table: &table,
            window: WindowLevel::new(300.0, 700.0),
            overlay: &overlay,
            revision: 1,
        };
        let g = SliceGeometry::new(Axis::Axial, &a);
        assert_eq!(g.fixed, 2);
        let n = dims[2];
        let order: Vec<usize> = (0..n)
            .chain((0..n).rev())
            .chain((0..n).map(|s| (s * 37) % n))
            .collect();
        let mut renderer = SliceRenderer::default();
        for &s in &order {
            let (fast, _) = renderer.render(&content, g, s);
            assert!(
                fast.pixels == render_reference(&content, g, s).pixels,
                "slice {s}"
            );
            // Another label map on the same slice: the slab must not serve the old labels.
            let swapped = SliceContent {
                labels: Some(&other),
                ..content
            };
            let (fast, _) = renderer.render(&swapped, g, s);
            assert!(
                fast.pixels == render_reference(&swapped, g, s).pixels,
                "slice {s}, other labels"
            );
        }
    }

    #[test]
    fn paging_spreads_slab_copies_over_frames() {
        let dims = [40, 6, 3 * SLAB];
        let a = Affine::from_spacing_origin([1.0, 1.0, 1.0], [0.0; 3]);
        let image = vol(dims, a);
        let labels = LabelVolume {
            data: (0..image.data.len()).map(|v| (v % 3) as u16).collect(),
            dims,
            ras_from_ijk: a,
        };
        let table = LabelTable::btcv();
        let overlay = OverlayStyle::default();
        let content = SliceContent {
            image: &image,
            labels: Some(&labels),
            table: &table,
            window: WindowLevel::new(300.0, 700.0),
            overlay: &overlay,
            revision: 1,
        };
        let g = SliceGeometry::new(Axis::Axial, &a);
        let n = dims[2];
        // One row of a slab is one value of the outer in-plane axis (here i: 40 rows).
        let outer: usize = 40;
        let per_frame = outer.div_ceil(SLAB);
        for order in [(0..n).collect::<Vec<_>>(), (0..n).rev().collect::<Vec<_>>()] {
            let mut renderer = SliceRenderer::default();
            for (frame, &s) in order.iter().enumerate() {
                let (fast, times) = renderer.render(&content, g, s);
                assert!(
                    fast.pixels == render_reference(&content, g, s).pixels,
                    "slice {s}"
                );
                if frame == 0 {
                    // The first slab is copied at once.
                    assert!(times.slab_rows >= outer, "slice {s}");
                } else {
                    assert!(
                        times.slab_rows <= per_frame,
                        "slice {s}: {} rows",
                        times.slab_rows
                    );
                }
            }
        }
        // A jump copies the slab it lands in at once.
        let mut renderer = SliceRenderer::default();
        renderer.render(&content, g, 0);
        let (_, times) = renderer.render(&content, g, 2 * SLAB + 1);
        assert!(times.slab_rows >= outer);
    }

    #[test]
    fn blend_rows_match_the_float_formula_on_every_grey_value() {
        for t in [0.0f32, 0.25, 0.5, 0.8, 1.0] {
            let row = blend_row([250, 3, 128], t);
            for (g, c) in row.iter().enumerate() {
                let f = |o: u8| (g as f32 * (1.0 - t) + o as f32 * t + 0.5) as u8;
                assert_eq!(
                    *c,
                    Color32::from_rgb(f(250), f(3), f(128)),
                    "t {t} grey {g}"
                );
            }
        }
        assert_eq!(blend_row([9, 9, 9], 1.0)[200], Color32::from_rgb(9, 9, 9));
        assert_eq!(blend_row([9, 9, 9], 0.0)[200], Color32::from_gray(200));
    }

    fn area(rects: &[Rect]) -> f32 {
        rects.iter().map(|r| r.area()).sum()
    }

    #[test]
    fn letterbox_and_uncovered_leave_no_gap_and_cover_no_hole() {
        let view = Rect::from_min_max(Pos2::new(10.0, 20.0), Pos2::new(110.0, 220.0));
        let image = Rect::from_min_max(Pos2::new(10.0, 70.5), Pos2::new(110.0, 169.5));
        let bars = letterbox(view, image);
        assert_eq!(bars.len(), 2);
        // Each bar reaches one point under the image.
        assert!(
            (area(&bars) - (100.0 * 200.0 - 100.0 * 97.0)).abs() < 1e-3,
            "{bars:?}"
        );
        assert!(letterbox(view, view.expand(30.0)).is_empty());
        assert_eq!(
            letterbox(view, image.translate(Vec2::new(500.0, 0.0))),
            vec![view]
        );
        // A full-height image: pillars left and right (and one-point strips along the image's top and bottom).
        let pillar = Rect::from_min_max(Pos2::new(30.0, 20.0), Pos2::new(90.0, 220.0));
        let bars = letterbox(view, pillar);
        assert!(
            bars.iter()
                .any(|b| b.min.x == 10.0 && b.max.x == 31.0 && b.height() == 200.0)
        );
        assert!(
            bars.iter()
                .any(|b| b.min.x == 89.0 && b.max.x == 110.0 && b.height() == 200.0)
        );
        assert!(bars.iter().all(|b| !pillar.contains_rect(*b)), "{bars:?}");

        let full = Rect::from_min_max(Pos2::ZERO, Pos2::new(100.0, 80.0));
        let holes = [
            Rect::from_min_max(Pos2::new(0.0, 10.0), Pos2::new(48.0, 80.0)),
            Rect::from_min_max(Pos2::new(52.0, 10.0), Pos2::new(100.0, 38.0)),
            Rect::from_min_max(Pos2::new(52.0, 42.0), Pos2::new(100.0, 80.0)),
        ];
        let rest = uncovered(full, &holes);
        assert!(
            (area(&rest) + area(&holes) - full.area()).abs() < 1e-3,
            "{rest:?}"
        );
        for r in &rest {
            assert!(full.contains_rect(*r));
            for h in &holes {
                let i = r.intersect(*h);
                assert!(
                    !(i.width() > 0.0 && i.height() > 0.0),
                    "{r:?} overlaps {h:?}"
                );
            }
        }
        assert_eq!(uncovered(full, &[]), vec![full]);
    }

    struct Scene {
        view: SliceView,
        image: ImageVolume,
        labels: LabelVolume,
        table: LabelTable,
        overlay: OverlayStyle,
        window: WindowLevel,
        cursor: [usize; 3],
        transform: ViewTransform,
    }

    #[test]
    fn texture_is_rendered_again_only_when_what_it_shows_changes() {
        let a = Affine::from_spacing_origin([1.0; 3], [0.0; 3]);
        let image = vol([6, 5, 4], a);
        let mut labels = LabelVolume {
            data: vec![0; 120],
            dims: [6, 5, 4],
            ras_from_ijk: a,
        };
        labels.data[image.index(2, 2, 2)] = 6;
        let scene = Scene {
            view: SliceView::new(Axis::Axial, "t"),
            image,
            labels,
            table: LabelTable::btcv(),
            overlay: OverlayStyle::default(),
            window: WindowLevel::new(40.0, 400.0),
            cursor: [2, 2, 2],
            transform: ViewTransform::default(),
        };
        let mut h = egui_kittest::Harness::builder()
            .with_size([300.0, 300.0])
            .build_ui_state(
                |ui, s: &mut Scene| {
                    let content = SliceContent {
                        image: &s.image,
                        labels: Some(&s.labels),
                        table: &s.table,
                        window: s.window,
                        overlay: &s.overlay,
                        revision: 7,
                    };
                    s.view
                        .ui(ui, &content, &mut s.cursor, &mut s.transform, &mut s.window);
                },
                scene,
            );
        h.run_steps(3);
        assert_eq!(h.state().view.uploads, 1);
        assert!(h.state().view.last_rect.is_some());
        let mut expect = 1;
        let changes: [fn(&mut Scene); 5] = [
            |s| s.overlay.opacity = 0.9,
            |s| s.overlay.outline = true,
            |s| {
                s.overlay.hidden.insert(6);
            },
            |s| s.window.width = 100.0,
            |s| s.cursor[2] = 1,
        ];
        for change in changes {
            change(h.state_mut());
            h.run_steps(2);
            expect += 1;
            assert_eq!(h.state().view.uploads, expect);
            // Nothing changed: no new render.
            h.run_steps(2);
            assert_eq!(h.state().view.uploads, expect);
            assert_eq!(h.state().view.last_render, None);
        }
        // Moving the crosshair within the slice does not re-render the axial texture.
        h.state_mut().cursor[0] = 4;
        h.run_steps(2);
        assert_eq!(h.state().view.uploads, expect);
    }
}
