//! The port delivery uses: what delivery needs from Dynamics. It belongs to
//! delivery; [`crate::dynamics::Dynamics`] implements it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::outcome::DeliveryError;
use crate::plan::{ProfileUpdate, RowWrite, TriggerCall};

/// One request of a record's plan (`actions`), as the port sends it.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `POST /{trigger}`: raise a custom trigger (SPEC §3).
    Trigger(&'a TriggerCall),
    /// `PATCH /{entity}({id})` with `If-Match: *`: an `identify` event's update (SPEC §14).
    Update(&'a ProfileUpdate),
    /// A row (SPEC §19): `PATCH` by key or `POST`.
    Row(&'a RowWrite),
    /// `GET /{path_and_query}` of a table (identity lookups, SPEC §14); the
    /// answer's body comes back in [`Sent::answer`].
    Get(&'a str),
    /// `GET /{path_and_query}` of metadata (trigger and entity definitions,
    /// `check`): it spends the request budget but its latency does not tune
    /// the concurrency limit ([`Sent::read`]).
    Metadata(&'a str),
    /// `POST /{entity}` with `Prefer: return=representation`: a profile row
    /// created by identity (SPEC §14); the created row comes back in [`Sent::answer`].
    Create { entity: &'a str, body: &'a serde_json::Map<String, serde_json::Value> },
}

/// The port delivery talks to: one attempt at one request, made as a
/// principal and answered before `deadline`, through the one Web API path
/// (one 401 policy inside: the token refreshed, then the secret re-read).
pub trait DynamicsPort: Send + Sync + 'static {
    /// The request is made as `principal` (SPEC §17.3): with its token.
    fn execute(&self, request: Request<'_>, principal: &Principal, deadline: Instant) -> impl Future<Output = Result<Sent, DeliveryError>> + Send;

    /// A permit to start one trigger call under the per-minute trigger ceiling
    /// (SPEC §17.1), waited for while it can come before `until`; else
    /// [`DeliveryError::Ceiling`]. Without a ceiling, at once.
    fn permit(&self, until: Instant) -> impl Future<Output = Result<(), DeliveryError>> + Send {
        let _ = until;
        async { Ok(()) }
    }
}

/// Told the secret's application users each time the adapter reads the
/// secret, so that the pool follows them (SPEC §17.3). The pool implements it;
/// the composition root hands it to the adapter.
pub trait Principals: Send + Sync {
    fn follow(&self, client_ids: &[&str], version: &str);
}

/// What a successful call tells about Dataverse's capacity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sent {
    /// `x-ms-dop-hint`: the degree of parallelism Dataverse recommends.
    pub dop_hint: Option<usize>,
    /// A read (metadata, `check`): it spent the request budget, but its latency
    /// says nothing of the calls the concurrency limit is tuned on.
    pub read: bool,
    /// The answer's HTTP status (a record line's `status`).
    pub status: Option<u16>,
    /// The answer, for the requests that read one (`Get`, `Metadata`, `Create`).
    pub answer: Option<Answer>,
}

/// A 2xx answer of the Web API: its status, headers and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// One application user, as delivery knows it: its client id (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(Arc<str>);

impl Principal {
    pub fn new(client_id: &str) -> Principal {
        Principal(client_id.into())
    }

    pub fn client_id(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
