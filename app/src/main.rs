//! `logonet-studio`: starts the desktop program.
fn main() {}
