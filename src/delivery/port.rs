//! The port delivery uses: what delivery needs from Dynamics. It belongs to
//! delivery; [`crate::dynamics::Dynamics`] implements it.

use std::future::Future;
use std::time::Instant;

use serde_json::{Map, Value};

use super::pool::Principal;
use crate::mapping::TriggerCall;
use crate::outcome::DeliveryError;

/// One request of a record's plan (`actions`), as the port sends it.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `POST /{trigger}`: raise a custom trigger (SPEC §3).
    Trigger(&'a TriggerCall),
    /// `PATCH /{entity}({id})` with `If-Match: *`: an `identify` event's update (SPEC §14).
    Update(&'a ProfileUpdate),
    /// A row (SPEC §19): `PATCH` by key or `POST`.
    Row(&'a RowWrite),
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

/// What a successful call tells about Dataverse's capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sent {
    /// `x-ms-dop-hint`: the degree of parallelism Dataverse recommends.
    pub dop_hint: Option<usize>,
    /// A read (metadata, `check`): it spent the request budget, but its latency
    /// says nothing of the calls the concurrency limit is tuned on.
    pub read: bool,
}

/// An `identify` event's update of its profile row: an action of its own,
/// delivered in the record's turn (FIFO order, idempotency, the deadline).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileUpdate {
    /// The entity set (`contacts`, `leads`).
    pub entity: String,
    /// The row's id.
    pub id: String,
    /// The columns to write.
    pub body: Map<String, Value>,
}

/// One row an event writes (SPEC §19): an action of its own, with its own
/// idempotency key, delivered in order before the record's trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite {
    /// `PATCH` (by key) or `POST` (a create without a key).
    pub method: reqwest::Method,
    /// After `/api/data/v9.2/`: `accounts(accountnumber='A-1')`, `accounts({id})` or `accounts`.
    pub path: String,
    /// The mode's condition: `If-Match: *` (update), `If-None-Match: *` (create by key).
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Map<String, Value>,
    /// `{event key}#{path}`, or `{event key}#{entity}#{n}` for an unkeyed create.
    pub key: String,
    /// How reasons name the row: its path (entity and key).
    pub label: String,
    /// A create by key: 412 (the row exists) is a success.
    pub exists_is_success: bool,
}
