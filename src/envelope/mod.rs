//! Envelopes (SPEC §12): what wraps an event inside a record — an SNS
//! notification, an EventBridge event, a Dataverse change event — unwrapped
//! recursively before mapping, so the mapping never knows where an event came
//! from. Pure: only the fields named here are read, so nothing else in an
//! envelope can fail a record.

use serde_json::{Map, Value};

pub mod dataverse;

/// Envelopes inside envelopes beyond this depth are refused (SNS in SQS in … is at most 3 in practice).
pub const MAX_DEPTH: usize = 8;

/// The reason a JSON object that is neither an event nor an envelope is invalid.
pub const NOT_AN_EVENT: &str = "not an event: no `event` or `type`";

/// The event a record's value carries: the value itself when it is an event
/// (has `event` or `type`, never unwrapped), else the unwrapped envelope. A
/// value that is not an object is returned as it is (mapping judges it).
pub fn unwrap(value: Value) -> Result<Value, String> {
    unwrap_at(value, 0)
}

fn unwrap_at(value: Value, depth: usize) -> Result<Value, String> {
    let Value::Object(map) = &value else { return Ok(value) };
    if map.contains_key("event") || map.contains_key("type") {
        return Ok(value);
    }
    if depth >= MAX_DEPTH {
        return Err(format!("envelopes nested more than {MAX_DEPTH} deep"));
    }
    if is_sns_notification(map) {
        let message = map["Message"].as_str().unwrap_or_default();
        return sns_message(message, str_field(map, "MessageId"), depth);
    }
    if is_eventbridge(map) {
        return Ok(eventbridge_event(map));
    }
    if dataverse::is_change_event(map) {
        return dataverse::event(&value);
    }
    Err(NOT_AN_EVENT.into())
}

/// `"Type": "Notification"` with a string `Message` (SNS's JSON, in SQS bodies and HTTP bodies).
pub fn is_sns_notification(map: &Map<String, Value>) -> bool {
    map.get("Type").and_then(Value::as_str) == Some("Notification") && map.get("Message").is_some_and(Value::is_string)
}

/// `detail-type` (a string) and `detail`.
pub fn is_eventbridge(map: &Map<String, Value>) -> bool {
    map.get("detail-type").is_some_and(Value::is_string) && map.contains_key("detail")
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// An SNS message: parsed as JSON and unwrapped in turn. Its idempotency key is
/// the inner event's `messageId`, else the SNS `MessageId` (which SNS keeps
/// across its own redeliveries).
pub fn sns_message(message: &str, sns_message_id: Option<&str>, depth: usize) -> Result<Value, String> {
    let inner: Value = serde_json::from_str(message).map_err(|e| format!("the SNS message is not JSON: {e}"))?;
    let mut event = unwrap_at(inner, depth + 1)?;
    fill_message_id(&mut event, sns_message_id);
    Ok(event)
}

/// Sets `messageId` on an event object that has none (camelCase or snake_case; empty counts as none).
pub fn fill_message_id(event: &mut Value, id: Option<&str>) {
    let Some(id) = id else { return };
    if event.is_object() && crate::mapping::message_id(event).is_none() {
        event["messageId"] = Value::String(id.to_string());
    }
}

/// An EventBridge event: `detail` when it is itself an event (with `messageId`
/// from the EventBridge `id` when it has none), else an event built from it.
pub fn eventbridge_event(map: &Map<String, Value>) -> Value {
    let detail = &map["detail"];
    let id = str_field(map, "id");
    if detail.get("event").is_some() || detail.get("type").is_some() {
        let mut event = detail.clone();
        fill_message_id(&mut event, id);
        return event;
    }
    let mut event = Map::new();
    event.insert("type".into(), "track".into());
    event.insert("event".into(), map["detail-type"].clone());
    let mut put = |key: &str, value: Option<&Value>| {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            event.insert(key.into(), v.clone());
        }
    };
    put("messageId", map.get("id"));
    put("timestamp", map.get("time"));
    put("userId", detail.get("userId").filter(|v| !v.is_null()).or_else(|| detail.get("user_id")));
    put("context", detail.get("context"));
    put("properties", Some(detail));
    Value::Object(event)
}
