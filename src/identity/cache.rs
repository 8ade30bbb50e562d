//! Resolved profile ids of one execution environment: kept for
//! `D365_IDENTITY_TTL_SECONDS`, misses for [`MISS_TTL`], at most [`MAX_ENTRIES`]
//! keys; concurrent records with the same key share one resolution (lookups
//! and a create alike).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::plan::{is_guid, Plan, Step};
use crate::config::identity::{id_column, WriteSpec};
use crate::deadline::Cutoffs;
use crate::delivery::{outcome_of, Request};
use crate::outcome::{DeliveryError, Outcome};
use crate::rows::EntityLookup;
use crate::stages::entities::Entities;
use crate::stages::Destination;

/// How long "no match" and "ambiguous" are remembered.
pub const MISS_TTL: Duration = Duration::from_secs(60);
/// The most keys kept; past it, expired keys go, then the oldest half.
pub const MAX_ENTRIES: usize = 50_000;

/// What a resolution found.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    Id(String),
    /// Not found or ambiguous: the record is `invalid` with this reason.
    Unresolved(String),
}

struct Cached {
    found: Resolved,
    at: Instant,
}

/// The profile id a dry run shows for a row it would create.
pub const NEW_ROW: &str = "<the new row's id>";

pub struct Identities {
    hit_ttl: Duration,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
    /// Lookups (`GET`) made.
    pub lookups: AtomicU64,
    /// Creates (`POST`) made.
    pub creates: AtomicU64,
    /// Entity definitions: the id column is the entity's `PrimaryIdAttribute` (SPEC §14, §19).
    entities: Option<Arc<Entities>>,
}

impl Identities {
    pub fn new(hit_ttl: Duration) -> Identities {
        Identities { hit_ttl, entries: Mutex::default(), lookups: AtomicU64::new(0), creates: AtomicU64::new(0), entities: None }
    }

    /// Reads each looked-up set's id column from its definition (`PrimaryIdAttribute`),
    /// shared with rows (SPEC §19); without one, or when it cannot be read, the set's name guesses it.
    pub fn with_entities(mut self, entities: Arc<Entities>) -> Identities {
        self.entities = Some(entities);
        self
    }

    /// The entity set's id column: its `PrimaryIdAttribute`, else `contacts` → `contactid`.
    async fn id_column(&self, destination: &Destination, entity: &str, deadline: Instant) -> String {
        match &self.entities {
            Some(entities) => match entities.lookup(destination, entity, deadline).await {
                EntityLookup::Found(definition) => definition.primary_id.clone(),
                EntityLookup::Missing | EntityLookup::Unreadable(_) => id_column(entity),
            },
            None => id_column(entity),
        }
    }

    /// Dataverse requests made to resolve profiles (lookups, creates; an
    /// `identify` event's update is delivered as its own action).
    pub fn requests(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed) + self.creates.load(Ordering::Relaxed)
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        let mut entries = crate::lock(&self.entries);
        if let Some(slot) = entries.get(key) {
            return slot.clone();
        }
        if entries.len() >= MAX_ENTRIES {
            let hit_ttl = self.hit_ttl;
            entries.retain(|_, slot| slot.try_lock().map_or(true, |c| c.as_ref().is_some_and(|c| c.at.elapsed() < ttl_of(&c.found, hit_ttl))));
            if entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<(String, Instant)> =
                    entries.iter().filter_map(|(k, s)| s.try_lock().ok().and_then(|c| c.as_ref().map(|c| (k.clone(), c.at)))).collect();
                ages.sort_by_key(|(_, at)| *at);
                for (k, _) in ages.into_iter().take(MAX_ENTRIES / 2) {
                    entries.remove(&k);
                }
            }
        }
        entries.entry(key.to_string()).or_default().clone()
    }

    /// The plan's profile id: from the cache, else its lookups in order, else a
    /// create (when the document has one). `Err` is the record's outcome.
    /// In a dry run (`send --dry-run`) lookups run but nothing is created: a row
    /// that would be created is named [`NEW_ROW`], and nothing is cached.
    pub async fn resolve(&self, destination: &Destination, plan: &Plan, create: Option<&WriteSpec>, budget: Cutoffs, dry_run: bool) -> Result<String, Outcome> {
        if let Some(id) = &plan.known {
            return Ok(id.clone());
        }
        // Keyed by destination too: a secret that names another environment finds its profiles there.
        let environment = match destination.credentials_until(budget.start_cutoff).await {
            Ok(credentials) => credentials.org_url_host.clone(),
            Err(error) => return Err(Outcome::Failed(error.into())),
        };
        let slot = self.slot(&format!("{environment} {}", plan.key));
        // One resolution per key at a time: the others wait for its answer.
        let mut entry = match tokio::time::timeout_at(budget.start_cutoff.into(), slot.lock()).await {
            Ok(entry) => entry,
            Err(_) => return Err(Outcome::Failed(DeliveryError::Deadline)),
        };
        if let Some(cached) = entry.as_ref().filter(|c| c.at.elapsed() < ttl_of(&c.found, self.hit_ttl)) {
            return into_result(&cached.found);
        }
        let found = self.find(destination, plan, create, budget, dry_run).await?;
        if !dry_run {
            *entry = Some(Cached { found: found.clone(), at: Instant::now() });
        }
        into_result(&found)
    }

    async fn find(&self, destination: &Destination, plan: &Plan, create: Option<&WriteSpec>, budget: Cutoffs, dry_run: bool) -> Result<Resolved, Outcome> {
        for step in &plan.steps {
            let rows = self.lookup(destination, step, budget).await?;
            match rows.as_slice() {
                [] => continue,
                [id] => return Ok(Resolved::Id(id.clone())),
                _ => {
                    return Ok(Resolved::Unresolved(format!(
                        "ambiguous: {} {}s have {} = {} (make the value unique in Dataverse, or look up by another attribute first)",
                        rows.len(),
                        step.noun(),
                        step.attribute,
                        step.shown()
                    )))
                }
            }
        }
        let tried: Vec<String> = plan.steps.iter().map(|s| format!("{} = {}", s.attribute, s.shown())).collect();
        let noun = plan.steps.first().map_or_else(|| "profile".to_string(), Step::noun);
        match (create, &plan.create) {
            (Some(_), Some(_)) if dry_run => Ok(Resolved::Id(NEW_ROW.to_string())),
            (Some(spec), Some(attributes)) => self.create(destination, &spec.entity, attributes, budget).await.map(Resolved::Id),
            _ => Ok(Resolved::Unresolved(format!("no {noun} matches {} (add identity.create to create one)", tried.join(" or ")))),
        }
    }

    /// One lookup: the ids of at most two rows.
    async fn lookup(&self, destination: &Destination, step: &Step, budget: Cutoffs) -> Result<Vec<String>, Outcome> {
        let column = self.id_column(destination, &step.entity, budget.start_cutoff).await;
        let query = step.query_selecting(&column);
        let run = destination.call(Request::Get(&query), budget).await;
        self.lookups.fetch_add(u64::from(run.attempts), Ordering::Relaxed);
        let answer = run.result.map_err(outcome_of)?;
        let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let Some(rows) = value.get("value").and_then(Value::as_array) else {
            return Err(Outcome::Failed(DeliveryError::Transient {
                status: Some(answer.status.as_u16()),
                code: None,
                detail: format!("the {} lookup's answer has no value list", step.entity),
            }));
        };
        Ok(rows.iter().filter_map(|r| r.get(&column).and_then(Value::as_str)).map(str::to_string).collect())
    }

    /// `POST {entity}` with `Prefer: return=representation`: the new row's id.
    async fn create(&self, destination: &Destination, entity: &str, attributes: &Map<String, Value>, budget: Cutoffs) -> Result<String, Outcome> {
        let run = destination.call(Request::Create { entity, body: attributes }, budget).await;
        self.creates.fetch_add(u64::from(run.attempts), Ordering::Relaxed);
        let answer = run.result.map_err(outcome_of)?;
        let column = self.id_column(destination, entity, budget.start_cutoff).await;
        let from_body = serde_json::from_slice::<Value>(&answer.body).ok().and_then(|v| v.get(&column).and_then(Value::as_str).map(str::to_string));
        // Without the representation, Dataverse names the new row in OData-EntityId: …/contacts(<id>).
        let from_header = || {
            let header = answer.headers.get("odata-entityid")?.to_str().ok()?;
            let id = header.rsplit_once('(')?.1.trim_end_matches(')');
            is_guid(id).then(|| id.to_string())
        };
        let id = from_body.or_else(from_header).ok_or_else(|| {
            Outcome::Failed(DeliveryError::Transient {
                status: Some(answer.status.as_u16()),
                code: None,
                detail: format!("the {entity} create answered without the new row's {column}"),
            })
        })?;
        tracing::info!(message = "Profile created.", entity, id = %id);
        Ok(id)
    }
}

fn ttl_of(found: &Resolved, hit_ttl: Duration) -> Duration {
    match found {
        Resolved::Id(_) => hit_ttl,
        Resolved::Unresolved(_) => MISS_TTL.min(hit_ttl),
    }
}

fn into_result(found: &Resolved) -> Result<String, Outcome> {
    match found {
        Resolved::Id(id) => Ok(id.clone()),
        Resolved::Unresolved(reason) => Err(Outcome::Invalid { reason: reason.clone() }),
    }
}
