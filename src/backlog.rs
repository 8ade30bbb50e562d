//! Backlogs wait in the queue, and the DLQ holds what needs a person (SPEC §18).
//!
//! After an SQS batch is delivered and before it is answered: each record that
//! failed for a retryable reason is made visible again when its known wait ends
//! (a 429's pause, the next minute's permits) or after an exponential backoff
//! by its receive count (`ChangeMessageVisibilityBatch`); with
//! `D365_DEAD_LETTER_QUEUE_URL`, `invalid` and `rejected` records, and retryable
//! ones older than the retry age (`expired`), are sent to the DLQ with their
//! reasons as message attributes, and only once SQS has confirmed are they left
//! out of the batch's failures. What is decided ([`plan`]) is pure; the calls
//! ([`Backlog::settle`]) are bounded by the invocation's deadline, and a call
//! that fails is logged, never fatal: the record then comes back at the queue's
//! visibility, as it would without this module.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry};
use base64::Engine;
use futures_util::future::join_all;
use serde_json::Value;

use crate::config::{BacklogSettings, QueueTarget};
use crate::intake::{SqsBatch, SqsMessage};
use crate::outcome::{DeliveryError, Outcome, RecordResult};

/// SQS takes at most 10 entries per batch call.
const BATCH_ENTRIES: usize = 10;
/// A `SendMessageBatch` stays under 256 KiB, the payload limit every queue accepts.
const BATCH_BYTES: usize = 256 * 1024;
/// SQS keeps at most 10 message attributes per message.
const MAX_ATTRIBUTES: usize = 10;
/// `d365-error` is cut to this many bytes.
const MAX_ERROR_BYTES: usize = 1024;
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// Jitter of a backoff: ± this share (a known wait: up to + this share).
const JITTER: f64 = 0.2;

/// What becomes of one record of the batch once it is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Done, or left at the queue's visibility (`invalid`/`rejected` without a DLQ).
    Leave,
    /// Visible again after this long.
    Backoff(Duration),
    /// Sent to the DLQ with this outcome (`invalid`, `rejected`, `expired`).
    Park(&'static str),
}

/// The time held back before the deadline for these calls, out of the
/// delivery's budget: a tenth of the time left, 100 ms to 500 ms.
pub fn reserve(deadline: Instant) -> Duration {
    (deadline.saturating_duration_since(Instant::now()) / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// The wait a failure names, if it names one: a 429's pause (its Retry-After,
/// or what is left of it) or the next minute's permits.
pub fn known_wait(error: &DeliveryError) -> Option<Duration> {
    match error {
        DeliveryError::Throttled { retry_after: Some(wait), .. }
        | DeliveryError::HeldBack { retry_after: wait, .. }
        | DeliveryError::Ceiling { retry_after: wait } => Some(*wait),
        _ => None,
    }
}

/// What becomes of each record (SPEC §18.1, §18.3), in record order. `jitter`
/// draws from [0, 1); `now_ms` is the epoch time in milliseconds.
pub fn plan(settings: &BacklogSettings, batch: &SqsBatch, results: &[RecordResult], now_ms: i64, mut jitter: impl FnMut() -> f64) -> Vec<Disposition> {
    let parks = settings.dead_letter_queue.is_some();
    // FIFO: every record of a group waits as long as the group's first failure.
    let mut group_waits: HashMap<&str, Duration> = HashMap::new();
    results
        .iter()
        .map(|result| {
            let message = batch.messages.get(result.index);
            let error = match &result.outcome {
                Outcome::Invalid { .. } if parks => return Disposition::Park("invalid"),
                Outcome::Rejected(_) if parks => return Disposition::Park("rejected"),
                Outcome::Failed(error) => error,
                _ => return Disposition::Leave,
            };
            let first_received = message.and_then(|m| m.first_received_ms);
            let age_ms = first_received.map_or(0, |first| now_ms.saturating_sub(first).max(0));
            if parks && Duration::from_millis(age_ms as u64) > settings.max_retry_age {
                return Disposition::Park("expired");
            }
            let receives = message.map_or(1, |m| m.receive_count.max(1));
            let mut draw = || backoff(settings, error, receives, jitter());
            let wait = match message.and_then(|m| m.group.as_deref()) {
                Some(group) => *group_waits.entry(group).or_insert_with(&mut draw),
                None => draw(),
            };
            Disposition::Backoff(wait)
        })
        .collect()
}

/// The visibility of one retryable failure: its known wait + up to 20 %, else
/// `min(max, base × 2^(receives − 1))` ± 20 %; whole seconds, at least 1.
fn backoff(settings: &BacklogSettings, error: &DeliveryError, receives: u32, draw: f64) -> Duration {
    let seconds = match known_wait(error) {
        Some(wait) => wait.as_secs_f64() * (1.0 + JITTER * draw),
        None => {
            let doubled = settings.backoff_base.as_secs_f64() * 2f64.powi(receives.saturating_sub(1).min(30) as i32);
            doubled.min(settings.backoff_max.as_secs_f64()) * (1.0 - JITTER + 2.0 * JITTER * draw)
        }
    };
    Duration::from_secs(seconds.ceil().max(1.0) as u64).min(MAX_VISIBILITY)
}

/// The queue URL of an SQS ARN (`arn:aws:sqs:{region}:{account}:{name}`).
pub fn queue_url(arn: &str) -> Option<String> {
    let mut parts = arn.split(':');
    let (Some("arn"), Some(partition), Some("sqs"), Some(region), Some(account), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if region.is_empty() || account.is_empty() || name.is_empty() {
        return None;
    }
    let domain = if partition == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" };
    Some(format!("https://sqs.{region}.{domain}/{account}/{name}"))
}

/// The SQS side of the SQS path: visibility changes on the source queue and
/// sends to the DLQ.
pub struct Backlog {
    client: aws_sdk_sqs::Client,
}

impl Backlog {
    pub fn new(client: aws_sdk_sqs::Client) -> Backlog {
        Backlog { client }
    }

    /// Backs off and parks the batch's records as [`plan`] says, by `deadline`.
    /// Returns the indexes of the records SQS confirmed in the DLQ: they are left
    /// out of the batch's failures.
    pub async fn settle(&self, settings: &BacklogSettings, batch: &SqsBatch, results: &[RecordResult], deadline: Instant) -> HashSet<usize> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let dispositions = plan(settings, batch, results, now_ms, fastrand::f64);
        let mut parked = HashSet::new();
        let mut backoffs: Vec<(&SqsMessage, usize, Duration)> = Vec::new();
        let mut parking: Vec<(&RecordResult, &SqsMessage, &'static str)> = Vec::new();
        for (result, disposition) in results.iter().zip(&dispositions) {
            let Some(message) = batch.messages.get(result.index) else { continue };
            match disposition {
                Disposition::Leave => {}
                Disposition::Backoff(wait) => backoffs.push((message, result.index, *wait)),
                Disposition::Park(outcome) => parking.push((result, message, outcome)),
            }
        }
        let cutoff = deadline.checked_sub(Duration::from_millis(50)).unwrap_or(deadline);
        let source_url = batch.queue_arn.as_deref().and_then(queue_url);
        let park = async {
            match &settings.dead_letter_queue {
                Some(dlq) if !parking.is_empty() => self.park(dlq, &parking).await,
                _ => HashSet::new(),
            }
        };
        let back_off = async {
            match &source_url {
                Some(url) if !backoffs.is_empty() => self.back_off(url, &backoffs).await,
                None if !backoffs.is_empty() => {
                    tracing::warn!(message = "No queue URL in the batch's eventSourceARN: failed records come back at the queue's visibility.")
                }
                _ => {}
            }
        };
        match tokio::time::timeout_at(cutoff.into(), async { tokio::join!(park, back_off) }).await {
            Ok((confirmed, ())) => parked = confirmed,
            Err(_) => tracing::warn!(
                message = "SQS did not answer before the invocation's cut-off: records not confirmed come back at the queue's visibility.",
                backoffs = backoffs.len(),
                parking = parking.len()
            ),
        }
        parked
    }

    /// `ChangeMessageVisibilityBatch`, 10 entries a call, all calls at once.
    async fn back_off(&self, queue_url: &str, backoffs: &[(&SqsMessage, usize, Duration)]) {
        let calls = backoffs.chunks(BATCH_ENTRIES).map(|chunk| async move {
            let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .filter_map(|(message, index, wait)| {
                    let handle = message.receipt_handle.as_deref()?;
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(format!("r{index}"))
                        .receipt_handle(handle)
                        .visibility_timeout(wait.as_secs() as i32)
                        .build()
                        .ok()
                })
                .collect();
            if entries.is_empty() {
                return;
            }
            match self.client.change_message_visibility_batch().queue_url(queue_url).set_entries(Some(entries)).send().await {
                Ok(output) if output.failed().is_empty() => {}
                Ok(output) => {
                    let first = &output.failed()[0];
                    tracing::warn!(
                        message = "SQS refused some visibility changes: those records come back at the queue's visibility.",
                        refused = output.failed().len(),
                        code = first.code(),
                        error = first.message().unwrap_or("")
                    );
                }
                Err(error) => tracing::warn!(
                    message = "Visibility change failed: those records come back at the queue's visibility.",
                    records = chunk.len(),
                    error = %crate::aws_error(&error)
                ),
            }
        });
        join_all(calls).await;
    }

    /// `SendMessageBatch` to the DLQ (bodies unchanged, reasons as attributes);
    /// the indexes SQS confirmed.
    async fn park(&self, dlq: &QueueTarget, parking: &[(&RecordResult, &SqsMessage, &'static str)]) -> HashSet<usize> {
        let mut batches: Vec<Vec<SendMessageBatchRequestEntry>> = Vec::new();
        let mut bytes = 0;
        for (result, message, outcome) in parking {
            let Some(entry) = dlq_entry(result, message, outcome, dlq.fifo) else {
                tracing::warn!(message = "A record to park has no body kept; it stays a batch item failure.", index = result.index);
                continue;
            };
            let size = entry.message_body().len() + 2048;
            if batches.last().is_none_or(|b| b.len() == BATCH_ENTRIES || bytes + size > BATCH_BYTES) {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            batches.last_mut().expect("pushed above").push(entry);
        }
        let calls = batches.into_iter().map(|entries| async move {
            let count = entries.len();
            match self.client.send_message_batch().queue_url(&dlq.url).set_entries(Some(entries)).send().await {
                Ok(output) => {
                    if let Some(first) = output.failed().first() {
                        tracing::warn!(
                            message = "The DLQ refused some records: they stay batch item failures.",
                            refused = output.failed().len(),
                            code = first.code(),
                            error = first.message().unwrap_or("")
                        );
                    }
                    output.successful().iter().filter_map(|s| s.id().strip_prefix('r')?.parse::<usize>().ok()).collect::<Vec<_>>()
                }
                Err(error) => {
                    tracing::warn!(message = "Sending to the DLQ failed: the records stay batch item failures.", records = count, error = %crate::aws_error(&error));
                    Vec::new()
                }
            }
        });
        let confirmed: HashSet<usize> = join_all(calls).await.into_iter().flatten().collect();
        for (result, message, outcome) in parking {
            if confirmed.contains(&result.index) {
                tracing::info!(
                    message = "Record parked in the dead-letter queue.",
                    message_id = result.message_id.as_deref().or(result.sqs_id.as_deref()).unwrap_or(""),
                    outcome = *outcome,
                    receives = message.receive_count
                );
            }
        }
        confirmed
    }
}

/// The DLQ message of a parked record: its body as received, the `d365-*`
/// attributes of SPEC §18.3 first, then its own while there is room.
fn dlq_entry(result: &RecordResult, message: &SqsMessage, outcome: &str, fifo: bool) -> Option<SendMessageBatchRequestEntry> {
    let body = message.body.as_deref()?;
    let mut builder = SendMessageBatchRequestEntry::builder().id(format!("r{}", result.index)).message_body(body);
    let mut count = 0;
    for (name, value) in reasons(result, message, outcome) {
        builder = builder.message_attributes(name, value);
        count += 1;
    }
    if let Some(Value::Object(own)) = &message.attributes {
        for (name, value) in own {
            if count >= MAX_ATTRIBUTES || name.starts_with("d365-") {
                continue;
            }
            if let Some(value) = lambda_attribute(value) {
                builder = builder.message_attributes(name, value);
                count += 1;
            }
        }
    }
    if fifo {
        let group = message.group.clone().unwrap_or_else(|| crate::enqueue::DEFAULT_GROUP.to_string());
        builder = builder.message_group_id(crate::enqueue::sqs_id(group));
        builder = builder.message_deduplication_id(crate::enqueue::sqs_id(result.sqs_id.clone().unwrap_or_default()));
    }
    builder.build().ok()
}

/// The `d365-*` attributes, none empty.
pub fn reasons(result: &RecordResult, message: &SqsMessage, outcome: &str) -> Vec<(String, MessageAttributeValue)> {
    let text = |value: String| MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type set");
    let number = |value: String| MessageAttributeValue::builder().data_type("Number").string_value(value).build().expect("data type set");
    let error = result.outcome.error();
    let detail = crate::redact::scrub(&result.outcome.detail().unwrap_or_default());
    let mut attributes = vec![("d365-outcome".to_string(), text(outcome.to_string()))];
    if let Some(status) = error.and_then(DeliveryError::status) {
        attributes.push(("d365-status".into(), number(status.to_string())));
    }
    if let Some(code) = error.and_then(DeliveryError::code).filter(|c| !c.is_empty()) {
        attributes.push(("d365-code".into(), text(code.to_string())));
    }
    if !detail.trim().is_empty() {
        attributes.push(("d365-error".into(), text(cut(&detail, MAX_ERROR_BYTES))));
    }
    // The record's key: the event's `messageId`, else the SQS message's own, so
    // that every parked record, a body that is not JSON too, can be found by id.
    let key = result.message_id.as_deref().filter(|id| !id.is_empty()).or(result.sqs_id.as_deref());
    if let Some(id) = key.filter(|id| !id.is_empty()) {
        attributes.push(("d365-message-id".into(), text(id.to_string())));
    }
    // The destinations whose actions did not succeed (SPEC §23.4), with several.
    if let Some(unfinished) = result.trace.as_ref().map(|t| &t.unfinished).filter(|u| !u.is_empty()) {
        attributes.push(("d365-destination".into(), text(unfinished.join(","))));
    }
    attributes.push(("d365-receive-count".into(), number(message.receive_count.to_string())));
    attributes
}

/// `text` cut at a character boundary to at most `max` bytes.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A message attribute as Lambda gives it (`stringValue` / `binaryValue`
/// base64, `dataType`), as SQS takes it.
fn lambda_attribute(value: &Value) -> Option<MessageAttributeValue> {
    let data_type = value.get("dataType").and_then(Value::as_str)?;
    let builder = MessageAttributeValue::builder().data_type(data_type);
    let builder = match (value.get("stringValue").and_then(Value::as_str), value.get("binaryValue").and_then(Value::as_str)) {
        (Some(text), _) => builder.string_value(text),
        (None, Some(encoded)) => builder.binary_value(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?.into()),
        (None, None) => return None,
    };
    builder.build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(parks: bool) -> BacklogSettings {
        BacklogSettings {
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3_600),
            max_retry_age: Duration::from_secs(86_400),
            dead_letter_queue: parks.then(|| QueueTarget { url: "https://sqs.eu-west-1.amazonaws.com/1/dlq".into(), fifo: false }),
        }
    }

    fn result(index: usize, outcome: Outcome) -> RecordResult {
        RecordResult {
            index,
            sqs_id: Some(format!("m{index}")),
            message_id: None,
            event_name: None,
            trigger: None,
            outcome,
            attempts: 1,
            throttled: 0,
            latency: None,
            trace: None,
        }
    }

    fn message(receives: u32, first_received_ms: Option<i64>, group: Option<&str>) -> SqsMessage {
        SqsMessage { receipt_handle: Some("h".into()), receive_count: receives, first_received_ms, group: group.map(str::to_string), ..SqsMessage::default() }
    }

    fn transient() -> Outcome {
        Outcome::Failed(DeliveryError::Transient { status: Some(500), code: None, detail: "500".into() })
    }

    #[test]
    fn retryable_failures_back_off_exponentially_by_receive_count_within_the_maximum() {
        let batch = SqsBatch { queue_arn: None, messages: vec![message(1, None, None), message(3, None, None), message(20, None, None)] };
        let results = vec![result(0, transient()), result(1, transient()), result(2, transient())];
        // The jitter's middle (0.5) is no jitter; its ends are -20 % and +20 %.
        let plan_at = |draw: f64| plan(&settings(false), &batch, &results, 0, || draw);
        assert_eq!(
            plan_at(0.5),
            [Disposition::Backoff(Duration::from_secs(30)), Disposition::Backoff(Duration::from_secs(120)), Disposition::Backoff(Duration::from_secs(3_600))]
        );
        assert_eq!(plan_at(0.0)[0], Disposition::Backoff(Duration::from_secs(24)));
        assert_eq!(plan_at(0.999_999)[2], Disposition::Backoff(Duration::from_secs(4_320)));
    }

    #[test]
    fn a_known_wait_is_waited_out_with_up_to_a_fifth_more() {
        let batch = SqsBatch { queue_arn: None, messages: vec![message(4, None, None), message(1, None, None)] };
        let results = vec![
            result(0, Outcome::Failed(DeliveryError::HeldBack { retry_after: Duration::from_secs(10), code: Some("0x80072322".into()) })),
            result(1, Outcome::Failed(DeliveryError::Throttled { retry_after: Some(Duration::from_secs(100)), code: None })),
        ];
        assert_eq!(
            plan(&settings(false), &batch, &results, 0, || 0.0),
            [Disposition::Backoff(Duration::from_secs(10)), Disposition::Backoff(Duration::from_secs(100))]
        );
        assert_eq!(
            plan(&settings(false), &batch, &results, 0, || 0.999),
            [Disposition::Backoff(Duration::from_secs(12)), Disposition::Backoff(Duration::from_secs(120))]
        );
    }

    #[test]
    fn a_record_without_a_permit_waits_for_the_next_minute() {
        let batch = SqsBatch { queue_arn: None, messages: vec![message(7, None, None)] };
        let results = vec![result(0, Outcome::Failed(DeliveryError::Ceiling { retry_after: Duration::from_secs(20) }))];
        assert_eq!(plan(&settings(false), &batch, &results, 0, || 0.5), [Disposition::Backoff(Duration::from_secs(22))]);
    }

    #[test]
    fn a_fifo_group_shares_its_first_failures_value() {
        let batch = SqsBatch { queue_arn: None, messages: vec![message(1, None, Some("g")), message(1, None, Some("g")), message(1, None, Some("h"))] };
        let blocked = Outcome::Failed(DeliveryError::GroupBlocked { group: "g".into() });
        let results = vec![result(0, transient()), result(1, blocked), result(2, transient())];
        let mut draws = [0.0, 0.9, 0.5].into_iter();
        let plan = plan(&settings(false), &batch, &results, 0, || draws.next().unwrap());
        assert_eq!(plan[0], plan[1], "the group's records wait together");
        assert_eq!(plan[0], Disposition::Backoff(Duration::from_secs(24)));
        assert_eq!(plan[2], Disposition::Backoff(Duration::from_secs(35)), "another group draws its own");
    }

    #[test]
    fn invalid_rejected_and_expired_records_are_parked_only_with_a_dlq() {
        let day_ms = 86_400_000;
        let now = 10 * day_ms;
        let batch = SqsBatch {
            queue_arn: None,
            messages: vec![message(1, Some(now), None), message(1, Some(now), None), message(9, Some(now - day_ms - 1_000), None), message(1, Some(now), None)],
        };
        let rejected = Outcome::Rejected(DeliveryError::Rejected { status: 400, code: Some("0x80040203".into()), message: "bad".into() });
        let results =
            vec![result(0, Outcome::Invalid { reason: "no userId".into() }), result(1, rejected), result(2, transient()), result(3, Outcome::Delivered)];
        assert_eq!(
            plan(&settings(true), &batch, &results, now, || 0.5),
            [Disposition::Park("invalid"), Disposition::Park("rejected"), Disposition::Park("expired"), Disposition::Leave]
        );
        let without = plan(&settings(false), &batch, &results, now, || 0.5);
        assert_eq!(without[..2], [Disposition::Leave, Disposition::Leave]);
        assert_eq!(without[2], Disposition::Backoff(Duration::from_secs(3_600)), "no DLQ: the age does not park");
    }

    #[test]
    fn queue_urls_come_from_arns() {
        assert_eq!(
            queue_url("arn:aws:sqs:eu-west-1:123456789012:relay-events").as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com/123456789012/relay-events")
        );
        assert_eq!(queue_url("arn:aws-cn:sqs:cn-north-1:1:q.fifo").as_deref(), Some("https://sqs.cn-north-1.amazonaws.com.cn/1/q.fifo"));
        assert_eq!(queue_url("arn:aws:sns:eu-west-1:1:t"), None);
        assert_eq!(queue_url("arn:aws:sqs:eu-west-1:1"), None);
    }

    #[test]
    fn reasons_are_masked_cut_and_never_empty() {
        let long = format!("jane@example.com {}", "é".repeat(1_000));
        let rejected = Outcome::Rejected(DeliveryError::Rejected { status: 400, code: None, message: long });
        let mut r = result(0, rejected);
        r.message_id = Some("order-1".into());
        let attributes = reasons(&r, &message(2, None, None), "rejected");
        let names: Vec<&str> = attributes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["d365-outcome", "d365-status", "d365-error", "d365-message-id", "d365-receive-count"], "no d365-code without a code");
        let error = attributes[2].1.string_value().unwrap();
        assert!(error.len() <= MAX_ERROR_BYTES && !error.contains("jane@example.com"), "{error}");
        assert_eq!(attributes[4].1.string_value(), Some("2"));
    }
}
