//! `logonet bench ...`: benchmarks (timings are measured here, never in tests).

/// What to benchmark.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// GFLOP/s of each 3D op on the shapes LoGoNet uses, forward and backward.
    Ops(OpsArgs),
    /// Forward time and peak memory of a whole network on one window.
    Model(crate::bench_model::ModelArgs),
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
    }
}
