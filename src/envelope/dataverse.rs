//! Dataverse change events (SPEC §12): the `RemoteExecutionContext` that a
//! Dataverse webhook registration POSTs, and the plain imitation Power Automate
//! flows post, become `"<PrimaryEntityName> <Message>"` track events for the
//! changed row. Values are decoded from the context's WCF encodings (DOMAIN.md).

use chrono::DateTime;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::fields::format_timestamp;

/// Recognised by `MessageName` and `PrimaryEntityName` (case-sensitive keys).
pub fn is_change_event(map: &Map<String, Value>) -> bool {
    map.contains_key("MessageName") && map.contains_key("PrimaryEntityName")
}

/// Create/Created → `Create`; Update/Updated/Modify/Modified → `Update`;
/// Delete/Deleted → `Delete` (any case); any other message name as sent.
pub fn normalise_message(name: &str) -> String {
    match name.trim().to_ascii_lowercase().as_str() {
        "create" | "created" => "Create".into(),
        "update" | "updated" | "modify" | "modified" => "Update".into(),
        "delete" | "deleted" => "Delete".into(),
        _ => name.trim().to_string(),
    }
}

/// The event a change event describes.
pub fn event(received: &Value) -> Result<Value, String> {
    let map = received.as_object().expect("is_change_event checked an object");
    let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let message = text("MessageName").map(normalise_message).ok_or("a Dataverse change event whose MessageName is not a name")?;
    let entity = text("PrimaryEntityName").ok_or("a Dataverse change event whose PrimaryEntityName is not a name")?;
    let entity_id = text("PrimaryEntityId");

    let message_id = text("OperationId")
        .filter(|id| !is_nil_guid(id))
        .or_else(|| text("RequestId").filter(|id| !is_nil_guid(id)))
        .map(str::to_string)
        .or_else(|| text("CorrelationId").map(|c| format!("{c}:{entity}:{}:{message}", entity_id.unwrap_or_default())))
        .unwrap_or_else(|| {
            // The hash rule of SPEC §11 on the body as received: a sender's retry
            // of the same body is a duplicate, a later change is not.
            let canonical = serde_json::to_vec(received).expect("a JSON value serialises");
            format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
        });

    let mut event = Map::new();
    event.insert("type".into(), "track".into());
    event.insert("event".into(), Value::String(format!("{entity} {message}")));
    event.insert("messageId".into(), Value::String(message_id));
    if let Some(id) = entity_id {
        event.insert("userId".into(), Value::String(id.to_string()));
    }
    // Absent, the mapping takes the time of processing (SPEC §4's "else now").
    if let Some(when) = map.get("OperationCreatedOn").map(decode).filter(Value::is_string) {
        event.insert("timestamp".into(), when);
    }
    if let Some(properties) = properties(map) {
        event.insert("properties".into(), Value::Object(properties));
    }
    Ok(Value::Object(event))
}

fn is_nil_guid(id: &str) -> bool {
    id.chars().all(|c| c == '0' || c == '-' || c == '{' || c == '}')
}

/// Target's attributes, then the post-images' attributes Target lacks; `None`
/// when there is neither (a Delete's Target is a reference, with no attributes).
fn properties(map: &Map<String, Value>) -> Option<Map<String, Value>> {
    let target = parameter(map.get("InputParameters"), "Target").and_then(attributes);
    let images: Vec<Map<String, Value>> = match map.get("PostEntityImages") {
        Some(Value::Array(list)) => list.iter().filter_map(|kv| kv.get("value")).filter_map(attributes).collect(),
        Some(Value::Object(by_name)) => by_name.values().filter_map(attributes).collect(),
        _ => Vec::new(),
    };
    if target.is_none() && images.is_empty() {
        return None;
    }
    let mut properties = target.unwrap_or_default();
    for image in images {
        for (key, value) in image {
            properties.entry(key).or_insert(value);
        }
    }
    Some(properties)
}

/// A parameter of a `[{key, value}]` list (or of a plain object, as flows may send).
fn parameter<'a>(parameters: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    match parameters? {
        Value::Array(list) => list.iter().find(|kv| kv.get("key").and_then(Value::as_str) == Some(name)).and_then(|kv| kv.get("value")),
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

/// An entity's attributes, decoded: `Attributes` as a `[{key, value}]` list (the
/// context's form) or an object; a plain object (Power Automate's form) is its
/// own attributes; a reference or anything else has none.
fn attributes(entity: &Value) -> Option<Map<String, Value>> {
    let object = entity.as_object()?;
    let pairs: Map<String, Value> = match object.get("Attributes") {
        Some(Value::Array(list)) => {
            list.iter().filter_map(|kv| Some((kv.get("key")?.as_str()?.to_string(), kv.get("value").cloned().unwrap_or(Value::Null)))).collect()
        }
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return None,
        None if is_reference(object) => return None,
        None => object.iter().filter(|(k, _)| !k.starts_with("@odata") && *k != "__type").map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    Some(pairs.into_iter().map(|(k, v)| (k, decode(&v))).collect())
}

fn type_of(object: &Map<String, Value>) -> &str {
    object.get("__type").and_then(Value::as_str).unwrap_or_default()
}

fn is_reference(object: &Map<String, Value>) -> bool {
    type_of(object).starts_with("EntityReference") || (object.contains_key("LogicalName") && object.contains_key("Id") && !object.contains_key("Attributes"))
}

/// One value of the context: `/Date(ms±hhmm)/` → RFC 3339 UTC (the offset is
/// ignored, as .NET does); EntityReference → its `Id`; OptionSetValue and Money
/// → their `Value`; a list → each item decoded (multi-select option sets become
/// lists of integers); anything else as it is.
pub fn decode(value: &Value) -> Value {
    match value {
        Value::String(s) => wcf_date(s).map(Value::String).unwrap_or_else(|| value.clone()),
        Value::Array(items) => Value::Array(items.iter().map(decode).collect()),
        Value::Object(object) => {
            let kind = type_of(object);
            if is_reference(object) {
                object.get("Id").cloned().unwrap_or(Value::Null)
            } else if kind.starts_with("OptionSetValue") || kind.starts_with("Money") || (kind.is_empty() && object.len() == 1 && object.contains_key("Value"))
            {
                object.get("Value").cloned().unwrap_or(Value::Null)
            } else {
                value.clone()
            }
        }
        _ => value.clone(),
    }
}

/// `/Date(1506409448000-0700)/` → `2017-09-26T07:04:08Z`: milliseconds since the epoch in UTC.
pub fn wcf_date(text: &str) -> Option<String> {
    let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let digits_end = inner.char_indices().skip(1).find(|(_, c)| !c.is_ascii_digit()).map_or(inner.len(), |(i, _)| i);
    let (millis, offset) = inner.split_at(digits_end);
    let offset_ok = offset.is_empty() || (offset.len() == 5 && offset.starts_with(['+', '-']) && offset[1..].chars().all(|c| c.is_ascii_digit()));
    if !offset_ok {
        return None;
    }
    let millis: i64 = millis.parse().ok()?;
    Some(format_timestamp(DateTime::from_timestamp_millis(millis)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_milliseconds_since_the_epoch_in_utc() {
        assert_eq!(wcf_date("/Date(1506384247000)/").as_deref(), Some("2017-09-26T00:04:07Z"));
        assert_eq!(wcf_date("/Date(1506409448000-0700)/").as_deref(), Some("2017-09-26T07:04:08Z"), "the offset is ignored");
        assert_eq!(wcf_date("/Date(1724647396250+0300)/").as_deref(), Some("2024-08-26T04:43:16.250Z"));
        assert_eq!(wcf_date("/Date(-1000)/").as_deref(), Some("1969-12-31T23:59:59Z"));
        for not_a_date in ["/Date()/", "/Date(12ab)/", "/Date(1+07)/", "Date(1)", "2017-09-26", "/Date(1)/x"] {
            assert_eq!(wcf_date(not_a_date), None, "{not_a_date}");
        }
    }

    #[test]
    fn values_are_decoded() {
        assert_eq!(
            decode(
                &json!({"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": "g-1", "LogicalName": "systemuser", "Name": null})
            ),
            json!("g-1")
        );
        assert_eq!(decode(&json!({"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 257760001})), json!(257760001));
        assert_eq!(decode(&json!({"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 2154.32})), json!(2154.32));
        assert_eq!(decode(&json!([{"__type": "OptionSetValue:x", "Value": 1}, {"__type": "OptionSetValue:x", "Value": 3}])), json!([1, 3]));
        assert_eq!(decode(&json!("\u{2f}Date(0)\u{2f}")), json!("1970-01-01T00:00:00Z"));
        for plain in [json!("James"), json!(12), json!(true), json!(null), json!({"a": 1, "b": 2})] {
            assert_eq!(decode(&plain), plain);
        }
    }

    #[test]
    fn message_names_are_normalised() {
        for (sent, want) in [
            ("Create", "Create"),
            ("created", "Create"),
            ("Update", "Update"),
            ("Modified", "Update"),
            ("modify", "Update"),
            ("Updated", "Update"),
            ("Deleted", "Delete"),
            ("Win", "Win"),
            ("Assign", "Assign"),
        ] {
            assert_eq!(normalise_message(sent), want);
        }
    }

    #[test]
    fn the_idempotency_key_falls_back_in_order() {
        let base = json!({"MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": "c-1"});
        let with = |extra: Value| {
            let mut v = base.clone();
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            event(&v).unwrap()["messageId"].as_str().unwrap().to_string()
        };
        assert_eq!(with(json!({"OperationId": "op-1", "RequestId": "rq-1", "CorrelationId": "co-1"})), "op-1");
        assert_eq!(with(json!({"OperationId": "00000000-0000-0000-0000-000000000000", "RequestId": "rq-1"})), "rq-1");
        assert_eq!(with(json!({"RequestId": null, "CorrelationId": "co-1"})), "co-1:contact:c-1:Update");
        let hashed = with(json!({}));
        assert!(hashed.starts_with("sha256:") && hashed.len() == 7 + 64, "{hashed}");
        assert_eq!(hashed, with(json!({})), "the same body, the same key");
        assert_ne!(hashed, with(json!({"InputParameters": [{"key": "Target", "value": {"firstname": "Jo"}}]})), "another change, another key");
    }

    #[test]
    fn the_plain_form_of_power_automate() {
        let flow = json!({"MessageName": "Modified", "PrimaryEntityName": "opportunity", "PrimaryEntityId": "o-1",
                          "InputParameters": [{"key": "Target", "value": {"name": "Big deal", "estimatedvalue": 5000}}]});
        let e = event(&flow).unwrap();
        assert_eq!(e["event"], "opportunity Update");
        assert_eq!(e["userId"], "o-1");
        assert_eq!(e["properties"], json!({"name": "Big deal", "estimatedvalue": 5000}));
        assert!(e.get("timestamp").is_none(), "absent, not null");
    }

    #[test]
    fn a_delete_has_no_properties_and_post_images_fill_gaps() {
        let delete = json!({"MessageName": "Delete", "PrimaryEntityName": "lead", "PrimaryEntityId": "l-1", "OperationId": "op",
                            "InputParameters": [{"key": "Target", "value": {"__type": "EntityReference:x", "Id": "l-1", "LogicalName": "lead"}}]});
        let e = event(&delete).unwrap();
        assert_eq!(e["event"], "lead Delete");
        assert!(e.get("properties").is_none());
        let update = json!({"MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": "c-1",
            "InputParameters": [{"key": "Target", "value": {"Attributes": [{"key": "firstname", "value": "New"}]}}],
            "PostEntityImages": [{"key": "post", "value": {"Attributes": [{"key": "firstname", "value": "Old"}, {"key": "emailaddress1", "value": "a@b.c"}]}}]});
        assert_eq!(event(&update).unwrap()["properties"], json!({"firstname": "New", "emailaddress1": "a@b.c"}));
    }
}
