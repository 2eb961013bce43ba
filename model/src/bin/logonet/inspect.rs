//! `logonet inspect`: what a NIfTI file or DICOM folder holds.

use logonet::volume::LabelTable;
use logonet::volume::nifti::{self, NiftiType, ReadOptions};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Arguments of `logonet inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .nii / .nii.gz file or a DICOM folder.
    pub input: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Frame of a 4-D file.
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    /// Which image series of a DICOM folder holding several (default: the only one).
    #[arg(long)]
    pub series: Option<usize>,
}

/// Label names from a `labels.json` or `dataset.json` beside the file ("N": "name" maps; a nested
/// "btcv13" map for files whose name mentions btcv).
fn label_names(path: &Path) -> Option<LabelTable> {
    let dir = path.parent()?;
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    for f in ["labels.json", "dataset.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(f)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let map = if let Some(l) = v.get("labels") {
            l.clone()
        } else if name.contains("btcv") {
            v.get("btcv13").cloned().unwrap_or(v.clone())
        } else {
            v.clone()
        };
        let mut labels = Vec::new();
        for (k, val) in map.as_object()? {
            if let (Ok(n), Some(s)) = (k.parse::<u16>(), val.as_str())
                && n > 0
            {
                labels.push(logonet::volume::LabelInfo {
                    value: n,
                    name: s.to_string(),
                    color: logonet::volume::labels::default_color(n),
                });
            }
        }
        if !labels.is_empty() {
            labels.sort_by_key(|l| l.value);
            return Some(LabelTable { labels });
        }
    }
    None
}

/// Runs `logonet inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.input.is_dir() || logonet::volume::io::is_dicom_file(&args.input) {
        return inspect_dicom(&args);
    }
    let img = nifti::read_image(
        &args.input,
        &ReadOptions {
            frame: args.frame,
            ..ReadOptions::default()
        },
    )?;
    let info = &img.info;
    let v = &img.volume;
    let (mut lo, mut hi, mut sum, mut n) = (f32::INFINITY, f32::NEG_INFINITY, 0f64, 0usize);
    for &x in v.data.iter().filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
        sum += x as f64;
        n += 1;
    }
    let integer_type = !matches!(info.datatype, NiftiType::Float32 | NiftiType::Float64);
    // A label map: integer voxels with few distinct values.
    let mut counts = std::collections::BTreeMap::<i64, usize>::new();
    let mut is_labels = v
        .data
        .iter()
        .all(|x| x.is_finite() && x.fract() == 0.0 && *x >= 0.0);
    if is_labels {
        for &x in &v.data {
            *counts.entry(x as i64).or_default() += 1;
            if counts.len() > 256 {
                is_labels = false;
                break;
            }
        }
    }
    let names = label_names(&args.input);
    let labels: Vec<serde_json::Value> = if is_labels {
        counts
            .iter()
            .map(|(&val, &c)| {
                let name = names.as_ref().map(|t| t.name(val as u16)).unwrap_or_else(|| if val == 0 { "background".into() } else { format!("label {val}") });
                json!({"value": val, "voxels": c, "volume_ml": c as f64 * v.spacing_mm().iter().product::<f64>() / 1000.0, "name": name})
            })
            .collect()
    } else {
        Vec::new()
    };
    let out = json!({
        "path": args.input,
        "format": "nifti-1",
        "dims": v.dims,
        "frames": info.frames,
        "datatype": format!("{:?}", info.datatype),
        "big_endian": info.big_endian,
        "spacing_mm": v.spacing_mm(),
        "ras_from_ijk": v.ras_from_ijk.0,
        "orientation": v.ras_from_ijk.orientation_code().iter().collect::<String>(),
        "sform_code": info.header.sform_code,
        "qform_code": info.header.qform_code,
        "scl_slope": info.header.scl_slope,
        "scl_inter": info.header.scl_inter,
        "intensity": {"min": lo, "max": hi, "mean": if n > 0 { sum / n as f64 } else { f64::NAN }},
        "nonfinite_voxels": img.nonfinite_voxels,
        "label_map": is_labels && (integer_type || counts.len() <= 64),
        "labels": labels,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{}", args.input.display());
    println!(
        "  format       NIfTI-1 {:?}{}",
        info.datatype,
        if info.big_endian { " (big-endian)" } else { "" }
    );
    println!(
        "  dims         {} x {} x {}{}",
        v.dims[0],
        v.dims[1],
        v.dims[2],
        if info.frames > 1 {
            format!(" ({} frames, showing {})", info.frames, args.frame)
        } else {
            String::new()
        }
    );
    let sp = v.spacing_mm();
    println!(
        "  spacing      {:.4} x {:.4} x {:.4} mm",
        sp[0], sp[1], sp[2]
    );
    println!(
        "  orientation  {}",
        v.ras_from_ijk.orientation_code().iter().collect::<String>()
    );
    println!(
        "  ras_from_ijk (sform_code {}, qform_code {})",
        info.header.sform_code, info.header.qform_code
    );
    for row in v.ras_from_ijk.0 {
        println!(
            "    [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]",
            row[0], row[1], row[2], row[3]
        );
    }
    println!(
        "  intensity    min {lo} max {hi} mean {:.3}",
        if n > 0 { sum / n as f64 } else { f64::NAN }
    );
    if img.nonfinite_voxels > 0 {
        println!("  WARNING      {} NaN/Inf voxels", img.nonfinite_voxels);
    }
    if !labels.is_empty() {
        println!("  labels");
        for l in &labels {
            println!(
                "    {:>5}  {:>10} voxels  {:>9.2} mL  {}",
                l["value"],
                l["voxels"],
                l["volume_ml"].as_f64().unwrap_or(0.0),
                l["name"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn inspect_dicom(args: &Args) -> anyhow::Result<()> {
    use logonet::volume::dicom::SeriesKind;
    let series = logonet::volume::dicom::scan_series(&args.input)?;
    let images: Vec<_> = series
        .iter()
        .filter(|s| s.kind != SeriesKind::Segmentation)
        .collect();
    let listed: Vec<_> = series
        .iter()
        .map(|s| {
            json!({
                "summary": s.summary(),
                "kind": format!("{:?}", s.kind),
                "modality": s.modality,
                "description": s.description,
                "series_number": s.series_number,
                "series_uid": s.series_uid,
                "rows": s.rows,
                "cols": s.cols,
                "slices": s.slices,
                "files": s.files.len(),
                "transfer_syntaxes": s.transfer_syntaxes,
            })
        })
        .collect();
    // The geometry of the chosen image series (the only one, or --series N).
    let chosen = match args.series {
        Some(n) => images.get(n).copied(),
        None if images.len() == 1 => images.first().copied(),
        None => None,
    };
    let (volume, error) = match chosen.map(logonet::volume::dicom::load_series) {
        None if images.len() > 1 => (
            None,
            Some(format!(
                "{} image series: pick one with --series N",
                images.len()
            )),
        ),
        None => (None, args.series.map(|n| format!("no image series {n}"))),
        Some(Err(e)) => (None, Some(e.to_string())),
        Some(Ok((vol, warnings))) => {
            let (mut lo, mut hi, mut sum, mut nonfinite) =
                (f32::INFINITY, f32::NEG_INFINITY, 0f64, 0usize);
            for &x in &vol.data {
                if x.is_finite() {
                    lo = lo.min(x);
                    hi = hi.max(x);
                    sum += x as f64;
                } else {
                    nonfinite += 1;
                }
            }
            let finite = vol.len() - nonfinite;
            (
                Some(json!({
                    "dims": vol.dims,
                    "spacing_mm": vol.spacing_mm(),
                    "ras_from_ijk": vol.ras_from_ijk.0,
                    "orientation": vol.ras_from_ijk.orientation_code().iter().collect::<String>(),
                    "intensity": {"min": lo, "max": hi, "mean": if finite > 0 { sum / finite as f64 } else { f64::NAN }},
                    "nonfinite_voxels": nonfinite,
                    "warnings": warnings,
                })),
                None,
            )
        }
    };
    let out = json!({
        "path": args.input,
        "format": "dicom",
        "series": listed,
        "volume": volume,
        "error": error,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{}", args.input.display());
    println!("  format       DICOM, {} series", series.len());
    let mut n_image = 0;
    for s in &series {
        let tag = if s.kind == SeriesKind::Segmentation {
            "   ".to_string()
        } else {
            n_image += 1;
            format!("[{}]", n_image - 1)
        };
        println!("    {tag} {}", s.summary());
    }
    if let Some(v) = &volume {
        let f = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
        let d = &v["dims"];
        println!("  dims         {} x {} x {}", d[0], d[1], d[2]);
        let sp = &v["spacing_mm"];
        println!(
            "  spacing      {:.4} x {:.4} x {:.4} mm",
            f(&sp[0]),
            f(&sp[1]),
            f(&sp[2])
        );
        println!("  orientation  {}", v["orientation"].as_str().unwrap_or(""));
        println!("  ras_from_ijk");
        for r in 0..4 {
            let row = &v["ras_from_ijk"][r];
            println!(
                "    [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]",
                f(&row[0]),
                f(&row[1]),
                f(&row[2]),
                f(&row[3])
            );
        }
        let it = &v["intensity"];
        println!(
            "  intensity    min {} max {} mean {:.3}",
            f(&it["min"]),
            f(&it["max"]),
            f(&it["mean"])
        );
        if v["nonfinite_voxels"].as_u64().unwrap_or(0) > 0 {
            println!("  WARNING      {} NaN/Inf voxels", v["nonfinite_voxels"]);
        }
        for w in v["warnings"].as_array().into_iter().flatten() {
            println!("  warning      {}", w.as_str().unwrap_or(""));
        }
    }
    if let Some(e) = &error {
        println!("  not loaded   {e}");
    }
    Ok(())
}
