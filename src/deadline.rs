//! The invocation's deadline, read from the Runtime API without trusting it
//! blindly.
//!
//! AWS sends `Lambda-Runtime-Deadline-Ms` as epoch milliseconds. Local runtimes
//! do not all agree: cargo-lambda 1.9 sends a duration (`600000`), which read as
//! an epoch time is a deadline 56 years in the past and would fail every record
//! before its first attempt. So a value that is not a plausible epoch time —
//! earlier than 2001, or further ahead than Lambda's 15-minute maximum — is read
//! as a duration when it is at most 15 minutes, else replaced by 15 minutes;
//! either way one warning per execution environment names the value.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lambda's maximum timeout: the time allowed when the runtime's value says nothing useful.
pub const MAX_INVOCATION: Duration = Duration::from_secs(15 * 60);

/// 2001-01-01T00:00:00Z in epoch milliseconds: earlier values are not epoch times.
const EPOCH_2001_MS: u64 = 978_307_200_000;

/// How a `Lambda-Runtime-Deadline-Ms` value was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Epoch milliseconds, as AWS sends it (a deadline already passed leaves no time).
    Epoch,
    /// Not an epoch time but at most 15 minutes: milliseconds left (cargo-lambda).
    Duration,
    /// Neither: Lambda's 15-minute maximum instead.
    Default,
}

/// The time left before `deadline_ms` at `now_ms` (both milliseconds), and how
/// the value was read: anything but [`Reading::Epoch`] deserves a warning. Pure.
pub fn time_left(deadline_ms: u64, now_ms: u64) -> (Duration, Reading) {
    let latest = now_ms.saturating_add(MAX_INVOCATION.as_millis() as u64);
    if (EPOCH_2001_MS..=latest).contains(&deadline_ms) {
        (Duration::from_millis(deadline_ms.saturating_sub(now_ms)), Reading::Epoch)
    } else if deadline_ms > 0 && deadline_ms <= MAX_INVOCATION.as_millis() as u64 {
        (Duration::from_millis(deadline_ms), Reading::Duration)
    } else {
        // 0 (no deadline given), before 2001 but longer than 15 minutes, or too far ahead.
        (MAX_INVOCATION, Reading::Default)
    }
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// The invocation's deadline as a monotonic instant, from the Runtime API's
/// `deadline_ms`; warns once per execution environment about a value that is
/// not an epoch time.
pub fn instant_of(deadline_ms: u64) -> Instant {
    let now = Instant::now();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let (left, reading) = time_left(deadline_ms, now_ms);
    if reading != Reading::Epoch && !WARNED.swap(true, Ordering::Relaxed) {
        let read_as = match reading {
            Reading::Duration => "milliseconds left",
            _ => "no deadline: Lambda's 15-minute maximum",
        };
        tracing::warn!(
            message = "Lambda-Runtime-Deadline-Ms is not an epoch time in milliseconds; this runtime is not AWS's (said once per environment).",
            deadline_ms,
            read_as,
            left_ms = left.as_millis() as u64
        );
    }
    now + left
}

/// At most this many attempts of one record answered 429 within an invocation
/// (without a deadline, [`Cutoffs::unbounded`], there is no such limit).
pub const MAX_THROTTLED_ATTEMPTS: u32 = 8;

/// When to stop starting calls, when every call must be done, and when the
/// bookkeeping after them (the idempotency writes) must be done.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub start_cutoff: Instant,
    pub hard_cutoff: Instant,
    pub settle_cutoff: Instant,
    /// Attempts of one record answered 429 before it is reported failed.
    pub throttled_attempts: u32,
}

impl Cutoffs {
    /// Leaves a reserve before `deadline` (a tenth of the time left, 200 ms to 1 s)
    /// for the bookkeeping and the answer, and as much again in which no new call
    /// is started; half the reserve is the bookkeeping's.
    pub fn until(deadline: Instant) -> Cutoffs {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let reserve = (left / 10).clamp(Duration::from_millis(200), Duration::from_secs(1));
        let hard_cutoff = deadline.checked_sub(reserve).filter(|t| *t > now).unwrap_or(now);
        let start_cutoff = hard_cutoff.checked_sub(reserve).filter(|t| *t > now).unwrap_or(now);
        let settle_cutoff = (hard_cutoff + reserve / 2).min(deadline).max(hard_cutoff);
        Cutoffs { start_cutoff, hard_cutoff, settle_cutoff, throttled_attempts: MAX_THROTTLED_ATTEMPTS }
    }

    /// Every cut-off at `deadline`: a read that must be answered by then (metadata, `check`).
    pub fn at(deadline: Instant) -> Cutoffs {
        Cutoffs { start_cutoff: deadline, hard_cutoff: deadline, settle_cutoff: deadline, throttled_attempts: MAX_THROTTLED_ATTEMPTS }
    }

    /// No invocation deadline (`send`, SPEC §16): the cut-offs a year away, and
    /// 429s retried after their Retry-After for as long as Dataverse answers them.
    pub fn unbounded() -> Cutoffs {
        let budget = Cutoffs::until(Instant::now() + Duration::from_secs(365 * 86_400));
        Cutoffs { throttled_attempts: u32::MAX, ..budget }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-06-06T14:30:00Z
    const NOW: u64 = 1_780_756_200_000;

    #[test]
    fn aws_epoch_deadline_is_the_time_left() {
        assert_eq!(time_left(NOW + 3_000, NOW), (Duration::from_millis(3_000), Reading::Epoch));
        assert_eq!(time_left(NOW + 900_000, NOW), (MAX_INVOCATION, Reading::Epoch));
    }

    #[test]
    fn a_deadline_already_passed_leaves_no_time_without_warning() {
        assert_eq!(time_left(NOW - 1, NOW), (Duration::ZERO, Reading::Epoch));
        assert_eq!(time_left(NOW - 86_400_000, NOW), (Duration::ZERO, Reading::Epoch));
        assert_eq!(time_left(EPOCH_2001_MS, NOW), (Duration::ZERO, Reading::Epoch));
    }

    #[test]
    fn cargo_lambda_duration_is_read_as_milliseconds_left() {
        assert_eq!(time_left(600_000, NOW), (Duration::from_secs(600), Reading::Duration));
        assert_eq!(time_left(3_000, NOW), (Duration::from_secs(3), Reading::Duration));
        assert_eq!(time_left(900_000, NOW), (MAX_INVOCATION, Reading::Duration));
    }

    #[test]
    fn zero_means_no_deadline_given() {
        assert_eq!(time_left(0, NOW), (MAX_INVOCATION, Reading::Default));
    }

    #[test]
    fn nonsense_gets_the_fifteen_minute_maximum() {
        assert_eq!(time_left(u64::MAX, NOW), (MAX_INVOCATION, Reading::Default));
        assert_eq!(time_left(NOW + 365 * 86_400_000, NOW), (MAX_INVOCATION, Reading::Default));
        assert_eq!(time_left(NOW + 900_001, NOW), (MAX_INVOCATION, Reading::Default));
        // Longer than 15 minutes, and too early to be an epoch time.
        assert_eq!(time_left(900_001, NOW), (MAX_INVOCATION, Reading::Default));
        assert_eq!(time_left(EPOCH_2001_MS - 1, NOW), (MAX_INVOCATION, Reading::Default));
    }

    #[test]
    fn a_broken_clock_does_not_overflow() {
        assert_eq!(time_left(u64::MAX, u64::MAX), (Duration::ZERO, Reading::Epoch));
        assert_eq!(time_left(600_000, 0), (Duration::from_secs(600), Reading::Duration));
    }
}
