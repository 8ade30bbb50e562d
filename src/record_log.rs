//! The record line (SPEC §22.1): one JSON object a record on standard output,
//! with top-level keys that Logs Insights reads by name — its key, its SQS
//! message id, event, outcome, time, receive count, the event's own
//! non-personal ids and each action with its destination, status, code,
//! attempts and time. Written with `serde_json` (the logger's JSON layer nests
//! fields and cannot carry arrays); never a body, e-mail and phone masked.

use serde_json::{json, Map, Value};

use crate::config::RecordLog;
use crate::outcome::{Outcome, RecordResult};

/// The destination of a deployment with one Dynamics environment (SPEC §23).
pub const DEFAULT_DESTINATION: &str = "default";

/// Whether `result` gets a line under `mode`.
pub fn wanted(mode: RecordLog, result: &RecordResult) -> bool {
    match mode {
        RecordLog::All => true,
        RecordLog::Failures => !matches!(result.outcome, Outcome::Delivered | Outcome::Dropped { .. } | Outcome::Duplicate | Outcome::DryRun { .. }),
        RecordLog::None => false,
    }
}

/// The record line of `result`.
pub fn line(result: &RecordResult) -> Value {
    let mut line = Map::new();
    line.insert("message".into(), json!("record"));
    line.insert("level".into(), json!("INFO"));
    // The record's key (SPEC §11): the event's `messageId`, else its hash; else the SQS message's.
    let trace = result.trace.as_deref();
    let key = result.message_id.as_deref().or(trace.and_then(|t| t.key.as_deref())).or(result.sqs_id.as_deref());
    line.insert("messageId".into(), json!(key.unwrap_or("")));
    if let Some(id) = &result.sqs_id {
        line.insert("sqsMessageId".into(), json!(id));
    }
    line.insert("event".into(), json!(result.event_name.as_deref().unwrap_or("")));
    line.insert("outcome".into(), json!(result.outcome.name()));
    if let Some(error) = result.outcome.error() {
        line.insert("status".into(), json!(error.status()));
        line.insert("code".into(), json!(error.code()));
    }
    let actions = trace.map_or(&[][..], |t| t.actions.as_slice());
    let ms: u64 = actions.iter().map(|a| a.ms).sum();
    line.insert("ms".into(), json!(ms));
    if let Some(count) = trace.and_then(|t| t.receive_count) {
        line.insert("receiveCount".into(), json!(count));
    }
    let ids = trace.and_then(|t| t.ids.as_deref()).and_then(|text| serde_json::from_str(text).ok()).unwrap_or_else(|| json!({}));
    line.insert("ids".into(), ids);
    let actions: Vec<Value> = actions
        .iter()
        .map(|a| {
            json!({"destination": if a.destination.is_empty() { DEFAULT_DESTINATION } else { &a.destination }, "kind": a.kind, "target": a.target, "status": a.status,
                   "code": a.code, "attempts": a.attempts, "ms": a.ms, "outcome": a.outcome})
        })
        .collect();
    line.insert("actions".into(), Value::Array(actions));
    let explained = !matches!(result.outcome, Outcome::Delivered | Outcome::Duplicate | Outcome::DryRun { .. });
    if let Some(reason) = result.outcome.detail().filter(|_| explained) {
        line.insert("reason".into(), json!(crate::redact::scrub(&reason)));
    }
    Value::Object(line)
}

/// Where record lines go.
#[derive(Debug, Clone, Default)]
pub enum RecordLines {
    /// Standard output: the function's log group (the default).
    #[default]
    Stdout,
    /// A buffer (tests, the demo).
    Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>),
    /// Built and let go (a measurement of the relay's own memory).
    Discard,
}

/// Writes `result`'s line if `mode` wants it, to standard output (or `into`),
/// as soon as its outcome is known; then lets go of its trace, so a large
/// batch never holds every record's line or actions at once.
pub fn write(mode: RecordLog, result: &mut RecordResult, into: &RecordLines) {
    if wanted(mode, result) {
        let mut text = line(result).to_string();
        text.push('\n');
        match into {
            RecordLines::Buffer(buffer) => crate::lock(buffer).extend_from_slice(text.as_bytes()),
            // `print!`: standard output in Lambda, the captured output in tests.
            RecordLines::Stdout => print!("{text}"),
            RecordLines::Discard => drop(text),
        }
    }
    // What the backlog still needs (the destinations not done) stays; the rest goes.
    match result.trace.as_mut() {
        Some(trace) if !trace.unfinished.is_empty() => {
            trace.actions = Vec::new();
            trace.ids = None;
        }
        _ => result.trace = None,
    }
}

/// The event's own ids for its record line (SPEC §22.1): `properties.*_id`
/// (`order_id`, `checkout_id`, `account_id`, …) and the trigger's `required`
/// attributes — never a contact point: an id whose name says e-mail, phone or
/// name, or whose value holds an `@`, is left out.
pub fn ids(event: &Value, required: &[String], body: Option<&Map<String, Value>>) -> Option<Box<str>> {
    let mut ids = Vec::new();
    if let Some(properties) = event.get("properties").and_then(Value::as_object) {
        for (name, value) in properties {
            if is_id_name(name) {
                push(&mut ids, format!("properties.{name}"), value);
            }
        }
    }
    if let Some(body) = body {
        for name in required {
            if let Some(value) = body.get(name) {
                push(&mut ids, name.clone(), value);
            }
        }
    }
    (!ids.is_empty()).then(|| Value::Object(ids.into_iter().map(|(k, v)| (k, Value::String(v))).collect()).to_string().into_boxed_str())
}

fn is_id_name(name: &str) -> bool {
    (name.ends_with("_id") || name.ends_with("Id")) && !is_personal_name(&name.to_ascii_lowercase())
}

fn is_personal_name(lower: &str) -> bool {
    ["mail", "phone", "mobile", "name", "user", "anonymous", "device", "ip"].iter().any(|w| lower.contains(w))
}

fn push(ids: &mut Vec<(String, String)>, name: String, value: &Value) {
    let text = match value {
        Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    if text.contains('@') || is_personal_name(&name.to_ascii_lowercase()) || ids.iter().any(|(k, _)| *k == name) {
        return;
    }
    ids.push((name, text.chars().take(200).collect()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_events_own_and_never_a_contact_point() {
        let event = json!({"properties": {"order_id": "ORD-10231", "checkout_id": 77, "email_id": "x", "account_id": "a@b.com",
                           "user_id": "u-1", "revenue": 10.5}});
        let body = json!({"msdynmkt_orderid": "ORD-10231", "msdynmkt_email": "jane@example.com"});
        let ids = ids(&event, &["msdynmkt_orderid".into(), "msdynmkt_email".into()], body.as_object()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&ids).unwrap(),
            json!({"properties.checkout_id": "77", "properties.order_id": "ORD-10231", "msdynmkt_orderid": "ORD-10231"})
        );
    }

    #[test]
    fn failures_mode_skips_what_needs_no_one() {
        let result = |outcome| RecordResult {
            index: 0,
            sqs_id: None,
            message_id: None,
            event_name: None,
            trigger: None,
            outcome,
            attempts: 0,
            throttled: 0,
            latency: None,
            trace: None,
        };
        assert!(!wanted(RecordLog::Failures, &result(Outcome::Delivered)));
        assert!(!wanted(RecordLog::Failures, &result(Outcome::Duplicate)));
        assert!(wanted(RecordLog::Failures, &result(Outcome::Invalid { reason: "x".into() })));
        assert!(wanted(RecordLog::All, &result(Outcome::Delivered)));
        assert!(!wanted(RecordLog::None, &result(Outcome::Invalid { reason: "x".into() })));
    }
}
