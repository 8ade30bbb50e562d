//! The Dataverse request budget of one application user, learned (SPEC §17.2).
//!
//! Dataverse allows each application user a number of requests per sliding
//! window (6,000 per 5 minutes) and answers 429 `0x80072322` (or `0x80072321`
//! for execution time) once it is spent, with a Retry-After that grows if the
//! caller keeps sending. The concurrency limit does not help: at 50 ms a call
//! eight calls in flight send 160 a second. So after a budget 429 the requests
//! Dataverse accepted in the window before it, divided by the window, are what
//! this environment's share of the budget sustains: the calls are paced just
//! under that rate, which probes past itself by half a percent each window
//! without another budget 429 (a spent window proved no more), is cut again by
//! the next, and is forgotten after the learned-cap period without one, so a
//! rate learned while other environments shared the budget does not outlive them.
//! Pure: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The codes of Dataverse's budget 429s: requests, and execution time, per window.
pub const BUDGET_CODES: &[&str] = &["0x80072322", "0x80072321"];
/// `D365_BUDGET_WINDOW_SECONDS`'s default: Dataverse's window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(300);
/// A learned rate grows by this share each window without a budget 429: a
/// window that was spent proved no more, and each 429 costs a Retry-After
/// pause, so the rate stays just under the budget instead of crossing it every
/// other window.
const PROBE: f64 = 0.005;
/// Paced, a budget 429 proves the pace too fast: it is cut to this share of
/// itself, or to what the spent window accepted from this environment when
/// that is less (other environments took more of the budget than this pace
/// assumed: one that joined later, bursting into the room left), but by at
/// most half (an environment idle for part of the window is not starved).
const HEADROOM: f64 = 0.93;
const MAX_CUT: f64 = 0.5;
/// A spent window accepted exactly the budget, so pacing at that rate fills
/// it to the last request and the jitter of several environments' starts
/// crosses it: the learned rate starts at this share of it.
const MARGIN: f64 = 0.98;
/// The slowest pace ever learned: one call every ten seconds.
const MIN_PER_SECOND: f64 = 0.1;
/// Accepted calls remembered at most (a window's worth at Dataverse's default is 6,000).
const MAX_REMEMBERED: usize = 100_000;
/// Fewer calls accepted than this before a budget 429 teach nothing: this
/// environment was not the one spending the budget, and the pause is the remedy.
const MIN_SAMPLE: usize = 5;
/// A spent budget answers every call 429 until the window has room, so the
/// calls in flight come back 429 one after another; a rate is first learned
/// after this many budget 429s in a row (no call accepted between them). A
/// stray 429 among successes teaches nothing.
const CONFIRM: u32 = 2;
/// Once paced, another 429 cuts again only this share of a window after the
/// last cut: one spent budget answers many calls.
const CUT_SPACING: f64 = 0.1;
/// A budget 429 teaches a pace only when its Retry-After is at least this share
/// of the window: a spent sliding window asks to wait for much of it, while a
/// short wait means room comes soon and the pause alone is the remedy.
const LONG_WAIT: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct RequestBudget {
    window: Duration,
    /// How long a learned rate is kept without a new budget 429.
    keep: Duration,
    /// When Dataverse accepted this user's calls, within the last window.
    accepted: VecDeque<Instant>,
    /// Budget 429s since the last accepted call.
    run: u32,
    learned: Option<Learned>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Learned {
    per_second: f64,
    /// The last budget 429.
    cut_at: Instant,
    /// The last growth step (or the cut).
    grown_at: Instant,
}

impl RequestBudget {
    pub fn new(window: Duration, keep: Duration) -> RequestBudget {
        RequestBudget { window: window.max(Duration::from_secs(1)), keep, accepted: VecDeque::new(), run: 0, learned: None }
    }

    /// Dataverse accepted a call at `now`.
    pub fn on_accepted(&mut self, now: Instant) {
        self.forget_before(now);
        self.run = 0;
        if self.accepted.len() >= MAX_REMEMBERED {
            self.accepted.pop_front();
        }
        self.accepted.push_back(now);
    }

    /// A budget 429 at `now`. Unpaced, a spent budget (several 429s in a row)
    /// sets the rate to what the window before it accepted; paced, the pace was
    /// too fast: it is cut to just under itself, or to that share if less.
    pub fn on_budget_throttled(&mut self, now: Instant, retry_after: Duration) {
        if self.keep.is_zero() || retry_after < self.window.mul_f64(LONG_WAIT) {
            return;
        }
        self.forget_before(now);
        self.run += 1;
        let learned = match self.learned {
            Some(learned) if now.saturating_duration_since(learned.cut_at) < self.window.mul_f64(CUT_SPACING).max(Duration::from_secs(1)) => return,
            Some(learned) => {
                let per_second = (learned.per_second * HEADROOM).min(self.share().max(learned.per_second * MAX_CUT)).max(MIN_PER_SECOND);
                Learned { per_second, cut_at: now, grown_at: now }
            }
            None if self.run < CONFIRM || self.accepted.len() < MIN_SAMPLE => return,
            None => {
                let per_second = self.share().max(MIN_PER_SECOND);
                Learned { per_second, cut_at: now, grown_at: now }
            }
        };
        tracing::debug!(message = "Request rate learned from a budget 429.", per_second = learned.per_second, window_seconds = self.window.as_secs());
        self.learned = Some(learned);
    }

    /// Starts pacing at `per_second` when nothing is learned yet: another
    /// application user of the same pool, with the same budget, learned it here.
    pub fn seed(&mut self, now: Instant, per_second: f64) {
        if self.learned.is_none() && !self.keep.is_zero() && per_second.is_finite() {
            let per_second = per_second.max(MIN_PER_SECOND);
            self.learned = Some(Learned { per_second, cut_at: now, grown_at: now });
        }
    }

    /// The learned rate at `now` (calls a second), if one is kept.
    pub fn per_second(&mut self, now: Instant) -> Option<f64> {
        let learned = self.learned.as_mut()?;
        if now.saturating_duration_since(learned.cut_at) > self.keep {
            tracing::debug!(message = "Learned request rate forgotten.", per_second = learned.per_second);
            self.learned = None;
            return None;
        }
        while now.saturating_duration_since(learned.grown_at) >= self.window {
            learned.per_second *= 1.0 + PROBE;
            learned.grown_at += self.window;
        }
        Some(learned.per_second)
    }

    /// The spacing of call starts at `now`, if a rate is learned.
    pub fn interval(&mut self, now: Instant) -> Option<Duration> {
        self.per_second(now).map(|rate| Duration::from_secs_f64(1.0 / rate))
    }

    /// Just under what the window accepted from this environment, a second:
    /// its share of a spent budget.
    fn share(&self) -> f64 {
        self.accepted.len() as f64 / self.window.as_secs_f64() * MARGIN
    }

    fn forget_before(&mut self, now: Instant) {
        while self.accepted.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            self.accepted.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const WINDOW: Duration = Duration::from_secs(10);

    fn accept(budget: &mut RequestBudget, from: Instant, count: u64, every: Duration) {
        for i in 0..count {
            budget.on_accepted(from + every * i as u32);
        }
    }

    /// The calls in flight when the budget is spent: `n` 429s in a row at `at`.
    fn spent(budget: &mut RequestBudget, at: Instant, n: u32) {
        for i in 0..n {
            budget.on_budget_throttled(at + Duration::from_millis(u64::from(i)), WINDOW);
        }
    }

    #[test]
    fn the_rate_is_what_the_window_before_a_spent_budget_accepted() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(WINDOW, Duration::from_secs(300));
        assert_eq!(budget.interval(t0), None, "nothing learned yet: no pacing");
        // 66 calls accepted in a burst, then the budget is spent: the 8 in flight come back 429.
        accept(&mut budget, t0, 66, Duration::from_millis(5));
        spent(&mut budget, t0 + SECOND, 8);
        // 6.6 a second filled the window to the last request: paced just under it.
        assert_eq!(budget.per_second(t0 + SECOND), Some(6.6 * MARGIN));
        assert_eq!(budget.interval(t0 + SECOND), Some(Duration::from_secs_f64(1.0 / (6.6 * MARGIN))));
    }

    #[test]
    fn a_stray_429_or_one_that_others_earned_teaches_nothing() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(WINDOW, Duration::from_secs(300));
        // Among successes: 429s one at a time.
        for i in 0..20 {
            accept(&mut budget, t0 + SECOND * i, 10, Duration::from_millis(10));
            budget.on_budget_throttled(t0 + SECOND * i + Duration::from_millis(500), WINDOW);
        }
        assert_eq!(budget.per_second(t0 + Duration::from_secs(20)), None);
        // A spent budget this environment hardly used: the pause alone is the remedy.
        let mut quiet = RequestBudget::new(WINDOW, Duration::from_secs(300));
        accept(&mut quiet, t0, 3, SECOND);
        spent(&mut quiet, t0 + Duration::from_secs(4), 8);
        assert_eq!(quiet.per_second(t0 + Duration::from_secs(4)), None);
    }

    #[test]
    fn a_rate_learned_from_a_spent_window_probes_past_itself_a_little_and_is_forgotten_after_the_keep_period() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(WINDOW, Duration::from_secs(60));
        accept(&mut budget, t0, 100, Duration::from_millis(1));
        spent(&mut budget, t0 + SECOND, 4);
        let learned = 10.0 * MARGIN;
        assert_eq!(budget.per_second(t0 + Duration::from_secs(10)), Some(learned), "less than a window: no growth");
        // The spent window proved 10 a second is the share: past it only by a probe a window.
        let probed = budget.per_second(t0 + Duration::from_secs(22)).unwrap();
        assert!((probed - learned * (1.0 + PROBE).powi(2)).abs() < 1e-9, "two windows: two probes, {probed}");
        assert_eq!(budget.per_second(t0 + Duration::from_secs(62)), None, "kept 60 s without a budget 429");
    }

    #[test]
    fn a_seeded_rate_paces_from_the_start_probes_and_is_cut_by_its_own_429() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(WINDOW, Duration::from_secs(3_600));
        budget.seed(t0, 10.0);
        assert_eq!(budget.per_second(t0), Some(10.0), "paced before its own window is spent");
        budget.seed(t0, 20.0);
        assert_eq!(budget.per_second(t0), Some(10.0), "a rate of its own is kept");
        let probed = budget.per_second(t0 + Duration::from_secs(12)).unwrap();
        assert!((probed - 10.0 * (1.0 + PROBE)).abs() < 1e-9, "{probed}");
        accept(&mut budget, t0 + Duration::from_millis(3_050), 100, Duration::from_millis(99));
        spent(&mut budget, t0 + Duration::from_secs(13), 2);
        let cut = budget.per_second(t0 + Duration::from_secs(13)).unwrap();
        assert!((cut - probed * HEADROOM).abs() < 1e-9, "{cut}");
    }

    #[test]
    fn paced_a_429_cuts_just_under_the_pace_once_per_tenth_of_a_window_then_probes() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(WINDOW, Duration::from_secs(3_600));
        accept(&mut budget, t0, 100, Duration::from_millis(1));
        spent(&mut budget, t0 + SECOND, 8);
        let paced = 10.0 * MARGIN;
        assert_eq!(budget.per_second(t0 + SECOND), Some(paced));
        // Paced at 9.8 a second, Dataverse still says no: it was too fast. One cut for the round.
        accept(&mut budget, t0 + Duration::from_millis(1_050), 98, Duration::from_millis(100));
        spent(&mut budget, t0 + Duration::from_secs(11), 3);
        let cut = budget.per_second(t0 + Duration::from_secs(11)).unwrap();
        assert!((cut - paced * HEADROOM).abs() < 1e-9, "{cut}");
        // Then it probes a little each window.
        let later = |w: u32| budget.clone().per_second(t0 + Duration::from_secs(11) + WINDOW * w).unwrap();
        assert!((later(1) - cut * (1.0 + PROBE)).abs() < 1e-9, "{}", later(1));
        assert!((later(3) - cut * (1.0 + PROBE).powi(3)).abs() < 1e-9, "{}", later(3));
        assert!(later(3) < paced);
    }

    #[test]
    fn paced_a_429_cuts_to_the_share_the_spent_window_gave_when_others_took_more_but_by_half_at_most() {
        let t0 = Instant::now();
        let learn = || {
            let mut budget = RequestBudget::new(WINDOW, Duration::from_secs(3_600));
            accept(&mut budget, t0, 100, Duration::from_millis(1));
            spent(&mut budget, t0 + SECOND, 8);
            budget
        };
        let paced = 10.0 * MARGIN;
        // Another environment joined and took a third of the window: this one's 9.8 a second got 6.
        let mut crowded = learn();
        accept(&mut crowded, t0 + Duration::from_millis(1_050), 60, Duration::from_millis(160));
        spent(&mut crowded, t0 + Duration::from_secs(11), 3);
        let cut = crowded.per_second(t0 + Duration::from_secs(11)).unwrap();
        assert!((cut - 6.0 * MARGIN).abs() < 1e-9, "its share of the spent window, not 93 % of its pace: {cut}");
        // Idle for most of the window (20 accepted): cut by half, not to 2 a second.
        let mut idle = learn();
        accept(&mut idle, t0 + Duration::from_millis(9_000), 20, Duration::from_millis(100));
        spent(&mut idle, t0 + Duration::from_secs(11), 3);
        let cut = idle.per_second(t0 + Duration::from_secs(11)).unwrap();
        assert!((cut - paced * MAX_CUT).abs() < 1e-9, "{cut}");
    }

    #[test]
    fn a_short_retry_after_teaches_nothing_the_pause_is_enough() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(Duration::from_secs(300), Duration::from_secs(300));
        accept(&mut budget, t0, 100, Duration::from_millis(1));
        for i in 0..8 {
            budget.on_budget_throttled(t0 + SECOND + Duration::from_millis(i), SECOND);
        }
        assert_eq!(budget.per_second(t0 + SECOND), None, "1 s of a 300 s window: room comes soon");
        for i in 0..8 {
            budget.on_budget_throttled(t0 + SECOND + Duration::from_millis(i), Duration::from_secs(30));
        }
        assert!(budget.per_second(t0 + SECOND).is_some(), "30 s: the budget is spent");
    }

    #[test]
    fn a_zero_keep_period_learns_nothing() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(WINDOW, Duration::ZERO);
        accept(&mut budget, t0, 10, Duration::from_millis(1));
        spent(&mut budget, t0 + SECOND, 8);
        assert_eq!(budget.interval(t0 + SECOND), None);
    }
}
