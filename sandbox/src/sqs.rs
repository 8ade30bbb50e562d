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

pub(crate) fn handle(state: &State, target: &str, body: &[u8]) -> Reply {
    let status = state.faults.lock().unwrap().sqs_status;
    if let Some(status) = status {
        return aws_error(status, "InternalError", "SQS is unavailable (sandbox fault).");
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
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
        other => aws_error(
            400,
            "UnsupportedOperation",
            &format!("The sandbox serves SendMessageBatch, ReceiveMessage and ChangeMessageVisibility(Batch) only, not {other}."),
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
    let refuse_rate = state.faults.lock().unwrap().sqs_refuse_rate;
    let mut queues = state.queues.lock().unwrap();
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
        if refuse_rate > 0.0 && state.dice.lock().unwrap().f64() < refuse_rate {
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
            queues.messages.entry(queue.to_string()).or_default().push_back(QueuedMessage {
                message_id: message_id.clone(),
                body,
                group_id,
                deduplication_id,
                attributes,
            });
        }
        successful.push(json!({"Id": id, "MessageId": message_id}));
    }
    reply(200, &json!({"Successful": successful, "Failed": failed}))
}

fn change_visibility(state: &State, queue: &str, entries: Vec<Value>, batch: bool) -> Reply {
    if batch && !(1..=10).contains(&entries.len()) {
        return aws_error(400, "TooManyEntriesInBatchRequest", "A batch holds 1 to 10 entries.");
    }
    let mut queues = state.queues.lock().unwrap();
    let mut successful = Vec::new();
    for entry in &entries {
        let (Some(handle), Some(timeout)) = (entry.get("ReceiptHandle").and_then(Value::as_str), entry.get("VisibilityTimeout").and_then(Value::as_u64)) else {
            return aws_error(400, "MissingParameter", "ReceiptHandle and VisibilityTimeout are required.");
        };
        if timeout > 43_200 {
            return aws_error(400, "InvalidParameterValue", "VisibilityTimeout is at most 43200 seconds.");
        }
        queues.visibility_changes.push(VisibilityChange { queue: queue.to_string(), receipt_handle: handle.to_string(), visibility_timeout: timeout });
        successful.push(json!({"Id": entry.get("Id").cloned().unwrap_or(Value::Null)}));
    }
    reply(200, &if batch { json!({"Successful": successful, "Failed": []}) } else { json!({}) })
}

fn receive_message(state: &State, queue: &str, request: &Value) -> Reply {
    let max = request.get("MaxNumberOfMessages").and_then(Value::as_u64).unwrap_or(1).clamp(1, 10) as usize;
    let mut queues = state.queues.lock().unwrap();
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
