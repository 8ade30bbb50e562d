//! What to look up for one event (pure): the lookups whose `from` value is
//! present, normalised and in the document's order, and what a create or an
//! update would write.

use serde_json::{Map, Value};

use crate::config::identity::{id_column, IdentitySpec, WriteSpec};
use crate::mapping;
use crate::redact;

/// One lookup with its value: `GET {entity}?$select={id}&$filter={attribute} eq '{value}'&$top=2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub entity: String,
    pub attribute: String,
    /// Normalised: e-mail attributes trimmed and lowercased.
    pub value: String,
}

/// An event's resolution: its lookups, what a create would send, and the cache key.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The create's attributes (mapped, non-null), when the document has a `create`.
    pub create: Option<Map<String, Value>>,
    /// An id known without a lookup (a GUID `userId`).
    pub known: Option<String>,
    pub key: String,
}

impl Plan {
    pub fn known(id: String) -> Plan {
        Plan { steps: Vec::new(), create: None, known: Some(id.clone()), key: id }
    }
}

impl Step {
    /// The request's path and query, selecting the id column guessed from the set's name.
    pub fn query(&self) -> String {
        self.query_selecting(&id_column(&self.entity))
    }

    /// The request's path and query selecting `id` (the entity's `PrimaryIdAttribute`,
    /// SPEC §14, §19); the value is an OData string literal (`'` doubled).
    pub fn query_selecting(&self, id: &str) -> String {
        let literal = self.value.replace('\'', "''");
        format!("{}?$select={id}&$filter={}%20eq%20'{}'&$top=2", self.entity, self.attribute, encode(&literal))
    }

    /// The value as a log line or a reason may show it: e-mail addresses and phone numbers masked.
    pub fn shown(&self) -> String {
        if self.value.contains('@') {
            redact::email(&self.value)
        } else if self.attribute.contains("phone") {
            redact::phone(&self.value)
        } else {
            self.value.clone()
        }
    }

    /// `contacts` → `contact`: the word a reason uses.
    pub fn noun(&self) -> String {
        id_column(&self.entity).trim_end_matches("id").to_string()
    }
}

/// Percent-encodes a query value, keeping what RFC 3986 allows unencoded there.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~'@!$()*,;:/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A GUID in any spelling (hyphenated, optionally in braces).
pub fn is_guid(text: &str) -> bool {
    let t = text.trim().trim_start_matches('{').trim_end_matches('}');
    t.len() == 36 && t.char_indices().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// A dotted path's value as lookup text: a non-empty string (trimmed) or a number.
fn text_at(event: &Value, path: &str) -> Option<String> {
    let value = path.split('.').try_fold(event, |v, segment| match v {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })?;
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn value_at<'v>(event: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(event, |v, segment| match v {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
        .filter(|v| !v.is_null())
}

/// `userId` is read in either spelling (`userId`, `user_id`), as mapping does.
fn lookup_value(event: &Value, from: &str) -> Option<String> {
    match from {
        "userId" | "user_id" => crate::fields::user_id(event),
        path => text_at(event, path),
    }
}

fn normalise(attribute: &str, value: String) -> Option<String> {
    if attribute.starts_with("emailaddress") {
        mapping::normalize_email(&value)
    } else {
        Some(value)
    }
}

/// Mapped, non-null attributes of a create or an update; e-mail columns normalised.
pub fn update_body(event: &Value, spec: &WriteSpec) -> Map<String, Value> {
    let mut body = Map::new();
    for (column, path) in &spec.attributes {
        let Some(value) = value_at(event, path) else { continue };
        let value = match (column.starts_with("emailaddress"), value.as_str()) {
            (true, Some(raw)) => match mapping::normalize_email(raw) {
                Some(email) => Value::String(email),
                None => continue,
            },
            _ => value.clone(),
        };
        body.insert(column.clone(), value);
    }
    body
}

/// What resolving this event takes: `Ok(None)` when its `userId` is already a
/// GUID (used as is); `Err` with the reason when no lookup has a value.
pub fn plan(event: &Value, spec: &IdentitySpec) -> Result<Option<Plan>, String> {
    if crate::fields::user_id(event).is_some_and(|u| is_guid(&u)) {
        return Ok(None);
    }
    let steps: Vec<Step> = spec
        .lookups
        .iter()
        .filter_map(|l| {
            let value = normalise(&l.attribute, lookup_value(event, &l.from)?)?;
            Some(Step { entity: l.entity.clone(), attribute: l.attribute.clone(), value })
        })
        .collect();
    if steps.is_empty() {
        let sources: Vec<&str> = spec.lookups.iter().map(|l| l.from.as_str()).collect();
        return Err(format!("no profile id: userId is not a Dataverse id and the event has no value for {}", sources.join(", ")));
    }
    let key = steps.iter().map(|s| format!("{}\u{1f}{}\u{1f}{}", s.entity, s.attribute, s.value)).collect::<Vec<_>>().join("\u{1e}");
    let create = spec.create.as_ref().map(|c| update_body(event, c));
    Ok(Some(Plan { steps, create, known: None, key }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mapping;
    use serde_json::json;

    fn spec() -> IdentitySpec {
        Mapping::parse(
            r#"{"identity":{"lookup":[
            {"entity":"contacts","attribute":"emailaddress1","from":"context.traits.email"},
            {"entity":"contacts","attribute":"new_customernumber","from":"userId"}],
            "create":{"entity":"contacts","attributes":{"emailaddress1":"context.traits.email","lastname":"context.traits.last_name"}}}}"#,
        )
        .unwrap()
        .identity
        .unwrap()
    }

    #[test]
    fn a_guid_user_id_passes_through() {
        assert_eq!(plan(&json!({"userId": "B6A8C2E0-1234-4F9A-9C3D-AA11BB22CC33"}), &spec()), Ok(None));
        assert_eq!(plan(&json!({"userId": "{b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33}"}), &spec()), Ok(None));
        assert!(!is_guid("b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc3"));
        assert!(!is_guid("cust-1"));
    }

    #[test]
    fn lookups_with_values_in_order_emails_normalised_and_escaped() {
        let e = json!({"userId": 1001, "context": {"traits": {"email": "  O'Brien@Example.com ", "last_name": null}}});
        let p = plan(&e, &spec()).unwrap().unwrap();
        assert_eq!(
            p.steps.iter().map(|s| (s.attribute.as_str(), s.value.as_str())).collect::<Vec<_>>(),
            [("emailaddress1", "o'brien@example.com"), ("new_customernumber", "1001")]
        );
        assert_eq!(p.steps[0].query(), "contacts?$select=contactid&$filter=emailaddress1%20eq%20'o''brien@example.com'&$top=2");
        assert_eq!(p.steps[0].shown(), "o***@example.com");
        assert_eq!(p.create, Some(json!({"emailaddress1": "o'brien@example.com"}).as_object().unwrap().clone()), "null attributes are left out");
        // A lookup without a value is skipped; none at all is a reason.
        let p = plan(&json!({"userId": "C-7"}), &spec()).unwrap().unwrap();
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].noun(), "contact");
        let p = plan(&json!({"user_id": "a&b #c+d"}), &spec()).unwrap().unwrap();
        assert_eq!(p.steps[0].query(), "contacts?$select=contactid&$filter=new_customernumber%20eq%20'a%26b%20%23c%2Bd'&$top=2");
        let reason = plan(&json!({"context": {"traits": {"email": "not an address"}}}), &spec()).unwrap_err();
        assert!(reason.contains("context.traits.email, userId"), "{reason}");
    }
}
