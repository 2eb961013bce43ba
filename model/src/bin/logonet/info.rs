//! `logonet info`: parameter and multiply-accumulate counts of a network (by name or from a checkpoint),
//! without allocating its weights.

use anyhow::Context as _;
use logonet::nets::{NetConfig, checkpoint};
use std::path::Path;

/// Arguments of `logonet info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A model name (logonet-s, logonet-l, logonet-in-s, logonet-tiny, ulkanet-s, ulkanet-l, ulkanet-tiny)
    /// or a checkpoint path (our .safetensors, or a reference state dict .safetensors/.pt/.pth).
    #[arg(long, short, default_value = "logonet-s")]
    pub model: String,
    /// Cubic input size for the MAC count (a multiple of 32 for the 4-stage models).
    #[arg(long, default_value_t = 96)]
    pub size: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Resolves a model name or checkpoint path to a configuration.
pub fn resolve_config(model: &str) -> anyhow::Result<NetConfig> {
    let path = Path::new(model);
    if path.is_file() {
        return checkpoint::config_of(path)
            .with_context(|| format!("cannot read the model configuration: {model}"));
    }
    Ok(NetConfig::from_name(model)?)
}

/// Runs `logonet info`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = resolve_config(&args.model)?;
    let (net, rec) = cfg.build_shapes_only()?;
    let params = rec.param_count();
    let buffers = rec.vars().len()
        - rec
            .vars()
            .iter()
            .filter(|v| logonet::nets::is_trainable(&v.name))
            .count();
    let size = [args.size; 3];
    let input = [1, cfg.in_channels(), size[0], size[1], size[2]];
    let macs = logonet::nets::SegmentationNet::macs(&net, input)?;
    if args.json {
        let by_part: serde_json::Map<String, serde_json::Value> = macs
            .by_part
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        let by_kind: serde_json::Map<String, serde_json::Value> = macs
            .by_kind
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let out = serde_json::json!({
            "model": args.model,
            "config": cfg,
            "params": params,
            "bn_buffers": buffers,
            "input": input,
            "thop_macs": macs.thop_macs(),
            "conv_macs": macs.conv_macs,
            "norm_ops": macs.norm_ops,
            "gflop": 2.0 * macs.conv_macs as f64 / 1e9,
            "conv_macs_by_part": by_part,
            "macs_by_kind": by_kind,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model        {}", cfg.describe());
    println!(
        "parameters   {} ({:.2} M); {} BatchNorm buffers",
        group(params),
        params as f64 / 1e6,
        buffers
    );
    println!("input        {input:?}");
    println!(
        "MACs (thop)  {:.2} G   (the paper's \"FLOPs (G)\": conv {:.2} G + norms {:.2} G)",
        macs.thop_macs() as f64 / 1e9,
        macs.conv_macs as f64 / 1e9,
        macs.norm_ops as f64 / 1e9
    );
    println!(
        "FLOPs        {:.1} GFLOP (2 x conv MACs, as torch.utils.flop_counter)",
        2.0 * macs.conv_macs as f64 / 1e9
    );
    println!("conv MACs by part:");
    for (part, v) in &macs.by_part {
        println!(
            "  {:<16} {:>9.2} G  {:>5.1} %",
            part,
            *v as f64 / 1e9,
            100.0 * *v as f64 / macs.conv_macs as f64
        );
    }
    println!("by op kind:");
    for (kind, v) in &macs.by_kind {
        let share = if matches!(kind, logonet::nets::flops::OpKind::Norm) {
            String::from("  (thop ops)")
        } else {
            format!("{:>5.1} %", 100.0 * *v as f64 / macs.conv_macs as f64)
        };
        println!(
            "  {:<32} {:>9.3} G  {share}",
            kind.to_string(),
            *v as f64 / 1e9
        );
    }
    Ok(())
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
