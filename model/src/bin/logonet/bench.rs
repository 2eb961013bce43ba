//! `logonet bench ...`: benchmarks (timings are measured here, never in tests).

#[path = "bench_infer.rs"]
mod bench_infer;
#[path = "bench_load.rs"]
mod bench_load;

/// What to benchmark.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// GFLOP/s of each 3D op on the shapes LoGoNet uses, forward and backward.
    Ops(OpsArgs),
    /// Forward time and peak memory of a whole network on one window.
    Model(crate::bench_model::ModelArgs),
    /// Reading a large .nii.gz: decompression, decoding and reordering.
    Load(bench_load::LoadArgs),
    /// Whole-volume sliding-window inference: windows/s and peak RSS.
    Infer(bench_infer::InferArgs),
}

/// Arguments of `logonet bench ops`.
#[derive(clap::Args, Debug)]
pub struct OpsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ops(_) => anyhow::bail!("`logonet bench ops` is not available in this build yet"),
        BenchCommand::Model(a) => crate::bench_model::run(a),
        BenchCommand::Load(a) => bench_load::run(a),
        BenchCommand::Infer(a) => bench_infer::run(a),
    }
}
