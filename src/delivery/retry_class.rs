//! What an error means (SPEC §7): the one classifier, [`class`], derived from
//! the error type. The retry loop, the pacer and the record's outcome all ask
//! it (as Vector's `RetryLogic`). The bottom of the engine: it imports only the model.

use std::time::Duration;

use crate::outcome::{DeliveryError, Outcome};

/// The longest pause a Retry-After can impose (upstream numbers are untrusted).
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// Dataverse's error code for "Number of concurrent requests exceeded the limit".
pub const CONCURRENCY_LIMIT_CODE: &str = "0x80072326";

/// What a failed attempt means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryClass {
    /// Dataverse refused it for good (400/403/404…): not retried, `rejected`.
    Permanent,
    /// 500, 502, 504…: retried with backoff.
    Transient,
    /// No answer, 503 or 408: retried with backoff, and the limit shrinks.
    BackPressure,
    /// 429: retried after `retry_after` (clamped), which pauses the whole
    /// environment; the concurrency limit (`0x80072326`) also lowers the limit.
    Throttled { retry_after: Duration, concurrency_limit: bool },
    /// Token or secret trouble, or a 401 to a fresh token: the Dynamics adapter
    /// already refreshed and retried; not retried again here.
    Auth,
    /// Configuration, deadline, blocked group, internal error: not retried here.
    Stop,
}

/// The one classifier.
pub fn class(error: &DeliveryError) -> RetryClass {
    match error {
        DeliveryError::Rejected { .. } => RetryClass::Permanent,
        // The wait for a permit ran to the start cut-off: failed, for a later invocation (SPEC §17.1).
        DeliveryError::Ceiling { .. } => RetryClass::Stop,
        DeliveryError::Throttled { retry_after, code } => RetryClass::Throttled {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_PAUSE),
            concurrency_limit: code.as_deref() == Some(CONCURRENCY_LIMIT_CODE),
        },
        DeliveryError::Transient { status: None | Some(503) | Some(408), .. } => RetryClass::BackPressure,
        DeliveryError::Transient { .. } => RetryClass::Transient,
        DeliveryError::Unauthorized { .. } | DeliveryError::Credentials { .. } | DeliveryError::TokenUnavailable { .. } => RetryClass::Auth,
        DeliveryError::Config(_)
        | DeliveryError::SecretsUnavailable { .. }
        | DeliveryError::HeldBack { .. }
        | DeliveryError::Deadline
        | DeliveryError::GroupBlocked { .. }
        | DeliveryError::Internal(_) => RetryClass::Stop,
    }
}

/// The record's outcome after its last attempt: permanent errors are `rejected`, the rest `failed`.
pub fn outcome_of(error: DeliveryError) -> Outcome {
    match class(&error) {
        RetryClass::Permanent => Outcome::Rejected(error),
        _ => Outcome::Failed(error),
    }
}
