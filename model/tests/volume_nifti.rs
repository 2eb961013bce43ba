//! NIfTI-1 reading and writing: round trips (voxels, affines incl. oblique), every datatype in both byte
//! orders, scaling, 4-D frames, and typed errors for broken files; a bounded fuzz test (no panics).

use logonet::Error;
use logonet::volume::nifti::{
    NiftiType, ReadOptions, WriteOptions, decode_image, decode_labels, encode_image, encode_labels,
    read_image, read_info, read_labels, write_image, write_labels,
};
use logonet::volume::{Affine, Volume};
use proptest::prelude::*;
use std::path::Path;

/// A hand-built NIfTI-1 file: header fields at their standard offsets, then the voxel bytes.
struct Raw {
    dims: Vec<i16>,
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    slope: f32,
    inter: f32,
    sform: Option<[[f32; 4]; 3]>,
    big: bool,
    magic: [u8; 4],
}

impl Raw {
    fn new(dims: &[i16], datatype: i16, bitpix: i16) -> Self {
        Self {
            dims: dims.to_vec(),
            datatype,
            bitpix,
            pixdim: [1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0],
            slope: 0.0,
            inter: 0.0,
            sform: None,
            big: false,
            magic: *b"n+1\0",
        }
    }
    fn bytes(&self, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        let big = self.big;
        let put16 = |h: &mut Vec<u8>, o: usize, v: i16| {
            h[o..o + 2].copy_from_slice(&if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        let put32 = |h: &mut Vec<u8>, o: usize, v: i32| {
            h[o..o + 4].copy_from_slice(&if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        let putf = |h: &mut Vec<u8>, o: usize, v: f32| {
            h[o..o + 4].copy_from_slice(&if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        put32(&mut h, 0, 348);
        put16(&mut h, 40, self.dims.len() as i16);
        for (a, &d) in self.dims.iter().enumerate() {
            put16(&mut h, 42 + 2 * a, d);
        }
        put16(&mut h, 70, self.datatype);
        put16(&mut h, 72, self.bitpix);
        for (a, &p) in self.pixdim.iter().enumerate() {
            putf(&mut h, 76 + 4 * a, p);
        }
        putf(&mut h, 108, 352.0);
        putf(&mut h, 112, self.slope);
        putf(&mut h, 116, self.inter);
        if let Some(s) = self.sform {
            put16(&mut h, 254, 1);
            for (r, row) in s.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    putf(&mut h, 280 + 16 * r + 4 * c, v);
                }
            }
        }
        h[344..348].copy_from_slice(&self.magic);
        h.extend_from_slice(data);
        h
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn p() -> &'static Path {
    Path::new("test.nii")
}

fn format_msg(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Format { msg, .. }) => msg,
        other => panic!("expected a Format error, got {other:?}"),
    }
}

fn oblique() -> Affine {
    let (s, c) = 0.3f64.sin_cos();
    Affine([
        [-0.9 * c, 0.0, 2.5 * s, 10.5],
        [0.9 * s, 1.1, 2.5 * c, -20.25],
        [0.05, 0.0, 0.0 + 0.1, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
}

#[test]
fn write_read_round_trip_image_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [7, 5, 3];
    let data: Vec<f32> = (0..105).map(|v| v as f32 * 1.25 - 40.0).collect();
    for aff in [
        Affine::from_spacing_origin([0.8, 0.8, 2.5], [-100.0, 50.0, 3.0]),
        oblique(),
    ] {
        let vol = Volume::new(data.clone(), dims, aff).unwrap();
        for name in ["a.nii", "a.nii.gz"] {
            let path = dir.path().join(name);
            write_image(&path, &vol, &WriteOptions::default()).unwrap();
            let back = read_image(&path, &ReadOptions::default()).unwrap();
            assert_eq!(back.volume.dims, dims);
            assert_eq!(back.volume.data, vol.data);
            // sform holds f32: relative precision ~1e-7 of the entries.
            assert!(
                back.volume.ras_from_ijk.max_abs_diff(&aff) < 1e-5,
                "{:?} vs {aff:?}",
                back.volume.ras_from_ijk
            );
            // The qform written alongside encodes the same rotation/zooms (orthogonal case).
            assert_eq!(back.info.header.sform_code, 2);
        }
        let labels = Volume::new((0..105).map(|v| (v % 14) as u16).collect(), dims, aff).unwrap();
        let path = dir.path().join("l.nii.gz");
        write_labels(&path, &labels, &WriteOptions::default()).unwrap();
        let info = read_info(&path).unwrap();
        assert_eq!(info.datatype, NiftiType::Uint8);
        assert_eq!(
            read_labels(&path, &ReadOptions::default())
                .unwrap()
                .volume
                .data,
            labels.data
        );
        // Labels above 255 are stored as uint16.
        let big = labels.map(|v| v * 1000);
        let bytes = encode_labels(&big, &WriteOptions::default(), false).unwrap();
        let back = decode_labels(&bytes, p(), &ReadOptions::default()).unwrap();
        assert_eq!(back.info.datatype, NiftiType::Uint16);
        assert_eq!(back.volume.data, big.data);
    }
}

#[test]
fn keeps_reference_header_metadata() {
    let vol = Volume::new(
        vec![1.0f32; 8],
        [2, 2, 2],
        Affine::from_spacing_origin([1.0, 1.0, 1.0], [0.0; 3]),
    )
    .unwrap();
    let src = decode_image(
        &encode_image(&vol, &WriteOptions::default(), false).unwrap(),
        p(),
        &ReadOptions::default(),
    )
    .unwrap();
    let mut reference = src.info.header.clone();
    reference.descrip = b"patient scan".to_vec();
    reference.sform_code = 1;
    reference.qform_code = 1;
    let opts = WriteOptions {
        reference: Some(&reference),
        ..WriteOptions::default()
    };
    let out = decode_image(
        &encode_image(&vol, &opts, true).unwrap(),
        p(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert!(out.info.header.descrip.starts_with(b"patient scan"));
    assert_eq!(
        (out.info.header.sform_code, out.info.header.qform_code),
        (1, 1)
    );
}

#[test]
fn every_datatype_both_byte_orders_with_scaling() {
    // dims 2x3x2, values 0..12 stored in Fortran order.
    let vals: Vec<i64> = (0..12).collect();
    type Enc = fn(i64, bool) -> Vec<u8>;
    let types: [(i16, i16, Enc); 10] = [
        (2, 8, |v, _| vec![v as u8]),
        (256, 8, |v, _| vec![(v as i8) as u8]),
        (4, 16, |v, b| {
            if b {
                (v as i16).to_be_bytes().to_vec()
            } else {
                (v as i16).to_le_bytes().to_vec()
            }
        }),
        (512, 16, |v, b| {
            if b {
                (v as u16).to_be_bytes().to_vec()
            } else {
                (v as u16).to_le_bytes().to_vec()
            }
        }),
        (8, 32, |v, b| {
            if b {
                (v as i32).to_be_bytes().to_vec()
            } else {
                (v as i32).to_le_bytes().to_vec()
            }
        }),
        (768, 32, |v, b| {
            if b {
                (v as u32).to_be_bytes().to_vec()
            } else {
                (v as u32).to_le_bytes().to_vec()
            }
        }),
        (1024, 64, |v, b| {
            if b {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        }),
        (1280, 64, |v, b| {
            if b {
                (v as u64).to_be_bytes().to_vec()
            } else {
                (v as u64).to_le_bytes().to_vec()
            }
        }),
        (16, 32, |v, b| {
            if b {
                (v as f32).to_be_bytes().to_vec()
            } else {
                (v as f32).to_le_bytes().to_vec()
            }
        }),
        (64, 64, |v, b| {
            if b {
                (v as f64).to_be_bytes().to_vec()
            } else {
                (v as f64).to_le_bytes().to_vec()
            }
        }),
    ];
    for (code, bitpix, enc) in types {
        for big in [false, true] {
            let mut raw = Raw::new(&[2, 3, 2], code, bitpix);
            raw.big = big;
            raw.slope = 2.0;
            raw.inter = -1.0;
            let data: Vec<u8> = vals.iter().flat_map(|&v| enc(v, big)).collect();
            let bytes = raw.bytes(&data);
            for b in [bytes.clone(), gz(&bytes)] {
                let img = decode_image(&b, p(), &ReadOptions::default())
                    .unwrap_or_else(|e| panic!("type {code} big {big}: {e}"));
                assert_eq!(img.volume.dims, [2, 3, 2]);
                assert_eq!(img.info.big_endian, big);
                // voxel (1, 2, 1): Fortran index 1 + 2*(2 + 3*1) = 11 -> 2*11 - 1
                assert_eq!(img.volume.get(1, 2, 1), Some(21.0), "type {code} big {big}");
                assert_eq!(img.volume.get(0, 1, 0), Some(3.0));
                // pixdim affine when no sform/qform (nibabel base affine: x flipped, centred).
                assert_eq!(img.volume.spacing_mm(), [2.0, 3.0, 4.0]);
                assert_eq!(img.volume.ras_from_ijk.orientation_code(), ['L', 'A', 'S']);
            }
        }
    }
}

#[test]
fn four_d_frames() {
    let mut raw = Raw::new(&[2, 2, 1, 3], 2, 8);
    raw.sform = Some([
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]);
    let data: Vec<u8> = (0..12).collect();
    let bytes = gz(&raw.bytes(&data));
    for frame in 0..3 {
        let img = decode_image(
            &bytes,
            p(),
            &ReadOptions {
                frame,
                ..ReadOptions::default()
            },
        )
        .unwrap();
        assert_eq!(img.info.frames, 3);
        assert_eq!(
            img.volume.data,
            vec![
                4.0 * frame as f32,
                2.0 + 4.0 * frame as f32,
                1.0 + 4.0 * frame as f32,
                3.0 + 4.0 * frame as f32
            ]
        );
    }
    let msg = format_msg(decode_image(
        &bytes,
        p(),
        &ReadOptions {
            frame: 3,
            ..ReadOptions::default()
        },
    ));
    assert!(msg.contains("frame 3"), "{msg}");
}

#[test]
fn typed_errors_for_broken_files() {
    let raw = Raw::new(&[4, 4, 4], 4, 16);
    let good = raw.bytes(&[0u8; 128]);
    // Truncated data (dims vs file size), plain and gzip.
    assert!(
        format_msg(decode_image(
            &good[..300 + 100],
            p(),
            &ReadOptions::default()
        ))
        .contains("truncated")
    );
    assert!(
        format_msg(decode_image(&good[..200], p(), &ReadOptions::default()))
            .contains("truncated header")
    );
    assert!(
        format_msg(decode_image(
            &gz(&good[..400]),
            p(),
            &ReadOptions::default()
        ))
        .contains("truncated")
    );
    // Corrupt gzip: cut the compressed stream.
    let z = gz(&good);
    let msg = format_msg(decode_image(
        &z[..z.len() / 2],
        p(),
        &ReadOptions::default(),
    ));
    assert!(msg.contains("gzip") || msg.contains("truncated"), "{msg}");
    let mut bad = z.clone();
    for b in bad.iter_mut().skip(12).take(20) {
        *b ^= 0x5a;
    }
    assert!(decode_image(&bad, p(), &ReadOptions::default()).is_err());
    // Wrong magic, NIfTI-2, .hdr/.img pair.
    let mut m = Raw::new(&[4, 4, 4], 4, 16);
    m.magic = *b"abc\0";
    assert!(
        format_msg(decode_image(
            &m.bytes(&[0; 128]),
            p(),
            &ReadOptions::default()
        ))
        .contains("magic")
    );
    let mut n2 = good.clone();
    n2[..4].copy_from_slice(&540i32.to_le_bytes());
    assert!(format_msg(decode_image(&n2, p(), &ReadOptions::default())).contains("NIfTI-2"));
    m.magic = *b"ni1\0";
    assert!(
        format_msg(decode_image(
            &m.bytes(&[0; 128]),
            p(),
            &ReadOptions::default()
        ))
        .contains(".hdr")
    );
    // Absurd dims: refused before allocating.
    let huge = Raw::new(&[32767, 32767, 32767], 16, 32);
    assert!(
        format_msg(decode_image(
            &gz(&huge.bytes(&[0; 64])),
            p(),
            &ReadOptions::default()
        ))
        .contains("limit")
    );
    let neg = Raw::new(&[4, -4, 4], 4, 16);
    assert!(
        format_msg(decode_image(
            &neg.bytes(&[0; 128]),
            p(),
            &ReadOptions::default()
        ))
        .contains("dim")
    );
    // Zero and NaN spacing.
    let mut z0 = Raw::new(&[4, 4, 4], 4, 16);
    z0.pixdim[2] = 0.0;
    assert!(
        format_msg(decode_image(
            &z0.bytes(&[0; 128]),
            p(),
            &ReadOptions::default()
        ))
        .contains("spacing")
    );
    z0.pixdim[2] = f32::NAN;
    assert!(
        format_msg(decode_image(
            &z0.bytes(&[0; 128]),
            p(),
            &ReadOptions::default()
        ))
        .contains("spacing")
    );
    // Unsupported datatype (complex64).
    let c = Raw::new(&[1, 1, 1], 32, 64);
    assert!(
        format_msg(decode_image(
            &c.bytes(&[0; 8]),
            p(),
            &ReadOptions::default()
        ))
        .contains("unsupported")
    );
    // Not a label map.
    let mut f = Raw::new(&[2, 1, 1], 16, 32);
    f.sform = Some([
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]);
    let data: Vec<u8> = [1.0f32, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(
        format_msg(decode_labels(&f.bytes(&data), p(), &ReadOptions::default()))
            .contains("not a label map")
    );
    // Singular sform.
    f.sform = Some([[0.0; 4]; 3]);
    assert!(
        format_msg(decode_image(&f.bytes(&data), p(), &ReadOptions::default())).contains("affine")
    );
}

#[test]
fn nonfinite_voxels_are_counted() {
    let mut f = Raw::new(&[3, 1, 1], 16, 32);
    f.sform = Some([
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]);
    let data: Vec<u8> = [1.0f32, f32::NAN, f32::INFINITY]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let img = decode_image(&f.bytes(&data), p(), &ReadOptions::default()).unwrap();
    assert_eq!(img.nonfinite_voxels, 2);
    // load_image refuses them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.nii");
    std::fs::write(&path, f.bytes(&data)).unwrap();
    assert!(
        logonet::volume::io::load_image(&path)
            .unwrap_err()
            .to_string()
            .contains("NaN")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    /// Random mutations of a valid header (and of its gzip stream) never panic.
    #[test]
    fn mutated_headers_never_panic(edits in proptest::collection::vec((0usize..352, any::<u8>()), 1..12), cut in 0usize..600, gzip in any::<bool>()) {
        let mut raw = Raw::new(&[4, 3, 2], 4, 16);
        raw.sform = Some([[1.0, 0.2, 0.0, 5.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]);
        let mut bytes = raw.bytes(&[7u8; 48]);
        for (o, v) in edits {
            bytes[o] = v;
        }
        bytes.truncate(cut.max(1));
        let input = if gzip { gz(&bytes) } else { bytes };
        let opts = ReadOptions { max_voxels: 1 << 20, ..ReadOptions::default() };
        let _ = decode_image(&input, p(), &opts);
        let _ = decode_labels(&input, p(), &opts);
    }
}
