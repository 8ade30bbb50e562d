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
