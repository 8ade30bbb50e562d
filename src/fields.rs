//! The event's own fields (SPEC §3): its name, its ids, dotted paths into it,
//! and the one time format. Model: every layer reads events through these.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Event name, for logs and reports (`None` for a non-track or nameless event).
pub fn event_name(event: &Value) -> Option<&str> {
    event.get("event").and_then(Value::as_str)
}

/// The event's own `messageId` (camelCase or snake_case); empty counts as missing.
pub fn message_id(event: &Value) -> Option<String> {
    id_field(event, "messageId", "message_id")
}

/// An id as the event gives it (§3: a string, or a number as its decimal text; empty counts as missing).
pub fn id_field(event: &Value, camel: &str, snake: &str) -> Option<String> {
    let value = event.get(camel).filter(|v| !v.is_null()).or_else(|| event.get(snake))?;
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The event's `userId` (camelCase or snake_case; a number as its decimal string).
pub fn user_id(event: &Value) -> Option<String> {
    id_field(event, "userId", "user_id")
}

/// Follows a dotted path through objects (and arrays, by index).
pub fn lookup<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, segment| match v {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Nested nulls are removed too: a null anywhere fails the journey at run time.
pub fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().filter(|v| !v.is_null()).map(strip_nulls).collect()),
        other => other,
    }
}

/// UTC with `Z`: whole seconds without a fraction, else milliseconds.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    let format = if t.timestamp_subsec_millis() == 0 { SecondsFormat::Secs } else { SecondsFormat::Millis };
    t.to_rfc3339_opts(format, true)
}
