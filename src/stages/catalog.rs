//! One definition cache for trigger and entity definitions (SPEC §13, §19):
//! per name and Dataverse environment, kept for `D365_SCHEMA_TTL_SECONDS`, one
//! read shared by concurrent callers, every wait bounded by the caller's
//! deadline. A definition that cannot be read never blocks delivery: the
//! caller sends as mapped, and the read is tried again no sooner than
//! [`UNREADABLE_RETRY`] later.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Destination;
use crate::lock;
use crate::outcome::DeliveryError;
pub use crate::plan::Known;

/// After a failed read, the next one waits at least this long.
pub const UNREADABLE_RETRY: Duration = Duration::from_secs(60);
/// The longest a definition read may hold up an invocation.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// The definitions of one kind, for one execution environment.
pub struct Catalog<D> {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry<D>>>>>,
    warned_unreadable: AtomicBool,
}

struct Entry<D> {
    /// The base URL it was read from, the definition (`None`: no such name), when.
    known: Option<(String, Option<Arc<D>>, Instant)>,
    failed_at: Option<(String, Instant, DeliveryError)>,
    /// Read again before the next use (a 400 about a parameter).
    stale: bool,
}

impl<D> Default for Entry<D> {
    fn default() -> Self {
        Entry { known: None, failed_at: None, stale: false }
    }
}

impl<D> Catalog<D> {
    pub fn new(ttl: Duration) -> Catalog<D> {
        Catalog { ttl, entries: Mutex::default(), warned_unreadable: AtomicBool::new(false) }
    }

    /// The definition of `name` in `destination`'s environment: from the cache,
    /// or read now by `read` (one read for all concurrent callers of the same
    /// name). The wait for another caller's read ends at `deadline`. The first
    /// failed read of the catalog is told to `warn_once`.
    pub async fn lookup<F, Fut>(&self, destination: &Destination, name: &str, deadline: Instant, read: F, warn_once: impl FnOnce(&DeliveryError)) -> Known<D>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<D>, DeliveryError>>,
    {
        let slot = lock(&self.entries).entry(name.to_string()).or_default().clone();
        let mut entry = match tokio::time::timeout_at(deadline.into(), slot.lock()).await {
            Ok(entry) => entry,
            Err(_) => return Known::Unreadable(DeliveryError::Deadline),
        };
        let base = match destination.credentials_until(deadline).await {
            Ok(creds) => destination.base_url(&creds),
            Err(error) => return Known::Unreadable(error.into()),
        };
        if let Some((at, known, read)) = &entry.known {
            if *at == base && !entry.stale && read.elapsed() < self.ttl {
                return known_of(known);
            }
        }
        if let Some((at, failed, error)) = &entry.failed_at {
            if *at == base && failed.elapsed() < UNREADABLE_RETRY {
                return Known::Unreadable(error.clone());
            }
        }
        match read().await {
            Ok(known) => {
                let known = known.map(Arc::new);
                entry.known = Some((base, known.clone(), Instant::now()));
                entry.failed_at = None;
                entry.stale = false;
                known_of(&known)
            }
            Err(error) => {
                if !self.warned_unreadable.swap(true, Ordering::Relaxed) {
                    warn_once(&error);
                }
                entry.failed_at = Some((base, Instant::now(), error.clone()));
                Known::Unreadable(error)
            }
        }
    }

    /// `name` is read again before its next use, unless a read is under way.
    pub fn mark_stale(&self, name: &str) {
        let slot = lock(&self.entries).get(name).cloned();
        if let Some(slot) = slot {
            if let Ok(mut entry) = slot.try_lock() {
                entry.stale = true;
                entry.failed_at = None;
            }
        }
    }
}

fn known_of<D>(known: &Option<Arc<D>>) -> Known<D> {
    match known {
        Some(d) => Known::Found(d.clone()),
        None => Known::Missing,
    }
}
