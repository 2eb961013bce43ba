//! `logonet eval`: Dice, HD95, surface Dice and volumes per label of a prediction against a ground truth.

use anyhow::Context as _;
use logonet::job::CancelToken;
use logonet::metrics::{MetricsConfig, evaluate};
use logonet::volume::{LabelInfo, LabelTable, labels::default_color};
use std::path::{Path, PathBuf};

/// Arguments of `logonet eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Predicted label map (NIfTI).
    #[arg(long)]
    pub pred: PathBuf,
    /// Ground-truth label map (NIfTI), on the same grid.
    #[arg(long)]
    pub gt: PathBuf,
    /// Print the table as JSON (nan and inf become null).
    #[arg(long)]
    pub json: bool,
    /// Label names: a JSON object {"1": "spleen", ...}, a list of {value, name[, color]}, or a LabelTable
    /// ({"labels": [...]}). Default: the BTCV organs for values 1..=13, "label N" otherwise.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Surface-Dice tolerance in millimetres.
    #[arg(long, default_value_t = 1.0)]
    pub nsd_tolerance_mm: f64,
    /// Hausdorff percentile.
    #[arg(long, default_value_t = 95.0)]
    pub percentile: f64,
    /// Evaluate the background (label 0) too.
    #[arg(long)]
    pub include_background: bool,
    /// Skip HD95 and NSD (fast).
    #[arg(long)]
    pub no_surface: bool,
}

/// Reads a label table from the accepted JSON shapes.
pub fn read_label_table(path: &Path) -> anyhow::Result<LabelTable> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("not JSON: {}", path.display()))?;
    if let Ok(t) = serde_json::from_value::<LabelTable>(v.clone()) {
        return Ok(t);
    }
    if let Ok(labels) = serde_json::from_value::<Vec<LabelInfo>>(v.clone()) {
        return Ok(LabelTable { labels });
    }
    // {"1": "spleen", ...}, possibly nested one level ({"task": {"1": ...}}: the first such map).
    let map = match &v {
        serde_json::Value::Object(m) if m.values().all(|x| x.is_string()) => Some(m.clone()),
        serde_json::Value::Object(m) => m.values().find_map(|x| x.as_object().cloned()),
        _ => None,
    };
    let map = map.with_context(|| format!("unrecognised label table: {}", path.display()))?;
    let mut labels = Vec::new();
    for (k, name) in map {
        let value: u16 = k
            .trim()
            .parse()
            .with_context(|| format!("label value '{k}' is not a number: {}", path.display()))?;
        if value == 0 {
            continue;
        }
        let name = name.as_str().unwrap_or_default().to_string();
        labels.push(LabelInfo {
            value,
            name,
            color: default_color(value),
        });
    }
    labels.sort_by_key(|l| l.value);
    Ok(LabelTable { labels })
}

/// Runs `logonet eval`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let pred = logonet::volume::io::load_labels(&args.pred)?;
    let gt = logonet::volume::io::load_labels(&args.gt)?;
    let table = match &args.labels {
        Some(p) => read_label_table(p)?,
        None => LabelTable::btcv(),
    };
    let cfg = MetricsConfig {
        include_background: args.include_background,
        hd_percentile: args.percentile,
        nsd_tolerance_mm: args.nsd_tolerance_mm,
        surface: !args.no_surface,
        // Only labels present in either map (the BTCV defaults would add rows of nan otherwise).
        labels: args
            .labels
            .is_none()
            .then(|| present_labels(&pred.data, &gt.data)),
        ..Default::default()
    };
    let bars = crate::progress::Bars::new();
    let result = evaluate(&pred, &gt, &table, &cfg, &bars, &CancelToken::new());
    bars.finish();
    let result = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", result.to_text());
    }
    Ok(())
}

fn present_labels(a: &[u16], b: &[u16]) -> Vec<u16> {
    let mut seen = vec![false; 65536];
    for &v in a.iter().chain(b) {
        seen[v as usize] = true;
    }
    (0..=u16::MAX).filter(|&v| seen[v as usize]).collect()
}
