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
    has_labels: bool,
}

/// One slice view: its axis and its texture (created on first draw, then updated in place).
pub struct SliceView {
    /// Which orthogonal view this is.
    pub axis: Axis,
    /// A name that keeps the texture and widget ids apart when several views show the same axis.
    pub id: String,
    texture: Option<TextureHandle>,
    key: Option<RenderKey>,
    /// Number of texture uploads so far (for tests and frame-time benchmarks).
    pub uploads: u64,
}

impl SliceView {
    /// A view of `axis`; `id` must be unique among views.
    pub fn new(axis: Axis, id: impl Into<String>) -> Self {
        Self {
            axis,
            id: id.into(),
            texture: None,
            key: None,
            uploads: 0,
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
        painter.rect_filled(rect, 0.0, Color32::BLACK);

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
            has_labels: content.labels.is_some(),
        };
        if self.texture.is_some() && self.key.as_ref() == Some(&key) {
            return;
        }
        let image = render_slice(content, geometry, slice);
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
        self.uploads += 1;
        self.key = Some(key);
    }
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
/// (x, y) is `geometry.voxel(dims, slice, x, y)`.
pub fn render_slice(
    content: &SliceContent<'_>,
    geometry: SliceGeometry,
    slice: usize,
) -> ColorImage {
    let dims = content.image.dims;
    let [w, h] = geometry.size(dims);
    let strides = [dims[1] * dims[2], dims[2], 1];
    let base = slice.min(dims[geometry.fixed].saturating_sub(1)) * strides[geometry.fixed];
    // Flat voxel index of texture pixel (x, y).
    let index = |x: usize, y: usize| {
        let vx = if geometry.flip_h { w - 1 - x } else { x };
        let vy = if geometry.flip_v { h - 1 - y } else { y };
        base + vx * strides[geometry.h] + vy * strides[geometry.v]
    };
    let window = content.window;
    let data = &content.image.data;
    let mut pixels = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let g = window.grey(data[index(x, y)]);
            pixels.push(Color32::from_gray(g));
        }
    }
    if let Some(labels) = content.labels.filter(|l| l.dims == dims) {
        let mut slice_labels = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                slice_labels.push(labels.data[index(x, y)]);
            }
        }
        let max = slice_labels.iter().copied().max().unwrap_or(0);
        let lut = label_lut(content.table, max, &content.overlay.hidden);
        let alpha = content.overlay.opacity.clamp(0.0, 1.0);
        let outline = content.overlay.outline;
        for y in 0..h {
            for x in 0..w {
                let v = slice_labels[y * w + x];
                if v == 0 {
                    continue;
                }
                let [r, g, b, a] = lut[v as usize];
                if a == 0 {
                    continue;
                }
                if outline {
                    let differs = |xx: usize, yy: usize| slice_labels[yy * w + xx] != v;
                    let edge = x == 0
                        || y == 0
                        || x + 1 == w
                        || y + 1 == h
                        || differs(x - 1, y)
                        || differs(x + 1, y)
                        || differs(x, y - 1)
                        || differs(x, y + 1);
                    if !edge {
                        continue;
                    }
                }
                let t = if outline { alpha.max(0.8) } else { alpha };
                let p = &mut pixels[y * w + x];
                let blend =
                    |under: u8, over: u8| (under as f32 * (1.0 - t) + over as f32 * t + 0.5) as u8;
                *p = Color32::from_rgb(blend(p.r(), r), blend(p.g(), g), blend(p.b(), b));
            }
        }
    }
    ColorImage::new([w, h], pixels)
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
}
