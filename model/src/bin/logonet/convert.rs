//! `logonet convert`.

/// Arguments of `logonet convert`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `logonet convert`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`logonet convert` is not available in this build yet")
}
