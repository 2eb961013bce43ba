//! Voxel-to-world geometry: 4×4 affines, spacing, orientation codes.

// Numeric code indexes several parallel arrays by axis; range loops read clearest here.
#![allow(clippy::needless_range_loop)]

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
    /// as a letter from "RL", "AP", "SI". "RAS" means i→Right, j→Anterior, k→Superior. A degenerate axis
    /// (zero column) gives '?'.
    pub fn orientation_code(&self) -> [char; 3] {
        const POS: [char; 3] = ['R', 'A', 'S'];
        const NEG: [char; 3] = ['L', 'P', 'I'];
        let ornt = self.io_orientation();
        std::array::from_fn(|c| match ornt[c] {
            Some((axis, false)) => POS[axis],
            Some((axis, true)) => NEG[axis],
            None => '?',
        })
    }

    /// nibabel's `io_orientation`: for each voxel axis, the world (RAS) axis it is closest to and whether it
    /// points the opposite way (`true` = flipped: towards L, P or I), or `None` for a degenerate axis.
    ///
    /// As nibabel: the columns are normalised, the closest orthogonal matrix is taken (polar decomposition by
    /// SVD, dropping near-zero singular values), then voxel axes are assigned greedily in order i, j, k, each
    /// to its largest remaining world component.
    pub fn io_orientation(&self) -> [Option<(usize, bool)>; 3] {
        let m = &self.0;
        let mut rs = nalgebra::Matrix3::<f64>::zeros();
        for c in 0..3 {
            let mut z = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
            if z == 0.0 {
                z = 1.0;
            }
            for r in 0..3 {
                rs[(r, c)] = m[r][c] / z;
            }
        }
        if rs.iter().any(|v| !v.is_finite()) {
            return [None; 3];
        }
        let svd = rs.svd(true, true);
        let (Some(u), Some(vt)) = (svd.u, svd.v_t) else {
            return [None; 3];
        };
        let smax = svd.singular_values.max();
        let tol = smax * 3.0 * f64::EPSILON;
        let mut r = nalgebra::Matrix3::<f64>::zeros();
        for s in 0..3 {
            if svd.singular_values[s] > tol {
                r += u.column(s) * vt.row(s);
            }
        }
        let mut out = [None; 3];
        for (in_ax, o) in out.iter_mut().enumerate() {
            let col: [f64; 3] = std::array::from_fn(|k| r[(k, in_ax)]);
            // numpy allclose(col, 0): |x| <= 1e-8
            if col.iter().all(|v| v.abs() <= 1e-8) {
                continue;
            }
            let mut best = 0;
            for k in 1..3 {
                if col[k].abs() > col[best].abs() {
                    best = k;
                }
            }
            *o = Some((best, col[best] < 0.0));
            for c in 0..3 {
                r[(best, c)] = 0.0;
            }
        }
        out
    }

    /// Whether every entry is finite and the linear part is invertible.
    pub fn is_valid(&self) -> bool {
        self.0.iter().flatten().all(|v| v.is_finite()) && self.inverse().is_some()
    }

    /// The affine with its translation (the world position of voxel (0, 0, 0)) replaced.
    pub fn with_origin(mut self, origin_mm: [f64; 3]) -> Affine {
        for r in 0..3 {
            self.0[r][3] = origin_mm[r];
        }
        self
    }

    /// The world position of voxel (0, 0, 0) in mm.
    pub fn origin_mm(&self) -> [f64; 3] {
        [self.0[0][3], self.0[1][3], self.0[2][3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_codes() {
        assert_eq!(Affine::identity().orientation_code(), ['R', 'A', 'S']);
        let lps = Affine::from_spacing_origin([-3.0, -3.0, 3.0], [0.0; 3]);
        assert_eq!(lps.orientation_code(), ['L', 'P', 'S']);
        // P, I, R: i -> -y, j -> -z, k -> +x
        let mut a = Affine::identity();
        a.0 = [
            [0.0, 0.0, 2.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.5, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(a.orientation_code(), ['P', 'I', 'R']);
        // Oblique (20 degrees about z) still R, A, S.
        let (s, c) = 20f64.to_radians().sin_cos();
        a.0 = [
            [c, -s, 0.0, 0.0],
            [s, c, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(a.orientation_code(), ['R', 'A', 'S']);
    }
}
