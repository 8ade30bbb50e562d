//! The port delivery uses: what delivery needs from Dynamics. It belongs to
//! delivery; [`crate::dynamics::Dynamics`] implements it.

use std::future::Future;
use std::time::Instant;

use serde_json::{Map, Value};

use super::pool::Principal;
use crate::mapping::TriggerCall;
use crate::outcome::DeliveryError;

/// The port delivery talks to: one attempt at one trigger call, answered
/// before `deadline`. A 401 is handled inside (token refreshed, retried once).
pub trait DynamicsPort: Send + Sync + 'static {
    /// The call is made as `principal` (SPEC §17.3): with its token.
    fn send(&self, call: &TriggerCall, principal: &Principal, deadline: Instant) -> impl Future<Output = Result<Sent, DeliveryError>> + Send;

    /// One attempt at updating a profile row (`PATCH /{entity}({id})` with
    /// `If-Match: *`: an `identify` event, SPEC §14), answered before `deadline`.
    fn update(&self, update: &ProfileUpdate, principal: &Principal, deadline: Instant) -> impl Future<Output = Result<Sent, DeliveryError>> + Send {
        let _ = (update, principal, deadline);
        async { Err(DeliveryError::Internal("this port writes no rows".into())) }
    }

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
