//! Trigger definitions read from Dataverse (SPEC §13): the `customapis` query,
//! cached per trigger and Dataverse environment for `D365_SCHEMA_TTL_SECONDS`,
//! one read shared by concurrent callers, refreshed after a 400 about a
//! parameter. A definition that cannot be read never blocks delivery: records
//! are sent as mapped and the read is tried again no sooner than 60 s later.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::{classify, Dynamics};
use crate::outcome::{DeliveryError, Outcome};
use crate::plan::TriggerCall;
use crate::schema::{self, Definition};

/// After a failed read, the next one waits at least this long.
pub const UNREADABLE_RETRY: Duration = Duration::from_secs(60);
/// The longest a metadata read may hold up an invocation.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// What is known of a trigger's definition.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<Definition>),
    /// No Custom API has that unique name: a POST would be answered 404.
    Missing,
    /// The definition could not be read: records are sent as mapped.
    Unreadable(DeliveryError),
}

/// The definitions of one execution environment.
pub struct Schemas {
    ttl: Duration,
    entries: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    /// (trigger, parameter) pairs already warned about.
    warned: std::sync::Mutex<HashSet<(String, String)>>,
    warned_unreadable: AtomicBool,
    /// Metadata requests made (tests, bench).
    pub requests: AtomicU64,
    /// Parameters omitted because the trigger lacks them (metric `OmittedAttributes`).
    pub omitted: AtomicU64,
}

#[derive(Default)]
struct Entry {
    /// The base URL it was read from, the definition (`None`: no such trigger), when.
    known: Option<(String, Option<Arc<Definition>>, Instant)>,
    failed_at: Option<(String, Instant, DeliveryError)>,
    stale: bool,
}

impl Schemas {
    pub fn new(ttl: Duration) -> Schemas {
        Schemas {
            ttl,
            entries: Default::default(),
            warned: Default::default(),
            warned_unreadable: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            omitted: AtomicU64::new(0),
        }
    }

    /// The trigger's definition, from the cache or read now (one read for all
    /// concurrent callers of the same trigger), within `deadline`.
    pub async fn lookup(&self, dynamics: &Dynamics, trigger: &str, deadline: Instant) -> Lookup {
        let slot = crate::lock(&self.entries).entry(trigger.to_string()).or_default().clone();
        let mut entry = slot.lock().await;
        let base = match dynamics.credentials().await {
            Ok(creds) => dynamics.base_url(&creds),
            Err(error) => return Lookup::Unreadable(error.into()),
        };
        if let Some((at, definition, read)) = &entry.known {
            if *at == base && !entry.stale && read.elapsed() < self.ttl {
                return found(definition);
            }
        }
        if let Some((at, failed, error)) = &entry.failed_at {
            if *at == base && failed.elapsed() < UNREADABLE_RETRY {
                return Lookup::Unreadable(error.clone());
            }
        }
        match self.read(dynamics, trigger, deadline).await {
            Ok(definition) => {
                let definition = definition.map(Arc::new);
                entry.known = Some((base, definition.clone(), Instant::now()));
                entry.failed_at = None;
                entry.stale = false;
                found(&definition)
            }
            Err(error) => {
                if !self.warned_unreadable.swap(true, Ordering::Relaxed) {
                    let fix = if error.status() == Some(403) {
                        "give the application user Read on Custom API and Custom API Request Parameter"
                    } else {
                        "it is read again in 60 s; `d365-trigger-relay check` shows the cause"
                    };
                    tracing::warn!(message = "Trigger definition unreadable: records are sent as mapped.", trigger, fix, error = %error);
                }
                entry.failed_at = Some((base, Instant::now(), error.clone()));
                Lookup::Unreadable(error)
            }
        }
    }

    /// Reads the definition now, without the cache: `Ok(None)` when no Custom API has that name.
    pub async fn read(&self, dynamics: &Dynamics, trigger: &str, deadline: Instant) -> Result<Option<Definition>, DeliveryError> {
        let deadline = deadline.min(Instant::now() + METADATA_TIMEOUT);
        let query = format!(
            "customapis?$filter=uniquename eq '{}'&$select=uniquename&$expand=CustomAPIRequestParameters($select=uniquename,type,isoptional,logicalentityname)",
            trigger.replace('\'', "''")
        );
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (status, body) = dynamics.get(&query, deadline).await?;
        if !status.is_success() {
            return Err(classify(status, &reqwest::header::HeaderMap::new(), &body));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| DeliveryError::Transient {
            status: Some(status.as_u16()),
            code: None,
            detail: "the customapis answer is not JSON".into(),
        })?;
        Definition::from_customapis(trigger, &answer).map_err(|detail| DeliveryError::Transient { status: Some(status.as_u16()), code: None, detail })
    }

    /// Looks up each distinct trigger once, concurrently.
    pub async fn lookup_all(&self, dynamics: &Dynamics, triggers: HashSet<String>, deadline: Instant) -> HashMap<String, Lookup> {
        let reads = triggers.into_iter().map(|t| async move {
            let lookup = self.lookup(dynamics, &t, deadline).await;
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
                let slot = crate::lock(&self.entries).get(trigger).cloned();
                if let Some(slot) = slot {
                    if let Ok(mut entry) = slot.try_lock() {
                        entry.stale = true;
                        entry.failed_at = None;
                    }
                }
            }
        }
    }
}

fn found(definition: &Option<Arc<Definition>>) -> Lookup {
    match definition {
        Some(d) => Lookup::Found(d.clone()),
        None => Lookup::Missing,
    }
}

impl Dynamics {
    /// A Dataverse Web API read: `GET {base}/api/data/v9.2/{path_and_query}`
    /// with the cached token (refreshed once after a 401), answered before `deadline`.
    pub async fn get(&self, path_and_query: &str, deadline: Instant) -> Result<(StatusCode, Vec<u8>), DeliveryError> {
        let answer = self.read(path_and_query, deadline).await?;
        Ok((answer.status, answer.body))
    }

    /// A read (metadata, `check`) as any call is made (SPEC §7, §17.3): a slot of
    /// the principal with the most room, its pace and pauses, the one retry
    /// classifier; a non-2xx answer is that classifier's error.
    pub async fn read(&self, path_and_query: &str, deadline: Instant) -> Result<super::rows::Answer, DeliveryError> {
        let budget = crate::deadline::Cutoffs {
            start_cutoff: deadline,
            hard_cutoff: deadline,
            settle_cutoff: deadline,
            throttled_attempts: crate::deadline::MAX_THROTTLED_ATTEMPTS,
        };
        let run = crate::delivery::with_retries(&self.pool, budget, |deadline, principal| async move {
            let answer = self.row_request(&principal, reqwest::Method::GET, path_and_query, None, &[], deadline).await?;
            Ok((answer, crate::delivery::Sent { dop_hint: None, read: true }))
        })
        .await;
        run.result
    }

    /// Gets a token of `principal` now (the `check` command's third step, once per principal).
    pub async fn check_token(&self, principal: &crate::delivery::Principal, deadline: Instant) -> Result<(), DeliveryError> {
        let creds = self.credentials_until(deadline).await?;
        self.token(creds, principal, deadline).await.map(|_| ())
    }
}

impl Dynamics {
    /// Reads the credentials from a file holding the secret's JSON instead of
    /// Secrets Manager (`D365_SECRET_FILE`, commands only); at construction, by [`crate::startup`].
    pub(crate) fn use_secret_file(&mut self, path: impl Into<std::path::PathBuf>) {
        self.secrets.use_file(path);
    }
}
