//! The calibration run's progress line: a bar, prompts per minute, the
//! correct count and an ETA; redrawn in place on a terminal, one line per
//! 5% otherwise.

use std::io::Write;
use std::time::Instant;

pub(super) struct Progress {
    pub(super) total: usize,
    pub(super) done: usize,
    pub(super) started: Instant,
    pub(super) tty: bool,
    pub(super) last_line: usize,
}

impl Progress {
    pub(super) fn tick(&mut self, correct: usize) {
        self.done += 1;
        let secs = self.started.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let eta = (self.total - self.done) as f64 / rate.max(1e-9);
        let pct = 100 * self.done / self.total.max(1);
        let bar: String = (0..30)
            .map(|i| if i * 100 < pct * 30 { '#' } else { '.' })
            .collect();
        let line = format!(
            "[{bar}] {}/{} {pct}%  {:.1} prompts/min  correct {correct}  ETA {}m{:02}s",
            self.done,
            self.total,
            rate * 60.0,
            (eta / 60.0) as u64,
            (eta % 60.0) as u64
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line}");
        } else if self.done == self.total || self.done * 20 / self.total.max(1) > self.last_line {
            // Not a terminal: a line per 5%.
            self.last_line = self.done * 20 / self.total.max(1);
            let _ = writeln!(err, "{line}");
        }
        if self.tty && self.done == self.total {
            let _ = writeln!(err);
        }
    }
}
