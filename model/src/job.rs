//! Long work (loading, inference, training, clustering) reports progress and can be cancelled.
//!
//! Every long-running library function takes a [`Progress`] sink and a [`CancelToken`]; the command line
//! turns the events into progress bars, the app into a progress bar with time remaining and a Cancel button.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cheap, cloneable cancellation flag, checked between windows, steps and iterations.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, not-cancelled token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the work to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// `Err(Error::Cancelled)` once cancelled: use with `?` between units of work.
    pub fn check(&self) -> crate::Result<()> {
        if self.is_cancelled() {
            Err(crate::Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Progress of a long job: `done` of `total` units of `stage` (e.g. "window", "slice", "step").
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressEvent {
    /// What is being done ("loading", "inference", "clustering", ...).
    pub stage: String,
    /// Units done so far.
    pub done: u64,
    /// Units in all (0 when unknown).
    pub total: u64,
}

/// Where progress events go. Implemented for closures.
pub trait Progress: Send + Sync {
    /// Called after each unit of work.
    fn report(&self, event: ProgressEvent);
}

impl<F: Fn(ProgressEvent) + Send + Sync> Progress for F {
    fn report(&self, event: ProgressEvent) {
        self(event)
    }
}

/// A progress sink that drops every event.
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _event: ProgressEvent) {}
}
