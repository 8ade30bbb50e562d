//! The execution environment's concurrency controller (as Vector's Adaptive
//! Request Concurrency): an AIMD limit and the pause after a 429. What an error
//! means comes from [`super::retry::class`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lock;
use super::retry::RetryClass;

/// The longest pause a Retry-After can impose (upstream numbers are untrusted).
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// The execution environment's concurrency governor: an AIMD limit (as Vector's
/// Adaptive Request Concurrency) under `ceiling`, capped further by Dataverse's
/// `x-ms-dop-hint`, plus a pause shared by every record after a 429.
pub struct Pacer {
    ceiling: usize,
    permits: Arc<Semaphore>,
    state: Mutex<PaceState>,
}

struct PaceState {
    limit: f64,
    /// Permits in circulation (available + held − owed).
    granted: usize,
    /// Permits to take out of circulation as they come back.
    owed: usize,
    hint: Option<usize>,
    pause_until: Option<Instant>,
    last_decrease: Option<Instant>,
    /// No growth until then: probing past a limit Dataverse enforced costs a Retry-After pause.
    hold_growth_until: Option<Instant>,
    best_latency: Option<Duration>,
}

/// After a 429 the limit does not grow for at least this long.
const GROWTH_HOLD: Duration = Duration::from_secs(5);
/// Dataverse's error code for "Number of concurrent requests exceeded the limit".
pub const CONCURRENCY_LIMIT_CODE: &str = "0x80072326";

impl Pacer {
    pub fn new(initial: usize, ceiling: usize) -> Pacer {
        let ceiling = ceiling.max(1);
        let initial = initial.clamp(1, ceiling);
        Pacer {
            ceiling,
            permits: Arc::new(Semaphore::new(initial)),
            state: Mutex::new(PaceState {
                limit: initial as f64,
                granted: initial,
                owed: 0,
                hint: None,
                pause_until: None,
                last_decrease: None,
                hold_growth_until: None,
                best_latency: None,
            }),
        }
    }

    /// The current concurrency limit.
    pub fn limit(&self) -> usize {
        lock(&self.state).granted
    }

    fn pause_until(&self) -> Option<Instant> {
        let state = lock(&self.state);
        state.pause_until.filter(|p| *p > Instant::now())
    }

    /// Pauses new calls of the whole execution environment (Dataverse's limits are per user).
    pub fn pause(&self, for_: Duration) {
        let until = Instant::now() + for_.min(MAX_PAUSE);
        let mut state = lock(&self.state);
        if state.pause_until.is_none_or(|p| p < until) {
            state.pause_until = Some(until);
        }
    }

    /// Waits for the pause and a slot; `None` if neither comes before `until`.
    pub async fn acquire(self: &Arc<Self>, until: Instant) -> Option<Slot> {
        loop {
            if let Some(pause) = self.pause_until() {
                if pause >= until {
                    return None;
                }
                tokio::time::sleep_until(pause.into()).await;
            }
            if Instant::now() >= until {
                return None;
            }
            let permit = tokio::time::timeout_at(until.into(), self.permits.clone().acquire_owned()).await.ok()?.ok()?;
            // A 429 may have paused everything while this record waited for its slot.
            if self.pause_until().is_some() {
                drop(Slot { pacer: self.clone(), permit: Some(permit) });
                continue;
            }
            return Some(Slot { pacer: self.clone(), permit: Some(permit) });
        }
    }

    /// A failed attempt, as the classifier sees it: back-pressure shrinks the
    /// limit, a 429 pauses the environment (and, for the concurrency limit,
    /// lowers the limit to the admitted level); other errors say nothing about capacity.
    pub(super) fn on_error(&self, class: &RetryClass) {
        match *class {
            RetryClass::BackPressure => self.on_backpressure(),
            RetryClass::Throttled { retry_after, concurrency_limit } => {
                self.on_throttled(retry_after, concurrency_limit);
                self.pause(retry_after);
            }
            RetryClass::Permanent | RetryClass::Transient | RetryClass::Auth | RetryClass::Stop => {}
        }
    }

    pub(super) fn on_success(&self, latency: Duration, dop_hint: Option<usize>) {
        let mut state = lock(&self.state);
        if let Some(hint) = dop_hint.filter(|h| *h > 0) {
            state.hint = Some(hint.min(self.ceiling));
        }
        let best = *state.best_latency.get_or_insert(latency);
        state.best_latency = Some(best.min(latency));
        let cap = self.cap(&state);
        // Grow (about +1 per round of calls) only while at the limit and latency is not rising.
        let at_limit = self.permits.available_permits() == 0;
        let holding = state.hold_growth_until.is_some_and(|t| Instant::now() < t);
        if at_limit && !holding && latency <= best * 2 + Duration::from_millis(5) && state.limit < cap as f64 {
            state.limit = (state.limit + 1.0 / state.limit).min(cap as f64);
        }
        self.rebalance(&mut state, cap);
    }

    /// 5xx or a timeout: ×0.9, at most once per round trip (and per 100 ms), so a
    /// burst of errors from one round counts once.
    pub(super) fn on_backpressure(&self) {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let window = state.best_latency.unwrap_or(Duration::ZERO).max(Duration::from_millis(100));
        if state.last_decrease.is_some_and(|t| now.duration_since(t) < window) {
            return;
        }
        state.last_decrease = Some(now);
        state.limit = (state.limit * 0.9).max(1.0);
        let cap = self.cap(&state);
        self.rebalance(&mut state, cap);
    }

    /// A 429 (the caller's slot already released). Growth is held, since probing
    /// past an enforced limit costs a Retry-After pause. For the concurrency limit
    /// (`0x80072326`) the calls still in flight are what Dataverse admitted, so the
    /// limit falls to that level (and by at least one): a burst of 429s from an
    /// over-wide round lands on the real cap at once. For the request-rate and
    /// execution-time limits the environment-wide pause is the remedy; the
    /// concurrency is left as it is.
    pub(super) fn on_throttled(&self, retry_after: Duration, concurrency_limit: bool) {
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.hold_growth_until = Some(now + GROWTH_HOLD.max(retry_after.min(MAX_PAUSE)));
        if !concurrency_limit {
            return;
        }
        let held = (state.granted + state.owed).saturating_sub(self.permits.available_permits());
        state.last_decrease = Some(now);
        state.limit = (state.limit - 1.0).min(held as f64).max(1.0);
        let cap = self.cap(&state);
        self.rebalance(&mut state, cap);
    }

    fn cap(&self, state: &PaceState) -> usize {
        state.hint.map_or(self.ceiling, |h| h.min(self.ceiling)).max(1)
    }

    fn rebalance(&self, state: &mut PaceState, cap: usize) {
        state.limit = state.limit.min(cap as f64);
        let target = (state.limit.floor() as usize).clamp(1, cap);
        if target > state.granted {
            let mut add = target - state.granted;
            let repaid = add.min(state.owed);
            state.owed -= repaid;
            add -= repaid;
            self.permits.add_permits(add);
        } else if target < state.granted {
            let mut remove = state.granted - target;
            remove -= self.permits.forget_permits(remove);
            state.owed += remove;
        }
        state.granted = target;
    }
}

/// One slot of the limit, held for one attempt.
pub struct Slot {
    pacer: Arc<Pacer>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = lock(&self.pacer.state);
        if state.owed > 0 {
            state.owed -= 1;
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered() {
        let pacer = Arc::new(Pacer::new(4, 4));
        let poisoner = pacer.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.state.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(pacer.state.is_poisoned());
        assert_eq!(pacer.limit(), 4);
        pacer.on_backpressure();
    }

    #[test]
    fn the_limit_shrinks_on_backpressure_and_respects_the_hint() {
        let pacer = Pacer::new(32, 32);
        pacer.on_backpressure();
        assert_eq!(pacer.limit(), 28);
        pacer.on_backpressure();
        assert_eq!(pacer.limit(), 28, "one decrease per round trip");
        pacer.on_success(Duration::from_millis(10), None);
        pacer.on_success(Duration::from_millis(10), Some(4));
        assert_eq!(pacer.limit(), 4);
    }

    #[tokio::test]
    async fn a_burst_of_429s_lands_on_the_admitted_level() {
        let pacer = Arc::new(Pacer::new(32, 32));
        let until = Instant::now() + Duration::from_secs(5);
        let mut slots = Vec::new();
        for _ in 0..32 {
            slots.push(pacer.acquire(until).await.unwrap());
        }
        // 16 calls were admitted; the other 16 come back 429 one after another.
        for _ in 0..16 {
            drop(slots.pop());
            pacer.on_throttled(Duration::from_secs(1), true);
        }
        assert_eq!(pacer.limit(), 16);
        // A request-rate 429 pauses (elsewhere) but leaves the concurrency alone.
        drop(slots);
        pacer.on_throttled(Duration::from_secs(1), false);
        assert_eq!(pacer.limit(), 16);
        // Growth is held after back-pressure, even at the limit with steady latency.
        for _ in 0..100 {
            pacer.on_success(Duration::from_millis(50), None);
        }
        assert_eq!(pacer.limit(), 16);
    }

    #[tokio::test]
    async fn the_limit_grows_back_while_latency_is_steady() {
        let pacer = Arc::new(Pacer::new(2, 8));
        let until = Instant::now() + Duration::from_secs(5);
        for _ in 0..40 {
            let a = pacer.acquire(until).await.unwrap();
            let b = pacer.acquire(until).await.unwrap();
            pacer.on_success(Duration::from_millis(10), None);
            drop((a, b));
        }
        assert!(pacer.limit() > 2, "grew from 2 to {}", pacer.limit());
        assert!(pacer.limit() <= 8);
    }

}
