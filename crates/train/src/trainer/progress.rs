//! The progress bar: step, loss, tokens/s and ETA on stderr. Hidden when disabled or when
//! stderr is not a terminal (logs, CI, pipes), where the `tracing` lines carry the same facts.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar redraws at most.
const REDRAW_HZ: u8 = 4;
const TEMPLATE: &str =
    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg} ETA {eta}";

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total` steps, starting at `done` (a resumed run).
    pub fn new(total: u64, done: u64, enabled: bool) -> Self {
        let visible = enabled && std::io::stderr().is_terminal();
        let bar = if visible {
            let bar = ProgressBar::with_draw_target(
                Some(total),
                ProgressDrawTarget::stderr_with_hz(REDRAW_HZ),
            );
            bar.set_style(
                ProgressStyle::with_template(TEMPLATE)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        } else {
            ProgressBar::hidden()
        };
        bar.set_position(done);
        bar.reset_eta();
        Self { bar }
    }

    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    pub fn update(&self, step: u64, loss: f64, tokens_per_s: f64) {
        self.bar.set_position(step);
        self.bar
            .set_message(format!("loss {loss:.4} | {tokens_per_s:.0} tok/s"));
    }

    /// Runs `f` (which prints or logs) with the bar cleared, then redraws it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    pub fn abandon(&self) {
        self.bar.abandon();
    }
}
