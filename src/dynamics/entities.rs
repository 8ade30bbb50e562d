//! Entity definitions read from Dataverse (SPEC §19) and the row writes
//! themselves. A definition (`EntityDefinitions` with `Attributes`, `Keys`,
//! `ManyToOneRelationships`) is cached per entity set and Dataverse
//! environment for `D365_SCHEMA_TTL_SECONDS`, one read shared by concurrent
//! callers. A definition that cannot be read never blocks delivery: rows are
//! sent as mapped and the read is tried again no sooner than 60 s later.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::metadata::{METADATA_TIMEOUT, UNREADABLE_RETRY};
use super::{classify, Dynamics};
use crate::delivery::{Principal, Sent};
use crate::outcome::DeliveryError;
use crate::plan::RowWrite;
use crate::rows::{definition, EntityDef, EntityLookup};

/// The entity definitions of one execution environment.
pub struct Entities {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    /// (entity set, column) pairs already warned about.
    warned: Mutex<HashSet<(String, String)>>,
    warned_unreadable: AtomicBool,
    /// Definition requests made (tests, bench).
    pub requests: AtomicU64,
    /// Columns omitted because the entity lacks them.
    pub omitted: AtomicU64,
}

#[derive(Default)]
struct Entry {
    /// The base URL it was read from, the definition (`None`: no such set), when.
    known: Option<(String, Option<Arc<EntityDef>>, Instant)>,
    failed_at: Option<(String, Instant, DeliveryError)>,
}

impl Entities {
    pub fn new(ttl: Duration) -> Entities {
        Entities {
            ttl,
            entries: Mutex::default(),
            warned: Mutex::default(),
            warned_unreadable: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            omitted: AtomicU64::new(0),
        }
    }

    /// The entity set's definition, from the cache or read now (one read for
    /// all concurrent callers of the same set), within `deadline`.
    pub async fn lookup(&self, dynamics: &Dynamics, entity: &str, deadline: Instant) -> EntityLookup {
        let slot = crate::lock(&self.entries).entry(entity.to_string()).or_default().clone();
        let mut entry = match tokio::time::timeout_at(deadline.into(), slot.lock()).await {
            Ok(entry) => entry,
            Err(_) => return EntityLookup::Unreadable(DeliveryError::Deadline),
        };
        let base = match dynamics.credentials_until(deadline).await {
            Ok(creds) => dynamics.base_url(&creds),
            Err(error) => return EntityLookup::Unreadable(error.into()),
        };
        if let Some((at, known, read)) = &entry.known {
            if *at == base && read.elapsed() < self.ttl {
                return lookup_of(known);
            }
        }
        if let Some((at, failed, error)) = &entry.failed_at {
            if *at == base && failed.elapsed() < UNREADABLE_RETRY {
                return EntityLookup::Unreadable(error.clone());
            }
        }
        match self.read(dynamics, entity, deadline).await {
            Ok(known) => {
                let known = known.map(Arc::new);
                entry.known = Some((base, known.clone(), Instant::now()));
                entry.failed_at = None;
                lookup_of(&known)
            }
            Err(error) => {
                if !self.warned_unreadable.swap(true, Ordering::Relaxed) {
                    let fix = if error.status() == Some(403) {
                        "give the application user Read on Entity, Attribute and Relationship (System Customizer has them)"
                    } else {
                        "it is read again in 60 s; `d365-trigger-relay check` shows the cause"
                    };
                    tracing::warn!(message = "Entity definition unreadable: rows are sent as mapped.", entity, fix, error = %error);
                }
                entry.failed_at = Some((base, Instant::now(), error.clone()));
                EntityLookup::Unreadable(error)
            }
        }
    }

    /// Reads the definition now, without the cache: `Ok(None)` when no entity has that set name.
    pub async fn read(&self, dynamics: &Dynamics, entity: &str, deadline: Instant) -> Result<Option<EntityDef>, DeliveryError> {
        let deadline = deadline.min(Instant::now() + METADATA_TIMEOUT);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (status, body) = dynamics.get(&definition::query(entity), deadline).await?;
        if !status.is_success() {
            return Err(classify(status, &reqwest::header::HeaderMap::new(), &body));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|_| DeliveryError::Transient {
            status: Some(status.as_u16()),
            code: None,
            detail: "the EntityDefinitions answer is not JSON".into(),
        })?;
        EntityDef::from_answer(&answer).map_err(|detail| DeliveryError::Transient { status: Some(status.as_u16()), code: None, detail })
    }

    /// Looks up each distinct entity set once, concurrently.
    pub async fn lookup_all(&self, dynamics: &Dynamics, entities: BTreeSet<String>, deadline: Instant) -> HashMap<String, EntityLookup> {
        let reads = entities.into_iter().map(|e| async move {
            let lookup = self.lookup(dynamics, &e, deadline).await;
            (e, lookup)
        });
        futures_util::future::join_all(reads).await.into_iter().collect()
    }

    /// Counts omitted columns and warns once per environment, entity set and column.
    pub fn note_omitted(&self, omitted: &[(String, String)]) {
        if omitted.is_empty() {
            return;
        }
        self.omitted.fetch_add(omitted.len() as u64, Ordering::Relaxed);
        let mut warned = crate::lock(&self.warned);
        for (entity, column) in omitted {
            if warned.insert((entity.clone(), column.clone())) {
                tracing::warn!(message = "Column omitted: the entity does not have it.", entity = %entity, column = %column);
            }
        }
    }
}

fn lookup_of(known: &Option<Arc<EntityDef>>) -> EntityLookup {
    match known {
        Some(d) => EntityLookup::Found(d.clone()),
        None => EntityLookup::Missing,
    }
}

impl Dynamics {
    /// One attempt at a row write (SPEC §19): the row's request through the one
    /// table-request path; a 412 to a create by key means the row exists (a
    /// success); a refusal names the row (entity and key).
    pub async fn write_row_once(&self, row: &RowWrite, principal: &Principal, deadline: Instant) -> Result<Sent, DeliveryError> {
        let body = Value::Object(row.body.clone());
        match self.row_request(principal, row.method.clone(), &row.path, Some(&body), &row.headers, deadline).await {
            Ok(_) => Ok(Sent::default()),
            Err(DeliveryError::Rejected { status: 412, .. }) if row.exists_is_success => Ok(Sent::default()),
            Err(DeliveryError::Rejected { status, code, message }) => {
                Err(DeliveryError::Rejected { status, code, message: format!("row {}: {message}", row.label) })
            }
            Err(DeliveryError::Transient { status, code, detail }) => {
                Err(DeliveryError::Transient { status, code, detail: format!("row {}: {detail}", row.label) })
            }
            Err(other) => Err(other),
        }
    }
}
