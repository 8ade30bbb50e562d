//! The Dataverse request budget of one application user, learned (SPEC §17.2).
//!
//! Dataverse allows each application user a number of requests per sliding
//! window (6,000 per 5 minutes) and answers 429 `0x80072322` (or `0x80072321`
//! for execution time) once it is spent, with a Retry-After that grows if the
//! caller keeps sending. The concurrency limit does not help: at 50 ms a call
//! eight calls in flight send 160 a second. So after a budget 429 the requests
//! Dataverse accepted in the window before it, divided by the window, are what
//! this environment's share of the budget sustains: the calls are paced at that
//! rate, which grows by a tenth each window without another budget 429, is cut
//! again by the next, and is forgotten after the learned-cap period without one.
//! Pure: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The codes of Dataverse's budget 429s: requests, and execution time, per window.
pub const BUDGET_CODES: &[&str] = &["0x80072322", "0x80072321"];
/// `D365_BUDGET_WINDOW_SECONDS`'s default: Dataverse's window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(300);
/// The learned rate grows by this share each window without a budget 429 …
const GROWTH: f64 = 0.10;
/// … up to this share of the rate a budget 429 last proved too fast, and past
/// it by [`PROBE`] a window: each 429 costs a Retry-After pause, so the rate
/// settles just under the budget instead of crossing it every other window.
const HEADROOM: f64 = 0.97;
const PROBE: f64 = 0.01;
/// The slowest pace ever learned: one call every ten seconds.
const MIN_PER_SECOND: f64 = 0.1;
/// Accepted calls remembered at most (a window's worth at Dataverse's default is 6,000).
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug, Clone)]
pub struct RequestBudget {
    window: Duration,
    /// How long a learned rate is kept without a new budget 429.
    keep: Duration,
    /// When Dataverse accepted this user's calls, within the last window.
    accepted: VecDeque<Instant>,
    learned: Option<Learned>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Learned {
    per_second: f64,
    /// The pace that drew the last budget 429, once one came while paced.
    too_fast: Option<f64>,
    /// The last budget 429.
    cut_at: Instant,
    /// The last growth step (or the cut).
    grown_at: Instant,
}

impl RequestBudget {
    pub fn new(window: Duration, keep: Duration) -> RequestBudget {
        RequestBudget { window: window.max(Duration::from_secs(1)), keep, accepted: VecDeque::new(), learned: None }
    }

    /// Dataverse accepted a call at `now`.
    pub fn on_accepted(&mut self, now: Instant) {
        self.forget_before(now);
        if self.accepted.len() >= MAX_REMEMBERED {
            self.accepted.pop_front();
        }
        self.accepted.push_back(now);
    }

    /// A budget 429 at `now`: the rate is what the window before it sustained.
    pub fn on_budget_throttled(&mut self, now: Instant) {
        if self.keep.is_zero() {
            return;
        }
        self.forget_before(now);
        let sustained = (self.accepted.len() as f64 / self.window.as_secs_f64()).max(MIN_PER_SECOND);
        let (per_second, too_fast) = match self.learned {
            // Several calls in flight get the same 429: the first one's cut stands.
            Some(learned) if now.saturating_duration_since(learned.cut_at) < Duration::from_secs(1) => (learned.per_second.min(sustained), learned.too_fast),
            // Paced and still over: the pace was too fast; leave some headroom under what was sustained.
            Some(learned) => (sustained.min(learned.per_second) * HEADROOM, Some(learned.per_second)),
            None => (sustained, None),
        };
        if self.learned.is_none_or(|l| (l.per_second - per_second).abs() > f64::EPSILON) {
            tracing::debug!(message = "Request rate learned from a budget 429.", per_second, window_seconds = self.window.as_secs());
        }
        self.learned = Some(Learned { per_second: per_second.max(MIN_PER_SECOND), too_fast, cut_at: now, grown_at: now });
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
            let grown = learned.per_second * (1.0 + GROWTH);
            learned.per_second = match learned.too_fast {
                Some(too_fast) if grown > too_fast * HEADROOM => (too_fast * HEADROOM).max(learned.per_second * (1.0 + PROBE)),
                _ => grown,
            };
            learned.grown_at += self.window;
        }
        Some(learned.per_second)
    }

    /// The spacing of call starts at `now`, if a rate is learned.
    pub fn interval(&mut self, now: Instant) -> Option<Duration> {
        self.per_second(now).map(|rate| Duration::from_secs_f64(1.0 / rate))
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

    #[test]
    fn the_rate_is_what_the_window_before_the_429_accepted() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(Duration::from_secs(10), Duration::from_secs(300));
        assert_eq!(budget.interval(t0), None, "nothing learned yet: no pacing");
        // 66 calls accepted in a burst, then the budget is spent.
        for i in 0..66 {
            budget.on_accepted(t0 + Duration::from_millis(i * 5));
        }
        budget.on_budget_throttled(t0 + SECOND);
        assert_eq!(budget.per_second(t0 + SECOND), Some(6.6));
        // Calls accepted more than a window ago do not count.
        budget.on_accepted(t0 + Duration::from_secs(12));
        budget.on_budget_throttled(t0 + Duration::from_secs(12));
        assert_eq!(budget.per_second(t0 + Duration::from_secs(12)), Some(0.1), "one call in the window: 0.1 a second");
    }

    #[test]
    fn the_rate_grows_a_tenth_a_window_without_a_429_and_is_forgotten_after_the_keep_period() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(Duration::from_secs(10), Duration::from_secs(60));
        for i in 0..100 {
            budget.on_accepted(t0 + Duration::from_millis(i));
        }
        budget.on_budget_throttled(t0 + SECOND);
        assert_eq!(budget.per_second(t0 + Duration::from_secs(10)), Some(10.0), "less than a window: no growth");
        let grown = budget.per_second(t0 + Duration::from_secs(21)).unwrap();
        assert!((grown - 12.1).abs() < 1e-9, "two windows: ×1.1 twice, {grown}");
        assert_eq!(budget.per_second(t0 + Duration::from_secs(62)), None, "kept 60 s without a budget 429");
    }

    #[test]
    fn the_next_429_cuts_the_rate_again_but_a_round_of_429s_counts_once() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(Duration::from_secs(10), Duration::from_secs(300));
        for i in 0..50 {
            budget.on_accepted(t0 + Duration::from_millis(i));
        }
        budget.on_budget_throttled(t0 + SECOND);
        // The other calls of the same round get their 429s within the second.
        budget.on_budget_throttled(t0 + Duration::from_millis(1_200));
        assert_eq!(budget.per_second(t0 + Duration::from_millis(1_300)), Some(5.0));
        // Later: 30 accepted in the last window, then another 429.
        for i in 0..30 {
            budget.on_accepted(t0 + Duration::from_secs(15) + Duration::from_millis(i * 100));
        }
        budget.on_budget_throttled(t0 + Duration::from_secs(20));
        assert_eq!(budget.per_second(t0 + Duration::from_secs(20)), Some(3.0 * HEADROOM), "paced and still over: just under what was sustained");
    }

    #[test]
    fn after_a_429_while_paced_the_rate_grows_back_to_just_under_the_pace_that_drew_it_then_probes() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut budget = RequestBudget::new(window, Duration::from_secs(3_600));
        for i in 0..100 {
            budget.on_accepted(t0 + Duration::from_millis(i));
        }
        budget.on_budget_throttled(t0 + SECOND);
        assert_eq!(budget.per_second(t0 + SECOND), Some(10.0));
        // Paced at 10 a second, a window later Dataverse still says no: 10 was too fast.
        for i in 0..100 {
            budget.on_accepted(t0 + Duration::from_secs(2) + Duration::from_millis(i * 90));
        }
        budget.on_budget_throttled(t0 + Duration::from_secs(11));
        let cut = budget.per_second(t0 + Duration::from_secs(11)).unwrap();
        assert!((cut - 9.7).abs() < 1e-9, "{cut}");
        // Growth stops at 97 % of 10, then probes by 1 % a window.
        let later = |w: u64| budget.clone().per_second(t0 + Duration::from_secs(11) + window * w as u32).unwrap();
        assert!((later(1) - 9.797).abs() < 1e-9, "{}", later(1));
        assert!((later(3) - 9.7 * 1.01f64.powi(3)).abs() < 1e-9, "{}", later(3));
    }

    #[test]
    fn a_zero_keep_period_learns_nothing() {
        let t0 = Instant::now();
        let mut budget = RequestBudget::new(Duration::from_secs(10), Duration::ZERO);
        budget.on_accepted(t0);
        budget.on_budget_throttled(t0);
        assert_eq!(budget.interval(t0), None);
    }
}
