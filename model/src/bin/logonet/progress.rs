//! Progress bars for long jobs: turns library [`logonet::job::ProgressEvent`]s into indicatif bars.

use indicatif::{ProgressBar, ProgressStyle};
use logonet::job::ProgressEvent;
use std::sync::Mutex;

/// A progress sink that draws one bar per stage on stderr.
pub struct Bars {
    bar: Mutex<Option<(String, ProgressBar)>>,
}

impl Bars {
    /// A sink with no bar yet.
    pub fn new() -> Self {
        Self {
            bar: Mutex::new(None),
        }
    }

    /// Draws `event`, starting a new bar when the stage changes.
    pub fn update(&self, event: ProgressEvent) {
        let Ok(mut guard) = self.bar.lock() else {
            return;
        };
        let fresh = guard
            .as_ref()
            .is_none_or(|(stage, _)| *stage != event.stage);
        if fresh {
            if let Some((_, old)) = guard.take() {
                old.finish();
            }
            let bar = ProgressBar::new(event.total);
            let style = ProgressStyle::with_template(
                "{msg:>12} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(event.stage.clone());
            *guard = Some((event.stage.clone(), bar));
        }
        if let Some((_, bar)) = guard.as_ref() {
            if event.total != bar.length().unwrap_or(0) {
                bar.set_length(event.total);
            }
            bar.set_position(event.done);
        }
    }

    /// Finishes the current bar.
    pub fn finish(&self) {
        if let Ok(mut guard) = self.bar.lock()
            && let Some((_, bar)) = guard.take()
        {
            bar.finish();
        }
    }
}

impl logonet::job::Progress for Bars {
    fn report(&self, event: ProgressEvent) {
        self.update(event)
    }
}
