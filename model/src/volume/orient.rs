//! Reorientation by axis permutation and flips, exactly as MONAI `Orientationd` (nibabel `io_orientation`,
//! `ornt_transform`, `inv_ornt_aff`): voxel values are moved, never interpolated, and world coordinates
//! are unchanged.

// Numeric code indexes several parallel arrays by axis; range loops read clearest here.
#![allow(clippy::needless_range_loop)]

use super::{Affine, Volume};
use crate::{Error, Result};

/// A reorientation: voxel axis `a` of the input becomes axis `axis[a]` of the output, reversed when
/// `flip[a]` (nibabel's `ornt` array).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reorientation {
    /// Output axis of each input axis.
    pub axis: [usize; 3],
    /// Whether each input axis is reversed.
    pub flip: [bool; 3],
}

impl Reorientation {
    /// The identity.
    pub fn identity() -> Self {
        Self {
            axis: [0, 1, 2],
            flip: [false; 3],
        }
    }

    /// Whether nothing moves.
    pub fn is_identity(&self) -> bool {
        *self == Self::identity()
    }

    /// The reorientation that undoes this one (on the output grid).
    pub fn inverse(&self) -> Self {
        let mut inv = Self::identity();
        for a in 0..3 {
            inv.axis[self.axis[a]] = a;
            inv.flip[self.axis[a]] = self.flip[a];
        }
        inv
    }

    /// Output dims for input dims.
    pub fn out_dims(&self, dims: [usize; 3]) -> [usize; 3] {
        let mut out = [0; 3];
        for a in 0..3 {
            out[self.axis[a]] = dims[a];
        }
        out
    }

    /// The output affine (nibabel: `affine @ inv_ornt_aff(ornt, shape)`): world positions are unchanged.
    pub fn out_affine(&self, affine: &Affine, dims: [usize; 3]) -> Affine {
        // M maps output indices to input indices: in[a] = flip ? n_a - 1 - o[axis[a]] : o[axis[a]].
        let mut m = Affine([[0.0; 4]; 4]);
        m.0[3][3] = 1.0;
        for a in 0..3 {
            let s = if self.flip[a] { -1.0 } else { 1.0 };
            m.0[a][self.axis[a]] = s;
            m.0[a][3] = if self.flip[a] {
                dims[a] as f64 - 1.0
            } else {
                0.0
            };
        }
        affine.compose(&m)
    }

    /// Applies the reorientation to a volume's voxels and affine.
    pub fn apply<T: Copy + Default>(&self, vol: &Volume<T>) -> Volume<T> {
        let dims = vol.dims;
        let out_dims = self.out_dims(dims);
        let in_strides = [dims[1] * dims[2], dims[2], 1];
        // For each output axis b: the input stride (signed) and the input start offset.
        let mut step = [0isize; 3];
        let mut base = 0isize;
        for a in 0..3 {
            let b = self.axis[a];
            if self.flip[a] {
                step[b] = -(in_strides[a] as isize);
                base += (dims[a] as isize - 1) * in_strides[a] as isize;
            } else {
                step[b] = in_strides[a] as isize;
            }
        }
        let mut data = Vec::with_capacity(vol.data.len());
        for o0 in 0..out_dims[0] {
            let p0 = base + o0 as isize * step[0];
            for o1 in 0..out_dims[1] {
                let p1 = p0 + o1 as isize * step[1];
                for o2 in 0..out_dims[2] {
                    data.push(vol.data[(p1 + o2 as isize * step[2]) as usize]);
                }
            }
        }
        Volume {
            data,
            dims: out_dims,
            ras_from_ijk: self.out_affine(&vol.ras_from_ijk, dims),
        }
    }
}

/// Parses an orientation code such as "RAS", "LPS" or "PIR" (one letter of R/L, A/P, S/I each).
pub fn parse_code(code: &str) -> Result<[char; 3]> {
    let letters: Vec<char> = code
        .trim()
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bad = || {
        Error::invalid(
            "orientation code",
            format!("{code:?} is not three distinct axes from R/L, A/P, S/I"),
        )
    };
    let arr: [char; 3] = letters.try_into().map_err(|_| bad())?;
    let axes: Vec<usize> = arr
        .iter()
        .map(|&c| letter_axis(c).map(|(a, _)| a))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    if axes[0] == axes[1] || axes[0] == axes[2] || axes[1] == axes[2] {
        return Err(bad());
    }
    Ok(arr)
}

fn letter_axis(c: char) -> Option<(usize, bool)> {
    Some(match c {
        'R' => (0, false),
        'L' => (0, true),
        'A' => (1, false),
        'P' => (1, true),
        'S' => (2, false),
        'I' => (2, true),
        _ => return None,
    })
}

/// The reorientation taking a volume with affine `affine` to orientation `target` (nibabel
/// `ornt_transform(io_orientation(affine), axcodes2ornt(target))`).
pub fn reorientation_to(affine: &Affine, target: [char; 3]) -> Result<Reorientation> {
    let start = affine.io_orientation();
    let mut end = [(0usize, false); 3];
    for (e, &c) in end.iter_mut().zip(&target) {
        *e = letter_axis(c)
            .ok_or_else(|| Error::invalid("reorient", format!("bad orientation letter {c:?}")))?;
    }
    let mut out = Reorientation::identity();
    let mut found = [false; 3];
    for (end_in, &(end_out, end_flip)) in end.iter().enumerate() {
        let Some(start_in) = (0..3).find(|&s| start[s].is_some_and(|(o, _)| o == end_out)) else {
            return Err(Error::invalid(
                "reorient",
                format!(
                    "degenerate affine, cannot find world axis {end_out}: {:?}",
                    affine.0
                ),
            ));
        };
        let start_flip = start[start_in].is_some_and(|(_, f)| f);
        out.axis[start_in] = end_in;
        out.flip[start_in] = start_flip != end_flip;
        found[start_in] = true;
    }
    if found.iter().any(|f| !f) {
        return Err(Error::invalid(
            "reorient",
            format!("degenerate affine: {:?}", affine.0),
        ));
    }
    Ok(out)
}

/// Reorients a volume to `target` (e.g. `['R', 'A', 'S']`); returns the volume and the reorientation used.
pub fn reorient<T: Copy + Default>(
    vol: &Volume<T>,
    target: [char; 3],
) -> Result<(Volume<T>, Reorientation)> {
    let r = reorientation_to(&vol.ras_from_ijk, target)?;
    Ok((r.apply(vol), r))
}

/// Reorients to RAS (MONAI `Orientationd(axcodes="RAS")`).
pub fn to_ras<T: Copy + Default>(vol: &Volume<T>) -> Result<(Volume<T>, Reorientation)> {
    reorient(vol, ['R', 'A', 'S'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_any_code() {
        let dims = [4, 3, 5];
        let mut a = Affine::from_spacing_origin([2.0, 3.0, 4.0], [10.0, -5.0, 7.0]);
        a.0[0][1] = 0.1;
        let vol = Volume::new((0..60u16).collect(), dims, a).unwrap_or_else(|_| unreachable!());
        for code in ["RAS", "LPS", "PIR", "SLA", "IRP"] {
            let c = parse_code(code).unwrap_or(['R', 'A', 'S']);
            let (o, r) = reorient(&vol, c).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(o.ras_from_ijk.orientation_code(), c, "{code}");
            // World position of every voxel value is preserved.
            for i in 0..o.dims[0] {
                for j in 0..o.dims[1] {
                    for k in 0..o.dims[2] {
                        let v = o.data[o.index(i, j, k)] as usize;
                        let src = [v / 15, (v / 5) % 3, v % 5];
                        let w0 =
                            vol.ras_from_ijk
                                .apply([src[0] as f64, src[1] as f64, src[2] as f64]);
                        let w1 = o.ras_from_ijk.apply([i as f64, j as f64, k as f64]);
                        assert!((0..3).all(|d| (w0[d] - w1[d]).abs() < 1e-9), "{code}");
                    }
                }
            }
            let back = r.inverse().apply(&o);
            assert_eq!(back.data, vol.data);
            assert!(back.ras_from_ijk.max_abs_diff(&vol.ras_from_ijk) < 1e-9);
        }
    }
}
