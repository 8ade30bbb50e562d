//! Entity definitions read from Dataverse (SPEC §19): `EntityDefinitions`
//! with `Attributes`, `Keys` and `ManyToOneRelationships`, kept in the
//! definition [`Catalog`] per entity set and Dataverse environment. A
//! definition that cannot be read never blocks delivery: rows are sent as
//! mapped and the read is tried again no sooner than 60 s later.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::catalog::{Catalog, METADATA_TIMEOUT};
use super::Destination;
use crate::outcome::DeliveryError;
use crate::rows::{definition, EntityDef, EntityLookup};

/// The entity definitions of one execution environment.
pub struct Entities {
    catalog: Catalog<EntityDef>,
    /// (entity set, column) pairs already warned about.
    warned: Mutex<HashSet<(String, String)>>,
    /// Definition requests made (tests, bench).
    pub requests: AtomicU64,
    /// Columns omitted because the entity lacks them.
    pub omitted: AtomicU64,
}

impl Entities {
    pub fn new(ttl: Duration) -> Entities {
        Entities { catalog: Catalog::new(ttl), warned: Mutex::default(), requests: AtomicU64::new(0), omitted: AtomicU64::new(0) }
    }

    /// The entity set's definition, from the cache or read now (one read for
    /// all concurrent callers of the same set), within `deadline`.
    pub async fn lookup(&self, destination: &Destination, entity: &str, deadline: Instant) -> EntityLookup {
        let warn = |error: &DeliveryError| {
            let fix = if error.status() == Some(403) {
                "give the application user Read on Entity, Attribute and Relationship (System Customizer has them)"
            } else {
                "it is read again in 60 s; `d365-trigger-relay check` shows the cause"
            };
            tracing::warn!(message = "Entity definition unreadable: rows are sent as mapped.", entity, fix, error = %error);
        };
        self.catalog.lookup(destination, entity, deadline, || self.read(destination, entity, deadline), warn).await
    }

    /// Reads the definition now, without the cache: `Ok(None)` when no entity has that set name.
    pub async fn read(&self, destination: &Destination, entity: &str, deadline: Instant) -> Result<Option<EntityDef>, DeliveryError> {
        let deadline = deadline.min(Instant::now() + METADATA_TIMEOUT);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = destination.read(&definition::query(entity), deadline).await?;
        let status = answer.status.as_u16();
        let answer: Value = serde_json::from_slice(&answer.body).map_err(|_| DeliveryError::Transient {
            status: Some(status),
            code: None,
            detail: "the EntityDefinitions answer is not JSON".into(),
        })?;
        EntityDef::from_answer(&answer).map_err(|detail| DeliveryError::Transient { status: Some(status), code: None, detail })
    }

    /// Looks up each distinct entity set once, concurrently.
    pub async fn lookup_all(&self, destination: &Destination, entities: BTreeSet<String>, deadline: Instant) -> HashMap<String, EntityLookup> {
        let reads = entities.into_iter().map(|e| async move {
            let lookup = self.lookup(destination, &e, deadline).await;
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
