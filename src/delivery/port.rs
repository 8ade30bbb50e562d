//! The port delivery uses: what delivery needs from Dynamics. It belongs to
//! delivery; [`crate::dynamics::Dynamics`] implements it.

use std::future::Future;
use std::time::Instant;

use crate::mapping::TriggerCall;
use crate::outcome::DeliveryError;

/// The port delivery talks to: one attempt at one trigger call, answered
/// before `deadline`. A 401 is handled inside (token refreshed, retried once).
pub trait DynamicsPort: Send + Sync + 'static {
    fn send(&self, call: &TriggerCall, deadline: Instant) -> impl Future<Output = Result<Sent, DeliveryError>> + Send;

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
