//! Trigger definitions read from Dataverse (SPEC §13): the `customapis` query,
//! kept in the definition [`Catalog`] per trigger and Dataverse environment,
//! refreshed after a 400 about a parameter. A definition that cannot be read
//! never blocks delivery: records are sent as mapped and the read is tried
//! again no sooner than 60 s later.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::catalog::{Catalog, Known, METADATA_TIMEOUT};
use super::Destination;
use crate::outcome::{DeliveryError, Outcome};
use crate::plan::TriggerCall;
use crate::schema::{self, Definition};

/// What is known of a trigger's definition.
pub type Lookup = Known<Definition>;

/// The trigger definitions of one execution environment.
pub struct Schemas {
    catalog: Catalog<Definition>,
    /// (trigger, parameter) pairs already warned about.
    warned: std::sync::Mutex<HashSet<(String, String)>>,
    /// Metadata requests made (tests, bench).
    pub requests: AtomicU64,
    /// Parameters omitted because the trigger lacks them (metric `OmittedAttributes`).
    pub omitted: AtomicU64,
}

impl Schemas {
    pub fn new(ttl: Duration) -> Schemas {
        Schemas { catalog: Catalog::new(ttl), warned: Default::default(), requests: AtomicU64::new(0), omitted: AtomicU64::new(0) }
    }

    /// The trigger's definition, from the cache or read now (one read for all
    /// concurrent callers of the same trigger), within `deadline`.
    pub async fn lookup(&self, destination: &Destination, trigger: &str, deadline: Instant) -> Lookup {
        let warn = |error: &DeliveryError| {
            let fix = if error.status() == Some(403) {
                "give the application user Read on Custom API and Custom API Request Parameter"
            } else {
                "it is read again in 60 s; `d365-trigger-relay check` shows the cause"
            };
            tracing::warn!(message = "Trigger definition unreadable: records are sent as mapped.", trigger, fix, error = %error);
        };
        self.catalog.lookup(destination, trigger, deadline, || self.read(destination, trigger, deadline), warn).await
    }

    /// Reads the definition now, without the cache: `Ok(None)` when no Custom API has that name.
    pub async fn read(&self, destination: &Destination, trigger: &str, deadline: Instant) -> Result<Option<Definition>, DeliveryError> {
        let deadline = deadline.min(Instant::now() + METADATA_TIMEOUT);
        let query = format!(
            "customapis?$filter=uniquename eq '{}'&$select=uniquename&$expand=CustomAPIRequestParameters($select=uniquename,type,isoptional,logicalentityname)",
            trigger.replace('\'', "''")
        );
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = destination.read(&query, deadline).await?;
        let status = answer.status.as_u16();
        let answer: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|_| DeliveryError::Transient {
            status: Some(status),
            code: None,
            detail: "the customapis answer is not JSON".into(),
        })?;
        Definition::from_customapis(trigger, &answer).map_err(|detail| DeliveryError::Transient { status: Some(status), code: None, detail })
    }

    /// Looks up each distinct trigger once, concurrently.
    pub async fn lookup_all(&self, destination: &Destination, triggers: HashSet<String>, deadline: Instant) -> HashMap<String, Lookup> {
        let reads = triggers.into_iter().map(|t| async move {
            let lookup = self.lookup(destination, &t, deadline).await;
            (t, lookup)
        });
        futures_util::future::join_all(reads).await.into_iter().collect()
    }

    /// Fits one call to its trigger's definition in place, or says why the
    /// record must not be sent.
    pub fn apply(&self, lookup: Option<&Lookup>, call: &mut TriggerCall) -> Result<(), Outcome> {
        match lookup {
            None | Some(Lookup::Unreadable(_)) => Ok(()),
            Some(Lookup::Missing) => Err(Outcome::Rejected(DeliveryError::Rejected {
                status: 404,
                code: Some("0x8006088a".into()),
                message: format!("no custom API named '{}' in this environment (read from its metadata); not sent", call.trigger),
            })),
            Some(Lookup::Found(definition)) => {
                let fitted = schema::fit(definition, std::mem::take(&mut call.body)).map_err(|reason| Outcome::Invalid { reason })?;
                if !fitted.omitted.is_empty() {
                    self.omitted.fetch_add(fitted.omitted.len() as u64, Ordering::Relaxed);
                    let mut warned = crate::lock(&self.warned);
                    for parameter in &fitted.omitted {
                        if warned.insert((call.trigger.clone(), parameter.clone())) {
                            tracing::warn!(message = "Parameter omitted: the trigger does not have it.", trigger = %call.trigger, parameter = %parameter);
                        }
                    }
                }
                call.body = fitted.body;
                Ok(())
            }
        }
    }

    /// After Dataverse answers 400 about a parameter, the trigger's definition
    /// is read again before its next call.
    pub fn note_rejection(&self, trigger: &str, error: &DeliveryError) {
        if let DeliveryError::Rejected { status: 400, message, .. } = error {
            let about_parameter = ["parameter", "Required field", "Cannot convert"].iter().any(|w| message.contains(w));
            if about_parameter {
                self.catalog.mark_stale(trigger);
            }
        }
    }
}
