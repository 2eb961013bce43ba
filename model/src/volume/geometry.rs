//! Voxel-to-world geometry: 4×4 affines, spacing, orientation codes.

/// A 4×4 affine transform, row-major, mapping homogeneous voxel indices to millimetres
/// (for `ras_from_ijk`: `[x, y, z, 1]_RAS = A · [i, j, k, 1]`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Affine(pub [[f64; 4]; 4]);

impl Default for Affine {
    fn default() -> Self {
        Self::identity()
    }
}

impl Affine {
    /// The identity.
    pub fn identity() -> Self {
        let mut m = [[0.0; 4]; 4];
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        Self(m)
    }

    /// Axis-aligned (RAS-oriented) grid: diagonal `spacing_mm`, translation `origin_mm`.
    pub fn from_spacing_origin(spacing_mm: [f64; 3], origin_mm: [f64; 3]) -> Self {
        let mut a = Self::identity();
        for i in 0..3 {
            a.0[i][i] = spacing_mm[i];
            a.0[i][3] = origin_mm[i];
        }
        a
    }

    /// Maps a point (voxel index, possibly fractional) through the affine.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let m = &self.0;
        std::array::from_fn(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3])
    }

    /// `self · other` (apply `other` first).
    pub fn compose(&self, other: &Affine) -> Affine {
        let (a, b) = (&self.0, &other.0);
        Affine(std::array::from_fn(|r| {
            std::array::from_fn(|c| (0..4).map(|k| a[r][k] * b[k][c]).sum())
        }))
    }

    /// The inverse, or `None` when the linear part is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let m = &self.0;
        let a = [
            [m[0][0], m[0][1], m[0][2]],
            [m[1][0], m[1][1], m[1][2]],
            [m[2][0], m[2][1], m[2][2]],
        ];
        let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
        if !det.is_finite() || det.abs() < 1e-12 {
            return None;
        }
        let inv = [
            [
                (a[1][1] * a[2][2] - a[1][2] * a[2][1]) / det,
                (a[0][2] * a[2][1] - a[0][1] * a[2][2]) / det,
                (a[0][1] * a[1][2] - a[0][2] * a[1][1]) / det,
            ],
            [
                (a[1][2] * a[2][0] - a[1][0] * a[2][2]) / det,
                (a[0][0] * a[2][2] - a[0][2] * a[2][0]) / det,
                (a[0][2] * a[1][0] - a[0][0] * a[1][2]) / det,
            ],
            [
                (a[1][0] * a[2][1] - a[1][1] * a[2][0]) / det,
                (a[0][1] * a[2][0] - a[0][0] * a[2][1]) / det,
                (a[0][0] * a[1][1] - a[0][1] * a[1][0]) / det,
            ],
        ];
        let t = [m[0][3], m[1][3], m[2][3]];
        let mut out = Affine::identity();
        for r in 0..3 {
            for c in 0..3 {
                out.0[r][c] = inv[r][c];
            }
            out.0[r][3] = -(inv[r][0] * t[0] + inv[r][1] * t[1] + inv[r][2] * t[2]);
        }
        Some(out)
    }

    /// Voxel size along each index axis: the norms of the first three columns.
    pub fn spacing_mm(&self) -> [f64; 3] {
        let m = &self.0;
        std::array::from_fn(|c| (m[0][c] * m[0][c] + m[1][c] * m[1][c] + m[2][c] * m[2][c]).sqrt())
    }

    /// Largest absolute difference between two affines' entries.
    pub fn max_abs_diff(&self, other: &Affine) -> f64 {
        let mut d: f64 = 0.0;
        for r in 0..4 {
            for c in 0..4 {
                d = d.max((self.0[r][c] - other.0[r][c]).abs());
            }
        }
        d
    }

    /// The orientation code (nibabel's `aff2axcodes`): for each index axis, the RAS axis it points along most,
    /// as a letter from "RL", "AP", "SI". "RAS" means i→Right, j→Anterior, k→Superior.
    pub fn orientation_code(&self) -> [char; 3] {
        const POS: [char; 3] = ['R', 'A', 'S'];
        const NEG: [char; 3] = ['L', 'P', 'I'];
        let m = &self.0;
        // Greedy assignment by largest absolute component, as nibabel's io_orientation does for
        // non-degenerate affines.
        let mut used = [false; 3];
        let mut code = ['?'; 3];
        let mut cols: Vec<usize> = (0..3).collect();
        let strength = |c: usize| (0..3).map(|r| m[r][c].abs()).fold(0.0, f64::max);
        cols.sort_by(|&a, &b| strength(b).total_cmp(&strength(a)));
        for c in cols {
            let mut best = None;
            for r in 0..3 {
                if !used[r] && best.is_none_or(|b: usize| m[r][c].abs() > m[b][c].abs()) {
                    best = Some(r);
                }
            }
            if let Some(r) = best {
                used[r] = true;
                code[c] = if m[r][c] >= 0.0 { POS[r] } else { NEG[r] };
            }
        }
        code
    }
}
