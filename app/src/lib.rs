//! LoGoNet Studio, the desktop program: state, panels, background jobs.
