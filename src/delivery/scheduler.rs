//! Scheduling (SPEC §6, §11): FIFO runs per message group, the idempotency
//! claim and its settling, records of the same key in turn, and the budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::actions::{settle, Tagging};
use super::pool::Pool;
use super::port::DynamicsPort;
use super::retry::DeliveryReport;
use crate::deadline::Cutoffs;
use crate::idempotency::Idempotency;
use crate::lock;
use crate::outcome::{DeliveryError, Outcome};
use crate::plan::ActionPlan;

/// How the records of a batch are ordered (SPEC §6, §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Standard queues, webhooks, direct invocations, `send`: every record on its own.
    Any,
    /// FIFO: the records of a message group in turn, a failure blocking the
    /// rest of its group — but for an `invalid` or `rejected` record when the
    /// relay parks those in the DLQ (`parks`): it leaves the queue, so the
    /// group goes on.
    Fifo { parks: bool },
}

impl Order {
    pub fn fifo(self) -> bool {
        matches!(self, Order::Fifo { .. })
    }

    /// Whether `outcome` blocks the rest of its message group.
    fn blocks(self, outcome: &Outcome) -> bool {
        match self {
            Order::Any => false,
            Order::Fifo { parks } => {
                let parked = parks && matches!(outcome, Outcome::Invalid { .. } | Outcome::Rejected(_));
                !outcome.is_success() && !parked
            }
        }
    }
}

/// One record for delivery: its plan of actions, or an outcome already decided.
pub struct Job {
    pub index: usize,
    /// FIFO message group.
    pub group: Option<String>,
    /// The event's idempotency key (SPEC §11); each action's key derives from it.
    pub key: Option<String>,
    pub work: Work,
}

pub enum Work {
    /// The record's actions, in order: a profile update, rows, a trigger (SPEC §11, §14, §19).
    Actions(Box<ActionPlan>),
    Done(Outcome),
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
            (Some(key), Work::Actions(_)) => {
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
    pool: Arc<Pool>,
    idempotency: Arc<Idempotency>,
    jobs: Vec<Job>,
    order: Order,
    budget: Cutoffs,
    tagging: Tagging,
) -> Vec<DeliveryReport> {
    let fifo = order.fifo();
    let count = jobs.len();
    let slots: Arc<Mutex<Vec<Option<DeliveryReport>>>> = Arc::new(Mutex::new(vec![None; count]));
    let positions: HashMap<usize, usize> = jobs.iter().enumerate().map(|(pos, j)| (j.index, pos)).collect();
    let turns = turns(&jobs);

    // Standard queues: every job on its own (decided ones need no task). FIFO: one sequence per message group.
    let mut sequences: BTreeMap<String, Vec<(Job, Turn)>> = BTreeMap::new();
    let mut singles = Vec::new();
    for (job, turn) in jobs.into_iter().zip(turns) {
        if fifo {
            sequences.entry(job.group.clone().unwrap_or_default()).or_default().push((job, turn));
        } else if let Work::Done(outcome) = job.work {
            lock(&slots)[positions[&job.index]] = Some(DeliveryReport::done(outcome));
        } else {
            singles.push(vec![(job, turn)]);
        }
    }
    let mut runs = singles.into_iter().chain(sequences.into_values());
    // At most `window` runs in flight, started in job order as earlier ones end:
    // a batch holds O(concurrency) tasks, not one per record. Twice the
    // concurrency ceiling keeps the pacer fed while some records wait for a
    // retry, a claim or their key's turn. A record waits only for an earlier
    // record of its key, which is started before it, so the window cannot
    // stall a turn. FIFO runs all start at once: a key's turn may cross groups.
    let window = if fifo { usize::MAX } else { pool.ceiling().saturating_mul(2).max(1) };

    let mut tasks = JoinSet::new();
    let mut task_positions: HashMap<tokio::task::Id, (Vec<usize>, Option<String>)> = HashMap::new();
    let start = |run: Vec<(Job, Turn)>, tasks: &mut JoinSet<()>, task_positions: &mut HashMap<tokio::task::Id, (Vec<usize>, Option<String>)>| {
        let run_positions: Vec<usize> = run.iter().map(|(j, _)| positions[&j.index]).collect();
        let group = run[0].0.group.clone();
        let (port, pool, idempotency, slots, tagging) = (port.clone(), pool.clone(), idempotency.clone(), slots.clone(), tagging.clone());
        let positions = run_positions.clone();
        let handle = tasks.spawn(async move {
            let mut blocked_by: Option<String> = None;
            for ((job, mut turn), position) in run.into_iter().zip(positions) {
                let mut claimed = Vec::new();
                let report = match (&blocked_by, job.work) {
                    (Some(group), _) => DeliveryReport::done(Outcome::Failed(DeliveryError::GroupBlocked { group: group.clone() })),
                    (None, Work::Done(outcome)) => DeliveryReport::done(outcome),
                    (None, Work::Actions(_)) if !turn.wait(budget.start_cutoff).await => DeliveryReport::done(Outcome::Failed(DeliveryError::Deadline)),
                    // Each action claims its own key (SPEC §11, §19); they are settled below.
                    (None, Work::Actions(plan)) => {
                        let (report, keys) = super::actions::deliver_plan(&*port, &pool, &idempotency, &plan, job.key.as_deref(), budget, &tagging).await;
                        claimed = keys;
                        report
                    }
                };
                if order.blocks(&report.outcome) {
                    blocked_by = Some(job.group.clone().unwrap_or_default());
                }
                // The answer is known before the bookkeeping: a slow write cannot turn a delivery into a failure.
                lock(&slots)[position] = Some(report);
                for (key, delivered) in claimed {
                    settle(&idempotency, &key, delivered, budget).await;
                }
                drop(turn);
            }
        });
        task_positions.insert(handle.id(), (run_positions, group));
    };

    // Every attempt ends by the hard cut-off and its bookkeeping by the settle
    // cut-off; the margin covers scheduling only. Runs started after the start
    // cut-off end at once (as not started in time).
    let collect = async {
        loop {
            while tasks.len() < window {
                let Some(run) = runs.next() else { break };
                start(run, &mut tasks, &mut task_positions);
            }
            let Some(joined) = tasks.join_next_with_id().await else { break };
            let (id, panicked) = match &joined {
                Ok((id, ())) => (*id, false),
                Err(error) => (error.id(), error.is_panic()),
            };
            let run = task_positions.remove(&id);
            let Some((run, group)) = run.filter(|_| panicked) else { continue };
            let mut slots = lock(&slots);
            let mut reported = false;
            for position in run {
                if slots[position].is_some() {
                    continue;
                }
                if !reported {
                    tracing::error!(message = "A record's work panicked; it is reported failed.", index = position);
                    slots[position] = Some(DeliveryReport::done(Outcome::Failed(DeliveryError::Internal("the record's work panicked".into()))));
                    reported = true;
                } else {
                    // Later records of a FIFO group do not run past it.
                    slots[position] = Some(DeliveryReport::done(Outcome::Failed(DeliveryError::GroupBlocked { group: group.clone().unwrap_or_default() })));
                }
            }
        }
    };
    if tokio::time::timeout_at((budget.settle_cutoff + Duration::from_millis(25)).into(), collect).await.is_err() {
        tasks.abort_all();
    }
    let slots = std::mem::take(&mut *lock(&slots));
    slots.into_iter().map(|slot| slot.unwrap_or_else(|| DeliveryReport::done(Outcome::Failed(DeliveryError::Deadline)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::pacer::Pacer;
    use crate::delivery::port::Principal;
    use crate::delivery::port::{Request, Sent};
    use crate::delivery::retry_class::CONCURRENCY_LIMIT_CODE;
    use crate::plan::TriggerCall;
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
        async fn execute(&self, request: Request<'_>, _principal: &Principal, _deadline: Instant) -> Result<Sent, DeliveryError> {
            let Request::Trigger(call) = request else { unreachable!("these tests raise triggers only") };
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
        Job {
            index,
            group: group.map(str::to_string),
            key: None,
            work: Work::Actions(Box::new(ActionPlan::raise(TriggerCall { trigger: trigger.into(), body: Map::new() }))),
        }
    }

    fn budget(secs: u64) -> Cutoffs {
        Cutoffs::until(Instant::now() + Duration::from_secs(secs))
    }

    async fn run(port: &Arc<Scripted>, pacer: Pacer, jobs: Vec<Job>, fifo: bool, budget: Cutoffs) -> Vec<DeliveryReport> {
        let order = if fifo { Order::Fifo { parks: false } } else { Order::Any };
        deliver(port.clone(), Arc::new(Pool::of(pacer)), Arc::new(Idempotency::in_memory()), jobs, order, budget, Tagging::traced()).await
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
        assert_eq!(reports[1], DeliveryReport::after(Outcome::Failed(transient()), 4, 0));
    }

    #[tokio::test]
    async fn rejections_are_not_retried() {
        let port = Scripted::new(1);
        let rejected = DeliveryError::Rejected { status: 404, code: Some("0x8006088a".into()), message: "nope".into() };
        port.script("gone", vec![Err(rejected.clone())]);
        let reports = run(&port, Pacer::new(4, 4), vec![job(0, "gone", None)], false, budget(10)).await;
        assert_eq!(reports[0], DeliveryReport::after(Outcome::Rejected(rejected), 1, 0));
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
        let reports = run(&port, Pacer::new(1, 1), jobs, false, Cutoffs::until(Instant::now() + Duration::from_millis(1500))).await;
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
        let jobs =
            vec![job(0, "a-ok", Some("a")), job(1, "panic", Some("a")), job(2, "a-later", Some("a")), job(3, "a-last", Some("a")), job(4, "b-ok", Some("b"))];
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
    async fn a_batch_larger_than_the_window_keeps_each_key_s_turn() {
        // Ceiling 1: two runs in flight at a time for 30 records.
        let port = Scripted::new(2);
        let keyed = |index: usize| Job { key: Some(format!("k{}", index % 3)), ..job(index, "ok", None) };
        let mut jobs: Vec<Job> = (0..30).map(keyed).collect();
        jobs[10].work = Work::Done(Outcome::Invalid { reason: "no userId".into() });
        let reports = run(&port, Pacer::new(1, 1), jobs, false, budget(10)).await;
        let names: Vec<&str> = reports.iter().map(|r| r.outcome.name()).collect();
        let expected: Vec<&str> = (0..30)
            .map(|i| {
                if i == 10 {
                    "invalid"
                } else if i < 3 {
                    "delivered"
                } else {
                    "duplicate"
                }
            })
            .collect();
        assert_eq!(names, expected);
        assert_eq!(port.max_in_flight.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn decided_records_keep_their_outcome_when_time_runs_out() {
        let port = Scripted::new(400);
        let mut jobs: Vec<Job> = (0..10).map(|i| job(i, "t", None)).collect();
        jobs.push(Job { index: 10, group: None, key: None, work: Work::Done(Outcome::Dropped { reason: "unmapped".into() }) });
        let reports = run(&port, Pacer::new(1, 1), jobs, false, Cutoffs::until(Instant::now() + Duration::from_millis(1500))).await;
        assert_eq!(reports[10].outcome, Outcome::Dropped { reason: "unmapped".into() });
        assert!(reports[..10].iter().any(|r| r.outcome == Outcome::Failed(DeliveryError::Deadline)));
    }

    #[tokio::test]
    async fn an_absurd_retry_after_does_not_poison_the_pacer() {
        let port = Scripted::new(1);
        port.script("t", vec![Err(DeliveryError::Throttled { retry_after: Some(Duration::from_secs(u64::MAX)), code: Some(CONCURRENCY_LIMIT_CODE.into()) })]);
        let pool = Arc::new(Pool::of(Pacer::new(4, 4)));
        let pacer = pool.first();
        let reports =
            deliver(port.clone(), pool.clone(), Arc::new(Idempotency::in_memory()), vec![job(0, "t", None)], Order::Any, budget(5), Tagging::traced()).await;
        assert!(matches!(reports[0].outcome, Outcome::Failed(DeliveryError::Throttled { .. })), "{:?}", reports[0]);
        assert!(pacer.limit() >= 1);
        pacer.pause(Duration::from_secs(u64::MAX));
        pacer.on_throttled(Duration::MAX, true);
    }
}
