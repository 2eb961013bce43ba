//! Background jobs: work runs on its own thread, reports progress over a channel, can be cancelled through a
//! shared [`CancelToken`] (an `AtomicBool`), and wakes the UI with `request_repaint` after every event.
//! The UI thread only polls the channel and draws.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use logonet::job::{CancelToken, Progress, ProgressEvent};

enum Msg<T> {
    Progress(ProgressEvent),
    Done(logonet::Result<T>),
}

/// A running background job producing a `T`.
pub struct Job<T> {
    /// What the job does ("Loading CT.nii.gz"), shown next to its progress bar.
    pub name: String,
    rx: Receiver<Msg<T>>,
    cancel: CancelToken,
    started: Instant,
    /// The latest progress event.
    pub progress: Option<ProgressEvent>,
    fraction_at: Option<(Instant, f32)>,
}

impl<T: Send + 'static> Job<T> {
    /// Starts `work` on a new thread. `ctx` is repainted after each progress event and at the end.
    pub fn spawn(
        ctx: &egui::Context,
        name: impl Into<String>,
        work: impl FnOnce(&dyn Progress, &CancelToken) -> logonet::Result<T> + Send + 'static,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let cancel = CancelToken::new();
        let token = cancel.clone();
        let ctx = ctx.clone();
        let name = name.into();
        let thread_name = format!("job: {name}");
        let spawned = std::thread::Builder::new().name(thread_name).spawn({
            let tx = tx.clone();
            move || {
                let progress_tx = tx.clone();
                let progress_ctx = ctx.clone();
                let progress = move |event: ProgressEvent| {
                    let _ = progress_tx.send(Msg::Progress(event));
                    progress_ctx.request_repaint();
                };
                let result = work(&progress, &token);
                let _ = tx.send(Msg::Done(result));
                ctx.request_repaint();
            }
        });
        if let Err(e) = spawned {
            let _ = tx.send(Msg::Done(Err(logonet::Error::io(
                "cannot start a background thread",
                e,
                "",
            ))));
        }
        Self {
            name,
            rx,
            cancel,
            started: Instant::now(),
            progress: None,
            fraction_at: None,
        }
    }

    /// Drains the channel: keeps the latest progress, returns the result once the job has finished.
    pub fn poll(&mut self) -> Option<logonet::Result<T>> {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Progress(p)) => {
                    self.progress = Some(p);
                    if let Some(f) = self.fraction() {
                        self.fraction_at = Some((Instant::now(), f));
                    }
                }
                Ok(Msg::Done(result)) => return Some(result),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => {
                    return Some(Err(logonet::Error::invalid(
                        "background job",
                        "the job stopped without a result",
                    )));
                }
            }
        }
    }

    /// Asks the job to stop at its next cancellation check.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelling(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Fraction done, when the job reports a total.
    pub fn fraction(&self) -> Option<f32> {
        self.progress
            .as_ref()
            .filter(|p| p.total > 0)
            .map(|p| (p.done as f32 / p.total as f32).clamp(0.0, 1.0))
    }

    /// Time since the job started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Estimated time remaining, extrapolated linearly from the fraction done.
    pub fn remaining(&self) -> Option<Duration> {
        let (at, f) = self.fraction_at?;
        if f <= 0.0 {
            return None;
        }
        let elapsed = at.duration_since(self.started).as_secs_f32();
        let total = elapsed / f;
        Some(Duration::from_secs_f32(
            (total - self.started.elapsed().as_secs_f32()).max(0.0),
        ))
    }

    /// One-line status: "Segmenting: inference 12/40, 0:35 left".
    pub fn status_line(&self) -> String {
        let mut s = self.name.clone();
        if let Some(p) = &self.progress {
            s.push_str(&format!(": {}", p.stage));
            if p.total > 0 {
                s.push_str(&format!(" {}/{}", p.done, p.total));
            }
        }
        if let Some(r) = self.remaining() {
            let secs = r.as_secs();
            s.push_str(&format!(", {}:{:02} left", secs / 60, secs % 60));
        }
        if self.is_cancelling() {
            s.push_str(" (cancelling)");
        }
        s
    }
}

/// Shows a job's progress bar and a Cancel button; returns true when Cancel was clicked.
pub fn job_progress_ui<T: Send + 'static>(ui: &mut egui::Ui, job: &Job<T>) -> bool {
    let mut cancel = false;
    ui.horizontal(|ui| {
        let bar = match job.fraction() {
            Some(f) => egui::ProgressBar::new(f).show_percentage(),
            None => egui::ProgressBar::new(0.0).animate(true),
        };
        ui.add(bar.desired_width(180.0));
        ui.label(job.status_line());
        cancel = ui
            .add_enabled(!job.is_cancelling(), egui::Button::new("Cancel"))
            .clicked();
    });
    cancel
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait<T: Send + 'static>(job: &mut Job<T>) -> logonet::Result<T> {
        loop {
            if let Some(r) = job.poll() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn job_reports_progress_and_result() {
        let ctx = egui::Context::default();
        let mut job = Job::spawn(&ctx, "count", |p, _| {
            for i in 1..=4 {
                p.report(ProgressEvent {
                    stage: "step".into(),
                    done: i,
                    total: 4,
                });
            }
            Ok(42)
        });
        assert_eq!(wait(&mut job).ok(), Some(42));
        assert_eq!(job.fraction(), Some(1.0));
    }

    #[test]
    fn job_can_be_cancelled() {
        let ctx = egui::Context::default();
        let mut job: Job<()> = Job::spawn(&ctx, "forever", |_, cancel| {
            loop {
                cancel.check()?;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        job.cancel();
        assert!(matches!(wait(&mut job), Err(logonet::Error::Cancelled)));
    }
}
