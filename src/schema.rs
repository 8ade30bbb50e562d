//! Trigger schema (SPEC §13), the pure part: a trigger's definition as
//! Dataverse describes it (`customapis` + `CustomAPIRequestParameters`), and a
//! trigger body checked against it — parameters the trigger lacks omitted,
//! values coerced to their parameter's type, required parameters enforced.
//! Reading the definition is the Dynamics adapter's job (`dynamics::metadata`).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{json, Map, Value};

use crate::fields::format_timestamp;

/// The fields the relay fills itself (SPEC §4): they count as filled, and a
/// trigger that lacks one of them is information, not a problem.
pub const SYSTEM_FIELDS: &[&str] = &[
    "msdynmkt_profileid",
    "msdynmkt_signaluserauthid",
    "msdynmkt_signaltimestamp",
    "msdynmkt_signalingestiontimestamp",
    "contactpoint_email",
    "contactpoint_phone",
];

pub fn is_system_field(name: &str) -> bool {
    SYSTEM_FIELDS.contains(&name)
}

/// A Custom API request parameter's type, by Dataverse's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Boolean,
    DateTime,
    Decimal,
    Entity,
    EntityCollection,
    EntityReference,
    Float,
    Integer,
    Money,
    Picklist,
    String,
    StringArray,
    Guid,
    /// A code this relay does not know: values pass unchanged.
    Other(i64),
}

impl ParamType {
    pub fn from_code(code: i64) -> ParamType {
        use ParamType::*;
        match code {
            0 => Boolean,
            1 => DateTime,
            2 => Decimal,
            3 => Entity,
            4 => EntityCollection,
            5 => EntityReference,
            6 => Float,
            7 => Integer,
            8 => Money,
            9 => Picklist,
            10 => String,
            11 => StringArray,
            12 => Guid,
            other => Other(other),
        }
    }

    pub fn name(&self) -> std::string::String {
        match self {
            ParamType::Other(code) => format!("type {code}"),
            other => format!("{other:?}"),
        }
    }

    /// Whether the relay can build a value of this type from an event.
    pub fn coercible(&self) -> bool {
        !matches!(self, ParamType::Entity | ParamType::EntityCollection | ParamType::Other(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub kind: ParamType,
    pub required: bool,
    /// `logicalentityname`, for an EntityReference (e.g. `contact`).
    pub entity: Option<String>,
}

/// A trigger's request parameters, as read from Dataverse.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub trigger: String,
    pub parameters: BTreeMap<String, Parameter>,
}

impl Definition {
    /// Reads the answer of the `customapis` query: `Ok(None)` when no Custom
    /// API has that unique name.
    pub fn from_customapis(trigger: &str, answer: &Value) -> Result<Option<Definition>, String> {
        let rows = answer.get("value").and_then(Value::as_array).ok_or("the answer has no 'value' list")?;
        // Unique names are unique; the filter may match case-insensitively, the trigger call does not.
        let Some(row) = rows.iter().find(|r| r.get("uniquename").and_then(Value::as_str) == Some(trigger)) else {
            return Ok(None);
        };
        let list = row.get("CustomAPIRequestParameters").and_then(Value::as_array).ok_or("the answer has no CustomAPIRequestParameters")?;
        let mut parameters = BTreeMap::new();
        for p in list {
            let name = p.get("uniquename").and_then(Value::as_str).ok_or("a parameter without uniquename")?.to_string();
            let code = p.get("type").and_then(Value::as_i64).ok_or_else(|| format!("parameter '{name}' has no type"))?;
            let optional = p.get("isoptional").and_then(Value::as_bool).unwrap_or(true);
            let entity = p.get("logicalentityname").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
            parameters.insert(name.clone(), Parameter { name, kind: ParamType::from_code(code), required: !optional, entity });
        }
        Ok(Some(Definition { trigger: trigger.to_string(), parameters }))
    }

    /// The parameter list as `{"name", "type", "required"}` objects (reports).
    pub fn describe(&self) -> Vec<Value> {
        self.parameters
            .values()
            .map(|p| {
                let mut v = json!({"name": p.name, "type": p.kind.name(), "required": p.required});
                if let Some(entity) = &p.entity {
                    v["entity"] = json!(entity);
                }
                v
            })
            .collect()
    }
}

/// A body made to fit its trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub body: Map<String, Value>,
    /// Parameters the trigger does not have, left out.
    pub omitted: Vec<String>,
    /// Parameters whose value was changed to fit its type.
    pub coerced: Vec<String>,
}

/// Omits, coerces and checks `body` against `definition` (SPEC §13). An
/// `Err` is the reason the record is invalid; it names the parameter and the
/// type, never the value (it may be personal data).
pub fn fit(definition: &Definition, body: Map<String, Value>) -> Result<Fitted, String> {
    let mut fitted = Fitted { body: Map::new(), omitted: Vec::new(), coerced: Vec::new() };
    for (name, value) in body {
        let Some(parameter) = definition.parameters.get(&name) else {
            fitted.omitted.push(name);
            continue;
        };
        let coerced = coerce(parameter, &value).map_err(|why| format!("parameter {name} ({}): {why}", parameter.kind.name()))?;
        if coerced != value {
            fitted.coerced.push(name.clone());
        }
        fitted.body.insert(name, coerced);
    }
    let missing: Vec<String> = definition
        .parameters
        .values()
        .filter(|p| p.required && !fitted.body.contains_key(&p.name))
        .map(|p| format!("{} ({})", p.name, p.kind.name()))
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing required parameter {} of trigger {}", missing.join(", "), definition.trigger));
    }
    Ok(fitted)
}

/// What a JSON value is, in words (never the value itself).
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One value to its parameter's type (SPEC §13's table).
pub fn coerce(parameter: &Parameter, value: &Value) -> Result<Value, String> {
    let cannot = || format!("{} cannot be a {}", kind_of(value), parameter.kind.name());
    match parameter.kind {
        ParamType::String => match value {
            Value::String(_) => Ok(value.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(cannot()),
        },
        ParamType::Integer | ParamType::Picklist => {
            let number = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => numeric(s),
                _ => return Err(cannot()),
            }
            .ok_or_else(|| "a string that is not a number".to_string())?;
            if number.fract() != 0.0 {
                return Err("a number that is not whole".into());
            }
            if number < i32::MIN as f64 || number > i32::MAX as f64 {
                return Err("a number outside 32 bits".into());
            }
            Ok(json!(number as i32))
        }
        ParamType::Decimal | ParamType::Money | ParamType::Float => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(s) => numeric(s).map(|n| json!(n)).ok_or_else(|| "a string that is not a number".into()),
            _ => Err(cannot()),
        },
        ParamType::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(json!(true)),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(json!(false)),
            Value::Number(n) if n.as_f64() == Some(1.0) => Ok(json!(true)),
            Value::Number(n) if n.as_f64() == Some(0.0) => Ok(json!(false)),
            Value::String(_) => Err("a string other than true or false".into()),
            Value::Number(_) => Err("a number other than 1 or 0".into()),
            _ => Err(cannot()),
        },
        ParamType::DateTime => match value {
            Value::String(s) => date_time(s).map(|t| json!(format_timestamp(t))),
            Value::Number(n) => {
                let ms = n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64));
                ms.and_then(DateTime::from_timestamp_millis).map(|t| json!(format_timestamp(t))).ok_or_else(|| "a number that is not epoch milliseconds".into())
            }
            _ => Err(cannot()),
        },
        ParamType::Guid => match value {
            Value::String(s) => guid(s).map(Value::String).ok_or_else(|| "a string that is not a GUID".into()),
            _ => Err(cannot()),
        },
        ParamType::StringArray => match value {
            Value::String(_) => Ok(json!([value])),
            Value::Array(items) => items
                .iter()
                .filter(|i| !i.is_null())
                .map(|i| match i {
                    Value::String(_) => Ok(i.clone()),
                    Value::Number(n) => Ok(Value::String(n.to_string())),
                    Value::Bool(b) => Ok(Value::String(b.to_string())),
                    other => Err(format!("a list holding {}", kind_of(other))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(cannot()),
        },
        ParamType::EntityReference => {
            let Some(entity) = &parameter.entity else {
                return Err("the trigger does not say which table it refers to (no logicalentityname)".into());
            };
            match value {
                Value::String(s) => {
                    let id = guid(s).ok_or("a string that is not a GUID")?;
                    Ok(json!({ "@odata.type": format!("Microsoft.Dynamics.CRM.{entity}"), format!("{entity}id"): id }))
                }
                // Already a reference in Dataverse's own form.
                Value::Object(map) if map.contains_key("@odata.type") => Ok(value.clone()),
                _ => Err(cannot()),
            }
        }
        ParamType::Entity | ParamType::EntityCollection | ParamType::Other(_) => Ok(value.clone()),
    }
}

/// A decimal number written as text: digits, one sign, one point, an exponent
/// (f64's parser alone would also take "inf" and "NaN").
fn numeric(text: &str) -> Option<f64> {
    let t = text.trim();
    let ok = t.chars().any(|c| c.is_ascii_digit()) && t.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    t.parse::<f64>().ok().filter(|n| ok && n.is_finite())
}

/// Any GUID spelling (hyphenated, 32 digits, braces, `urn:uuid:`) → lowercase, hyphenated.
pub fn guid(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix('(').and_then(|s| s.strip_suffix(')')).unwrap_or(t);
    uuid::Uuid::try_parse(t).ok().map(|u| u.hyphenated().to_string())
}

/// RFC 3339 / ISO 8601 with an offset (`Z`, `+01:00`, `+0100`, `+01`; `T` or a
/// space; any fraction), a date alone (midnight UTC), or epoch milliseconds as
/// digits. A time without an offset is refused: its zone is unknown.
fn date_time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if !t.is_empty() && t.len() <= 16 && t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis).ok_or_else(|| "digits that are not epoch milliseconds".into());
    }
    if let Ok(parsed) = DateTime::parse_from_rfc3339(t) {
        return Ok(parsed.with_timezone(&Utc));
    }
    let normalised = t.replacen(' ', "T", 1);
    for format in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z", "%Y%m%dT%H%M%S%.f%#z"] {
        if let Ok(parsed) = DateTime::parse_from_str(&normalised, format) {
            return Ok(parsed.with_timezone(&Utc));
        }
    }
    if let Some(utc) = normalised.strip_suffix('Z').or_else(|| normalised.strip_suffix('z')) {
        if let Ok(naive) = NaiveDateTime::parse_from_str(utc, "%Y-%m-%dT%H:%M:%S%.f") {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    if NaiveDateTime::parse_from_str(&normalised, "%Y-%m-%dT%H:%M:%S%.f").is_ok() {
        return Err("a time without a UTC offset (its zone is unknown)".into());
    }
    Err("a string that is not an ISO 8601 time".into())
}

/// A starter mapping-document entry for a trigger (`schema TRIGGER`, SPEC §13):
/// every parameter but the system fields, with a guessed path, and `required`.
pub fn starter_entry(definition: &Definition) -> (String, Value) {
    let mut attributes = Map::new();
    let mut required = Vec::new();
    for p in definition.parameters.values().filter(|p| !is_system_field(&p.name)) {
        let short = p.name.strip_prefix("msdynmkt_").unwrap_or(&p.name);
        attributes.insert(p.name.clone(), json!(format!("properties.{short}")));
        if p.required {
            required.push(json!(p.name));
        }
    }
    let mut entry = json!({ "trigger": definition.trigger, "attributes": attributes });
    if !required.is_empty() {
        entry["required"] = Value::Array(required);
    }
    (event_name_for(&definition.trigger), entry)
}

/// `msdynmkt_OrderCompleted` → `Order Completed` (a guess at the event's name).
fn event_name_for(trigger: &str) -> String {
    let short = trigger.strip_prefix("msdynmkt_").unwrap_or(trigger);
    let mut name = String::new();
    let mut previous_lower = false;
    for c in short.chars() {
        if c == '_' {
            name.push(' ');
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower {
            name.push(' ');
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        name.push(c);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(kind: ParamType) -> Parameter {
        Parameter { name: "p".into(), kind, required: false, entity: None }
    }

    fn ok(kind: ParamType, value: Value) -> Value {
        coerce(&param(kind), &value).unwrap_or_else(|e| panic!("{value} as {kind:?}: {e}"))
    }

    fn err(kind: ParamType, value: Value) -> String {
        coerce(&param(kind), &value).expect_err(&format!("{value} as {kind:?} should not coerce"))
    }

    #[test]
    fn strings_take_numbers_and_booleans_as_their_json_text() {
        assert_eq!(ok(ParamType::String, json!("ORD-1")), json!("ORD-1"));
        assert_eq!(ok(ParamType::String, json!(42)), json!("42"));
        assert_eq!(ok(ParamType::String, json!(10.5)), json!("10.5"));
        assert_eq!(ok(ParamType::String, json!(true)), json!("true"));
        assert!(err(ParamType::String, json!({"a": 1})).contains("an object cannot be a String"));
        err(ParamType::String, json!([1]));
    }

    #[test]
    fn integers_and_picklists_take_whole_numbers_within_32_bits() {
        for kind in [ParamType::Integer, ParamType::Picklist] {
            assert_eq!(ok(kind, json!(42)), json!(42));
            assert_eq!(ok(kind, json!(42.0)), json!(42));
            assert_eq!(ok(kind, json!("42")), json!(42));
            assert_eq!(ok(kind, json!(" -7 ")), json!(-7));
            assert_eq!(ok(kind, json!(2_147_483_647)), json!(2_147_483_647));
            assert!(err(kind, json!(2_147_483_648u64)).contains("32 bits"));
            assert!(err(kind, json!(-2_147_483_649i64)).contains("32 bits"));
            assert!(err(kind, json!(1.5)).contains("not whole"));
            assert!(err(kind, json!("forty")).contains("not a number"));
            err(kind, json!(true));
        }
    }

    #[test]
    fn decimals_money_and_floats_take_numbers_and_numeric_strings() {
        for kind in [ParamType::Decimal, ParamType::Money, ParamType::Float] {
            assert_eq!(ok(kind, json!("129.00")), json!(129.0));
            assert_eq!(ok(kind, json!(129)), json!(129));
            assert_eq!(ok(kind, json!(10.5)), json!(10.5));
            assert_eq!(ok(kind, json!("-1e3")), json!(-1000.0));
            for bad in ["NaN", "inf", "", "12,50", "£12"] {
                err(kind, json!(bad));
            }
            err(kind, json!(false));
        }
    }

    #[test]
    fn booleans_take_true_false_in_any_case_and_one_and_zero() {
        assert_eq!(ok(ParamType::Boolean, json!(true)), json!(true));
        assert_eq!(ok(ParamType::Boolean, json!("TRUE")), json!(true));
        assert_eq!(ok(ParamType::Boolean, json!("False")), json!(false));
        assert_eq!(ok(ParamType::Boolean, json!(1)), json!(true));
        assert_eq!(ok(ParamType::Boolean, json!(0)), json!(false));
        assert!(err(ParamType::Boolean, json!("yes")).contains("true or false"));
        assert!(err(ParamType::Boolean, json!(2)).contains("1 or 0"));
        err(ParamType::Boolean, json!("1"));
    }

    #[test]
    fn date_times_become_utc_with_z() {
        let t = |v: Value| ok(ParamType::DateTime, v);
        assert_eq!(t(json!("2026-06-06T15:30:00+01:00")), json!("2026-06-06T14:30:00Z"));
        assert_eq!(t(json!("2026-06-06T15:30:00.250-05:00")), json!("2026-06-06T20:30:00.250Z"));
        assert_eq!(t(json!("2026-06-06 15:30:00+0100")), json!("2026-06-06T14:30:00Z"));
        assert_eq!(t(json!("2026-06-06T15:30:00+01")), json!("2026-06-06T14:30:00Z"));
        assert_eq!(t(json!("2026-06-06T14:30:00Z")), json!("2026-06-06T14:30:00Z"));
        assert_eq!(t(json!("2026-06-06")), json!("2026-06-06T00:00:00Z"));
        assert_eq!(t(json!(1_780_759_800_000i64)), json!("2026-06-06T15:30:00Z"));
        assert_eq!(t(json!("1780759800250")), json!("2026-06-06T15:30:00.250Z"));
        assert!(err(ParamType::DateTime, json!("2026-06-06T15:30:00")).contains("without a UTC offset"));
        assert!(err(ParamType::DateTime, json!("next Tuesday")).contains("not an ISO 8601"));
        err(ParamType::DateTime, json!(1.5));
        err(ParamType::DateTime, json!(true));
    }

    #[test]
    fn guids_in_any_spelling_become_lowercase_without_braces() {
        let want = json!("b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33");
        for spelling in [
            "B6A8C2E0-1234-4F9A-9C3D-AA11BB22CC33",
            "{b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33}",
            "(b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33)",
            "b6a8c2e012344f9a9c3daa11bb22cc33",
            "urn:uuid:b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33",
        ] {
            assert_eq!(ok(ParamType::Guid, json!(spelling)), want, "{spelling}");
        }
        assert!(err(ParamType::Guid, json!("user-42")).contains("not a GUID"));
        err(ParamType::Guid, json!(42));
    }

    #[test]
    fn string_arrays_take_lists_or_one_string() {
        assert_eq!(ok(ParamType::StringArray, json!("gold")), json!(["gold"]));
        assert_eq!(ok(ParamType::StringArray, json!(["a", null, 2, true])), json!(["a", "2", "true"]));
        assert!(err(ParamType::StringArray, json!(["a", {"b": 1}])).contains("a list holding an object"));
        err(ParamType::StringArray, json!(3));
    }

    #[test]
    fn entity_references_are_built_from_a_guid() {
        let account = Parameter { name: "msdynmkt_account".into(), kind: ParamType::EntityReference, required: false, entity: Some("account".into()) };
        assert_eq!(
            coerce(&account, &json!("{B6A8C2E0-1234-4F9A-9C3D-AA11BB22CC33}")).unwrap(),
            json!({"@odata.type": "Microsoft.Dynamics.CRM.account", "accountid": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33"})
        );
        let built = json!({"@odata.type": "Microsoft.Dynamics.CRM.account", "accountid": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33"});
        assert_eq!(coerce(&account, &built).unwrap(), built);
        assert!(coerce(&account, &json!("ACME")).unwrap_err().contains("not a GUID"));
        assert!(coerce(&param(ParamType::EntityReference), &json!("b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33")).unwrap_err().contains("logicalentityname"));
    }

    fn definition() -> Definition {
        let answer = json!({"value": [{"uniquename": "msdynmkt_CartAbandoned", "CustomAPIRequestParameters": [
            {"uniquename": "msdynmkt_profileid", "type": 10, "isoptional": false},
            {"uniquename": "msdynmkt_signaltimestamp", "type": 1, "isoptional": true},
            {"uniquename": "msdynmkt_cartid", "type": 10, "isoptional": false},
            {"uniquename": "msdynmkt_carttotal", "type": 2, "isoptional": true},
            {"uniquename": "msdynmkt_contact", "type": 5, "isoptional": true, "logicalentityname": "contact"}
        ]}]});
        Definition::from_customapis("msdynmkt_CartAbandoned", &answer).unwrap().unwrap()
    }

    #[test]
    fn the_customapis_answer_is_read_with_types_and_optional_flags() {
        let d = definition();
        assert_eq!(d.parameters.len(), 5);
        assert_eq!(d.parameters["msdynmkt_cartid"], Parameter { name: "msdynmkt_cartid".into(), kind: ParamType::String, required: true, entity: None });
        assert_eq!(d.parameters["msdynmkt_contact"].entity.as_deref(), Some("contact"));
        assert_eq!(Definition::from_customapis("msdynmkt_X", &json!({"value": []})).unwrap(), None);
        assert_eq!(
            Definition::from_customapis(
                "msdynmkt_cartabandoned",
                &json!({"value": [{"uniquename": "msdynmkt_CartAbandoned", "CustomAPIRequestParameters": []}]})
            )
            .unwrap(),
            None
        );
        assert!(Definition::from_customapis("x", &json!({"error": {}})).is_err());
        assert_eq!(ParamType::from_code(99), ParamType::Other(99));
        assert!(!ParamType::Entity.coercible());
    }

    #[test]
    fn a_body_is_fitted_omitting_what_the_trigger_lacks() {
        let body: Map<String, Value> = serde_json::from_value(json!({
            "msdynmkt_profileid": "u1", "msdynmkt_signaltimestamp": "2026-06-06T15:30:00+01:00",
            "contactpoint_email": "jane@example.com", "msdynmkt_cartid": 42, "msdynmkt_carttotal": "129.00"
        }))
        .unwrap();
        let fitted = fit(&definition(), body).unwrap();
        assert_eq!(
            Value::Object(fitted.body),
            json!({"msdynmkt_profileid": "u1", "msdynmkt_signaltimestamp": "2026-06-06T14:30:00Z", "msdynmkt_cartid": "42", "msdynmkt_carttotal": 129.0})
        );
        assert_eq!(fitted.omitted, vec!["contactpoint_email"]);
        assert_eq!(fitted.coerced, vec!["msdynmkt_cartid", "msdynmkt_carttotal", "msdynmkt_signaltimestamp"]);
    }

    #[test]
    fn an_uncoercible_value_or_a_missing_required_parameter_is_invalid() {
        let body = |v: Value| serde_json::from_value::<Map<String, Value>>(v).unwrap();
        let e = fit(&definition(), body(json!({"msdynmkt_profileid": "u1", "msdynmkt_cartid": "C1", "msdynmkt_carttotal": "lots"}))).unwrap_err();
        assert_eq!(e, "parameter msdynmkt_carttotal (Decimal): a string that is not a number");
        let e = fit(&definition(), body(json!({"msdynmkt_profileid": "u1"}))).unwrap_err();
        assert_eq!(e, "missing required parameter msdynmkt_cartid (String) of trigger msdynmkt_CartAbandoned");
    }

    #[test]
    fn a_starter_entry_guesses_paths_and_the_event_name() {
        let (name, entry) = starter_entry(&definition());
        assert_eq!(name, "Cart Abandoned");
        assert_eq!(
            entry,
            json!({"trigger": "msdynmkt_CartAbandoned",
                   "attributes": {"msdynmkt_cartid": "properties.cartid", "msdynmkt_carttotal": "properties.carttotal", "msdynmkt_contact": "properties.contact"},
                   "required": ["msdynmkt_cartid"]})
        );
        assert!(crate::config::Mapping::parse(&json!({"events": {name: entry}}).to_string()).is_ok(), "the entry is a valid mapping document");
    }
}
