//! Delivery (SPEC §6–7): runs trigger calls concurrently within an adaptive
//! limit, retries what may pass, honours Retry-After for the whole execution
//! environment, keeps FIFO order per message group, and finishes before the
//! invocation's deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::dynamics::DynamicsPort;
use crate::idempotency::{Claim, Idempotency};
use crate::mapping::TriggerCall;
use crate::outcome::{DeliveryError, Outcome};

/// At most this many attempts for 5xx, timeouts and connection errors (SPEC §7).
pub const MAX_TRANSIENT_ATTEMPTS: u32 = 4;
/// At most this many attempts of one record answered 429.
pub const MAX_THROTTLED_ATTEMPTS: u32 = 8;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// The longest pause a Retry-After can impose (upstream numbers are untrusted).
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// A std mutex whose poisoning is harmless: the state behind it stays consistent
/// (every update is a few assignments), so a panic elsewhere must not fail every
/// later invocation of the execution environment.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// When to stop starting calls, when every call must be done, and when the
/// bookkeeping after them (the idempotency writes) must be done.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub start_cutoff: Instant,
    pub hard_cutoff: Instant,
    pub settle_cutoff: Instant,
}

impl Budget {
    /// Leaves a reserve before `deadline` (a tenth of the time left, 200 ms to 1 s)
    /// for the bookkeeping and the answer, and as much again in which no new call
    /// is started; half the reserve is the bookkeeping's.
    pub fn until(deadline: Instant) -> Budget {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let reserve = (left / 10).clamp(Duration::from_millis(200), Duration::from_secs(1));
        let hard_cutoff = deadline.checked_sub(reserve).filter(|t| *t > now).unwrap_or(now);
        let start_cutoff = hard_cutoff.checked_sub(reserve).filter(|t| *t > now).unwrap_or(now);
        let settle_cutoff = (hard_cutoff + reserve / 2).min(deadline).max(hard_cutoff);
        Budget { start_cutoff, hard_cutoff, settle_cutoff }
    }
}

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

    fn on_success(&self, latency: Duration, dop_hint: Option<usize>) {
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
    fn on_backpressure(&self) {
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
    fn on_throttled(&self, retry_after: Duration, concurrency_limit: bool) {
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

/// One record for delivery: a call to make, or an outcome already decided.
pub struct Job {
    pub index: usize,
    /// FIFO message group.
    pub group: Option<String>,
    /// Idempotency key (SPEC §11).
    pub key: Option<String>,
    pub work: Work,
}

pub enum Work {
    Send(TriggerCall),
    Done(Outcome),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    pub attempts: u32,
    /// Attempts answered 429.
    pub throttled: u32,
    /// From the first attempt to the 2xx (delivered records).
    pub latency: Option<Duration>,
}

impl Report {
    fn done(outcome: Outcome) -> Report {
        Report { outcome, attempts: 0, throttled: 0, latency: None }
    }

    fn after(outcome: Outcome, attempts: u32, throttled: u32) -> Report {
        Report { outcome, attempts, throttled, latency: None }
    }
}

/// A record's turn among the records of the same idempotency key in one batch
/// (SPEC §11): it waits for the previous one to finish (delivered, so this one
/// is a duplicate, or failed and released, so this one is attempted), and lets
/// the next one go when it is dropped.
#[derive(Default)]
struct Turn {
    after: Option<oneshot::Receiver<()>>,
    _done: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Whether the previous record of the key finished before `until`.
    async fn wait(&mut self, until: Instant) -> bool {
        match self.after.take() {
            // The sender is dropped when the previous record is done (or its task ended).
            Some(after) => tokio::time::timeout_at(until.into(), after).await.is_ok(),
            None => true,
        }
    }
}

/// One turn per job, chained per idempotency key in job order.
fn turns(jobs: &[Job]) -> Vec<Turn> {
    let mut last: HashMap<&str, oneshot::Receiver<()>> = HashMap::new();
    jobs.iter()
        .map(|job| match (&job.key, &job.work) {
            (Some(key), Work::Send(_)) => {
                let (done, next) = oneshot::channel();
                Turn { after: last.insert(key.as_str(), next), _done: Some(done) }
            }
            _ => Turn::default(),
        })
        .collect()
}

/// Delivers every job; the reports come back in job order, one per job.
pub async fn deliver<P: DynamicsPort>(
    port: Arc<P>,
    pacer: Arc<Pacer>,
    idempotency: Arc<Idempotency>,
    jobs: Vec<Job>,
    fifo: bool,
    budget: Budget,
) -> Vec<Report> {
    let count = jobs.len();
    let slots: Arc<Mutex<Vec<Option<Report>>>> = Arc::new(Mutex::new(vec![None; count]));
    let positions: HashMap<usize, usize> = jobs.iter().enumerate().map(|(pos, j)| (j.index, pos)).collect();
    let turns = turns(&jobs);

    // Standard queues: every job on its own. FIFO: one sequence per message group.
    let mut sequences: BTreeMap<String, Vec<(Job, Turn)>> = BTreeMap::new();
    let mut singles = Vec::new();
    for (job, turn) in jobs.into_iter().zip(turns) {
        if fifo {
            sequences.entry(job.group.clone().unwrap_or_default()).or_default().push((job, turn));
        } else {
            singles.push(vec![(job, turn)]);
        }
    }
    let runs: Vec<Vec<(Job, Turn)>> = singles.into_iter().chain(sequences.into_values()).collect();

    let mut tasks = JoinSet::new();
    let mut task_positions: HashMap<tokio::task::Id, (Vec<usize>, Option<String>)> = HashMap::new();
    for run in runs {
        // Decided jobs outside FIFO need no task.
        if !fifo && matches!(run[0].0.work, Work::Done(_)) {
            let (job, _) = run.into_iter().next().expect("one job");
            let Work::Done(outcome) = job.work else { unreachable!() };
            lock(&slots)[positions[&job.index]] = Some(Report::done(outcome));
            continue;
        }
        let run_positions: Vec<usize> = run.iter().map(|(j, _)| positions[&j.index]).collect();
        let group = run[0].0.group.clone();
        let (port, pacer, idempotency, slots) = (port.clone(), pacer.clone(), idempotency.clone(), slots.clone());
        let positions = run_positions.clone();
        let handle = tasks.spawn(async move {
            let mut blocked_by: Option<String> = None;
            for ((job, mut turn), position) in run.into_iter().zip(positions) {
                let mut claimed = None;
                let report = match (&blocked_by, job.work) {
                    (Some(group), _) => Report::done(Outcome::Failed(DeliveryError::GroupBlocked { group: group.clone() })),
                    (None, Work::Done(outcome)) => Report::done(outcome),
                    (None, Work::Send(_)) if !turn.wait(budget.start_cutoff).await => Report::done(Outcome::Failed(DeliveryError::Deadline)),
                    (None, Work::Send(call)) => match claim(&idempotency, job.key.as_deref(), budget).await {
                        Err(report) => report,
                        Ok(key) => {
                            claimed = key;
                            deliver_one(&*port, &pacer, &call, budget).await
                        }
                    },
                };
                if fifo && !report.outcome.is_success() {
                    blocked_by = Some(job.group.clone().unwrap_or_default());
                }
                let delivered = report.outcome == Outcome::Delivered;
                // The answer is known before the bookkeeping: a slow write cannot turn a delivery into a failure.
                lock(&slots)[position] = Some(report);
                if let Some(key) = claimed {
                    settle(&idempotency, &key, delivered, budget).await;
                }
                drop(turn);
            }
        });
        task_positions.insert(handle.id(), (run_positions, group));
    }

    // Every attempt ends by the hard cut-off and its bookkeeping by the settle
    // cut-off; the margin covers scheduling only.
    let collect = async {
        while let Some(joined) = tasks.join_next_with_id().await {
            if let Err(error) = joined {
                if error.is_panic() {
                    let mut slots = lock(&slots);
                    let Some((run, group)) = task_positions.get(&error.id()) else { continue };
                    let mut panicked = false;
                    for &position in run {
                        if slots[position].is_some() {
                            continue;
                        }
                        if !panicked {
                            tracing::error!(message = "A record's work panicked; it is reported failed.", index = position);
                            slots[position] = Some(Report::done(Outcome::Failed(DeliveryError::Internal("the record's work panicked".into()))));
                            panicked = true;
                        } else {
                            // Later records of a FIFO group do not run past it.
                            slots[position] = Some(Report::done(Outcome::Failed(DeliveryError::GroupBlocked { group: group.clone().unwrap_or_default() })));
                        }
                    }
                }
            }
        }
    };
    if tokio::time::timeout_at((budget.settle_cutoff + Duration::from_millis(25)).into(), collect).await.is_err() {
        tasks.abort_all();
    }
    let slots = std::mem::take(&mut *lock(&slots));
    slots
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| Report::done(Outcome::Failed(DeliveryError::Deadline))))
        .collect()
}

/// Claims the record's idempotency key (SPEC §11): `Ok(Some(key))` to go ahead
/// and settle the key afterwards, `Ok(None)` without a key, `Err` with the
/// record's report when it must not be sent.
async fn claim(idempotency: &Idempotency, key: Option<&str>, budget: Budget) -> Result<Option<String>, Report> {
    let Some(key) = key else { return Ok(None) };
    match idempotency.claim_within(key, budget.hard_cutoff, budget.start_cutoff).await {
        Claim::Done => Err(Report::done(Outcome::Duplicate)),
        Claim::InProgress => Err(Report::done(Outcome::Failed(DeliveryError::Transient {
            status: None,
            code: None,
            detail: "the same event is being delivered by another invocation".into(),
        }))),
        Claim::Unavailable(error) => Err(Report::done(Outcome::Failed(error))),
        Claim::Claimed => Ok(Some(key.to_string())),
    }
}

/// Marks the key done after a delivery, else releases it; bounded by the settle cut-off.
async fn settle(idempotency: &Idempotency, key: &str, delivered: bool, budget: Budget) {
    if delivered {
        idempotency.complete_until(key, budget.settle_cutoff).await;
    } else {
        idempotency.release_until(key, budget.settle_cutoff).await;
    }
}

/// One record, with the retries of SPEC §7.
async fn deliver_one<P: DynamicsPort>(port: &P, pacer: &Arc<Pacer>, call: &TriggerCall, budget: Budget) -> Report {
    let mut attempts = 0;
    let mut transient = 0;
    let mut throttled = 0;
    let mut last: Option<DeliveryError> = None;
    let first = Instant::now();
    loop {
        let Some(slot) = pacer.acquire(budget.start_cutoff).await else {
            return Report::after(Outcome::Failed(last.unwrap_or(DeliveryError::Deadline)), attempts, throttled);
        };
        attempts += 1;
        let started = Instant::now();
        let result = port.send(call, budget.hard_cutoff).await;
        let error = match result {
            Ok(sent) => {
                pacer.on_success(started.elapsed(), sent.dop_hint);
                return Report { outcome: Outcome::Delivered, attempts, throttled, latency: Some(first.elapsed()) };
            }
            Err(error) => error,
        };
        drop(slot);
        match &error {
            DeliveryError::Throttled { retry_after, code } => {
                let wait = retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_PAUSE);
                pacer.on_throttled(wait, code.as_deref() == Some(CONCURRENCY_LIMIT_CODE));
                pacer.pause(wait);
                throttled += 1;
                if throttled >= MAX_THROTTLED_ATTEMPTS || Instant::now() + wait >= budget.start_cutoff {
                    return Report::after(Outcome::Failed(error), attempts, throttled);
                }
            }
            DeliveryError::Transient { status, .. } => {
                if matches!(status, None | Some(503) | Some(408)) {
                    pacer.on_backpressure();
                }
                transient += 1;
                if transient >= MAX_TRANSIENT_ATTEMPTS {
                    return Report::after(Outcome::Failed(error), attempts, throttled);
                }
                let wait = backoff(transient);
                if Instant::now() + wait >= budget.start_cutoff {
                    return Report::after(Outcome::Failed(error), attempts, throttled);
                }
                tokio::time::sleep(wait).await;
            }
            _ => return Report::after(Outcome::from_error(error), attempts, throttled),
        }
        last = Some(error);
    }
}

/// Exponential backoff with full jitter: a random wait up to base × 2^(n−1), capped.
fn backoff(retry: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << (retry - 1).min(10)).min(BACKOFF_CAP);
    let low = ceiling / 4;
    low + Duration::from_millis(fastrand::u64(0..=(ceiling - low).as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics::Sent;
    use serde_json::Map;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A Dynamics port answering from a script, tracking concurrency.
    struct Scripted {
        answers: Mutex<HashMap<String, Vec<Result<Sent, DeliveryError>>>>,
        calls: Mutex<Vec<String>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        latency: Duration,
    }

    impl Scripted {
        fn new(latency_ms: u64) -> Arc<Scripted> {
            Arc::new(Scripted {
                answers: Mutex::new(HashMap::new()),
                calls: Mutex::new(Vec::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                latency: Duration::from_millis(latency_ms),
            })
        }
        fn script(&self, trigger: &str, answers: Vec<Result<Sent, DeliveryError>>) {
            self.answers.lock().unwrap().insert(trigger.into(), answers);
        }
    }

    impl DynamicsPort for Scripted {
        async fn send(&self, call: &TriggerCall, _deadline: Instant) -> Result<Sent, DeliveryError> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            self.calls.lock().unwrap().push(call.trigger.clone());
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if call.trigger == "panic" {
                panic!("boom");
            }
            let mut answers = self.answers.lock().unwrap();
            match answers.get_mut(&call.trigger) {
                Some(list) if !list.is_empty() => list.remove(0),
                _ => Ok(Sent::default()),
            }
        }
    }

    fn job(index: usize, trigger: &str, group: Option<&str>) -> Job {
        Job { index, group: group.map(str::to_string), key: None, work: Work::Send(TriggerCall { trigger: trigger.into(), body: Map::new() }) }
    }

    fn budget(secs: u64) -> Budget {
        Budget::until(Instant::now() + Duration::from_secs(secs))
    }

    async fn run(port: &Arc<Scripted>, pacer: Pacer, jobs: Vec<Job>, fifo: bool, budget: Budget) -> Vec<Report> {
        deliver(port.clone(), Arc::new(pacer), Arc::new(Idempotency::in_memory()), jobs, fifo, budget).await
    }

    fn transient() -> DeliveryError {
        DeliveryError::Transient { status: Some(503), code: None, detail: "503".into() }
    }

    #[tokio::test]
    async fn concurrency_never_exceeds_the_ceiling() {
        let port = Scripted::new(20);
        let jobs = (0..40).map(|i| job(i, "t", None)).collect();
        let reports = run(&port, Pacer::new(8, 8), jobs, false, budget(10)).await;
        assert!(reports.iter().all(|r| r.outcome == Outcome::Delivered));
        assert_eq!(port.max_in_flight.load(Ordering::SeqCst), 8);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_at_most_four_times() {
        let port = Scripted::new(1);
        port.script("flaky", vec![Err(transient()), Err(transient()), Ok(Sent::default())]);
        port.script("down", vec![Err(transient()); 10]);
        let reports = run(&port, Pacer::new(4, 4), vec![job(0, "flaky", None), job(1, "down", None)], false, budget(30)).await;
        assert_eq!((reports[0].outcome.clone(), reports[0].attempts), (Outcome::Delivered, 3));
        assert_eq!(reports[1], Report::after(Outcome::Failed(transient()), 4, 0));
    }

    #[tokio::test]
    async fn rejections_are_not_retried() {
        let port = Scripted::new(1);
        let rejected = DeliveryError::Rejected { status: 404, code: Some("0x8006088a".into()), message: "nope".into() };
        port.script("gone", vec![Err(rejected.clone())]);
        let reports = run(&port, Pacer::new(4, 4), vec![job(0, "gone", None)], false, budget(10)).await;
        assert_eq!(reports[0], Report::after(Outcome::Rejected(rejected), 1, 0));
    }

    #[tokio::test]
    async fn retry_after_is_honoured_when_it_fits_and_reported_when_not() {
        let port = Scripted::new(1);
        let throttled = |s| Err(DeliveryError::Throttled { retry_after: Some(Duration::from_secs(s)), code: None });
        port.script("short", vec![throttled(1), Ok(Sent::default())]);
        let started = Instant::now();
        let reports = run(&port, Pacer::new(4, 4), vec![job(0, "short", None)], false, budget(10)).await;
        assert_eq!(reports[0].outcome, Outcome::Delivered);
        assert!(started.elapsed() >= Duration::from_secs(1), "waited for Retry-After");

        port.script("long", vec![throttled(60)]);
        let started = Instant::now();
        let reports = run(&port, Pacer::new(4, 4), vec![job(0, "long", None)], false, budget(5)).await;
        assert!(matches!(reports[0].outcome, Outcome::Failed(DeliveryError::Throttled { .. })));
        assert!(started.elapsed() < Duration::from_secs(1), "did not wait for a pause past the deadline");
    }

    #[tokio::test]
    async fn fifo_stops_a_group_at_its_first_failure_and_other_groups_go_on() {
        let port = Scripted::new(1);
        let rejected = DeliveryError::Rejected { status: 400, code: None, message: "bad".into() };
        port.script("a-bad", vec![Err(rejected.clone())]);
        let jobs = vec![
            job(0, "a-ok", Some("a")),
            job(1, "a-bad", Some("a")),
            job(2, "a-later", Some("a")),
            job(3, "b-ok", Some("b")),
            Job { index: 4, group: Some("b".into()), key: None, work: Work::Done(Outcome::Invalid { reason: "x".into() }) },
            job(5, "b-later", Some("b")),
            job(6, "c-ok", Some("c")),
        ];
        let reports = run(&port, Pacer::new(4, 4), jobs, true, budget(10)).await;
        let names: Vec<&str> = reports.iter().map(|r| r.outcome.name()).collect();
        assert_eq!(names, ["delivered", "rejected", "failed", "delivered", "invalid", "failed", "delivered"]);
        assert_eq!(reports[2].outcome, Outcome::Failed(DeliveryError::GroupBlocked { group: "a".into() }));
        let calls = port.calls.lock().unwrap().clone();
        assert!(!calls.contains(&"a-later".to_string()) && !calls.contains(&"b-later".to_string()));
    }

    #[tokio::test]
    async fn records_not_done_by_the_deadline_are_reported_failed() {
        let port = Scripted::new(400);
        let jobs = (0..10).map(|i| job(i, "t", None)).collect();
        let started = Instant::now();
        let reports = run(&port, Pacer::new(1, 1), jobs, false, Budget::until(Instant::now() + Duration::from_millis(1500))).await;
        assert!(started.elapsed() < Duration::from_millis(1500), "answered before the deadline");
        let delivered = reports.iter().filter(|r| r.outcome == Outcome::Delivered).count();
        assert!((1..10).contains(&delivered), "{delivered}");
        assert!(reports.iter().filter(|r| r.outcome != Outcome::Delivered).all(|r| r.outcome == Outcome::Failed(DeliveryError::Deadline)));
    }

    #[tokio::test]
    async fn a_panic_fails_only_its_record() {
        let port = Scripted::new(1);
        let reports = run(&port, Pacer::new(4, 4), vec![job(0, "ok", None), job(1, "panic", None), job(2, "ok", None)], false, budget(10)).await;
        assert_eq!(reports[0].outcome, Outcome::Delivered);
        assert!(matches!(reports[1].outcome, Outcome::Failed(DeliveryError::Internal(_))));
        assert_eq!(reports[2].outcome, Outcome::Delivered);
    }

    #[tokio::test]
    async fn after_a_panic_the_rest_of_its_fifo_group_is_blocked() {
        let port = Scripted::new(1);
        let jobs = vec![job(0, "a-ok", Some("a")), job(1, "panic", Some("a")), job(2, "a-later", Some("a")), job(3, "a-last", Some("a")), job(4, "b-ok", Some("b"))];
        let reports = run(&port, Pacer::new(4, 4), jobs, true, budget(10)).await;
        assert_eq!(reports[0].outcome, Outcome::Delivered);
        assert!(matches!(reports[1].outcome, Outcome::Failed(DeliveryError::Internal(_))));
        assert_eq!(reports[2].outcome, Outcome::Failed(DeliveryError::GroupBlocked { group: "a".into() }));
        assert_eq!(reports[3].outcome, Outcome::Failed(DeliveryError::GroupBlocked { group: "a".into() }));
        assert_eq!(reports[4].outcome, Outcome::Delivered);
    }

    #[tokio::test]
    async fn a_key_twice_in_one_batch_waits_for_the_first() {
        let port = Scripted::new(5);
        let keyed = |index: usize, trigger: &str, key: &str| Job { key: Some(key.into()), ..job(index, trigger, None) };
        port.script("fails", vec![Err(DeliveryError::Rejected { status: 400, code: None, message: "bad".into() })]);
        let jobs = vec![keyed(0, "ok", "k1"), keyed(1, "ok", "k1"), keyed(2, "fails", "k2"), keyed(3, "fails", "k2"), keyed(4, "ok", "k1")];
        let reports = run(&port, Pacer::new(8, 8), jobs, false, budget(10)).await;
        let names: Vec<&str> = reports.iter().map(|r| r.outcome.name()).collect();
        assert_eq!(names, ["delivered", "duplicate", "rejected", "delivered", "duplicate"]);
    }

    #[tokio::test]
    async fn an_absurd_retry_after_does_not_poison_the_pacer() {
        let port = Scripted::new(1);
        port.script("t", vec![Err(DeliveryError::Throttled { retry_after: Some(Duration::from_secs(u64::MAX)), code: Some(CONCURRENCY_LIMIT_CODE.into()) })]);
        let pacer = Arc::new(Pacer::new(4, 4));
        let reports = deliver(port.clone(), pacer.clone(), Arc::new(Idempotency::in_memory()), vec![job(0, "t", None)], false, budget(5)).await;
        assert!(matches!(reports[0].outcome, Outcome::Failed(DeliveryError::Throttled { .. })), "{:?}", reports[0]);
        assert!(pacer.limit() >= 1);
        pacer.pause(Duration::from_secs(u64::MAX));
        pacer.on_throttled(Duration::MAX, true);
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

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(200));
            assert!(backoff(9) <= BACKOFF_CAP);
        }
    }
}
