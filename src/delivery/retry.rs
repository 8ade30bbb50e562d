//! What an error means, and the retry loop (SPEC §7). One classifier,
//! [`class`], derived from the error type; the retry loop, the pacer and the
//! record's outcome all ask it (as Vector's `RetryLogic`).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::Pool;
use super::port::{Answer, DynamicsPort, Principal, Request, Sent};
use super::retry_class::{class, outcome_of, RetryClass};
use crate::deadline::Cutoffs;
use crate::outcome::{ActionTrace, DeliveryError, Outcome};

/// At most this many attempts for 5xx, timeouts and connection errors (SPEC §7).
pub const MAX_TRANSIENT_ATTEMPTS: u32 = 4;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(4);

/// One request of a record's plan, with the retries of SPEC §7. Each attempt
/// at a trigger call first takes a permit under the per-minute trigger ceiling
/// (SPEC §17.1), waiting for it while the call could still start before the
/// start cut-off. CI-J counts the calls it receives, and one answered 429 or
/// 5xx may have been counted too, so a retry takes a permit of its own. An
/// attempt that got no permit was never sent and is not counted as one.
/// Profile updates and rows take no permit.
pub(super) async fn deliver_request<P: DynamicsPort>(port: &P, pool: &Arc<Pool>, request: Request<'_>, budget: Cutoffs) -> DeliveryReport {
    let unsent = AtomicU32::new(0);
    let run = with_retries(pool, budget, |deadline, principal| {
        let unsent = &unsent;
        async move {
            if matches!(request, Request::Trigger(_)) {
                let permit = tokio::select! {
                    permit = port.permit(budget.start_cutoff) => permit,
                    // `send` interrupted: a call waiting for its permit is not started.
                    () = pool.stopped() => Err(DeliveryError::Deadline),
                };
                if let Err(error) = permit {
                    unsent.fetch_add(1, Ordering::Relaxed);
                    return Err(error);
                }
            }
            port.execute(request, &principal, deadline).await.map(|sent| (sent.status, sent))
        }
    })
    .await;
    let attempts = run.attempts.saturating_sub(unsent.into_inner());
    match run.result {
        Ok(status) => DeliveryReport { status, latency: run.latency, ..DeliveryReport::after(Outcome::Delivered, attempts, run.throttled) },
        Err(error) => DeliveryReport::after(outcome_of(error), attempts, run.throttled),
    }
}

/// What delivering one request (or a record's plan) did.
#[derive(Debug, Clone)]
pub struct DeliveryReport {
    pub outcome: Outcome,
    pub attempts: u32,
    /// Attempts answered 429.
    pub throttled: u32,
    /// From the first attempt to the 2xx (delivered records).
    pub latency: Option<Duration>,
    /// A delivered request's HTTP status.
    pub status: Option<u16>,
    /// Each action of the record's plan (SPEC §22.1).
    pub actions: Box<[ActionTrace]>,
}

/// Two reports say the same when their outcome, attempts, time and status do;
/// the actions' traces are the record line's view of them (with their own timings).
impl PartialEq for DeliveryReport {
    fn eq(&self, other: &Self) -> bool {
        (&self.outcome, self.attempts, self.throttled, self.latency, self.status)
            == (&other.outcome, other.attempts, other.throttled, other.latency, other.status)
    }
}

impl DeliveryReport {
    pub(crate) fn done(outcome: Outcome) -> DeliveryReport {
        DeliveryReport::after(outcome, 0, 0)
    }

    pub(crate) fn after(outcome: Outcome, attempts: u32, throttled: u32) -> DeliveryReport {
        DeliveryReport { outcome, attempts, throttled, latency: None, status: None, actions: Box::default() }
    }
}

/// The engine's one entry for the stages (identity, the definition catalogs,
/// `check`): one request through the pool, the pace, the pauses and the
/// retries of SPEC §7, as any call is made; its answer back. Attempts are
/// counted in [`Attempts::attempts`].
pub async fn call<P: DynamicsPort>(port: &P, pool: &Arc<Pool>, request: Request<'_>, cutoffs: Cutoffs) -> Attempts<Answer> {
    let run = with_retries(pool, cutoffs, |deadline, principal| async move {
        let mut sent = port.execute(request, &principal, deadline).await?;
        let answer = sent.answer.take().ok_or_else(|| DeliveryError::Internal("the request read no answer".into()))?;
        Ok((answer, sent))
    })
    .await;
    run
}

/// What [`with_retries`] did: the last answer and how many attempts it took.
#[derive(Debug)]
pub struct Attempts<T> {
    pub result: Result<T, DeliveryError>,
    pub attempts: u32,
    /// Attempts answered 429.
    pub throttled: u32,
    /// From the first attempt to the success.
    pub latency: Option<Duration>,
}

/// One Dataverse request with the retries of SPEC §7, for every remote call
/// (trigger calls, identity lookups, creates and updates): each attempt takes
/// a slot of the principal with the most room (SPEC §17.3), its error is
/// classified by [`class`], a 429 pauses that principal and the next attempt
/// goes to another, transient errors back off, and nothing starts after the
/// budget's start cut-off. `attempt` gets the hard cut-off its request must
/// end by and the principal it is made as.
///
/// A principal Entra rejects leaves the pool and the attempt is made again as
/// another; a 403 is tried as another principal before it counts, and when
/// that one succeeds for this record the one answered 403 leaves the pool (the
/// record is not `rejected`).
pub(super) async fn with_retries<T, F, Fut>(pool: &Arc<Pool>, budget: Cutoffs, mut attempt: F) -> Attempts<T>
where
    F: FnMut(Instant, Principal) -> Fut,
    Fut: Future<Output = Result<(T, Sent), DeliveryError>>,
{
    let mut attempts = 0;
    let mut transient = 0;
    let mut throttled = 0;
    let mut last: Option<DeliveryError> = None;
    // Principals this record is not tried as again: rejected by Entra, or answered 403.
    let mut avoid: Vec<Principal> = Vec::new();
    let mut forbidden: Vec<Principal> = Vec::new();
    let first = Instant::now();
    let done = |result, attempts, throttled| Attempts { result, attempts, throttled, latency: None };
    loop {
        let (member, slot) = match pool.acquire(budget.start_cutoff, &avoid).await {
            Ok(chosen) => chosen,
            // Held back by a 429's pause (this record's or another's), or out of time.
            Err(_) => {
                let why = last.or_else(|| pool.held_back(budget.start_cutoff)).unwrap_or(DeliveryError::Deadline);
                return done(Err(why), attempts, throttled);
            }
        };
        let pacer = &member.pacer;
        attempts += 1;
        let started = Instant::now();
        let error = match attempt(budget.hard_cutoff, member.principal.clone()).await {
            Ok((value, sent)) => {
                if sent.read {
                    pacer.on_read();
                } else {
                    pacer.on_success(started.elapsed(), sent.dop_hint);
                }
                for principal in &forbidden {
                    pool.leave(principal, &format!("Dataverse answered 403 to it and {} succeeded", member.principal));
                }
                return Attempts { result: Ok(value), attempts, throttled, latency: Some(first.elapsed()) };
            }
            Err(error) => error,
        };
        drop(slot);
        let class = class(&error);
        pacer.on_error(&class);
        if let DeliveryError::Throttled { code, retry_after } = &error {
            let learned = pacer.learned_rate().is_some();
            pacer.on_throttle_code(code.clone(), *retry_after);
            if !learned {
                pool.share_learned_rate(&member);
            }
        }
        match (&error, class) {
            // Entra rejects this principal even after the secret was read again: it leaves the pool.
            (DeliveryError::Credentials { code, .. }, _) if pool.has_other(&with(&avoid, &member.principal)) => {
                pool.leave(&member.principal, &format!("Entra rejected its credentials ({code})"));
                avoid.push(member.principal.clone());
            }
            // A 403 may be this principal's alone (no role, disabled): the record is
            // tried as another, and this one takes no new call until that is known. A
            // success elsewhere on another request proves nothing (that trigger or
            // table may be allowed), so only this record's retry judges it.
            (DeliveryError::Rejected { status: 403, .. }, _) if pool.has_other(&with(&avoid, &member.principal)) => {
                pool.suspect(&member.principal);
                forbidden.push(member.principal.clone());
                avoid.push(member.principal.clone());
            }
            // Every principal tried was answered 403: the record's own, not a principal's.
            (DeliveryError::Rejected { status: 403, .. }, _) => {
                for principal in forbidden.drain(..) {
                    pool.acquit(&principal);
                }
                return done(Err(error), attempts, throttled);
            }
            // The pacer's pause is the wait; another principal may start sooner.
            (_, RetryClass::Throttled { .. }) => {
                throttled += 1;
                // Every principal is paused past the cut-off (with one principal: its Retry-After is).
                if throttled >= budget.throttled_attempts || pool.held_back(budget.start_cutoff).is_some() {
                    return done(Err(error), attempts, throttled);
                }
            }
            (_, RetryClass::Transient | RetryClass::BackPressure) => {
                transient += 1;
                if transient >= MAX_TRANSIENT_ATTEMPTS {
                    return done(Err(error), attempts, throttled);
                }
                let wait = backoff(transient);
                if Instant::now() + wait >= budget.start_cutoff {
                    return done(Err(error), attempts, throttled);
                }
                tokio::time::sleep(wait).await;
            }
            (_, RetryClass::Permanent | RetryClass::Auth | RetryClass::Stop) => return done(Err(error), attempts, throttled),
        }
        last = Some(error);
    }
}

fn with(avoid: &[Principal], one: &Principal) -> Vec<Principal> {
    avoid.iter().chain([one]).cloned().collect()
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
    use crate::deadline::MAX_THROTTLED_ATTEMPTS;
    use crate::delivery::retry_class::{CONCURRENCY_LIMIT_CODE, MAX_PAUSE};
    use crate::plan::TriggerCall;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(200));
            assert!(backoff(9) <= BACKOFF_CAP);
        }
    }

    #[test]
    fn one_classifier_for_every_error() {
        let transient = |status| DeliveryError::Transient { status, code: None, detail: String::new() };
        assert_eq!(class(&DeliveryError::Rejected { status: 404, code: None, message: String::new() }), RetryClass::Permanent);
        assert_eq!(class(&transient(Some(500))), RetryClass::Transient);
        assert_eq!(class(&transient(Some(503))), RetryClass::BackPressure);
        assert_eq!(class(&transient(None)), RetryClass::BackPressure);
        assert_eq!(
            class(&DeliveryError::Throttled { retry_after: Some(Duration::MAX), code: Some(CONCURRENCY_LIMIT_CODE.into()) }),
            RetryClass::Throttled { retry_after: MAX_PAUSE, concurrency_limit: true }
        );
        assert_eq!(
            class(&DeliveryError::Throttled { retry_after: None, code: None }),
            RetryClass::Throttled { retry_after: Duration::from_secs(1), concurrency_limit: false }
        );
        assert_eq!(class(&DeliveryError::TokenUnavailable { detail: String::new() }), RetryClass::Auth);
        assert_eq!(class(&DeliveryError::Deadline), RetryClass::Stop);
        assert!(matches!(outcome_of(DeliveryError::Rejected { status: 400, code: None, message: String::new() }), Outcome::Rejected(_)));
        assert!(matches!(outcome_of(transient(Some(500))), Outcome::Failed(_)));
    }

    /// Answers 429 (Retry-After 0) `throttles` times, then 204.
    struct Throttling(std::sync::atomic::AtomicU32);

    impl DynamicsPort for Throttling {
        async fn execute(&self, _request: Request<'_>, _principal: &Principal, _deadline: Instant) -> Result<super::super::Sent, DeliveryError> {
            if self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                return Err(DeliveryError::Throttled { retry_after: Some(Duration::ZERO), code: None });
            }
            Ok(super::super::Sent::default())
        }
    }

    #[tokio::test]
    async fn without_a_deadline_429s_do_not_use_up_the_attempts() {
        let call = TriggerCall { trigger: "t".into(), body: serde_json::Map::new() };
        let pool = Arc::new(Pool::of(super::super::Pacer::new(1, 1)));
        let bounded = deliver_request(&Throttling(12.into()), &pool, Request::Trigger(&call), Cutoffs::until(Instant::now() + Duration::from_secs(10))).await;
        assert!(matches!(bounded.outcome, Outcome::Failed(DeliveryError::Throttled { .. })));
        assert_eq!((bounded.attempts, bounded.throttled), (MAX_THROTTLED_ATTEMPTS, MAX_THROTTLED_ATTEMPTS));
        let unbounded = deliver_request(&Throttling(12.into()), &pool, Request::Trigger(&call), Cutoffs::unbounded()).await;
        assert_eq!((unbounded.outcome, unbounded.attempts, unbounded.throttled), (Outcome::Delivered, 13, 12));
    }
}
