//! `logonet bench ...`: benchmarks (timings are measured here, never in tests).

#[path = "bench_load.rs"]
mod bench_load;

/// What to benchmark.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// GFLOP/s of each 3D op on the shapes LoGoNet uses, forward and backward.
    Ops(OpsArgs),
    /// Reading a large .nii.gz: decompression, decoding and reordering.
    Load(bench_load::LoadArgs),
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
        BenchCommand::Ops(_) => {
            anyhow::bail!("`logonet bench ops` is not available in this build yet")
        }
        BenchCommand::Load(a) => bench_load::run(a),
    }
}
