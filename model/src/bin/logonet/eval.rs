//! `logonet eval`.

/// Arguments of `logonet eval`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs `logonet eval`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`logonet eval` is not available in this build yet")
}
