//! Durable webhooks (SPEC §15): with `D365_WEBHOOK_MODE=enqueue`, a webhook's
//! events, once checked like any webhook (§5), are sent to the SQS queue the
//! relay reads and answered 202 at once; the queue path then delivers them with
//! its retries, pacing and DLQ. Here: the SQS client, one message per event,
//! the send loop (`SendMessageBatch`, 10 a call) and the HTTP answer.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::QueueTarget;
use crate::deadline::Cutoffs;
use crate::webhook::{ErrorCode, HttpAnswer};

/// SQS takes at most 10 entries per `SendMessageBatch`.
pub const BATCH_ENTRIES: usize = 10;
/// A batch's bodies stay under 256 KiB, the payload limit every queue accepts.
pub const BATCH_BYTES: usize = 256 * 1024;
/// Retry-After of a 503 when SQS did not take every event: its failures are short.
pub const RETRY_AFTER_SECS: u64 = 5;
/// Batches in flight at once for a standard queue (a FIFO queue's go one by one, in order).
pub const BATCHES_IN_FLIGHT: usize = 8;
/// MessageGroupId of an event with neither `userId` nor `anonymousId`.
pub const DEFAULT_GROUP: &str = "default";

/// The SQS client of `main.rs`: the shared AWS configuration (region,
/// credentials, `AWS_ENDPOINT_URL_SQS`, [`crate::aws_timeouts`]), so a slow SQS
/// cannot hold the webhook past its budget.
pub fn sqs_client(aws: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(aws)
}

/// An SQS client for an emulator on `endpoint` (moto, the sandbox): [`crate::aws_config_for_endpoint`].
pub fn sqs_client_for_endpoint(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&crate::aws_config_for_endpoint(endpoint))
}

/// The idempotency key an event travels with (SPEC §11, §15): its own
/// `messageId`; else a key its sender or envelope gave (Standard Webhooks'
/// `webhook-id`, a Dataverse context's id); else the stable hash of its JSON
/// as received (`sha256:<hex>`, as [`crate::idempotency::key_for`]). The one
/// place this is decided, so the queue path raises each event once however
/// often the sender resends it.
pub fn message_key(event: &Value, given: Option<&str>) -> String {
    if let Some(id) = crate::fields::message_id(event) {
        return id;
    }
    if let Some(key) = given.map(str::trim).filter(|k| !k.is_empty()) {
        return key.to_string();
    }
    crate::idempotency::key_for(event)
}

/// One SQS message for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The event's index in the request.
    pub index: usize,
    /// The idempotency key, also the body's `messageId`.
    pub key: String,
    /// The event's JSON with `messageId` set to `key`.
    pub body: String,
    /// FIFO only: `userId`, else `anonymousId`, else `"default"`.
    pub group: Option<String>,
    /// FIFO only: the key, or its SHA-256 hex when SQS would not take it.
    pub deduplication_id: Option<String>,
}

impl Message {
    pub fn new(index: usize, event: &Value, given_key: Option<&str>, fifo: bool) -> Message {
        let key = message_key(event, given_key);
        let mut event = event.clone();
        if let Some(object) = event.as_object_mut() {
            object.insert("messageId".into(), Value::String(key.clone()));
        }
        let body = event.to_string();
        let (group, deduplication_id) = if fifo {
            let group = crate::fields::id_field(&event, "userId", "user_id")
                .or_else(|| crate::fields::id_field(&event, "anonymousId", "anonymous_id"))
                .unwrap_or_else(|| DEFAULT_GROUP.to_string());
            (Some(sqs_id(group)), Some(sqs_id(key.clone())))
        } else {
            (None, None)
        };
        Message { index, key, body, group, deduplication_id }
    }

    fn entry(&self) -> SendMessageBatchRequestEntry {
        SendMessageBatchRequestEntry::builder()
            .id(self.index.to_string())
            .message_body(&self.body)
            .set_message_group_id(self.group.clone())
            .set_message_deduplication_id(self.deduplication_id.clone())
            .build()
            .expect("id and body are set")
    }
}

/// A group or deduplication id SQS accepts: 1–128 characters, letters, digits
/// and ASCII punctuation; anything else becomes its SHA-256 hex (stable, so the
/// same user or key always maps to the same id).
pub fn sqs_id(text: String) -> String {
    if (1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
        text
    } else {
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// An event SQS did not take, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub index: usize,
    pub key: String,
    /// SQS's error code, when it gave one.
    pub code: Option<String>,
    /// What the sender is told (never account ids or role names).
    pub error: String,
}

/// The queue of enqueue mode.
pub struct Queue {
    client: aws_sdk_sqs::Client,
    target: QueueTarget,
}

impl Queue {
    pub fn new(client: aws_sdk_sqs::Client, target: QueueTarget) -> Queue {
        Queue { client, target }
    }

    pub fn target(&self) -> &QueueTarget {
        &self.target
    }

    /// Checked events in, the webhook's answer out: 202 `{"accepted": n}`, or
    /// 503 with Retry-After listing the events SQS did not take. `keys` are
    /// the keys known from outside the events (one per event, or none).
    pub async fn accept(&self, events: &[Value], keys: &[Option<String>], deadline: Instant) -> HttpAnswer {
        let started = Instant::now();
        let messages: Vec<Message> =
            events.iter().enumerate().map(|(i, e)| Message::new(i, e, keys.get(i).and_then(Option::as_deref), self.target.fifo)).collect();
        let refused = self.send(&messages, Cutoffs::until(deadline)).await;
        for refusal in &refused {
            tracing::warn!(message = "Webhook event not queued; the sender is asked to retry.", message_id = %refusal.key, index = refusal.index, code = refusal.code.as_deref().unwrap_or(""), error = %refusal.error);
        }
        tracing::info!(
            message = "Invocation summary.",
            source = "webhook-enqueue",
            records = messages.len(),
            accepted = messages.len() - refused.len(),
            failed = refused.len(),
            fifo = self.target.fifo,
            duration_ms = started.elapsed().as_millis() as u64,
        );
        answer(messages.len(), &refused)
    }

    /// Sends every message, at most [`BATCH_ENTRIES`] and [`BATCH_BYTES`] a
    /// call, within `budget`; returns those SQS did not take, in order. A FIFO
    /// queue's batches go one after another, and once an event of a group is
    /// refused the group's later events are not sent (its order would break).
    pub async fn send(&self, messages: &[Message], budget: Cutoffs) -> Vec<Refusal> {
        let chunks = chunks(messages);
        let mut refused = Vec::new();
        if self.target.fifo {
            let mut blocked: HashSet<String> = HashSet::new();
            for range in chunks {
                let (go, held): (Vec<&Message>, Vec<&Message>) = messages[range].iter().partition(|m| m.group.as_ref().is_none_or(|g| !blocked.contains(g)));
                refused.extend(held.into_iter().map(|m| {
                    let group = m.group.as_deref().unwrap_or("");
                    refusal(m, None, format!("not sent: an earlier event of message group '{group}' was not queued, and its order is kept"))
                }));
                let outcome = send_batch(self.client.clone(), self.target.url.clone(), go.into_iter().cloned().collect(), budget).await;
                for r in &outcome {
                    if let Some(group) = &messages[r.index].group {
                        blocked.insert(group.clone());
                    }
                }
                refused.extend(outcome);
            }
        } else {
            let permits = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
            let mut tasks = tokio::task::JoinSet::new();
            for range in chunks {
                let batch: Vec<Message> = messages[range].to_vec();
                let (client, url, permits) = (self.client.clone(), self.target.url.clone(), permits.clone());
                tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    send_batch(client, url, batch, budget).await
                });
            }
            while let Some(done) = tasks.join_next().await {
                refused.extend(done.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic())));
            }
        }
        refused.sort_by_key(|r| r.index);
        refused
    }
}

/// Consecutive ranges of at most [`BATCH_ENTRIES`] messages whose bodies stay
/// within [`BATCH_BYTES`] (a larger single message goes alone).
pub fn chunks(messages: &[Message]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let size = m.body.len();
        if i > start && (i - start == BATCH_ENTRIES || bytes + size > BATCH_BYTES) {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < messages.len() {
        ranges.push(start..messages.len());
    }
    ranges
}

fn refusal(message: &Message, code: Option<String>, error: String) -> Refusal {
    Refusal { index: message.index, key: message.key.clone(), code, error }
}

/// One `SendMessageBatch`; every message is refused if the call fails or the budget runs out.
async fn send_batch(client: aws_sdk_sqs::Client, url: String, batch: Vec<Message>, budget: Cutoffs) -> Vec<Refusal> {
    if batch.is_empty() {
        return Vec::new();
    }
    if Instant::now() >= budget.start_cutoff {
        return batch.iter().map(|m| refusal(m, None, "not sent before the webhook's deadline".into())).collect();
    }
    let call = client.send_message_batch().queue_url(&url).set_entries(Some(batch.iter().map(Message::entry).collect())).send();
    let output = match tokio::time::timeout_at(budget.hard_cutoff.into(), call).await {
        Err(_) => return batch.iter().map(|m| refusal(m, None, "SQS did not answer before the webhook's deadline".into())).collect(),
        Ok(Err(error)) => {
            // The full error goes to the log only: it may name the account or the role.
            tracing::error!(message = "SendMessageBatch failed.", events = batch.len(), error = %crate::aws_error(&error));
            let code = error.code().map(str::to_string);
            let text = match &code {
                Some(code) => format!("the queue did not take the event (SQS {code})"),
                None => "the queue could not be reached".to_string(),
            };
            return batch.iter().map(|m| refusal(m, code.clone(), text.clone())).collect();
        }
        Ok(Ok(output)) => output,
    };
    let succeeded: HashSet<&str> = output.successful().iter().map(|s| s.id()).collect();
    let failed: std::collections::HashMap<&str, _> = output.failed().iter().map(|f| (f.id(), f)).collect();
    batch
        .iter()
        .filter(|m| !succeeded.contains(m.index.to_string().as_str()))
        .map(|m| match failed.get(m.index.to_string().as_str()) {
            Some(f) => {
                tracing::error!(message = "SQS refused an event.", message_id = %m.key, code = f.code(), sender_fault = f.sender_fault(), error = f.message().unwrap_or(""));
                refusal(m, Some(f.code().to_string()), format!("the queue did not take the event (SQS {})", f.code()))
            }
            None => refusal(m, None, "SQS did not report on the event".into()),
        })
        .collect()
}

/// 202 `{"accepted": n}` when every event was queued; else 503 with
/// Retry-After and `failed` as a delivering webhook lists them (SPEC §5, §15).
pub fn answer(total: usize, refused: &[Refusal]) -> HttpAnswer {
    let accepted = total - refused.len();
    if refused.is_empty() {
        return HttpAnswer { status: 202, retry_after: None, body: json!({ "accepted": accepted }) };
    }
    let failed: Vec<Value> = refused
        .iter()
        .map(|r| {
            let mut entry = json!({ "index": r.index, "messageId": r.key, "outcome": "failed", "error": r.error });
            if let Some(code) = &r.code {
                entry["code"] = json!(code);
            }
            entry
        })
        .collect();
    let message = format!("{} of {total} event(s) were not queued (see failed): send them again after {RETRY_AFTER_SECS} s", refused.len());
    HttpAnswer { status: 503, retry_after: Some(RETRY_AFTER_SECS), body: json!({ "accepted": accepted, "failed": failed }) }
        .with_code(ErrorCode::Unavailable, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_the_idempotency_key() {
        let event = json!({"event": "Order Completed", "messageId": " m-1 ", "userId": "u-1"});
        let m = Message::new(3, &event, Some("webhook-id-ignored"), false);
        assert_eq!(m.index, 3);
        assert_eq!(m.key, "m-1");
        let body: Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(body, json!({"event": "Order Completed", "messageId": "m-1", "userId": "u-1"}));
        assert_eq!((m.group, m.deduplication_id), (None, None), "standard queues take neither");

        // Without a messageId: a key from outside (webhook-id), else the hash of the event as received.
        let bare = json!({"event": "Signed Up", "user_id": 42});
        assert_eq!(Message::new(0, &bare, Some("msg_2b"), false).key, "msg_2b");
        let hashed = Message::new(0, &bare, None, false);
        assert_eq!(hashed.key, crate::idempotency::key_for(&bare));
        assert!(hashed.key.starts_with("sha256:"));
        assert_eq!(Message::new(0, &bare, None, false), hashed, "a resend gets the same key");
        // The queue path reads the key back as the event's messageId.
        let queued: Value = serde_json::from_str(&hashed.body).unwrap();
        assert_eq!(crate::fields::message_id(&queued).as_deref(), Some(hashed.key.as_str()));
        // snake_case message_id counts as the event's own.
        assert_eq!(Message::new(0, &json!({"message_id": 7}), None, false).key, "7");
    }

    #[test]
    fn fifo_groups_by_person_and_deduplicates_by_key() {
        let m = Message::new(0, &json!({"messageId": "m-1", "userId": "u-1", "anonymousId": "a-1"}), None, true);
        assert_eq!(m.group.as_deref(), Some("u-1"));
        assert_eq!(m.deduplication_id.as_deref(), Some("m-1"));
        let m = Message::new(0, &json!({"messageId": "m-2", "userId": "", "anonymous_id": "a-1"}), None, true);
        assert_eq!(m.group.as_deref(), Some("a-1"), "an empty userId counts as missing");
        let m = Message::new(0, &json!({"messageId": "m-3", "user_id": 1234}), None, true);
        assert_eq!(m.group.as_deref(), Some("1234"));
        let m = Message::new(0, &json!({"messageId": "m-4"}), None, true);
        assert_eq!(m.group.as_deref(), Some(DEFAULT_GROUP));

        // Keys (and groups) SQS would refuse become their SHA-256 hex.
        let long = "x".repeat(129);
        let m = Message::new(0, &json!({"messageId": long, "userId": "Jane Doe"}), None, true);
        assert_eq!(m.deduplication_id.as_deref(), Some(hex::encode(Sha256::digest(long.as_bytes())).as_str()));
        assert_eq!(m.group.as_deref(), Some(hex::encode(Sha256::digest(b"Jane Doe")).as_str()), "a space is not in SQS's set");
        assert_eq!(m.key, long, "the body keeps the key itself");
        assert_eq!(sqs_id("x".repeat(128)), "x".repeat(128));
        assert_eq!(sqs_id("a!~{}".into()), "a!~{}");
        assert_eq!(sqs_id("é".into()).len(), 64);
        assert_eq!(sqs_id(String::new()).len(), 64);
        // A hash key (sha256:<64 hex>, 71 characters) is taken as it is.
        let hashed = Message::new(0, &json!({"event": "E"}), None, true);
        assert_eq!(hashed.deduplication_id.as_deref(), Some(hashed.key.as_str()));
    }

    #[test]
    fn batches_hold_ten_events_and_stay_under_the_payload_limit() {
        let small = |i| Message::new(i, &json!({"messageId": format!("m{i}")}), None, false);
        let messages: Vec<Message> = (0..25).map(small).collect();
        assert_eq!(chunks(&messages), vec![0..10, 10..20, 20..25]);
        assert_eq!(chunks(&messages[..10]), vec![0..10]);
        assert!(chunks(&[]).is_empty());

        let big = |i| Message::new(i, &json!({"messageId": format!("b{i}"), "pad": "x".repeat(100 * 1024)}), None, false);
        let messages = vec![big(0), big(1), big(2), small(3), big(4), big(5)];
        assert_eq!(chunks(&messages), vec![0..2, 2..5, 5..6]);
        let huge = Message::new(0, &json!({"pad": "x".repeat(BATCH_BYTES + 1)}), None, false);
        assert_eq!(chunks(&[huge, small(1)]), vec![0..1, 1..2], "an oversized event goes alone and SQS judges it");
    }

    #[test]
    fn the_answer_is_202_or_503_listing_what_was_not_queued() {
        assert_eq!(answer(3, &[]), HttpAnswer { status: 202, retry_after: None, body: json!({"accepted": 3}) });
        let refused = [Refusal {
            index: 1,
            key: "m-1".into(),
            code: Some("InvalidMessageContents".into()),
            error: "the queue did not take the event (SQS InvalidMessageContents)".into(),
        }];
        let a = answer(3, &refused);
        assert_eq!(a.status, 503);
        assert_eq!(a.retry_after, Some(RETRY_AFTER_SECS));
        assert_eq!(
            a.body,
            json!({"accepted": 2, "failed": [{"index": 1, "messageId": "m-1", "outcome": "failed", "code": "InvalidMessageContents",
                   "error": "the queue did not take the event (SQS InvalidMessageContents)"}],
                   "code": "unavailable", "message": format!("1 of 3 event(s) were not queued (see failed): send them again after {RETRY_AFTER_SECS} s")})
        );
    }
}
