//! The execution environment's concurrency controller (as Vector's Adaptive
//! Request Concurrency): an AIMD limit and the pause after a 429. What an error
//! means comes from [`super::retry::class`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::budget::{RequestBudget, BUDGET_CODES, BUDGET_WINDOW};
use super::retry_class::{RetryClass, CONCURRENCY_LIMIT_CODE, MAX_PAUSE};
use crate::lock;
use crate::outcome::DeliveryError;

/// The execution environment's concurrency governor: an AIMD limit (as Vector's
/// Adaptive Request Concurrency) under `ceiling`, capped further by Dataverse's
/// `x-ms-dop-hint` and by a concurrency cap learned from a `0x80072326` 429,
/// plus a pause shared by every record after a 429.
pub struct Pacer {
    ceiling: usize,
    /// How long a learned concurrency cap is kept before one probe above it.
    learned_cap_period: Duration,
    permits: Arc<Semaphore>,
    state: Mutex<PaceState>,
    next_start: Mutex<Option<Instant>>,
    /// Set once: no call starts any more (`send` interrupted).
    stopped: tokio::sync::watch::Sender<bool>,
    /// The request budget learned from budget 429s (SPEC §17.2): a pace of starts.
    budget: Mutex<RequestBudget>,
    /// 429 answers by Dataverse's code since last taken ([`THROTTLE_CODES`] order).
    throttled_by_code: [std::sync::atomic::AtomicU64; 4],
}

/// The `Code` dimension of `ThrottledResponses` (SPEC §17.4): requests,
/// execution time, concurrency, and any other 429.
pub const THROTTLE_CODES: [&str; 4] = ["0x80072322", "0x80072321", CONCURRENCY_LIMIT_CODE, "other"];

struct PaceState {
    limit: f64,
    /// Permits in circulation (available + held − owed).
    granted: usize,
    /// Permits to take out of circulation as they come back.
    owed: usize,
    hint: Option<usize>,
    pause_until: Option<Instant>,
    /// The code of the latest 429 that paused the calls (SPEC §7), for the records it holds back.
    pause_code: Option<String>,
    last_decrease: Option<Instant>,
    /// No growth until then: probing past a limit Dataverse enforced costs a Retry-After pause.
    hold_growth_until: Option<Instant>,
    best_latency: Option<Duration>,
    learned: Option<LearnedCap>,
}

/// Dataverse's concurrency limit, as a `0x80072326` 429 revealed it. It belongs
/// to the application user, not to the moment, so the limit stays at or under
/// it until `probe_at`; then one step above it is tried. A full round of calls
/// above it that all succeed, or an `x-ms-dop-hint` that rises above it, releases it;
/// another concurrency 429 learns it again for another period.
#[derive(Debug, Clone, Copy)]
struct LearnedCap {
    cap: usize,
    probe_at: Instant,
    /// The latest `x-ms-dop-hint` since the cap was learned: only a rise above the cap is news.
    last_hint: Option<usize>,
    /// Successes while more than `cap` calls were in flight, since the probe began.
    above_cap: usize,
}

/// `D365_LEARNED_CAP_SECONDS`'s default.
pub const LEARNED_CAP_PERIOD: Duration = Duration::from_secs(300);

/// After a 429 the limit does not grow for at least this long.
const GROWTH_HOLD: Duration = Duration::from_secs(5);
impl Pacer {
    pub fn new(initial: usize, ceiling: usize) -> Pacer {
        let ceiling = ceiling.max(1);
        let initial = initial.clamp(1, ceiling);
        Pacer {
            ceiling,
            learned_cap_period: LEARNED_CAP_PERIOD,
            permits: Arc::new(Semaphore::new(initial)),
            next_start: Mutex::new(None),
            stopped: tokio::sync::watch::channel(false).0,
            budget: Mutex::new(RequestBudget::new(BUDGET_WINDOW, LEARNED_CAP_PERIOD)),
            throttled_by_code: Default::default(),
            state: Mutex::new(PaceState {
                limit: initial as f64,
                granted: initial,
                owed: 0,
                hint: None,
                pause_until: None,
                pause_code: None,
                last_decrease: None,
                hold_growth_until: None,
                best_latency: None,
                learned: None,
            }),
        }
    }

    /// How long a concurrency cap learned from a `0x80072326` 429 is kept (zero:
    /// not kept; at most a day, as `D365_LEARNED_CAP_SECONDS`).
    pub fn with_learned_cap_period(mut self, period: Duration) -> Pacer {
        self.learned_cap_period = period.min(Duration::from_secs(86_400));
        self.budget = Mutex::new(RequestBudget::new(BUDGET_WINDOW, self.learned_cap_period));
        self
    }

    /// The length of Dataverse's request-budget window (`D365_BUDGET_WINDOW_SECONDS`),
    /// from which a rate is learned; kept for the learned-cap period.
    pub fn with_budget_window(mut self, window: Duration) -> Pacer {
        self.budget = Mutex::new(RequestBudget::new(window, self.learned_cap_period));
        self
    }

    /// The 429 answers by code since the last call, which starts the count again (an invocation's metrics).
    pub fn take_throttled_by_code(&self) -> [(&'static str, u64); 4] {
        std::array::from_fn(|i| (THROTTLE_CODES[i], self.throttled_by_code[i].swap(0, std::sync::atomic::Ordering::Relaxed)))
    }

    /// The request rate learned from a budget 429 and still kept (calls a second).
    pub fn learned_rate(&self) -> Option<f64> {
        lock(&self.budget).per_second(Instant::now())
    }

    /// Paces at `per_second` unless a rate is learned already (a pool's other principal learned it).
    pub fn seed_rate(&self, per_second: f64) {
        lock(&self.budget).seed(Instant::now(), per_second);
    }

    /// No call starts from now on; calls in flight finish (`send` interrupted).
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once the pacer is stopped.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.subscribe();
        if stopped.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The concurrency cap learned from Dataverse and still kept, if any.
    pub fn learned_cap(&self) -> Option<usize> {
        lock(&self.state).learned.map(|l| l.cap)
    }

    /// The most calls ever in flight at once (`D365_MAX_IN_FLIGHT`).
    pub fn ceiling(&self) -> usize {
        self.ceiling
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

    /// A 429's code and Retry-After: the code is remembered for the records the
    /// pause holds back, and a budget code teaches the pace (SPEC §17.2).
    pub(super) fn on_throttle_code(&self, code: Option<String>, retry_after: Option<Duration>) {
        let slot = THROTTLE_CODES[..3].iter().position(|c| code.as_deref() == Some(*c)).unwrap_or(3);
        self.throttled_by_code[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if code.as_deref().is_some_and(|c| BUDGET_CODES.contains(&c)) {
            lock(&self.budget).on_budget_throttled(Instant::now(), retry_after.unwrap_or(Duration::ZERO));
        }
        lock(&self.state).pause_code = code;
    }

    /// Why a call cannot start before `until` when a 429's pause outlasts it:
    /// the record is held back, with what is left of the pause.
    pub fn held_back(&self, until: Instant) -> Option<DeliveryError> {
        let state = lock(&self.state);
        let pause = state.pause_until.filter(|p| *p >= until)?;
        Some(DeliveryError::HeldBack { retry_after: pause.saturating_duration_since(Instant::now()), code: state.pause_code.clone() })
    }

    /// Waits for the pause, a slot and (with a rate) a start time; `None` if
    /// they do not come before `until`, or once the pacer is stopped.
    pub async fn acquire(self: &Arc<Self>, until: Instant) -> Option<Slot> {
        let mut stopped = self.stopped.subscribe();
        let slot = tokio::select! {
            slot = self.acquire_slot(until) => slot,
            _ = stopped.wait_for(|s| *s) => None,
        }?;
        tokio::select! {
            slot = self.pace(slot, until) => slot,
            _ = stopped.wait_for(|s| *s) => None,
        }
    }

    /// Spaces the start of the call holding `slot` by the learned request rate
    /// (`send --rate` is the pool's); `None` if it would start at or after `until`.
    pub(super) async fn pace(&self, slot: Slot, until: Instant) -> Option<Slot> {
        let learned = lock(&self.budget).interval(Instant::now());
        let Some(interval) = learned else { return Some(slot) };
        let start = {
            let mut next = lock(&self.next_start);
            let start = next.map_or(Instant::now(), |n| n.max(Instant::now()));
            *next = Some(start + interval);
            start
        };
        if start >= until {
            return None;
        }
        tokio::time::sleep_until(start.into()).await;
        Some(slot)
    }

    /// How much room this pacer has now, for the pool's choice (SPEC §17.3):
    /// paused or not, when its next paced start may be, and its free slots.
    pub(super) fn room(&self) -> Room {
        let now = Instant::now();
        let paused_until = self.pause_until();
        let next_start = lock(&self.next_start).filter(|n| *n > now).filter(|_| lock(&self.budget).interval(now).is_some());
        Room { paused_until, next_start, free: self.permits.available_permits() }
    }

    pub(super) async fn acquire_slot(self: &Arc<Self>, until: Instant) -> Option<Slot> {
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
        self.on_success_at(Instant::now(), latency, dop_hint);
    }

    /// A read went through: it counts against the request budget only.
    pub(super) fn on_read(&self) {
        lock(&self.budget).on_accepted(Instant::now());
    }

    fn on_success_at(&self, now: Instant, latency: Duration, dop_hint: Option<usize>) {
        lock(&self.budget).on_accepted(now);
        let mut state = lock(&self.state);
        let dop_hint = dop_hint.filter(|h| *h > 0).map(|h| h.min(self.ceiling));
        if dop_hint.is_some() {
            state.hint = dop_hint;
        }
        let held = self.held(&state);
        if let Some(learned) = state.learned.as_mut() {
            let hint_rose = dop_hint.is_some_and(|h| h > learned.cap && learned.last_hint.is_some_and(|last| h > last));
            if dop_hint.is_some() {
                learned.last_hint = dop_hint;
            }
            if now >= learned.probe_at && held > learned.cap {
                learned.above_cap += 1;
            }
            // A whole round above the cap went through: Dataverse allows more now.
            if hint_rose || learned.above_cap > learned.cap {
                tracing::debug!(message = "Learned concurrency cap released.", cap = learned.cap, by_hint = hint_rose);
                state.learned = None;
            }
        }
        let best = *state.best_latency.get_or_insert(latency);
        state.best_latency = Some(best.min(latency));
        let cap = self.cap_at(&state, now);
        // Grow (about +1 per round of calls) only while at the limit and latency is not rising.
        let at_limit = self.permits.available_permits() == 0;
        let holding = state.hold_growth_until.is_some_and(|t| now < t);
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
        let cap = self.cap_at(&state, now);
        self.rebalance(&mut state, cap);
    }

    /// A 429 (the caller's slot already released). Growth is held, since probing
    /// past an enforced limit costs a Retry-After pause. For the concurrency limit
    /// (`0x80072326`) the calls still in flight are what Dataverse admitted, so the
    /// limit falls to that level (and by at least one): a burst of 429s from an
    /// over-wide round lands on the real cap at once. For the request-rate and
    /// execution-time limits the environment-wide pause is the remedy; the
    /// concurrency is left as it is.
    ///
    /// The level a concurrency 429 lands on is Dataverse's cap for this user: it
    /// is kept for the learned-cap period (see [`LearnedCap`]).
    pub(super) fn on_throttled(&self, retry_after: Duration, concurrency_limit: bool) {
        self.on_throttled_at(Instant::now(), retry_after, concurrency_limit);
    }

    fn on_throttled_at(&self, now: Instant, retry_after: Duration, concurrency_limit: bool) {
        let mut state = lock(&self.state);
        state.hold_growth_until = Some(now + GROWTH_HOLD.max(retry_after.min(MAX_PAUSE)));
        if !concurrency_limit {
            return;
        }
        let held = self.held(&state);
        state.last_decrease = Some(now);
        state.limit = (state.limit - 1.0).min(held as f64).max(1.0);
        let cap = self.cap_at(&state, now);
        self.rebalance(&mut state, cap);
        if !self.learned_cap_period.is_zero() {
            let cap = state.granted;
            if state.learned.is_none_or(|l| l.cap != cap) {
                tracing::debug!(message = "Concurrency cap learned.", cap, keep_seconds = self.learned_cap_period.as_secs());
            }
            let last_hint = state.hint;
            state.learned = Some(LearnedCap { cap, probe_at: now + self.learned_cap_period, last_hint, above_cap: 0 });
        }
    }

    /// Calls in flight (slots held).
    fn held(&self, state: &PaceState) -> usize {
        (state.granted + state.owed).saturating_sub(self.permits.available_permits())
    }

    /// The highest limit allowed at `now`: the ceiling, the hint, and a learned
    /// cap (one above it once its period is over: the probe).
    fn cap_at(&self, state: &PaceState, now: Instant) -> usize {
        let mut cap = state.hint.map_or(self.ceiling, |h| h.min(self.ceiling));
        if let Some(learned) = state.learned {
            cap = cap.min(if now >= learned.probe_at { learned.cap + 1 } else { learned.cap });
        }
        cap.max(1)
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

/// A pacer's room at one moment (see [`Pacer::room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub paused_until: Option<Instant>,
    /// Set while a paced start is reserved ahead of now.
    pub next_start: Option<Instant>,
    pub free: usize,
}

impl Room {
    /// Orders pacers from the most room to the least: not paused first, then
    /// the soonest start, then the most free slots.
    pub fn rank(&self) -> (Option<Instant>, bool, Option<Instant>, std::cmp::Reverse<usize>) {
        (self.paused_until, self.free == 0, self.next_start, std::cmp::Reverse(self.free))
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
    fn throttled_responses_are_counted_by_code_until_taken() {
        let pacer = Pacer::new(4, 4);
        for code in ["0x80072322", "0x80072322", "0x80072326", "0x80072321", "0x9999"] {
            pacer.on_throttle_code(Some(code.to_string()), None);
        }
        pacer.on_throttle_code(None, None);
        assert_eq!(pacer.take_throttled_by_code(), [("0x80072322", 2), ("0x80072321", 1), ("0x80072326", 1), ("other", 2)]);
        assert!(pacer.take_throttled_by_code().iter().all(|(_, n)| *n == 0), "taken once");
    }

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

    /// `calls` successes of a steady stream at the limit (every slot busy, each
    /// freed slot taken again), as Dataverse would answer them at `now`.
    async fn steady(pacer: &Arc<Pacer>, now: Instant, calls: usize, hint: Option<usize>) {
        let until = Instant::now() + Duration::from_secs(5);
        let mut slots = Vec::new();
        for _ in 0..calls {
            while pacer.permits.available_permits() > 0 {
                slots.push(pacer.acquire(until).await.unwrap());
            }
            pacer.on_success_at(now, Duration::from_millis(50), hint);
            slots.pop();
        }
    }

    /// The limit is full and Dataverse, whose cap is `cap`, refuses the calls above it.
    async fn refused_above(pacer: &Arc<Pacer>, now: Instant, cap: usize) {
        let until = Instant::now() + Duration::from_secs(5);
        let mut slots = Vec::new();
        while pacer.permits.available_permits() > 0 {
            slots.push(pacer.acquire(until).await.unwrap());
        }
        while slots.len() > cap {
            drop(slots.pop());
            pacer.on_throttled_at(now, Duration::from_secs(1), true);
        }
    }

    const PERIOD: Duration = Duration::from_secs(300);

    fn after(t0: Instant, seconds: u64) -> Instant {
        t0 + Duration::from_secs(seconds)
    }

    #[tokio::test]
    async fn a_learned_cap_is_held_for_its_period_then_probed_once() {
        let pacer = Arc::new(Pacer::new(32, 32).with_learned_cap_period(PERIOD));
        let t0 = Instant::now();
        refused_above(&pacer, t0, 16).await;
        assert_eq!((pacer.limit(), pacer.learned_cap()), (16, Some(16)));
        // Long after the growth hold, steady latency at the limit: no growth past the cap.
        steady(&pacer, after(t0, 10), 2_000, None).await;
        steady(&pacer, after(t0, 299), 2_000, None).await;
        assert_eq!(pacer.limit(), 16);
        // The period is over: one step above it (a round at 17 would release the cap).
        steady(&pacer, after(t0, 300), 20, None).await;
        assert_eq!((pacer.limit(), pacer.learned_cap()), (17, Some(16)), "the probe");
        // Refused: learned again, for another period from now.
        refused_above(&pacer, after(t0, 301), 16).await;
        assert_eq!((pacer.limit(), pacer.learned_cap()), (16, Some(16)));
        steady(&pacer, after(t0, 600), 2_000, None).await;
        assert_eq!(pacer.limit(), 16, "no second probe within the period");
        steady(&pacer, after(t0, 601), 20, None).await;
        assert_eq!(pacer.limit(), 17, "the next period's probe");
    }

    #[tokio::test]
    async fn without_a_learned_cap_the_limit_probes_past_it_after_the_hold() {
        // D365_LEARNED_CAP_SECONDS=0: the behaviour before the learned cap.
        let pacer = Arc::new(Pacer::new(32, 32).with_learned_cap_period(Duration::ZERO));
        let t0 = Instant::now();
        refused_above(&pacer, t0, 16).await;
        assert_eq!((pacer.limit(), pacer.learned_cap()), (16, None));
        steady(&pacer, after(t0, 10), 2_000, None).await;
        assert!(pacer.limit() > 16, "grew to {}", pacer.limit());
    }

    #[tokio::test]
    async fn a_successful_probe_releases_the_cap() {
        let pacer = Arc::new(Pacer::new(32, 32).with_learned_cap_period(PERIOD));
        let t0 = Instant::now();
        refused_above(&pacer, t0, 16).await;
        steady(&pacer, after(t0, 300), 20, None).await;
        assert_eq!((pacer.limit(), pacer.learned_cap()), (17, Some(16)));
        // Dataverse admitted 17 at once for a whole round: the cap is gone and growth resumes.
        steady(&pacer, after(t0, 301), 17, None).await;
        assert_eq!(pacer.learned_cap(), None);
        steady(&pacer, after(t0, 302), 2_000, None).await;
        assert!(pacer.limit() > 17, "grew to {}", pacer.limit());
    }

    #[tokio::test]
    async fn a_rising_hint_releases_the_cap_and_a_steady_one_does_not() {
        let pacer = Arc::new(Pacer::new(32, 64).with_learned_cap_period(PERIOD));
        let t0 = Instant::now();
        steady(&pacer, t0, 1, Some(40)).await;
        refused_above(&pacer, t0, 16).await;
        assert_eq!(pacer.learned_cap(), Some(16));
        // Dataverse keeps recommending 40, as it did when it refused the 17th call: no news.
        steady(&pacer, after(t0, 10), 2_000, Some(40)).await;
        assert_eq!((pacer.limit(), pacer.learned_cap()), (16, Some(16)));
        // It now recommends more: the cap is released, the limit grows toward the hint.
        steady(&pacer, after(t0, 11), 1, Some(48)).await;
        assert_eq!(pacer.learned_cap(), None);
        steady(&pacer, after(t0, 12), 2_000, Some(48)).await;
        assert!(pacer.limit() > 16 && pacer.limit() <= 48, "grew to {}", pacer.limit());
    }

    #[tokio::test]
    async fn a_hint_first_seen_after_the_cap_is_a_baseline_not_news() {
        // A cold environment: the 429s arrive before any answer with a hint.
        let pacer = Arc::new(Pacer::new(32, 64).with_learned_cap_period(PERIOD));
        let t0 = Instant::now();
        refused_above(&pacer, t0, 16).await;
        steady(&pacer, after(t0, 10), 2_000, Some(52)).await;
        assert_eq!((pacer.limit(), pacer.learned_cap()), (16, Some(16)));
    }

    #[tokio::test]
    async fn request_rate_and_execution_time_429s_learn_no_cap() {
        let pacer = Arc::new(Pacer::new(32, 32).with_learned_cap_period(PERIOD));
        let t0 = Instant::now();
        pacer.on_throttled_at(t0, Duration::from_secs(1), false);
        assert_eq!((pacer.limit(), pacer.learned_cap()), (32, None));
        let pacer = Arc::new(Pacer::new(8, 32).with_learned_cap_period(PERIOD));
        pacer.on_throttled_at(t0, Duration::from_secs(1), false);
        steady(&pacer, after(t0, 10), 2_000, None).await;
        assert!(pacer.limit() > 8, "grows after the hold as before: {}", pacer.limit());
    }

    #[tokio::test]
    async fn backpressure_under_a_learned_cap_grows_back_to_it_only() {
        let pacer = Arc::new(Pacer::new(32, 32).with_learned_cap_period(PERIOD));
        // Long enough ago that the 5xx below is a new round trip.
        let t0 = Instant::now() - Duration::from_secs(1);
        refused_above(&pacer, t0, 16).await;
        pacer.on_backpressure();
        assert_eq!(pacer.limit(), 14);
        steady(&pacer, after(t0, 10), 2_000, None).await;
        assert_eq!(pacer.limit(), 16);
    }

    #[tokio::test]
    async fn stopping_wakes_every_waiter_and_refuses_new_starts() {
        let pacer = Arc::new(Pacer::new(1, 1));
        let until = Instant::now() + Duration::from_secs(60);
        let held = pacer.acquire(until).await.expect("the one slot");
        let waiter = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.acquire(until).await.is_some() }
        });
        pacer.pause(Duration::from_secs(60));
        let paused = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.acquire(until).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        pacer.stop();
        assert!(!waiter.await.unwrap() && !paused.await.unwrap());
        assert!(started.elapsed() < Duration::from_millis(500));
        drop(held);
        assert!(pacer.acquire(until).await.is_none() && pacer.is_stopped());
    }
}
