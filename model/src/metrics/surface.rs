//! Surface distances between two binary masks, exactly as MONAI 1.6 computes them for
//! `HausdorffDistanceMetric` and `SurfaceDiceMetric` (`use_subvoxels=False`).
//!
//! * **Edges** (`get_mask_edges`): `mask XOR binary_erosion(mask)` with the 6-connected cross and
//!   `border_value = 0`, so mask voxels on the image border are edge voxels. MONAI crops to the bounding box
//!   of `pred | gt` with a 1-voxel margin first; that does not change the edges, only the work, and we scan
//!   only that box too.
//! * **Distances** (`get_surface_distance`): for each edge voxel of one mask, the exact Euclidean distance in
//!   millimetres (voxel indices times spacing) to the nearest edge voxel of the other. We use an exact k-d tree
//!   over the edge points (memory proportional to the surfaces, not the volume).
//! * **Empty masks** follow MONAI's quirks: if the target edge set is empty, every source edge voxel gets
//!   `inf`; if the source is empty but the target is not, the result is one `inf` per *target* edge voxel.
//!   Both empty gives no distances at all.

use rayon::prelude::*;

/// A half-open box of voxel indices `[lo, hi)` per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoxelBox {
    /// First index per axis.
    pub lo: [usize; 3],
    /// One past the last index per axis.
    pub hi: [usize; 3],
}

impl VoxelBox {
    /// An empty box that [`VoxelBox::include`] grows.
    pub fn empty() -> Self {
        Self {
            lo: [usize::MAX; 3],
            hi: [0; 3],
        }
    }
    /// Whether the box holds no voxel.
    pub fn is_empty(&self) -> bool {
        (0..3).any(|a| self.lo[a] >= self.hi[a])
    }
    /// Grows the box to contain voxel `p`.
    #[inline]
    #[allow(clippy::needless_range_loop)]
    pub fn include(&mut self, p: [usize; 3]) {
        for a in 0..3 {
            self.lo[a] = self.lo[a].min(p[a]);
            self.hi[a] = self.hi[a].max(p[a] + 1);
        }
    }
    /// The smallest box containing both.
    pub fn union(&self, other: &VoxelBox) -> VoxelBox {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        VoxelBox {
            lo: std::array::from_fn(|a| self.lo[a].min(other.lo[a])),
            hi: std::array::from_fn(|a| self.hi[a].max(other.hi[a])),
        }
    }
}

/// Both directed sets of surface distances in millimetres, as MONAI's symmetric `get_edge_surface_distance`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SurfaceDistances {
    /// For each prediction edge voxel, the distance to the nearest ground-truth edge voxel (see the module doc
    /// for the empty cases).
    pub pred_to_gt_mm: Vec<f64>,
    /// For each ground-truth edge voxel, the distance to the nearest prediction edge voxel.
    pub gt_to_pred_mm: Vec<f64>,
}

impl SurfaceDistances {
    /// Symmetric Hausdorff distance: per direction the `percentile` (0..=100, `torch.quantile` linear
    /// interpolation) or the maximum (`None`), then the larger of the two. `nan` when both masks are empty;
    /// with exactly one empty mask, `inf` for the maximum and `nan` for a percentile (inf − inf), as MONAI.
    pub fn hausdorff_mm(&self, percentile: Option<f64>) -> f64 {
        let a = directed_hausdorff(&self.pred_to_gt_mm, percentile);
        let b = directed_hausdorff(&self.gt_to_pred_mm, percentile);
        // torch.max over a stack propagates nan.
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    }

    /// Normalised surface Dice at `tolerance_mm`: edge voxels (both directions) within the tolerance over all
    /// edge voxels. `nan` when both masks are empty, `0.0` when exactly one is.
    pub fn surface_dice(&self, tolerance_mm: f64) -> f64 {
        let complete = self.pred_to_gt_mm.len() + self.gt_to_pred_mm.len();
        if complete == 0 {
            return f64::NAN;
        }
        let correct = self
            .pred_to_gt_mm
            .iter()
            .chain(&self.gt_to_pred_mm)
            .filter(|&&d| d <= tolerance_mm)
            .count();
        correct as f64 / complete as f64
    }
}

/// `torch.quantile(d, p/100)` (linear) or `d.max()`; `nan` for an empty set.
fn directed_hausdorff(d: &[f64], percentile: Option<f64>) -> f64 {
    if d.is_empty() {
        return f64::NAN;
    }
    match percentile {
        None => d.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Some(p) => {
            let mut s = d.to_vec();
            s.sort_unstable_by(f64::total_cmp);
            quantile_linear(&s, p / 100.0)
        }
    }
}

/// Linear-interpolation quantile of sorted values, computed as `torch.quantile` does (ranks `q·(n−1)`,
/// then `torch.lerp`, whose two-sided formula turns `inf − inf` into `nan`).
pub fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (below, above) = (rank.floor(), rank.ceil());
    let w = rank - below;
    let (lo, hi) = (sorted[below as usize], sorted[above as usize]);
    if w < 0.5 {
        lo + w * (hi - lo)
    } else {
        hi - (hi - lo) * (1.0 - w)
    }
}

/// Edge voxels of a full-grid mask (C order, `dims`): `mask XOR erosion(mask)`, 6-connected, border 0.
pub fn mask_edges(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let mut out = vec![false; mask.len()];
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let idx = (i * dims[1] + j) * dims[2] + k;
                out[idx] = mask[idx] && is_edge(dims, [i, j, k], |n| mask[n]);
            }
        }
    }
    out
}

/// Whether voxel `p` (inside the mask) has a 6-neighbour outside the mask or outside the grid.
#[inline]
fn is_edge(dims: [usize; 3], p: [usize; 3], inside: impl Fn(usize) -> bool) -> bool {
    let [i, j, k] = p;
    let (nj, nk) = (dims[1], dims[2]);
    let idx = (i * nj + j) * nk + k;
    if i == 0 || j == 0 || k == 0 || i + 1 == dims[0] || j + 1 == nj || k + 1 == nk {
        return true;
    }
    !(inside(idx - nj * nk)
        && inside(idx + nj * nk)
        && inside(idx - nk)
        && inside(idx + nk)
        && inside(idx - 1)
        && inside(idx + 1))
}

/// Edge voxels of the mask `inside` within `bbox`, as points in millimetres (index · spacing).
fn edge_points(
    dims: [usize; 3],
    bbox: &VoxelBox,
    spacing_mm: [f64; 3],
    inside: &(impl Fn(usize) -> bool + Sync),
) -> Vec<[f64; 3]> {
    if bbox.is_empty() {
        return Vec::new();
    }
    (bbox.lo[0]..bbox.hi[0])
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut pts = Vec::new();
            for j in bbox.lo[1]..bbox.hi[1] {
                for k in bbox.lo[2]..bbox.hi[2] {
                    let idx = (i * dims[1] + j) * dims[2] + k;
                    if inside(idx) && is_edge(dims, [i, j, k], inside) {
                        pts.push([
                            i as f64 * spacing_mm[0],
                            j as f64 * spacing_mm[1],
                            k as f64 * spacing_mm[2],
                        ]);
                    }
                }
            }
            pts
        })
        .collect()
}

/// Surface distances between the masks `is_pred` and `is_gt` (predicates on flat C-order indices of a grid of
/// `dims`), scanning only `bbox`, which must contain both masks (`None`: the whole grid).
pub fn surface_distances_by(
    dims: [usize; 3],
    bbox: Option<VoxelBox>,
    spacing_mm: [f64; 3],
    is_pred: impl Fn(usize) -> bool + Sync,
    is_gt: impl Fn(usize) -> bool + Sync,
) -> SurfaceDistances {
    let bbox = bbox.unwrap_or(VoxelBox {
        lo: [0; 3],
        hi: dims,
    });
    let pred = edge_points(dims, &bbox, spacing_mm, &is_pred);
    let gt = edge_points(dims, &bbox, spacing_mm, &is_gt);
    SurfaceDistances {
        pred_to_gt_mm: directed(&pred, &gt),
        gt_to_pred_mm: directed(&gt, &pred),
    }
}

/// Surface distances between two full-grid boolean masks.
pub fn surface_distances(
    pred: &[bool],
    gt: &[bool],
    dims: [usize; 3],
    spacing_mm: [f64; 3],
) -> SurfaceDistances {
    surface_distances_by(dims, None, spacing_mm, |i| pred[i], |i| gt[i])
}

/// MONAI's `get_surface_distance(src_edges, dst_edges)` including its empty-set quirks.
fn directed(src: &[[f64; 3]], dst: &[[f64; 3]]) -> Vec<f64> {
    if dst.is_empty() {
        return vec![f64::INFINITY; src.len()];
    }
    if src.is_empty() {
        return vec![f64::INFINITY; dst.len()];
    }
    let tree = KdTree::new(dst.to_vec());
    src.par_iter().map(|p| tree.nearest_sq(p).sqrt()).collect()
}

/// A static 3-D k-d tree (median splits, implicit layout) for exact nearest-neighbour distances.
struct KdTree {
    /// Points, reordered so that each subtree is a contiguous range whose middle element is the split.
    pts: Vec<[f64; 3]>,
}

impl KdTree {
    fn new(mut pts: Vec<[f64; 3]>) -> Self {
        build(&mut pts, 0);
        Self { pts }
    }

    /// Squared distance from `q` to the nearest point.
    fn nearest_sq(&self, q: &[f64; 3]) -> f64 {
        let mut best = f64::INFINITY;
        search(&self.pts, 0, q, &mut best);
        best
    }
}

fn build(pts: &mut [[f64; 3]], depth: usize) {
    if pts.len() <= 1 {
        return;
    }
    let axis = depth % 3;
    let mid = pts.len() / 2;
    pts.select_nth_unstable_by(mid, |a, b| a[axis].total_cmp(&b[axis]));
    let (left, right) = pts.split_at_mut(mid);
    build(left, depth + 1);
    build(&mut right[1..], depth + 1);
}

fn search(pts: &[[f64; 3]], depth: usize, q: &[f64; 3], best: &mut f64) {
    if pts.is_empty() {
        return;
    }
    if pts.len() <= 8 {
        for p in pts {
            let d = dist_sq(p, q);
            if d < *best {
                *best = d;
            }
        }
        return;
    }
    let axis = depth % 3;
    let mid = pts.len() / 2;
    let p = &pts[mid];
    let d = dist_sq(p, q);
    if d < *best {
        *best = d;
    }
    let diff = q[axis] - p[axis];
    let (near, far) = if diff < 0.0 {
        (&pts[..mid], &pts[mid + 1..])
    } else {
        (&pts[mid + 1..], &pts[..mid])
    };
    search(near, depth + 1, q, best);
    if diff * diff < *best {
        search(far, depth + 1, q, best);
    }
}

#[inline]
fn dist_sq(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let (x, y, z) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    x * x + y * y + z * z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kd_tree_matches_brute_force() {
        let mut s = 12345u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 50) as f64 * 0.7
        };
        let pts: Vec<[f64; 3]> = (0..500).map(|_| [rnd(), rnd(), rnd()]).collect();
        let qs: Vec<[f64; 3]> = (0..200).map(|_| [rnd(), rnd(), rnd()]).collect();
        let tree = KdTree::new(pts.clone());
        for q in &qs {
            let brute = pts
                .iter()
                .map(|p| dist_sq(p, q))
                .fold(f64::INFINITY, f64::min);
            assert_eq!(tree.nearest_sq(q), brute);
        }
    }

    #[test]
    fn quantile_like_torch() {
        assert_eq!(quantile_linear(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert!(quantile_linear(&[f64::INFINITY; 3], 0.95).is_nan());
        assert_eq!(quantile_linear(&[0.0, 10.0], 0.95), 9.5);
    }
}
