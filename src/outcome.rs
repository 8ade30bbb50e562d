//! What can happen to one record (SPEC §6): the delivery error, whose variants
//! carry their retry class, and the record's outcome.

use std::time::Duration;

use crate::config::ConfigError;

/// Why a trigger call did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Dataverse 400/403/404 (and other permanent 4xx): fixing the data or the setup is needed.
    #[error("Dataverse answered {status}{}: {message}", code_suffix(code))]
    Rejected { status: u16, code: Option<String>, message: String },
    /// Dataverse 429 (service protection limits).
    #[error("Dataverse throttled the call (429{}), Retry-After {}", code_suffix(code), retry_after.map(|d| format!("{}s", d.as_secs())).unwrap_or_else(|| "not given".into()))]
    Throttled { retry_after: Option<Duration>, code: Option<String> },
    /// 5xx, timeouts and connection errors: may pass on retry.
    #[error("{detail}")]
    Transient { status: Option<u16>, code: Option<String>, detail: String },
    /// Dataverse answered 401 to a freshly issued token.
    #[error("Dataverse answered 401 to a fresh token: {detail}")]
    Unauthorized { detail: String },
    /// Entra rejected the client credentials (invalid_client, 700016, 90002, …).
    #[error("Entra rejected the client credentials ({code}): {detail}")]
    Credentials { code: String, detail: String },
    /// The token endpoint could not be reached or kept failing.
    #[error("the Entra token endpoint is unavailable: {detail}")]
    TokenUnavailable { detail: String },
    #[error("configuration error: {0}")]
    Config(ConfigError),
    /// The invocation's remaining time ran out before the record was done.
    #[error("not finished before the invocation's deadline")]
    Deadline,
    /// A FIFO record not attempted because an earlier record of its group failed.
    #[error("not attempted: an earlier message of group '{group}' failed")]
    GroupBlocked { group: String },
    /// A bug: the record's work panicked. The other records are unaffected.
    #[error("internal error: {0}")]
    Internal(String),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
}

impl DeliveryError {
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Rejected { status, .. } => Some(*status),
            DeliveryError::Throttled { .. } => Some(429),
            DeliveryError::Transient { status, .. } => *status,
            DeliveryError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// Dataverse's `error.code`, or the AADSTS code from Entra.
    pub fn code(&self) -> Option<&str> {
        match self {
            DeliveryError::Rejected { code, .. } | DeliveryError::Throttled { code, .. } | DeliveryError::Transient { code, .. } => code.as_deref(),
            DeliveryError::Credentials { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the record should be tried again later (webhook 503, SQS redelivery).
    pub fn retryable(&self) -> bool {
        !matches!(self, DeliveryError::Rejected { .. })
    }
}

/// The outcome of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Not mapped: counted, never sent.
    Dropped { reason: String },
    /// Already raised (idempotency): a success.
    Duplicate,
    /// Bad JSON, missing userId or a required attribute: never sent.
    Invalid { reason: String },
    /// Dataverse refused it for good.
    Rejected(DeliveryError),
    /// May pass later.
    Failed(DeliveryError),
}

impl Outcome {
    pub fn from_error(error: DeliveryError) -> Outcome {
        if error.retryable() {
            Outcome::Failed(error)
        } else {
            Outcome::Rejected(error)
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Dropped { .. } => "dropped",
            Outcome::Duplicate => "duplicate",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Rejected(_) => "rejected",
            Outcome::Failed(_) => "failed",
        }
    }

    /// Delivered, dropped and duplicate are successes; the rest are batch item failures.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::Dropped { .. } | Outcome::Duplicate)
    }

    pub fn error(&self) -> Option<&DeliveryError> {
        match self {
            Outcome::Rejected(e) | Outcome::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// A one-line explanation for reports.
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Delivered | Outcome::Duplicate => None,
            Outcome::Dropped { reason } | Outcome::Invalid { reason } => Some(reason.clone()),
            Outcome::Rejected(e) | Outcome::Failed(e) => Some(e.to_string()),
        }
    }
}
