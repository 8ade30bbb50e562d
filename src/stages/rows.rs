//! The rows' stage (SPEC §19): the definitions of the entity sets a batch's
//! rows name, read through the catalog, then each record's rows fitted to
//! their requests by the pure [`crate::rows::fit`].

use std::collections::BTreeSet;
use std::time::Instant;

use super::entities::Entities;
use super::Destination;
use crate::delivery::{Job, Work};
use crate::plan::ActionPlan;
use crate::rows::fit;

/// The handler's step after identity (SPEC §19): reads the definition of every
/// entity set the records' rows name (cached per TTL), then fits each record's
/// rows into their requests; a record that cannot be written gets its outcome
/// here and nothing of it is sent.
pub async fn stage(entities: &Entities, destination: &Destination, mut jobs: Vec<&mut Job>, deadline: Instant) {
    let wanted: BTreeSet<String> = jobs.iter().filter_map(|j| rows_of(&j.work).map(ActionPlan::entities)).flatten().collect();
    if wanted.is_empty() {
        return;
    }
    let definitions = entities.lookup_all(destination, wanted, deadline).await;
    for job in jobs.iter_mut() {
        if let Work::Actions(plan) = &mut job.work {
            if plan.planned.is_empty() {
                continue;
            }
            match fit(plan, job.key.as_deref().unwrap_or_default(), &definitions) {
                Ok(omitted) => entities.note_omitted(&omitted),
                Err(outcome) => job.work = Work::Done(outcome),
            }
        }
    }
}

/// The plan of a record that writes rows.
fn rows_of(work: &Work) -> Option<&ActionPlan> {
    match work {
        Work::Actions(plan) if !plan.planned.is_empty() => Some(plan),
        _ => None,
    }
}
