//! A record's plan of actions (SPEC §11, §14, §19): an `identify` event's
//! profile update, an entry's rows, then its trigger — each one Web API
//! request with its own idempotency key and its own outcome. Each action
//! claims its key before it is sent; the first that does not succeed is the
//! record's outcome and the rest wait for a redelivery, which repeats none
//! that were done. FIFO order, the deadline and idempotency apply to every
//! action alike: they are delivered in the record's turn (`scheduler`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::Pool;
use super::port::{DynamicsPort, Request};
use super::retry::{deliver_request, DeliveryReport};
use crate::deadline::Cutoffs;
use crate::idempotency::{Claim, Idempotency};
use crate::outcome::{ActionTrace, DeliveryError, Outcome};
use crate::plan::ActionPlan;

/// The actions in the order they are delivered, each with its idempotency
/// key, given the event's `key`.
fn actions<'a>(plan: &'a ActionPlan, key: Option<&'a str>, suffix: &'a str) -> impl Iterator<Item = (Option<String>, Request<'a>)> + 'a {
    let update = plan.update.iter().map(move |update| (key.map(|k| format!("{k}#identify{suffix}")), Request::Update(update)));
    let rows = plan.writes.iter().map(move |row| (Some(format!("{}{suffix}", row.key)), Request::Row(row)));
    let trigger = plan.trigger.iter().map(move |call| (key.map(|k| format!("{k}{suffix}")), Request::Trigger(call)));
    update.chain(rows).chain(trigger)
}

/// What a destination's delivery adds to its records (SPEC §22.1, §23.2): each
/// action's trace kept for the record line, and the ending of every action's
/// idempotency key (`@NAME` in a destination other than `default`; empty in
/// the default or only one).
#[derive(Debug, Clone, Default)]
pub struct Tagging {
    pub traced: bool,
    pub key_suffix: Arc<str>,
}

impl Tagging {
    /// Traces kept, keys as they are.
    pub fn traced() -> Tagging {
        Tagging { traced: true, key_suffix: Arc::from("") }
    }
}

/// A claimed key and whether its action was delivered: the scheduler settles
/// it once the record's answer is known (a slow write cannot turn a delivery
/// into a failure).
pub(super) type Claimed = (String, bool);

/// Delivers `plan`'s actions in order, the event's `key` giving theirs. The
/// outcome: the first action that did not succeed; `delivered` when every
/// action succeeded and one was done now, `duplicate` when all were done before.
pub(super) async fn deliver_plan<P: DynamicsPort>(
    port: &P,
    pool: &Arc<Pool>,
    idempotency: &Idempotency,
    plan: &ActionPlan,
    key: Option<&str>,
    budget: Cutoffs,
    tagging: &Tagging,
) -> (DeliveryReport, Vec<Claimed>) {
    let started = Instant::now();
    let (mut attempts, mut throttled, mut done) = (0, 0, false);
    let (mut claimed, mut count, mut latency) = (Vec::new(), 0, None);
    // Most plans are one action: no room kept for four (a batch holds every record's until it answers).
    let mut traces = Vec::with_capacity(1);
    for (action_key, request) in actions(plan, key, &tagging.key_suffix) {
        count += 1;
        let action_started = Instant::now();
        let report = match claim(idempotency, action_key.as_deref(), budget).await {
            Err(report) => report,
            Ok(key) => {
                let report = deliver_request(port, pool, request, budget).await;
                if let Some(key) = key {
                    claimed.push((key, report.outcome == Outcome::Delivered));
                }
                report
            }
        };
        if tagging.traced {
            traces.push(trace(request, &report, action_started.elapsed()));
        }
        attempts += report.attempts;
        throttled += report.throttled;
        latency = report.latency;
        match report.outcome {
            Outcome::Duplicate => {}
            Outcome::Delivered => done = true,
            outcome => return (DeliveryReport { actions: traces.into_boxed_slice(), ..DeliveryReport::after(outcome, attempts, throttled) }, claimed),
        }
    }
    let outcome = if done { Outcome::Delivered } else { Outcome::Duplicate };
    // One action: from its first attempt to its 2xx, as for any call; several: the whole plan.
    let latency = if count == 1 { latency } else { done.then(|| started.elapsed()) };
    (DeliveryReport { latency, actions: traces.into_boxed_slice(), ..DeliveryReport::after(outcome, attempts, throttled) }, claimed)
}

/// One action's line in its record's line (SPEC §22.1).
fn trace(request: Request<'_>, report: &DeliveryReport, took: Duration) -> ActionTrace {
    let (kind, target) = match request {
        Request::Trigger(call) => ("trigger", call.trigger.clone()),
        Request::Update(update) => ("identify", update.entity.clone()),
        Request::Row(row) => ("row", row.path.split(['(', '?']).next().unwrap_or_default().to_string()),
        Request::Get(path) | Request::Metadata(path) => ("read", path.split(['(', '?']).next().unwrap_or_default().to_string()),
        Request::Create { entity, .. } => ("create", entity.to_string()),
    };
    let error = report.outcome.error();
    ActionTrace {
        destination: String::new(),
        kind,
        target,
        status: error.and_then(DeliveryError::status).or(report.status),
        code: error.and_then(DeliveryError::code).map(str::to_string),
        attempts: report.attempts,
        ms: took.as_millis() as u64,
        outcome: report.outcome.name(),
    }
}

/// Claims the record's idempotency key (SPEC §11): `Ok(Some(key))` to go ahead
/// and settle the key afterwards, `Ok(None)` without a key, `Err` with the
/// record's report when it must not be sent.
pub(super) async fn claim(idempotency: &Idempotency, key: Option<&str>, budget: Cutoffs) -> Result<Option<String>, DeliveryReport> {
    let Some(key) = key else { return Ok(None) };
    match idempotency.claim_within(key, budget.hard_cutoff, budget.start_cutoff).await {
        Claim::Done => Err(DeliveryReport::done(Outcome::Duplicate)),
        Claim::InProgress => Err(DeliveryReport::done(Outcome::Failed(DeliveryError::Transient {
            status: None,
            code: None,
            detail: "the same event is being delivered by another invocation".into(),
        }))),
        Claim::Unavailable(error) => Err(DeliveryReport::done(Outcome::Failed(error))),
        Claim::Claimed => Ok(Some(key.to_string())),
    }
}

/// Marks the key done after a delivery, else releases it; bounded by the settle cut-off.
pub(super) async fn settle(idempotency: &Idempotency, key: &str, delivered: bool, budget: Cutoffs) {
    if delivered {
        idempotency.complete_until(key, budget.settle_cutoff).await;
    } else {
        idempotency.release_until(key, budget.settle_cutoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ProfileUpdate, RowWrite, TriggerCall};
    use serde_json::{json, Map};

    fn row(key: &str) -> RowWrite {
        RowWrite {
            method: reqwest::Method::PATCH,
            path: "accounts(accountnumber='A-1')".into(),
            headers: Vec::new(),
            body: Map::new(),
            key: key.into(),
            label: "accounts(accountnumber='A-1')".into(),
            exists_is_success: false,
        }
    }

    #[test]
    fn the_actions_run_update_rows_trigger_each_under_its_own_key() {
        let update = ProfileUpdate { entity: "contacts".into(), id: "c-1".into(), body: Map::new() };
        let call = TriggerCall { trigger: "msdynmkt_OrderCompleted".into(), body: json!({"a": 1}).as_object().unwrap().clone() };
        let plan = ActionPlan { update: Some(update), writes: vec![row("m-1#accounts(accountnumber='A-1')")], trigger: Some(call), ..ActionPlan::default() };
        let order: Vec<(Option<String>, &str)> = actions(&plan, Some("m-1"), "")
            .map(|(key, request)| {
                let what = match request {
                    Request::Update(_) => "update",
                    Request::Row(_) => "row",
                    Request::Trigger(_) => "trigger",
                    Request::Get(_) | Request::Metadata(_) | Request::Create { .. } => "read",
                };
                (key, what)
            })
            .collect();
        assert_eq!(
            order,
            [
                (Some("m-1#identify".to_string()), "update"),
                (Some("m-1#accounts(accountnumber='A-1')".to_string()), "row"),
                (Some("m-1".to_string()), "trigger")
            ],
            "the trigger keeps the event's key (SPEC §11), so keys already stored still match"
        );
        let unkeyed: Vec<Option<String>> =
            actions(&ActionPlan::raise(TriggerCall { trigger: "t".into(), body: Map::new() }), None, "").map(|(k, _)| k).collect();
        assert_eq!(unkeyed, [None], "without an event key, a trigger claims nothing");
    }
}
