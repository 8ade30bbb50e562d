//! Progress on standard error (SPEC §16): a bar (done / total, rate, ETA,
//! counts by outcome) when standard error is a terminal, and one summary line
//! at the end in any case.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::outcome::{Outcome, RecordResult};

/// Records by outcome, over the whole run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    pub delivered: u64,
    pub dropped: u64,
    pub duplicate: u64,
    pub invalid: u64,
    pub rejected: u64,
    pub failed: u64,
    pub dry_run: u64,
    /// Listed as delivered or duplicate by the report resumed: not sent again.
    pub skipped: u64,
}

impl Counts {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Dropped { .. } => self.dropped += 1,
            Outcome::Duplicate => self.duplicate += 1,
            Outcome::Invalid { .. } => self.invalid += 1,
            Outcome::Rejected(_) => self.rejected += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::DryRun { .. } => self.dry_run += 1,
        }
    }

    /// Records reported or skipped.
    pub fn done(&self) -> u64 {
        self.delivered + self.dropped + self.duplicate + self.invalid + self.rejected + self.failed + self.dry_run + self.skipped
    }

    /// Whether every record is a success (delivered, dropped, duplicate, dry-run or skipped).
    pub fn all_succeeded(&self) -> bool {
        self.invalid + self.rejected + self.failed == 0
    }

    fn brief(&self) -> String {
        let mut parts = vec![format!("{} delivered", self.delivered)];
        for (n, name) in [
            (self.dry_run, "dry-run"),
            (self.duplicate, "duplicate"),
            (self.dropped, "dropped"),
            (self.invalid, "invalid"),
            (self.rejected, "rejected"),
            (self.failed, "failed"),
            (self.skipped, "skipped"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {name}"));
            }
        }
        parts.join(", ")
    }
}

pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    pub counts: Counts,
}

impl Progress {
    /// `total`: the records to expect, when known (a file, not standard input).
    pub fn new(total: Option<u64>) -> Progress {
        let target = if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr_with_hz(4) } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(total, target);
        let template = match total {
            Some(_) => "{bar:30} {human_pos}/{human_len} {per_sec} ETA {eta}  {msg}",
            None => "{spinner} {human_pos} records {per_sec}  {msg}",
        };
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress { bar, started: Instant::now(), counts: Counts::default() }
    }

    pub fn record(&mut self, result: &RecordResult) {
        self.counts.add(&result.outcome);
    }

    pub fn skipped(&mut self, n: u64) {
        self.counts.skipped += n;
    }

    /// Redraws after a window.
    pub fn update(&self) {
        self.bar.set_position(self.counts.done());
        self.bar.set_message(self.counts.brief());
    }

    /// Clears the bar and writes the summary line.
    pub fn finish(&self, interrupted: bool, report: &str) -> String {
        self.bar.finish_and_clear();
        let elapsed = self.started.elapsed();
        let sent = self.counts.done() - self.counts.skipped;
        let rate = sent as f64 / elapsed.as_secs_f64().max(0.001);
        let line = format!(
            "send: {}{} records: {} in {:.1} s ({:.0}/s); report: {report}",
            if interrupted { "interrupted after " } else { "" },
            self.counts.done(),
            self.counts.brief(),
            elapsed.as_secs_f64(),
            rate,
        );
        eprintln!("{line}");
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::DeliveryError;

    #[test]
    fn counts_decide_success_and_read_briefly() {
        let mut counts = Counts::default();
        counts.add(&Outcome::Delivered);
        counts.add(&Outcome::Duplicate);
        counts.add(&Outcome::DryRun { body: Default::default() });
        counts.skipped = 2;
        assert!(counts.all_succeeded());
        assert_eq!(counts.done(), 5);
        assert_eq!(counts.brief(), "1 delivered, 1 dry-run, 1 duplicate, 2 skipped");
        counts.add(&Outcome::Failed(DeliveryError::Deadline));
        assert!(!counts.all_succeeded());
    }
}
