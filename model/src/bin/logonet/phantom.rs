//! `logonet phantom`.

/// Arguments of `logonet phantom`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `logonet phantom`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`logonet phantom` is not available in this build yet")
}
