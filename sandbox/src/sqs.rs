//! SQS `SendMessageBatch` and `ReceiveMessage` (AWS JSON 1.0, `X-Amz-Target:
//! AmazonSQS.*`), enough for the relay's enqueue mode (SPEC §15) in the demo and
//! the bench without another emulator. Any queue URL names a queue (its last
//! path segment); FIFO queues (`.fifo`) keep each deduplication id once.
//! `ReceiveMessage` hands messages out once (no visibility timeout, no delete);
//! `ChangeMessageVisibility(Batch)` is accepted and recorded (the relay's
//! backoff, SPEC §18), so tests and the demo can show what each record was given;
//! message attributes sent with a message are kept (a DLQ's reasons).
//! Faults: `sqs_status` answers every call with that status; `sqs_refuse_rate`
//! refuses that share of batch entries (listed under `Failed`, as SQS does).
//!
//! A queue made with `CreateQueue` behaves as an SQS standard queue does for an
//! event source mapping: `ReceiveMessage` leases messages for the queue's
//! `VisibilityTimeout` (a new receipt handle each receive, the receive count and
//! first-receive time (and a FIFO message's group and deduplication id) in
//! `Attributes`, message attributes in `MessageAttributes`),
//! `ChangeMessageVisibility(Batch)` moves a lease's end, `DeleteMessage(Batch)`
//! removes a leased message, and a `RedrivePolicy` moves a message received
//! `maxReceiveCount` times to its dead-letter queue on the next receive.
//! `GetQueueAttributes` answers `QueueArn` and the message counts. (FIFO
//! ordering is not modelled for created queues.) This is the queue the burst
//! bench drains: it answers in microseconds whatever its depth.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{json_response, Reply, State};

/// One message as a queue holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub message_id: String,
    pub body: String,
    pub group_id: Option<String>,
    pub deduplication_id: Option<String>,
    /// Message attributes sent with it: name → string value.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A visibility change the emulated SQS was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisibilityChange {
    pub queue: String,
    pub receipt_handle: String,
    pub visibility_timeout: u64,
}

/// The queues: name → messages not yet received, and the deduplication ids seen.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    messages: std::collections::BTreeMap<String, std::collections::VecDeque<QueuedMessage>>,
    seen: std::collections::HashSet<(String, String)>,
    sent: u64,
    pub(crate) visibility_changes: Vec<VisibilityChange>,
    /// Queues made with `CreateQueue`: leases, receive counts, redrive.
    created: std::collections::BTreeMap<String, Created>,
}

/// A queue made with `CreateQueue`.
#[derive(Debug, Default)]
struct Created {
    visibility: u64,
    /// The dead-letter queue's name and `maxReceiveCount`.
    redrive: Option<(String, u32)>,
    /// In the order sent; leased ones stay in place until deleted.
    stored: std::collections::VecDeque<Stored>,
}

#[derive(Debug)]
struct Stored {
    message: QueuedMessage,
    sent_ms: i64,
    receives: u32,
    first_receive_ms: Option<i64>,
    visible_at: std::time::Instant,
    receipt: Option<String>,
}

impl Queues {
    pub(crate) fn peek(&self, queue: &str) -> Vec<QueuedMessage> {
        self.messages.get(queue).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }
}

fn reply(status: u16, body: &Value) -> Reply {
    let mut r = json_response(status, body);
    r.headers_mut().insert("content-type", "application/x-amz-json-1.0".parse().expect("a header value"));
    r
}

fn aws_error(status: u16, kind: &str, message: &str) -> Reply {
    let mut r = reply(status, &json!({ "__type": format!("com.amazonaws.sqs#{kind}"), "message": message }));
    r.headers_mut().insert("x-amzn-query-error", format!("{kind};Sender").parse().expect("a header value"));
    r
}

/// The queue's name: the last segment of its URL.
fn queue_name(request: &Value) -> Option<String> {
    let url = request.get("QueueUrl")?.as_str()?;
    url.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty()).map(str::to_string)
}

/// The faults of [`Faults`](crate::Faults) that SQS injects.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SqsFaults {
    /// SQS answers this status to every call.
    pub status: Option<u16>,
    /// Share of SendMessageBatch entries SQS refuses (listed under `Failed`).
    pub refuse_rate: f64,
}

/// What the emulated SQS holds.
pub(crate) struct Sqs {
    pub(crate) queues: Mutex<Queues>,
    pub(crate) faults: Mutex<SqsFaults>,
    /// The refusal dice, seeded so runs repeat.
    dice: Mutex<fastrand::Rng>,
}

impl Sqs {
    pub(crate) fn new(seed: u64) -> Sqs {
        Sqs { queues: Mutex::new(Queues::default()), faults: Mutex::new(SqsFaults::default()), dice: Mutex::new(fastrand::Rng::with_seed(seed)) }
    }

    pub(crate) fn reset(&self) {
        *self.queues.lock().unwrap() = Queues::default();
    }
}

pub(crate) fn handle(state: &State, target: &str, body: &[u8], host: &str) -> Reply {
    let status = state.sqs.faults.lock().unwrap().status;
    if let Some(status) = status {
        return aws_error(status, "InternalError", "SQS is unavailable (sandbox fault).");
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if target == "AmazonSQS.CreateQueue" {
        return create_queue(state, &request, host);
    }
    let Some(queue) = queue_name(&request) else {
        return aws_error(400, "MissingParameter", "QueueUrl is required.");
    };
    match target {
        "AmazonSQS.SendMessageBatch" => send_message_batch(state, &queue, &request),
        "AmazonSQS.ReceiveMessage" => receive_message(state, &queue, &request),
        "AmazonSQS.ChangeMessageVisibilityBatch" => {
            change_visibility(state, &queue, request.get("Entries").and_then(Value::as_array).cloned().unwrap_or_default(), true)
        }
        "AmazonSQS.ChangeMessageVisibility" => change_visibility(state, &queue, vec![request], false),
        "AmazonSQS.DeleteMessageBatch" => delete_messages(state, &queue, request.get("Entries").and_then(Value::as_array).cloned().unwrap_or_default(), true),
        "AmazonSQS.DeleteMessage" => delete_messages(state, &queue, vec![request], false),
        "AmazonSQS.GetQueueAttributes" => queue_attributes(state, &queue),
        "AmazonSQS.SendMessage" => {
            let mut entry = request.clone();
            entry["Id"] = json!("0");
            send_message_batch(state, &queue, &json!({"Entries": [entry]}))
        }
        other => aws_error(
            400,
            "UnsupportedOperation",
            &format!("The sandbox serves CreateQueue, GetQueueAttributes, SendMessage(Batch), ReceiveMessage, DeleteMessage(Batch) and ChangeMessageVisibility(Batch) only, not {other}."),
        ),
    }
}

fn send_message_batch(state: &State, queue: &str, request: &Value) -> Reply {
    let entries = request.get("Entries").and_then(Value::as_array).cloned().unwrap_or_default();
    if entries.is_empty() {
        return aws_error(400, "EmptyBatchRequest", "There should be at least one SendMessageBatchRequestEntry in the request.");
    }
    if entries.len() > 10 {
        return aws_error(400, "TooManyEntriesInBatchRequest", &format!("Maximum number of entries per request are 10. You have sent {}.", entries.len()));
    }
    let fifo = queue.ends_with(".fifo");
    let refuse_rate = state.sqs.faults.lock().unwrap().refuse_rate;
    let mut queues = state.sqs.queues.lock().unwrap();
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for entry in &entries {
        let id = entry.get("Id").and_then(Value::as_str).unwrap_or("").to_string();
        let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
        let Some(body) = text("MessageBody") else {
            failed.push(json!({"Id": id, "SenderFault": true, "Code": "MissingParameter", "Message": "MessageBody is required."}));
            continue;
        };
        let (group_id, deduplication_id) = (text("MessageGroupId"), text("MessageDeduplicationId"));
        if fifo && (group_id.is_none() || deduplication_id.is_none()) {
            failed.push(json!({"Id": id, "SenderFault": true, "Code": "MissingParameter", "Message": "A FIFO queue needs MessageGroupId and MessageDeduplicationId (the sandbox has no content-based deduplication)."}));
            continue;
        }
        if !fifo && deduplication_id.is_some() {
            failed.push(json!({"Id": id, "SenderFault": true, "Code": "InvalidParameterValue", "Message": "MessageDeduplicationId is for FIFO queues only."}));
            continue;
        }
        if refuse_rate > 0.0 && state.sqs.dice.lock().unwrap().f64() < refuse_rate {
            failed.push(json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "The entry was refused (sandbox fault)."}));
            continue;
        }
        queues.sent += 1;
        let message_id = format!("00000000-0000-4000-8000-{:012}", queues.sent);
        let duplicate = deduplication_id.as_ref().is_some_and(|d| !queues.seen.insert((queue.to_string(), d.clone())));
        if !duplicate {
            let attributes = entry
                .get("MessageAttributes")
                .and_then(Value::as_object)
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.get("StringValue").and_then(Value::as_str).unwrap_or("").to_string())).collect())
                .unwrap_or_default();
            let message = QueuedMessage { message_id: message_id.clone(), body, group_id, deduplication_id, attributes };
            match queues.created.get_mut(queue) {
                Some(created) => created.stored.push_back(Stored::new(message)),
                None => queues.messages.entry(queue.to_string()).or_default().push_back(message),
            }
        }
        successful.push(json!({"Id": id, "MessageId": message_id}));
    }
    reply(200, &json!({"Successful": successful, "Failed": failed}))
}

fn change_visibility(state: &State, queue: &str, entries: Vec<Value>, batch: bool) -> Reply {
    if batch && !(1..=10).contains(&entries.len()) {
        return aws_error(400, "TooManyEntriesInBatchRequest", "A batch holds 1 to 10 entries.");
    }
    let mut queues = state.sqs.queues.lock().unwrap();
    let mut successful = Vec::new();
    for entry in &entries {
        let (Some(handle), Some(timeout)) = (entry.get("ReceiptHandle").and_then(Value::as_str), entry.get("VisibilityTimeout").and_then(Value::as_u64)) else {
            return aws_error(400, "MissingParameter", "ReceiptHandle and VisibilityTimeout are required.");
        };
        if timeout > 43_200 {
            return aws_error(400, "InvalidParameterValue", "VisibilityTimeout is at most 43200 seconds.");
        }
        queues.visibility_changes.push(VisibilityChange { queue: queue.to_string(), receipt_handle: handle.to_string(), visibility_timeout: timeout });
        if let Some(stored) = queues.created.get_mut(queue).and_then(|c| c.stored.iter_mut().find(|m| m.receipt.as_deref() == Some(handle))) {
            stored.visible_at = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
        }
        successful.push(json!({"Id": entry.get("Id").cloned().unwrap_or(Value::Null)}));
    }
    reply(200, &if batch { json!({"Successful": successful, "Failed": []}) } else { json!({}) })
}

fn receive_message(state: &State, queue: &str, request: &Value) -> Reply {
    let max = request.get("MaxNumberOfMessages").and_then(Value::as_u64).unwrap_or(1).clamp(1, 10) as usize;
    let mut queues = state.sqs.queues.lock().unwrap();
    if queues.created.contains_key(queue) {
        return reply(200, &json!({ "Messages": lease(&mut queues, queue, max) }));
    }
    let taken: Vec<QueuedMessage> = match queues.messages.get_mut(queue) {
        Some(q) => q.drain(..max.min(q.len())).collect(),
        None => Vec::new(),
    };
    let messages: Vec<Value> = taken
        .into_iter()
        .map(|m| {
            let mut attributes = json!({"ApproximateReceiveCount": "1", "SentTimestamp": chrono::Utc::now().timestamp_millis().to_string()});
            if let Some(group) = m.group_id {
                attributes["MessageGroupId"] = json!(group);
            }
            if let Some(dedup) = m.deduplication_id {
                attributes["MessageDeduplicationId"] = json!(dedup);
            }
            json!({"MessageId": m.message_id, "ReceiptHandle": format!("rh-{}", m.message_id), "Body": m.body, "Attributes": attributes})
        })
        .collect();
    reply(200, &json!({ "Messages": messages }))
}

impl Stored {
    fn new(message: QueuedMessage) -> Stored {
        Stored {
            message,
            sent_ms: chrono::Utc::now().timestamp_millis(),
            receives: 0,
            first_receive_ms: None,
            visible_at: std::time::Instant::now(),
            receipt: None,
        }
    }
}

fn create_queue(state: &State, request: &Value, host: &str) -> Reply {
    let Some(name) = request.get("QueueName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return aws_error(400, "MissingParameter", "QueueName is required.");
    };
    let attribute = |key: &str| request.pointer(&format!("/Attributes/{key}")).and_then(Value::as_str).map(str::to_string);
    let visibility = attribute("VisibilityTimeout").and_then(|v| v.parse().ok()).unwrap_or(30);
    let redrive = attribute("RedrivePolicy").and_then(|text| {
        let policy: Value = serde_json::from_str(&text).ok()?;
        let target = policy.get("deadLetterTargetArn")?.as_str()?.rsplit(':').next()?.to_string();
        let count = match policy.get("maxReceiveCount")? {
            Value::String(s) => s.parse().ok()?,
            other => other.as_u64()? as u32,
        };
        Some((target, count))
    });
    let mut queues = state.sqs.queues.lock().unwrap();
    let created = queues.created.entry(name.to_string()).or_default();
    created.visibility = visibility;
    created.redrive = redrive;
    reply(200, &json!({"QueueUrl": format!("http://{host}/000000000000/{name}")}))
}

fn queue_attributes(state: &State, queue: &str) -> Reply {
    let queues = state.sqs.queues.lock().unwrap();
    let now = std::time::Instant::now();
    let (visible, leased) = match queues.created.get(queue) {
        Some(c) => (c.stored.iter().filter(|m| m.visible_at <= now).count(), c.stored.iter().filter(|m| m.visible_at > now).count()),
        None => (queues.messages.get(queue).map_or(0, |q| q.len()), 0),
    };
    reply(
        200,
        &json!({"Attributes": {
            "QueueArn": format!("arn:aws:sqs:us-east-1:000000000000:{queue}"),
            "ApproximateNumberOfMessages": visible.to_string(),
            "ApproximateNumberOfMessagesNotVisible": leased.to_string(),
        }}),
    )
}

/// Up to `max` visible messages of a created queue, leased for its visibility
/// timeout; one received `maxReceiveCount` times goes to the DLQ instead.
fn lease(queues: &mut Queues, queue: &str, max: usize) -> Vec<Value> {
    let now = std::time::Instant::now();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let created = queues.created.get_mut(queue).expect("a created queue");
    let (visibility, redrive) = (created.visibility, created.redrive.clone());
    let mut out = Vec::new();
    let mut dead = Vec::new();
    let mut i = 0;
    while i < created.stored.len() && out.len() < max {
        if created.stored[i].visible_at > now {
            i += 1;
            continue;
        }
        if let Some((_, count)) = &redrive {
            if created.stored[i].receives >= *count {
                dead.push(created.stored.remove(i).expect("in range").message);
                continue;
            }
        }
        let stored = &mut created.stored[i];
        stored.receives += 1;
        let first = *stored.first_receive_ms.get_or_insert(now_ms);
        let receipt = format!("rh-{}-{}", stored.message.message_id, stored.receives);
        stored.receipt = Some(receipt.clone());
        stored.visible_at = now + std::time::Duration::from_secs(visibility);
        let m = &stored.message;
        let own: serde_json::Map<String, Value> = m.attributes.iter().map(|(k, v)| (k.clone(), json!({"StringValue": v, "DataType": "String"}))).collect();
        let mut message = json!({
            "MessageId": m.message_id,
            "ReceiptHandle": receipt,
            "Body": m.body,
            "Attributes": {
                "ApproximateReceiveCount": stored.receives.to_string(),
                "SentTimestamp": stored.sent_ms.to_string(),
                "ApproximateFirstReceiveTimestamp": first.to_string(),
            },
        });
        if !own.is_empty() {
            message["MessageAttributes"] = Value::Object(own);
        }
        if let Some(group) = &m.group_id {
            message["Attributes"]["MessageGroupId"] = json!(group);
        }
        if let Some(dedup) = &m.deduplication_id {
            message["Attributes"]["MessageDeduplicationId"] = json!(dedup);
        }
        out.push(message);
        i += 1;
    }
    if let Some((dlq, _)) = redrive {
        for message in dead {
            match queues.created.get_mut(&dlq) {
                Some(target) => target.stored.push_back(Stored::new(message)),
                None => queues.messages.entry(dlq.clone()).or_default().push_back(message),
            }
        }
    }
    out
}

fn delete_messages(state: &State, queue: &str, entries: Vec<Value>, batch: bool) -> Reply {
    if batch && !(1..=10).contains(&entries.len()) {
        return aws_error(400, "TooManyEntriesInBatchRequest", "A batch holds 1 to 10 entries.");
    }
    let mut queues = state.sqs.queues.lock().unwrap();
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for entry in &entries {
        let id = entry.get("Id").cloned().unwrap_or(Value::Null);
        let Some(handle) = entry.get("ReceiptHandle").and_then(Value::as_str) else {
            return aws_error(400, "MissingParameter", "ReceiptHandle is required.");
        };
        let removed = queues.created.get_mut(queue).and_then(|c| {
            let at = c.stored.iter().position(|m| m.receipt.as_deref() == Some(handle))?;
            c.stored.remove(at)
        });
        match removed {
            Some(_) => successful.push(json!({"Id": id})),
            None => failed.push(json!({"Id": id, "SenderFault": true, "Code": "ReceiptHandleIsInvalid", "Message": "The receipt handle is not the latest of a message in the queue."})),
        }
    }
    if !batch {
        return match failed.first() {
            Some(_) => aws_error(400, "ReceiptHandleIsInvalid", "The receipt handle is not the latest of a message in the queue."),
            None => reply(200, &json!({})),
        };
    }
    reply(200, &json!({"Successful": successful, "Failed": failed}))
}
