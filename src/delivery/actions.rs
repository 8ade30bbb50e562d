//! A record's actions in order (SPEC §19, §11): its rows, then its trigger.
//! Each action claims its own idempotency key and is settled before the next
//! starts; the first that does not succeed is the record's outcome and the
//! rest wait for a redelivery, which repeats none that were done.

use std::sync::Arc;
use std::time::Instant;

use super::pool::Pool;
use super::port::{DynamicsPort, RowWrite};
use super::retry::{deliver_one, outcome_of, with_retries};
use super::scheduler::{claim, settle, Budget, Report};
use crate::idempotency::Idempotency;
use crate::outcome::Outcome;
use crate::rows::RowPlan;

/// Delivers `plan`'s rows in order, then its trigger under the event's `key`.
/// The outcome: the first action that did not succeed; `delivered` when every
/// action succeeded and one was done now, `duplicate` when all were done before.
pub(super) async fn deliver_plan<P: DynamicsPort>(
    port: &P,
    pool: &Arc<Pool>,
    idempotency: &Idempotency,
    plan: &RowPlan,
    key: Option<&str>,
    budget: Budget,
) -> Report {
    let started = Instant::now();
    let (mut attempts, mut throttled, mut done) = (0, 0, false);
    let trigger = plan.trigger.as_ref().map(|call| (key, Action::Trigger(call)));
    let actions = plan.writes.iter().map(|row| (Some(row.key.as_str()), Action::Row(row))).chain(trigger);
    for (action_key, action) in actions {
        let report = match claim(idempotency, action_key, budget).await {
            Err(report) => report,
            Ok(claimed) => {
                let report = match action {
                    Action::Row(row) => deliver_row(port, pool, row, budget).await,
                    Action::Trigger(call) => deliver_one(port, pool, call, budget).await,
                };
                if let Some(claimed) = claimed {
                    settle(idempotency, &claimed, report.outcome == Outcome::Delivered, budget).await;
                }
                report
            }
        };
        attempts += report.attempts;
        throttled += report.throttled;
        match report.outcome {
            Outcome::Duplicate => {}
            Outcome::Delivered => done = true,
            outcome => return Report::after(outcome, attempts, throttled),
        }
    }
    let outcome = if done { Outcome::Delivered } else { Outcome::Duplicate };
    Report { latency: done.then(|| started.elapsed()), ..Report::after(outcome, attempts, throttled) }
}

enum Action<'a> {
    Row(&'a RowWrite),
    Trigger(&'a crate::mapping::TriggerCall),
}

/// One row, with the retries of SPEC §7; like a profile update, it takes no ceiling permit.
async fn deliver_row<P: DynamicsPort>(port: &P, pool: &Arc<Pool>, row: &RowWrite, budget: Budget) -> Report {
    let run = with_retries(pool, budget, |deadline, principal| async move { port.write_row(row, &principal, deadline).await.map(|sent| ((), sent)) }).await;
    match run.result {
        Ok(()) => Report { outcome: Outcome::Delivered, attempts: run.attempts, throttled: run.throttled, latency: run.latency },
        Err(error) => Report::after(outcome_of(error), run.attempts, run.throttled),
    }
}
