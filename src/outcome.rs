//! What can happen to one record (SPEC §6): the delivery error, whose variants
//! carry their retry class, the record's outcome and result, and the tally of
//! an invocation. Every answer (SQS, webhook, direct summary, summary log
//! line, metrics) is a view of these.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::ConfigError;

/// The reason prefix of events dropped for want of consent (metric `NoConsent`).
pub const NO_CONSENT: &str = "no consent: ";

/// Why a trigger call did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Dataverse 400/403/404 (and other permanent 4xx): fixing the data or the setup is needed.
    #[error("Dataverse answered {status}{}: {message}", code_suffix(code))]
    Rejected { status: u16, code: Option<String>, message: String },
    /// Dataverse 429 (service protection limits).
    #[error("Dataverse throttled the call (429{}), Retry-After {}", code_suffix(code), retry_after.map(|d| format!("{}s", d.as_secs())).unwrap_or_else(|| "not given".into()))]
    Throttled { retry_after: Option<Duration>, code: Option<String> },
    /// Not attempted: Dataverse throttled this application user (429) and its
    /// pause lasts past the time left to start a call; `retry_after` is what is
    /// left of the pause.
    #[error("not attempted: Dataverse throttled the application user (429{}), Retry-After {}s left", code_suffix(code), retry_after.as_secs().max(1))]
    HeldBack { retry_after: Duration, code: Option<String> },
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
    /// Secrets Manager is down or did not answer in time: not a setting to fix.
    #[error("Secrets Manager is unavailable: {detail}")]
    SecretsUnavailable { detail: String },
    /// The invocation's remaining time ran out before the record was done.
    #[error("not finished before the invocation's deadline")]
    Deadline,
    /// A FIFO record not attempted because an earlier record of its group failed.
    #[error("not attempted: an earlier message of group '{group}' failed")]
    GroupBlocked { group: String },
    /// No permit under the per-minute trigger ceiling (SPEC §17.1) came in
    /// time to start the call; `retry_after` is the time until the next
    /// minute's permits.
    #[error("over the per-minute trigger ceiling (D365_MAX_TRIGGERS_PER_MINUTE)")]
    Ceiling { retry_after: Duration },
    /// A bug: the record's work panicked. The other records are unaffected.
    #[error("internal error: {0}")]
    Internal(String),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
}

impl From<ConfigError> for DeliveryError {
    fn from(error: ConfigError) -> DeliveryError {
        DeliveryError::Config(error)
    }
}

impl DeliveryError {
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Rejected { status, .. } => Some(*status),
            DeliveryError::Throttled { .. } | DeliveryError::HeldBack { .. } => Some(429),
            DeliveryError::Transient { status, .. } => *status,
            DeliveryError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// Dataverse's `error.code`, or the AADSTS code from Entra.
    pub fn code(&self) -> Option<&str> {
        match self {
            DeliveryError::Rejected { code, .. }
            | DeliveryError::Throttled { code, .. }
            | DeliveryError::HeldBack { code, .. }
            | DeliveryError::Transient { code, .. } => code.as_deref(),
            DeliveryError::Credentials { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The outcome of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Not mapped: counted, never sent.
    Dropped {
        reason: String,
    },
    /// Already raised (idempotency): a success.
    Duplicate,
    /// Bad JSON, missing userId or a required attribute: never sent.
    Invalid {
        reason: String,
    },
    /// Dataverse refused it for good.
    Rejected(DeliveryError),
    /// May pass later.
    Failed(DeliveryError),
    /// `send --dry-run` (SPEC §16): would be sent with this body; nothing was. A success.
    DryRun {
        body: serde_json::Map<String, Value>,
    },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Dropped { .. } => "dropped",
            Outcome::Duplicate => "duplicate",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Rejected(_) => "rejected",
            Outcome::Failed(_) => "failed",
            Outcome::DryRun { .. } => "dry-run",
        }
    }

    /// Delivered, dropped and duplicate are successes; the rest are batch item failures.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::Dropped { .. } | Outcome::Duplicate | Outcome::DryRun { .. })
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
            Outcome::Delivered | Outcome::Duplicate | Outcome::DryRun { .. } => None,
            Outcome::Dropped { reason } | Outcome::Invalid { reason } => Some(reason.clone()),
            Outcome::Rejected(e) | Outcome::Failed(e) => Some(e.to_string()),
        }
    }
}

/// What one action of a record's plan did (SPEC §22.1): its kind (`trigger`,
/// `row`, `identify`), its target (the trigger or the row's entity set), the
/// last answer's status and code, its attempts and time, and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionTrace {
    /// The destination (SPEC §23); empty: the one the secret defines.
    pub destination: String,
    pub kind: &'static str,
    pub target: String,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub attempts: u32,
    pub ms: u64,
    pub outcome: &'static str,
}

/// What a record's line says beyond its result (SPEC §22.1): its key (SPEC
/// §11), the event's own non-personal ids, and each action's trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordTrace {
    /// The destinations whose actions did not succeed (`d365-destination`, SPEC §23.4).
    pub unfinished: Vec<String>,
    /// The record's key when the event has no `messageId` (its hash).
    pub key: Option<Box<str>>,
    /// The event's own non-personal ids, as the JSON object the line shows.
    pub ids: Option<Box<str>>,
    /// SQS's receive count.
    pub receive_count: Option<u32>,
    /// Each action's trace, until the line is written.
    pub actions: Vec<ActionTrace>,
}

/// The fate of one record, for answers and logs.
#[derive(Debug, Clone)]
pub struct RecordResult {
    pub index: usize,
    /// SQS's `messageId` (the batch item identifier).
    pub sqs_id: Option<String>,
    /// The event's own `messageId`.
    pub message_id: Option<String>,
    pub event_name: Option<String>,
    pub trigger: Option<String>,
    pub outcome: Outcome,
    pub attempts: u32,
    /// Attempts answered 429.
    pub throttled: u32,
    /// First attempt to 2xx, for delivered records.
    pub latency: Option<Duration>,
    /// For the record line (SPEC §22.1); boxed, so a batch's results stay small once their lines are written.
    pub trace: Option<Box<RecordTrace>>,
}

impl RecordResult {
    /// Its trace, made when first needed.
    pub fn trace_mut(&mut self) -> &mut RecordTrace {
        self.trace.get_or_insert_with(Box::default)
    }
}

/// An invocation's figures, counted by one `match` over its results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub records: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// Dropped for want of consent (SPEC §14), counted in `dropped` too.
    pub no_consent: u64,
    /// Failed for want of a permit under the trigger ceiling (SPEC §17.1), counted in `failed` too.
    pub ceiling_deferred: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub rejected: u64,
    pub failed: u64,
    /// `send --dry-run`: would have been sent.
    pub dry_run: u64,
    /// Attempts beyond the first, over all records.
    pub retries: u64,
    /// Calls started, over all records (every attempt).
    pub calls: u64,
    /// Attempts answered 429.
    pub throttled: u64,
    /// Records not attempted because a 429's pause outlasted the time to start them.
    pub held_back: u64,
    /// The longest Retry-After Dynamics gave a record that failed (seconds, at least 1).
    pub retry_after: Option<u64>,
    /// Milliseconds from a record's first attempt to its 2xx, for delivered records.
    pub delivery_latency_ms: Vec<f64>,
}

impl Tally {
    pub fn of(results: &[RecordResult]) -> Tally {
        let mut tally = Tally { records: results.len() as u64, ..Tally::default() };
        for result in results {
            if let Outcome::Failed(DeliveryError::Ceiling { .. }) = &result.outcome {
                tally.ceiling_deferred += 1;
            }
            tally.retries += u64::from(result.attempts.saturating_sub(1));
            tally.calls += u64::from(result.attempts);
            tally.throttled += u64::from(result.throttled);
            match &result.outcome {
                Outcome::Delivered => {
                    tally.delivered += 1;
                    if let Some(latency) = result.latency {
                        tally.delivery_latency_ms.push(latency.as_secs_f64() * 1000.0);
                    }
                }
                Outcome::Dropped { reason } => {
                    tally.dropped += 1;
                    if reason.starts_with(NO_CONSENT) {
                        tally.no_consent += 1;
                    }
                }
                Outcome::Duplicate => tally.duplicates += 1,
                Outcome::Invalid { .. } => tally.invalid += 1,
                Outcome::Rejected(_) => tally.rejected += 1,
                Outcome::DryRun { .. } => tally.dry_run += 1,
                Outcome::Failed(error) => {
                    tally.failed += 1;
                    let after = match error {
                        DeliveryError::Throttled { retry_after: Some(after), .. } => Some(*after),
                        DeliveryError::HeldBack { retry_after, .. } => {
                            tally.held_back += 1;
                            Some(*retry_after)
                        }
                        // The next minute's permits: a webhook sender is told to come back then.
                        DeliveryError::Ceiling { retry_after } => Some(*retry_after),
                        _ => None,
                    };
                    if let Some(after) = after {
                        tally.retry_after = tally.retry_after.max(Some(after.as_secs().max(1)));
                    }
                }
            }
        }
        tally
    }

    /// Records that are neither delivered, dropped nor duplicate.
    pub fn not_done(&self) -> u64 {
        self.invalid + self.rejected + self.failed
    }
}

/// The summary of a webhook or direct invocation (SPEC §5, §8): the counts and
/// every record that was not done, with its outcome and reason.
pub fn summary(results: &[RecordResult], tally: &Tally) -> Value {
    let failed: Vec<Value> = results
        .iter()
        .filter(|r| !r.outcome.is_success())
        .map(|r| {
            let mut entry = json!({ "index": r.index, "outcome": r.outcome.name() });
            if let Some(id) = &r.message_id {
                entry["messageId"] = json!(id);
            }
            if let Some(detail) = r.outcome.detail() {
                entry["error"] = json!(detail);
            }
            if let Some(error) = r.outcome.error() {
                if let Some(status) = error.status() {
                    entry["status"] = json!(status);
                }
                if let Some(code) = error.code() {
                    entry["code"] = json!(code);
                }
            }
            entry
        })
        .collect();
    json!({
        "delivered": tally.delivered,
        "dropped": tally.dropped,
        "duplicates": tally.duplicates,
        "failed": failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(index: usize, outcome: Outcome, attempts: u32) -> RecordResult {
        RecordResult {
            index,
            sqs_id: None,
            message_id: None,
            event_name: None,
            trigger: None,
            outcome,
            attempts,
            throttled: 0,
            latency: None,
            trace: Default::default(),
        }
    }

    #[test]
    fn the_tally_counts_each_outcome_once() {
        let throttled = |secs| DeliveryError::Throttled { retry_after: Some(Duration::from_secs(secs)), code: None };
        let results = vec![
            RecordResult { latency: Some(Duration::from_millis(50)), ..result(0, Outcome::Delivered, 2) },
            result(1, Outcome::Dropped { reason: "unmapped".into() }, 0),
            result(2, Outcome::Duplicate, 0),
            result(3, Outcome::Invalid { reason: "no userId".into() }, 0),
            result(4, Outcome::Rejected(DeliveryError::Rejected { status: 400, code: None, message: "bad".into() }), 1),
            result(5, Outcome::Failed(throttled(7)), 3),
            result(6, Outcome::Failed(throttled(2)), 1),
        ];
        let tally = Tally::of(&results);
        assert_eq!((tally.records, tally.delivered, tally.dropped, tally.duplicates, tally.invalid, tally.rejected, tally.failed), (7, 1, 1, 1, 1, 1, 2));
        assert_eq!(tally.retries, 1 + 2);
        assert_eq!(tally.retry_after, Some(7));
        assert_eq!(tally.not_done(), 4);
        assert_eq!(tally.delivery_latency_ms, vec![50.0]);
        let summary = summary(&results, &tally);
        assert_eq!(summary["delivered"], 1);
        assert_eq!(summary["failed"].as_array().unwrap().len(), 4);
        assert_eq!(summary["failed"][3]["status"], 429);
    }
}
