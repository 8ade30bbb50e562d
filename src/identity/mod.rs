//! Identity and consent (SPEC §14): the Dataverse profile id for events that
//! carry an e-mail address or a shop's customer number instead of a GUID, and
//! the profile update of `identify` events.
//!
//! [`plan`] is pure (what to look up, from the event and the document);
//! [`Identities`] resolves plans against Dataverse with a per-environment
//! cache and one request per key in flight; [`Resolver::stage`] is the handler's step
//! between mapping and delivery. Every request goes through
//! the engine's one entry ([`crate::delivery::call`]): the pacer, the retry classifier, Retry-After
//! pauses and the invocation's budget. Only ids and normalised lookup values
//! are kept, in memory.

mod cache;
mod plan;

use serde_json::{Map, Value};

pub use cache::{Identities, NEW_ROW};
pub use plan::{is_guid, plan, update_body, Plan};

use crate::config::Mapping;
use crate::deadline::Cutoffs;
use crate::delivery::{Job, Work};
use crate::mapping;
use crate::outcome::Outcome;
use crate::outcome::NO_CONSENT;
use crate::plan::{ActionPlan, ProfileUpdate};
use crate::stages::Destination;

/// What identity resolution will do for one record, decided while its event
/// is at hand (the event is dropped after mapping; SPEC §14's judgement order).
pub enum Prep {
    /// Nothing to resolve.
    None,
    /// The record's outcome is decided here (invalid, no consent).
    Done(Outcome),
    /// Resolve the plan; with an update, PATCH the profile (an `identify` event).
    Resolve { plan: Plan, update: Option<Map<String, Value>> },
}

/// The identity work of one mapped record (pure).
pub fn prep(mapping: &Mapping, event: &Value, work: &Work) -> Prep {
    if mapping.identity.is_none() && mapping.identify.is_none() {
        return Prep::None;
    }
    match work {
        // Rows need the profile for a "profile" bind, the trigger for its body (SPEC §19).
        Work::Actions(plan) if plan.trigger.is_none() && !plan.binds_profile() => Prep::None,
        Work::Actions(_) => match mapping.identity.as_ref().map(|spec| plan(event, spec)) {
            None | Some(Ok(None)) => Prep::None,
            Some(Ok(Some(plan))) => Prep::Resolve { plan, update: None },
            Some(Err(reason)) => Prep::Done(Outcome::Invalid { reason }),
        },
        Work::Done(Outcome::Dropped { .. }) if is_identify(event) => {
            let Some(update) = &mapping.identify else { return Prep::None };
            if let Some(category) = mapping::consent_refused(event, None, mapping) {
                return Prep::Done(Outcome::Dropped { reason: format!("{NO_CONSENT}{category}") });
            }
            let body = update_body(event, update);
            let planned = match &mapping.identity {
                _ if crate::fields::user_id(event).is_some_and(|u| is_guid(&u)) => Ok(None),
                Some(spec) => plan(event, spec),
                None => Err("identify: the event's userId is not a Dataverse id and the mapping has no identity section to find one".to_string()),
            };
            match planned {
                Err(reason) => Prep::Done(Outcome::Invalid { reason }),
                Ok(None) => Prep::Resolve { plan: Plan::known(crate::fields::user_id(event).unwrap_or_default()), update: Some(body) },
                Ok(Some(plan)) => Prep::Resolve { plan, update: Some(body) },
            }
        }
        Work::Done(_) => Prep::None,
    }
}

/// What the identity stage works with: the destination's caches and port, its
/// pool, the mapping document and the invocation's budget.
pub struct Resolver<'a> {
    pub identities: &'a Identities,
    pub destination: &'a Destination,
    pub mapping: &'a Mapping,
    pub budget: Cutoffs,
    pub dry_run: bool,
}

impl Resolver<'_> {
    /// The stage for `records` (each its identity work and its job), as [`stage`] says.
    pub async fn stage(&self, records: Vec<(Prep, &mut Job)>) {
        stage(self, records).await
    }
}

/// The step between mapping and delivery: resolves the profile id of every
/// trigger call that needs one (filling `msdynmkt_profileid` and
/// `msdynmkt_signaluserauthid`), and turns each `identify` event into its
/// profile update, which delivery carries out (PATCH).
/// A record that cannot be resolved gets its outcome here and is not sent.
/// A dry run reads (lookups) but writes nothing: no create, no PATCH.
async fn stage(resolver: &Resolver<'_>, records: Vec<(Prep, &mut Job)>) {
    let Resolver { identities, destination, mapping, budget, dry_run } = *resolver;
    let mut jobs = Vec::with_capacity(records.len());
    let mut work = Vec::new();
    for (position, (prep, job)) in records.into_iter().enumerate() {
        match prep {
            Prep::None => {}
            Prep::Done(outcome) => job.work = Work::Done(outcome),
            Prep::Resolve { plan, update } => work.push((position, plan, update)),
        }
        jobs.push(job);
    }
    if work.is_empty() {
        return;
    }
    // Resolution gets at most half the time left for starting calls: a stalled
    // lookup fails its own records, and the others still have time to be delivered.
    let now = std::time::Instant::now();
    let half = now + budget.start_cutoff.saturating_duration_since(now) / 2;
    let budget = Cutoffs { start_cutoff: half, hard_cutoff: half, settle_cutoff: half, ..budget };
    let create = mapping.identity.as_ref().and_then(|spec| spec.create.as_ref());
    let identify_entity = mapping.identify.as_ref().map(|u| u.entity.as_str()).unwrap_or("contacts");
    let results = futures_util::future::join_all(work.into_iter().map(|(position, plan, update)| async move {
        let resolved = identities.resolve(destination, &plan, create, budget, dry_run).await;
        (position, resolved, update, profile_set(&plan, create))
    }))
    .await;
    for (position, resolved, update, set) in results {
        let job = &mut *jobs[position];
        match (resolved, update, &mut job.work) {
            (Err(outcome), _, _) => job.work = Work::Done(outcome),
            (Ok(id), None, Work::Actions(plan)) => {
                if let Some(call) = &mut plan.trigger {
                    fill_profile(&mut call.body, &id);
                }
                plan.profile = Some(id);
                plan.profile_set = set;
            }
            // An identify event's update is an action of its own, delivered in the
            // record's turn: FIFO order, its own idempotency key, the deadline.
            (Ok(id), Some(body), _) => job.work = Work::Actions(Box::new(ActionPlan::update(ProfileUpdate { entity: identify_entity.to_string(), id, body }))),
            (Ok(_), None, _) => {}
        }
    }
}

/// The entity set a resolved profile is in, when the plan can only resolve to
/// one: every lookup (and the create) names the same set (SPEC §19's "profile" bind).
fn profile_set(plan: &Plan, create: Option<&crate::config::identity::WriteSpec>) -> Option<String> {
    let mut sets = plan.steps.iter().map(|s| s.entity.as_str()).chain(create.map(|c| c.entity.as_str()));
    let first = sets.next()?;
    sets.all(|s| s == first).then(|| first.to_string())
}

fn is_identify(event: &Value) -> bool {
    event.get("type").and_then(Value::as_str) == Some("identify")
}

/// The resolved id fills both profile fields (SPEC §14).
pub fn fill_profile(body: &mut Map<String, Value>, id: &str) {
    body.insert("msdynmkt_profileid".into(), Value::String(id.to_string()));
    body.insert("msdynmkt_signaluserauthid".into(), Value::String(id.to_string()));
}
