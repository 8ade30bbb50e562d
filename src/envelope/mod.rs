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
    if event.is_object() && crate::fields::message_id(event).is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sns(message: &Value, id: &str) -> Value {
        json!({"Type": "Notification", "MessageId": id, "Message": message.to_string(), "TopicArn": "t", "Signature": "x"})
    }

    #[test]
    fn events_are_never_unwrapped() {
        let event = json!({"type": "identify", "Type": "Notification", "Message": "{}", "detail-type": "x", "detail": {}});
        assert_eq!(unwrap(event.clone()), Ok(event));
        assert_eq!(unwrap(json!([1])), Ok(json!([1])), "not an object: judged by the mapping");
    }

    #[test]
    fn sns_takes_the_inner_message_id_else_its_own() {
        let with_id = json!({"event": "E", "messageId": "inner"});
        assert_eq!(unwrap(sns(&with_id, "outer")).unwrap()["messageId"], "inner");
        let without = json!({"event": "E", "messageId": ""});
        assert_eq!(unwrap(sns(&without, "outer")).unwrap()["messageId"], "outer");
        assert!(unwrap(json!({"Type": "Notification", "Message": "Hello\r\nworld!"})).unwrap_err().contains("not JSON"));
    }

    #[test]
    fn eventbridge_detail_is_the_event_or_builds_one() {
        let segment = json!({"id": "eb-1", "detail-type": "Segment", "source": "s", "detail": {"type": "track", "event": "E", "userId": "u"}});
        assert_eq!(unwrap(segment).unwrap(), json!({"type": "track", "event": "E", "userId": "u", "messageId": "eb-1"}));
        let custom = json!({"id": "eb-2", "detail-type": "Order Completed", "source": "shop", "time": "2026-06-06T11:00:00Z",
                            "detail": {"user_id": 7, "order_id": "O", "context": {"locale": "de-DE"}}});
        assert_eq!(
            unwrap(custom).unwrap(),
            json!({"type": "track", "event": "Order Completed", "messageId": "eb-2", "timestamp": "2026-06-06T11:00:00Z", "userId": 7,
                   "context": {"locale": "de-DE"}, "properties": {"user_id": 7, "order_id": "O", "context": {"locale": "de-DE"}}})
        );
        // Absent sources are left out, never null.
        let bare = json!({"detail-type": "Ping", "detail": null});
        assert_eq!(unwrap(bare).unwrap(), json!({"type": "track", "event": "Ping"}));
    }

    #[test]
    fn envelopes_nest_and_anything_else_is_invalid() {
        let eb = json!({"id": "eb-3", "detail-type": "Signed Up", "source": "s", "detail": {"userId": "u"}});
        let nested = sns(&sns(&eb, "inner-sns"), "outer-sns");
        assert_eq!(unwrap(nested).unwrap()["messageId"], "eb-3");
        let dataverse = json!({"MessageName": "Created", "PrimaryEntityName": "lead", "PrimaryEntityId": "l-1", "OperationId": "op-1"});
        assert_eq!(unwrap(sns(&dataverse, "s")).unwrap()["event"], "lead Create");
        assert_eq!(unwrap(json!({"message": "foo"})), Err(NOT_AN_EVENT.to_string()));
        assert_eq!(unwrap(json!({"Type": "SubscriptionConfirmation", "Message": "{}"})), Err(NOT_AN_EVENT.to_string()));
        let mut deep = json!({"event": "E"});
        for i in 0..=MAX_DEPTH {
            deep = sns(&deep, &i.to_string());
        }
        assert!(unwrap(deep).unwrap_err().contains("nested"));
    }

    #[test]
    fn the_remote_execution_context_becomes_the_row_s_event() {
        let context: Value = serde_json::from_str(include_str!("../../tests/fixtures/dataverse-remote-execution-context.json")).unwrap();
        let event = unwrap(context).unwrap();
        assert_eq!(event["event"], "contact Update");
        assert_eq!(event["messageId"], "3e8f5a2b-1c4d-4e6f-8a9b-0c1d2e3f4a5b");
        assert_eq!(event["userId"], "7d4a2c6e-3b1f-4e0a-9c8d-2f6e5a4b3c21");
        assert_eq!(event["timestamp"], "2026-06-06T10:00:01Z");
        assert_eq!(
            event["properties"],
            json!({"firstname": "Jane", "contactid": "7d4a2c6e-3b1f-4e0a-9c8d-2f6e5a4b3c21", "fullname": "Jane Doe (sample)",
                   "modifiedon": "2026-06-06T10:00:00Z", "modifiedby": "a1b2c3d4-0000-4000-8000-0000000000aa", "modifiedonbehalfby": null,
                   "preferredcontactmethodcode": 2, "creditlimit": 2154.32, "emailaddress1": "jane.doe@example.com"})
        );
    }
}
