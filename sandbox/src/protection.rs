//! Dataverse's service protection limits per application user (SPEC §17.2;
//! DOMAIN.md, "service protection limits" and "Wire details worth emulating"),
//! as the `budget_*` faults set them:
//!
//! - a number of requests per sliding window (429 `0x80072322`) and a combined
//!   execution time per window (429 `0x80072321`), both answered late — after
//!   the request has run its latency, and the time limit only once the time
//!   already spent passes it (the request that crosses it is accepted);
//! - the Retry-After of either is the time until the window has room, and the
//!   application user is paused until then: each request it sends during the
//!   pause (one that arrived after the 429 was answered, not one already in
//!   flight) is answered 429 again and lengthens what is left of the pause by
//!   `budget_pause_growth` (default 0.1: a tenth of what is left, per request;
//!   1 doubles it), up to five minutes (or the window, when longer). Microsoft
//!   says only that "the duration will be extended": a tenth per request makes
//!   a caller that keeps sending lose time without one stray request from another
//!   execution environment turning into minutes;
//! - every request an application user gets past them is answered with
//!   `x-ms-ratelimit-burst-remaining-xrm-requests` and
//!   `x-ms-ratelimit-time-remaining-xrm-requests` (seconds, `1,199.95`), counted
//!   against Dataverse's own limits (6,000 requests, 1,200 s per 300 s) when the
//!   faults set none.
//!
//! The concurrency limit (`max_concurrency`, 429 `0x80072326`) is not here: it is
//! answered at admission, before the request runs ([`crate::dataverse`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{dataverse_error, Reply};

/// What each request sent into a pause adds to what is left of it, as a share.
pub const DEFAULT_PAUSE_GROWTH: f64 = 0.1;

/// Dataverse's limits per user and web server (used for the headers when no budget is set).
const REQUESTS: usize = 6_000;
const TIME: Duration = Duration::from_secs(1_200);
const WINDOW_SECS: u64 = 300;
/// The longest a pause grows to (or the window, when longer).
const LONGEST_PAUSE: Duration = Duration::from_secs(300);

/// The budget faults: what [`Protection`] enforces.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Limits {
    /// Requests per window; `None` enforces no number.
    pub requests: Option<usize>,
    /// The window (default 300 s).
    pub window_secs: Option<u64>,
    /// Combined execution time per window, in ms; `None` enforces no time.
    pub time_ms: Option<u64>,
    /// How much of what is left of a pause each request sent during it adds (default 1.0).
    pub pause_growth: Option<f64>,
}

impl Limits {
    fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs.unwrap_or(WINDOW_SECS).max(1))
    }
}

/// What an application user has left in the window after a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remaining {
    requests: usize,
    time: Duration,
}

/// The requests each application user got past the limits, and its pause.
#[derive(Default)]
pub(crate) struct Protection {
    users: Mutex<HashMap<String, Usage>>,
    /// Requests that arrived during a pause, after the 429 that began it.
    sent_during_pause: AtomicU64,
}

#[derive(Default)]
struct Usage {
    /// When each accepted request was admitted, and how long it ran.
    accepted: VecDeque<(Instant, Duration)>,
    /// The sum of the durations in `accepted`.
    time: Duration,
    pause: Option<Pause>,
}

struct Pause {
    /// When the 429 that began it was answered.
    since: Instant,
    until: Instant,
    code: &'static str,
    message: String,
}

impl Protection {
    /// A request of `client` that reached the sandbox at `arrived` and ran for
    /// `executed`: counted and what is left, or the 429 to answer.
    pub(crate) fn admit(&self, limits: &Limits, client: &str, arrived: Instant, executed: Duration) -> Result<Remaining, Box<Reply>> {
        let window = limits.window();
        let now = Instant::now();
        let mut users = self.users.lock().unwrap();
        let usage = users.entry(client.to_string()).or_default();
        while usage.accepted.front().is_some_and(|(t, _)| now.duration_since(*t) >= window) {
            let (_, spent) = usage.accepted.pop_front().expect("a front");
            usage.time = usage.time.saturating_sub(spent);
        }
        let remaining = |usage: &Usage| Remaining {
            requests: limits.requests.unwrap_or(REQUESTS).saturating_sub(usage.accepted.len()),
            time: limits.time_ms.map_or(TIME, Duration::from_millis).saturating_sub(usage.time),
        };
        if let Some(pause) = usage.pause.as_mut().filter(|p| now < p.until) {
            if arrived > pause.since {
                self.sent_during_pause.fetch_add(1, Ordering::SeqCst);
                let left = pause.until - now;
                let grown = left.mul_f64(1.0 + limits.pause_growth.unwrap_or(DEFAULT_PAUSE_GROWTH).max(0.0));
                pause.until = now + grown.min(window.max(LONGEST_PAUSE).max(left));
            }
            let (code, message, until) = (pause.code, pause.message.clone(), pause.until);
            return Err(Box::new(throttled(code, &message, until - now, remaining(usage))));
        }
        usage.pause = None;
        let over = if let Some(limit) = limits.requests.filter(|limit| usage.accepted.len() >= *limit) {
            // Room when enough of the oldest have left the window to take one more.
            let oldest = usage.accepted[usage.accepted.len() - limit].0;
            let message = format!("Number of requests exceeded the limit of {limit} over time window of {} seconds.", window.as_secs());
            Some(("0x80072322", message, (oldest + window).saturating_duration_since(now)))
        } else if let Some(limit) = limits.time_ms.map(Duration::from_millis).filter(|limit| usage.time >= *limit) {
            // Room when enough of the oldest have left the window to bring the time under the limit.
            let mut time = usage.time;
            let mut room = now;
            for (at, spent) in &usage.accepted {
                time = time.saturating_sub(*spent);
                room = *at + window;
                if time < limit {
                    break;
                }
            }
            let message = format!(
                "Combined execution time of incoming requests exceeded limit of {} milliseconds over time window of {} seconds. \
                 Decrease number of concurrent requests or reduce the duration of requests and try again later.",
                limit.as_millis(),
                window.as_secs()
            );
            Some(("0x80072321", message, room.saturating_duration_since(now)))
        } else {
            None
        };
        if let Some((code, message, room)) = over {
            usage.pause = Some(Pause { since: now, until: now + room, code, message: message.clone() });
            return Err(Box::new(throttled(code, &message, room, remaining(usage))));
        }
        usage.accepted.push_back((now, executed));
        usage.time += executed;
        Ok(remaining(usage))
    }

    pub(crate) fn sent_during_pause(&self) -> u64 {
        self.sent_during_pause.load(Ordering::SeqCst)
    }

    pub(crate) fn reset(&self) {
        self.users.lock().unwrap().clear();
        self.sent_during_pause.store(0, Ordering::SeqCst);
    }
}

/// A budget 429 with its Retry-After (whole seconds, at least 1) and the headers.
fn throttled(code: &str, message: &str, retry_after: Duration, remaining: Remaining) -> Reply {
    let mut r = dataverse_error(429, code, message);
    r.headers_mut().insert("retry-after", retry_after.as_secs_f64().ceil().max(1.0).to_string().parse().expect("a header value"));
    with_headers(r, remaining)
}

/// `x-ms-ratelimit-burst-remaining-xrm-requests` and `x-ms-ratelimit-time-remaining-xrm-requests` on `reply`.
pub(crate) fn with_headers(mut reply: Reply, remaining: Remaining) -> Reply {
    let headers = reply.headers_mut();
    headers.insert("x-ms-ratelimit-burst-remaining-xrm-requests", remaining.requests.into());
    headers.insert("x-ms-ratelimit-time-remaining-xrm-requests", grouped(remaining.time).parse().expect("a header value"));
    reply
}

/// Seconds with two decimals and a comma between thousands, as Dataverse writes them (`1,199.95`).
fn grouped(time: Duration) -> String {
    let hundredths = time.as_millis() / 10;
    let (whole, fraction) = (hundredths / 100, hundredths % 100);
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}.{fraction:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_with_a_grouping_comma() {
        assert_eq!(grouped(Duration::from_secs(1_200)), "1,200.00");
        assert_eq!(grouped(Duration::from_millis(1_199_954)), "1,199.95");
        assert_eq!(grouped(Duration::from_millis(999_990)), "999.99");
        assert_eq!(grouped(Duration::ZERO), "0.00");
        assert_eq!(grouped(Duration::from_secs(1_234_567)), "1,234,567.00");
    }
}
