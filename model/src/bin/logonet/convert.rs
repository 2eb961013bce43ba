//! `logonet convert`: a DICOM folder or NIfTI file to NIfTI, optionally reoriented and resampled.

use logonet::volume::nifti::{self, ReadOptions, WriteOptions};
use logonet::volume::orient::{parse_code, reorient};
use logonet::volume::resample::{resample_image, resample_nearest, spacing_grid};
use std::path::PathBuf;

/// Arguments of `logonet convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .nii / .nii.gz file or a DICOM folder.
    pub input: PathBuf,
    /// Output .nii or .nii.gz.
    pub output: PathBuf,
    /// Reorient to this code (e.g. RAS, LPS).
    #[arg(long)]
    pub orient: Option<String>,
    /// Resample to this voxel size in mm (trilinear; nearest with --labels), as MONAI Spacingd.
    #[arg(long, num_args = 3, value_names = ["X", "Y", "Z"])]
    pub spacing: Option<Vec<f64>>,
    /// Treat the input as a label map (nearest resampling, uint8/uint16 output).
    #[arg(long)]
    pub labels: bool,
    /// Frame of a 4-D NIfTI input (0-based).
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    /// Which image series of a DICOM folder holding several (the index `logonet inspect` lists).
    #[arg(long)]
    pub series: Option<usize>,
}

/// Runs `logonet convert`.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        logonet::volume::io::is_nifti_path(&args.output),
        "output must end in .nii or .nii.gz: {}",
        args.output.display()
    );
    let code = args.orient.as_deref().map(parse_code).transpose()?;
    let spacing = args.spacing.as_ref().map(|s| [s[0], s[1], s[2]]);
    let is_nifti = logonet::volume::io::is_nifti_path(&args.input);
    let read_opts = ReadOptions {
        frame: args.frame,
        ..ReadOptions::default()
    };
    if args.labels {
        anyhow::ensure!(
            is_nifti,
            "label maps are read from NIfTI files: {}",
            args.input.display()
        );
        let src = nifti::read_labels(&args.input, &read_opts)?;
        let mut v = src.volume;
        if let Some(c) = code {
            v = reorient(&v, c)?.0;
        }
        if let Some(sp) = spacing {
            let (d, a) = spacing_grid(v.dims, &v.ras_from_ijk, sp)?;
            v = resample_nearest(&v, d, &a)?;
        }
        nifti::write_labels(
            &args.output,
            &v,
            &WriteOptions {
                reference: Some(&src.info.header),
                ..WriteOptions::default()
            },
        )?;
        eprintln!("wrote {} ({:?})", args.output.display(), v.dims);
        return Ok(());
    }
    let (mut v, header) = if is_nifti {
        let src = nifti::read_image(&args.input, &read_opts)?;
        if src.nonfinite_voxels > 0 {
            eprintln!("warning: {} NaN/Inf voxels", src.nonfinite_voxels);
        }
        if src.info.frames > 1 {
            eprintln!("4-D input: frame {} of {}", args.frame, src.info.frames);
        }
        (src.volume, Some(src.info.header))
    } else {
        let (v, warnings) = logonet::volume::io::load_image_with(
            &args.input,
            &logonet::volume::io::LoadOptions {
                frame: args.frame,
                series: args.series,
            },
        )?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        (v, None)
    };
    if let Some(c) = code {
        v = reorient(&v, c)?.0;
    }
    if let Some(sp) = spacing {
        let (d, a) = spacing_grid(v.dims, &v.ras_from_ijk, sp)?;
        v = resample_image(&v, d, &a)?;
    }
    nifti::write_image(
        &args.output,
        &v,
        &WriteOptions {
            reference: header.as_ref(),
            ..WriteOptions::default()
        },
    )?;
    eprintln!(
        "wrote {} ({:?}, {})",
        args.output.display(),
        v.dims,
        v.ras_from_ijk.orientation_code().iter().collect::<String>()
    );
    Ok(())
}
