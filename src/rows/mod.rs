//! Rows (SPEC §19): the Dataverse rows an event writes — an account, an
//! opportunity, an order — in order, before its trigger.
//!
//! [`plan`] is pure mapping (the event's key, attribute and bound values for
//! each row of its entry); [`fit`] is pure too: with the entity definitions
//! (`definition`, read and cached by `dynamics::entities`) it turns each
//! planned row into its exact Web API request — the path with the key
//! formatted by column type and percent-encoded, the coerced body with its
//! `@odata.bind`s, the mode's conditional header and the row's own
//! idempotency key. Delivery sends those requests as separate actions
//! (`delivery::actions`), through the one retry loop and pacer.

pub mod definition;

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::config::identity::id_column;
use crate::config::rows::{BindSpec, KeySpec, RowMode, RowSpec};
use crate::outcome::{DeliveryError, Outcome};
use crate::plan::{ActionPlan, PlannedBind, PlannedRow, RowWrite};
use crate::schema::{self, ParamType, Parameter};
pub use definition::{EntityDef, LOOKUP_TYPES};

/// What is known of an entity set's definition.
pub type EntityLookup = crate::plan::Known<EntityDef>;

/// A key's or a bind's value: a string (trimmed, not empty), a number or a boolean.
fn key_value(event: &Value, path: &[String]) -> Option<Value> {
    match crate::fields::lookup(event, path)? {
        Value::String(s) if !s.trim().is_empty() => Some(Value::String(s.trim().to_string())),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.clone()),
        _ => None,
    }
}

fn key_values(event: &Value, key: &KeySpec, what: &str) -> Result<Vec<(String, Value)>, String> {
    key.iter()
        .map(|(column, path)| {
            key_value(event, path).map(|v| (column.clone(), v)).ok_or_else(|| format!("{what}: no value for key {column} at {}", path.join(".")))
        })
        .collect()
}

/// The event's values for each row of its entry (pure). `Err` is the reason the
/// record is invalid: a key or a bound key without a value (SPEC §19).
pub fn plan(event: &Value, specs: &[RowSpec]) -> Result<Vec<PlannedRow>, String> {
    let mut unkeyed: HashMap<&str, usize> = HashMap::new();
    let mut planned = Vec::with_capacity(specs.len());
    for spec in specs {
        let what = format!("row {}", spec.label());
        let key = key_values(event, &spec.key, &what)?;
        let mut attributes = Map::new();
        for (column, paths) in &spec.attributes {
            if let Some(value) = paths.iter().find_map(|p| crate::fields::lookup(event, p).filter(|v| !v.is_null())) {
                attributes.insert(column.clone(), crate::fields::strip_nulls(value.clone()));
            }
        }
        let mut binds = Vec::new();
        for (property, bind) in &spec.bind {
            let planned = match bind {
                BindSpec::Profile { set } => PlannedBind::Profile { set: set.clone() },
                BindSpec::Row { entity, key } => {
                    PlannedBind::Row { entity: entity.clone(), key: key_values(event, key, &format!("{what}, bind {property} to {entity}"))? }
                }
            };
            binds.push((property.clone(), planned));
        }
        let n = if key.is_empty() {
            let n = unkeyed.entry(spec.entity.as_str()).or_default();
            *n += 1;
            *n
        } else {
            0
        };
        planned.push(PlannedRow { entity: spec.entity.clone(), mode: spec.mode, key, attributes, binds, unkeyed: n });
    }
    Ok(planned)
}

/// What [`fit`] omitted: (entity set, column) pairs the entity lacks.
pub type Omitted = Vec<(String, String)>;

/// Turns each planned row into its request (pure), with the definitions read
/// for this invocation: `Err` is the record's outcome (invalid, or rejected
/// without a request when an entity set does not exist).
pub fn fit(plan: &mut ActionPlan, event_key: &str, definitions: &HashMap<String, EntityLookup>) -> Result<Omitted, Outcome> {
    let mut omitted = Vec::new();
    let mut writes = Vec::with_capacity(plan.planned.len());
    for row in &plan.planned {
        let definition = found(definitions, &row.entity)?;
        let path = if row.key.is_empty() {
            row.entity.clone()
        } else {
            key_path(&row.entity, &row.key, definition).map_err(|why| Outcome::Invalid { reason: format!("row {}: {why}", shown_key(row)) })?
        };
        let label = if row.key.is_empty() { format!("{} (new row {})", row.entity, row.unkeyed) } else { key_label(&row.entity, &row.key, definition) };
        let mut body = Map::new();
        for (column, value) in &row.attributes {
            let Some(definition) = definition else {
                body.insert(column.clone(), value.clone());
                continue;
            };
            let Some(kind) = definition.column_type(column) else {
                omitted.push((row.entity.clone(), column.clone()));
                continue;
            };
            if LOOKUP_TYPES.contains(&kind) {
                return Err(Outcome::Invalid { reason: format!("row {label}: {column} is a {kind} column; write it with bind, not attributes (use bind)") });
            }
            let coerced = coerce_column(kind, value).map_err(|why| Outcome::Invalid { reason: format!("row {label}: column {column} ({kind}): {why}") })?;
            body.insert(column.clone(), coerced);
        }
        for (property, bind) in &row.binds {
            let target = match bind {
                PlannedBind::Profile { set } => {
                    let id = plan.profile.as_deref().ok_or_else(|| Outcome::Invalid {
                        reason: format!(
                            "row {label}: bind {property} to the profile: the event has no profile id (no userId, and no identity section resolved one)"
                        ),
                    })?;
                    let id = schema::guid(id).ok_or_else(|| Outcome::Invalid {
                        reason: format!(
                            "row {label}: bind {property} to the profile: the profile id is not a Dataverse id (add an identity section to resolve one)"
                        ),
                    })?;
                    let set = set.clone().or_else(|| plan.profile_set.clone()).unwrap_or_else(|| "contacts".to_string());
                    format!("/{set}({id})")
                }
                PlannedBind::Row { entity, key } => {
                    let bound = found(definitions, entity)?;
                    let path =
                        key_path(entity, key, bound).map_err(|why| Outcome::Invalid { reason: format!("row {label}: bind {property} to {entity}: {why}") })?;
                    format!("/{path}")
                }
            };
            body.insert(format!("{property}@odata.bind"), Value::String(target));
        }
        let keyed = !row.key.is_empty();
        let headers: Vec<(&'static str, &'static str)> = match (row.mode, keyed) {
            (RowMode::Update, _) => vec![("If-Match", "*")],
            (RowMode::Create, true) => vec![("If-None-Match", "*")],
            _ => Vec::new(),
        };
        let key = if keyed { format!("{event_key}#{path}") } else { format!("{event_key}#{}#{}", row.entity, row.unkeyed) };
        writes.push(RowWrite {
            method: if keyed { Method::PATCH } else { Method::POST },
            path,
            headers,
            body,
            key,
            label,
            exists_is_success: row.mode == RowMode::Create && keyed,
        });
    }
    plan.writes = writes;
    Ok(omitted)
}

/// The definition to apply: `None` when it could not be read (sent as mapped);
/// an unknown entity set is rejected without a request.
fn found<'d>(definitions: &'d HashMap<String, EntityLookup>, entity: &str) -> Result<Option<&'d EntityDef>, Outcome> {
    match definitions.get(entity) {
        Some(EntityLookup::Found(definition)) => Ok(Some(definition)),
        Some(EntityLookup::Missing) => Err(Outcome::Rejected(DeliveryError::Rejected {
            status: 404,
            code: Some("0x80060888".into()),
            message: format!("no entity set named '{entity}' in this environment (read from its metadata); not sent"),
        })),
        None | Some(EntityLookup::Unreadable(_)) => Ok(None),
    }
}

/// `accounts(accountnumber)`: a row named without its values (they may be personal data).
fn shown_key(row: &PlannedRow) -> String {
    format!("{}({})", row.entity, row.key.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(","))
}

/// Characters SPEC §19 (and Dataverse) will not take in a key value, even percent-encoded.
const NOT_ADDRESSABLE: &[char] = &['<', '>', '*', '%', '&', ':', '/', '\\'];

/// `{entity}({guid})` for a key of the id column alone, else
/// `{entity}({column}={value},…)` with each value formatted by its column's type
/// and percent-encoded (SPEC §19).
pub fn key_path(entity: &str, key: &[(String, Value)], definition: Option<&EntityDef>) -> Result<String, String> {
    key_path_with(entity, key, definition, encode)
}

/// As [`key_path`], with the values not percent-encoded: how reasons and logs
/// name the row (so [`crate::redact::scrub`] can mask an address in it).
fn key_label(entity: &str, key: &[(String, Value)], definition: Option<&EntityDef>) -> String {
    key_path_with(entity, key, definition, str::to_string).unwrap_or_else(|_| entity.to_string())
}

fn key_path_with(entity: &str, key: &[(String, Value)], definition: Option<&EntityDef>, encode: fn(&str) -> String) -> Result<String, String> {
    let id = definition.map_or_else(|| id_column(entity), |d| d.primary_id.clone());
    if let [(column, value)] = key {
        if *column == id {
            let text = scalar_text(value).ok_or_else(|| format!("key {column}: not a single value"))?;
            let guid = schema::guid(&text).ok_or_else(|| format!("key {column}: the id column takes a GUID"))?;
            return Ok(format!("{entity}({guid})"));
        }
    }
    let mut parts = Vec::with_capacity(key.len());
    for (column, value) in key {
        let kind = definition.and_then(|d| d.column_type(column));
        let text = scalar_text(value).ok_or_else(|| format!("key {column}: not a single value"))?;
        if text.contains(NOT_ADDRESSABLE) {
            return Err(format!("key value not addressable ({column} holds one of < > * % & : / \\)"));
        }
        let part = match kind {
            Some(k) if LOOKUP_TYPES.contains(&k) => {
                let guid = schema::guid(&text).ok_or_else(|| format!("key {column} ({k}): not a GUID"))?;
                format!("_{column}_value={guid}")
            }
            Some(k @ ("Integer" | "BigInt" | "Picklist" | "State" | "Status" | "Decimal" | "Double" | "Money" | "Uniqueidentifier" | "Boolean")) => {
                let coerced = coerce_column(k, value).map_err(|why| format!("key {column} ({k}): {why}"))?;
                format!("{column}={}", encode(&scalar_text(&coerced).unwrap_or_default()))
            }
            Some(_) => format!("{column}='{}'", encode(&text.replace('\'', "''"))),
            // Without a definition: strings quoted, numbers and booleans bare.
            None if value.is_string() => format!("{column}='{}'", encode(&text.replace('\'', "''"))),
            None => format!("{column}={}", encode(&text)),
        };
        parts.push(part);
    }
    Ok(format!("{entity}({})", parts.join(",")))
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Percent-encodes a key value for a URL path: everything but RFC 3986's
/// unreserved characters and `'` (the OData literal's quote). Written by hand:
/// `form_urlencoded` encodes for forms (`+` for space), not for paths.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~'".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A value coerced to a column's `AttributeType` (SPEC §19): SPEC §13's rules
/// where the types match (String, Memo; Integer, Picklist, State, Status;
/// Decimal, Money, Double; Boolean; DateTime; Uniqueidentifier), BigInt as a
/// whole number in 64 bits; other types pass as mapped.
pub fn coerce_column(kind: &str, value: &Value) -> Result<Value, String> {
    let as_param = |kind: ParamType| Parameter { name: String::new(), kind, required: false, entity: None };
    let param = match kind {
        "String" | "Memo" => ParamType::String,
        "Integer" | "Picklist" | "State" | "Status" => ParamType::Integer,
        "Decimal" => ParamType::Decimal,
        "Money" => ParamType::Money,
        "Double" => ParamType::Float,
        "Boolean" => ParamType::Boolean,
        "DateTime" => ParamType::DateTime,
        "Uniqueidentifier" => ParamType::Guid,
        "BigInt" => {
            let number = match value {
                Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64)),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            return number.map(|n| json!(n)).ok_or_else(|| "not a whole number within 64 bits".to_string());
        }
        _ => return Ok(value.clone()),
    };
    schema::coerce(&as_param(param), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mapping;

    fn account() -> EntityDef {
        EntityDef::from_answer(&json!({"value": [{
            "LogicalName": "account", "EntitySetName": "accounts", "PrimaryIdAttribute": "accountid",
            "Attributes": [
                {"LogicalName": "accountid", "AttributeType": "Uniqueidentifier"},
                {"LogicalName": "accountnumber", "AttributeType": "String"},
                {"LogicalName": "name", "AttributeType": "String"},
                {"LogicalName": "numberofemployees", "AttributeType": "Integer"},
                {"LogicalName": "revenue", "AttributeType": "Money"},
                {"LogicalName": "primarycontactid", "AttributeType": "Lookup"},
                {"LogicalName": "new_region", "AttributeType": "Picklist"}
            ],
            "Keys": [{"KeyAttributes": ["accountnumber"], "EntityKeyIndexStatus": "Active"}],
            "ManyToOneRelationships": [{"ReferencingEntityNavigationPropertyName": "primarycontactid", "ReferencedEntity": "contact"}]
        }]}))
        .unwrap()
        .unwrap()
    }

    fn specs(rows: Value) -> Vec<RowSpec> {
        let doc = json!({"events": {"E": {"rows": rows}}});
        Mapping::parse(&doc.to_string()).unwrap().events["E"].rows.clone()
    }

    fn defs() -> HashMap<String, EntityLookup> {
        HashMap::from([("accounts".to_string(), EntityLookup::Found(std::sync::Arc::new(account())))])
    }

    #[test]
    fn keys_are_formatted_by_column_type_and_percent_encoded() {
        let a = account();
        let k = |c: &str, v: Value| vec![(c.to_string(), v)];
        assert_eq!(
            key_path("accounts", &k("accountnumber", json!("O'Brien & Co")), Some(&a)).unwrap_err(),
            "key value not addressable (accountnumber holds one of < > * % & : / \\)"
        );
        assert_eq!(key_path("accounts", &k("accountnumber", json!("O'Brien Co é")), Some(&a)).unwrap(), "accounts(accountnumber='O''Brien%20Co%20%C3%A9')");
        assert_eq!(key_path("accounts", &k("accountnumber", json!(42)), Some(&a)).unwrap(), "accounts(accountnumber='42')", "a String column is quoted");
        assert_eq!(key_path("accounts", &k("numberofemployees", json!("42")), Some(&a)).unwrap(), "accounts(numberofemployees=42)");
        let id = "B6A8C2E0-1234-4F9A-9C3D-AA11BB22CC33";
        assert_eq!(key_path("accounts", &k("accountid", json!(id)), Some(&a)).unwrap(), "accounts(b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33)");
        assert_eq!(
            key_path("accounts", &k("accountid", json!(id)), None).unwrap(),
            "accounts(b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33)",
            "the id column guessed from the set"
        );
        assert_eq!(
            key_path("accounts", &k("primarycontactid", json!(id)), Some(&a)).unwrap(),
            "accounts(_primarycontactid_value=b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33)"
        );
        let two = vec![("accountnumber".to_string(), json!("A-1")), ("numberofemployees".to_string(), json!(7))];
        assert_eq!(key_path("accounts", &two, Some(&a)).unwrap(), "accounts(accountnumber='A-1',numberofemployees=7)");
        assert_eq!(key_path("things", &k("code", json!(7)), None).unwrap(), "things(code=7)", "without a definition numbers are bare");
        assert!(key_path("accounts", &k("accountnumber", json!("2026-01-01T00:00:00Z")), Some(&a)).unwrap_err().contains("not addressable"));
    }

    #[test]
    fn rows_are_planned_then_fitted_into_requests_with_their_keys() {
        let rows = specs(json!([
            { "entity": "accounts", "key": { "accountnumber": "properties.account_id" },
              "attributes": { "name": "properties.company", "revenue": "properties.revenue", "new_colour": "properties.colour", "new_region": "properties.region" } },
            { "entity": "accounts", "mode": "create", "attributes": { "name": "properties.company" }, "bind": { "primarycontactid": "profile" } },
            { "entity": "accounts", "mode": "update", "key": { "accountid": "properties.account_guid" }, "attributes": { "name": "properties.company" } }
        ]));
        let event = json!({"properties": {"account_id": " A-1 ", "company": "Contoso", "revenue": "129.5", "colour": "red", "region": "3",
            "account_guid": "{B6A8C2E0-1234-4F9A-9C3D-AA11BB22CC33}"}});
        let planned = plan(&event, &rows).unwrap();
        assert_eq!(planned[0].key, vec![("accountnumber".to_string(), json!("A-1"))]);
        assert_eq!(planned[1].unkeyed, 1);
        let mut p = ActionPlan::new(planned, None, Some("5E1C0A7E-0001-4C0E-9A11-000000000001".into()));
        let omitted = fit(&mut p, "msg-1", &defs()).unwrap();
        assert_eq!(omitted, vec![("accounts".to_string(), "new_colour".to_string())]);
        let w = &p.writes;
        assert_eq!(
            (w[0].method.clone(), w[0].path.as_str(), w[0].key.as_str()),
            (Method::PATCH, "accounts(accountnumber='A-1')", "msg-1#accounts(accountnumber='A-1')")
        );
        assert_eq!(Value::Object(w[0].body.clone()), json!({"name": "Contoso", "revenue": 129.5, "new_region": 3}), "coerced; the unknown column omitted");
        assert!(w[0].headers.is_empty() && !w[0].exists_is_success);
        assert_eq!((w[1].method.clone(), w[1].path.as_str(), w[1].key.as_str()), (Method::POST, "accounts", "msg-1#accounts#1"));
        assert_eq!(w[1].body["primarycontactid@odata.bind"], "/contacts(5e1c0a7e-0001-4c0e-9a11-000000000001)");
        assert_eq!(w[2].headers, vec![("If-Match", "*")]);
        assert_eq!(w[2].path, "accounts(b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33)");
        // Unreadable definitions: sent as mapped, nothing omitted or coerced.
        let mut p = ActionPlan::new(plan(&event, &rows).unwrap(), None, Some("5e1c0a7e-0001-4c0e-9a11-000000000001".into()));
        fit(&mut p, "msg-1", &HashMap::new()).unwrap();
        assert_eq!(p.writes[0].body["revenue"], "129.5");
        assert_eq!(p.writes[0].body["new_colour"], "red");
    }

    #[test]
    fn a_profile_bind_names_its_set_and_reasons_name_the_row_unencoded() {
        let rows = specs(json!([{ "entity": "accounts", "key": { "accountnumber": "p.a" }, "bind": { "primarycontactid": {"profile": "leads"} } }]));
        let mut p = ActionPlan::new(plan(&json!({"p": {"a": "a b@example.com"}}), &rows).unwrap(), None, Some("1EAD0000-0001-4C0E-9A11-000000000001".into()));
        p.profile_set = Some("contacts".into());
        fit(&mut p, "k", &defs()).unwrap();
        assert_eq!(p.writes[0].body["primarycontactid@odata.bind"], "/leads(1ead0000-0001-4c0e-9a11-000000000001)", "the bind's set wins");
        assert_eq!(p.writes[0].path, "accounts(accountnumber='a%20b%40example.com')");
        assert_eq!(p.writes[0].label, "accounts(accountnumber='a b@example.com')", "so a log line's scrubbing can mask it");
        assert_eq!(p.writes[0].key, "k#accounts(accountnumber='a%20b%40example.com')", "the key as in its URL");
        p.planned[0].binds[0].1 = PlannedBind::Profile { set: None };
        fit(&mut p, "k", &defs()).unwrap();
        assert_eq!(p.writes[0].body["primarycontactid@odata.bind"], "/contacts(1ead0000-0001-4c0e-9a11-000000000001)", "the set that resolved it");
    }

    #[test]
    fn missing_values_lookups_and_unknown_sets_decide_the_record_before_anything_is_sent() {
        let rows = specs(
            json!([{ "entity": "accounts", "key": { "accountnumber": "properties.account_id" }, "bind": {"parentaccountid": {"entity": "accounts", "key": {"accountnumber": "properties.parent"}}} }]),
        );
        assert_eq!(
            plan(&json!({"properties": {"account_id": ""}}), &rows).unwrap_err(),
            "row accounts(accountnumber): no value for key accountnumber at properties.account_id"
        );
        let e = plan(&json!({"properties": {"account_id": "A"}}), &rows).unwrap_err();
        assert_eq!(e, "row accounts(accountnumber), bind parentaccountid to accounts: no value for key accountnumber at properties.parent");
        let rows = specs(json!([{ "entity": "accounts", "key": { "accountnumber": "p.a" }, "attributes": {"primarycontactid": "p.c"} }]));
        let mut p = ActionPlan::new(plan(&json!({"p": {"a": "A", "c": "x"}}), &rows).unwrap(), None, None);
        let Err(Outcome::Invalid { reason }) = fit(&mut p, "k", &defs()) else { panic!() };
        assert!(reason.contains("primarycontactid is a Lookup column") && reason.contains("use bind"), "{reason}");
        let rows = specs(json!([{ "entity": "widgets", "key": { "code": "p.a" } }]));
        let mut p = ActionPlan::new(plan(&json!({"p": {"a": "A"}}), &rows).unwrap(), None, None);
        let missing = HashMap::from([("widgets".to_string(), EntityLookup::Missing)]);
        assert!(matches!(fit(&mut p, "k", &missing), Err(Outcome::Rejected(DeliveryError::Rejected { status: 404, .. }))));
        let rows = specs(json!([{ "entity": "accounts", "attributes": {"name": "p.a"}, "bind": {"primarycontactid": "profile"} }]));
        let mut p = ActionPlan::new(plan(&json!({"p": {"a": "A"}}), &rows).unwrap(), None, Some("user-1".into()));
        assert!(matches!(fit(&mut p, "k", &defs()), Err(Outcome::Invalid { reason }) if reason.contains("not a Dataverse id")));
        assert_eq!(coerce_column("BigInt", &json!("9007199254740993")).unwrap(), json!(9007199254740993i64));
        assert!(coerce_column("Integer", &json!("x")).is_err());
    }
}
