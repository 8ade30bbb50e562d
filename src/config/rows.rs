//! The `rows` of an event entry in the mapping document (SPEC §19): the
//! Dataverse rows an event writes, in order, before its trigger. Parsed and
//! validated when the document is loaded; a mapping error names the event and
//! the row.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::check_name;

/// How a row is written (SPEC §19 `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowMode {
    /// `PATCH` without conditions: creates or updates (the default).
    Upsert,
    /// `PATCH` with `If-Match: *`: never creates; a missing row is rejected.
    Update,
    /// `If-None-Match: *` (or a `POST` without a key): never overwrites; 412 means it exists.
    Create,
}

impl RowMode {
    pub fn name(self) -> &'static str {
        match self {
            RowMode::Upsert => "upsert",
            RowMode::Update => "update",
            RowMode::Create => "create",
        }
    }
}

/// A row's key: column → dotted path (split on '.'), in column order.
pub type KeySpec = Vec<(String, Vec<String>)>;

/// One row of an event entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpec {
    /// The entity set (`accounts`, `opportunities`).
    pub entity: String,
    /// Empty: a `POST` (a create on every delivery).
    pub key: KeySpec,
    pub mode: RowMode,
    /// Column → candidate paths (each split on '.'); the first present wins.
    pub attributes: Vec<(String, Vec<Vec<String>>)>,
    /// Single-valued navigation property → what it points at.
    pub bind: Vec<(String, BindSpec)>,
}

/// What a navigation property is bound to.
#[derive(Debug, Clone, PartialEq)]
pub enum BindSpec {
    /// The record's resolved profile (SPEC §14), in `set` when given, else the
    /// set that resolved it, else `contacts`.
    Profile { set: Option<String> },
    /// Another row, by its key.
    Row { entity: String, key: KeySpec },
}

impl RowSpec {
    /// How the row is named in reasons and logs before its key values are known: `accounts(accountnumber)`.
    pub fn label(&self) -> String {
        if self.key.is_empty() {
            self.entity.clone()
        } else {
            format!("{}({})", self.entity, self.key.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(","))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    entity: String,
    #[serde(default)]
    key: BTreeMap<String, String>,
    mode: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
    #[serde(default)]
    bind: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRowRef {
    entity: String,
    key: BTreeMap<String, String>,
}

/// An entity set name as Dataverse spells them: lowercase letters, digits, underscores.
fn check_entity(entity: &str) -> Result<(), String> {
    let ok = !entity.is_empty() && entity.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("'{entity}' is not an entity set name such as accounts or opportunities"))
    }
}

fn split_path(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("'{path}' is not a dotted path such as properties.order_id"));
    }
    Ok(path.split('.').map(str::to_string).collect())
}

/// A path or a list of paths, as a trigger's `attributes` take them (SPEC §2.3).
pub(super) fn paths_of(spec: Value) -> Result<Vec<Vec<String>>, String> {
    let paths: Vec<String> = match spec {
        Value::String(p) => vec![p],
        Value::Array(items) => {
            items.into_iter().map(|i| i.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or("a list of paths must hold strings only")?
        }
        _ => return Err("must be a dotted path or a list of paths".into()),
    };
    if paths.is_empty() {
        return Err("give at least one path".into());
    }
    paths.iter().map(|p| split_path(p)).collect()
}

fn key_of(raw: BTreeMap<String, String>, at: &str) -> Result<KeySpec, String> {
    raw.into_iter()
        .map(|(column, path)| {
            check_name(&column).map_err(|e| format!("{at}: {e}"))?;
            let path = split_path(&path).map_err(|e| format!("{at}.{column}: {e}"))?;
            Ok((column, path))
        })
        .collect()
}

fn bind_of(property: &str, raw: Value, at: &str) -> Result<BindSpec, String> {
    let at = format!("{at}.bind.{property}");
    match raw {
        Value::String(s) if s == "profile" => Ok(BindSpec::Profile { set: None }),
        Value::Object(map) if map.len() == 1 && map.contains_key("profile") => match &map["profile"] {
            Value::String(set) => {
                check_entity(set).map_err(|e| format!("{at}.profile: {e}"))?;
                Ok(BindSpec::Profile { set: Some(set.clone()) })
            }
            _ => Err(format!("{at}.profile: name the profile's entity set, e.g. \"leads\"")),
        },
        Value::Object(map) => {
            let reference: RawRowRef = serde_json::from_value(Value::Object(map))
                .map_err(|e| format!("{at}: \"profile\", {{\"profile\": \"leads\"}} or {{\"entity\": …, \"key\": {{…}}}} ({e})"))?;
            check_entity(&reference.entity).map_err(|e| format!("{at}.entity: {e}"))?;
            if reference.key.is_empty() {
                return Err(format!("{at}.key: name the bound row's key, e.g. {{\"accountnumber\": \"properties.account_id\"}}"));
            }
            Ok(BindSpec::Row { entity: reference.entity, key: key_of(reference.key, &format!("{at}.key"))? })
        }
        _ => Err(format!("{at}: \"profile\", {{\"profile\": \"leads\"}} or {{\"entity\": …, \"key\": {{…}}}}")),
    }
}

/// Parses an entry's `rows`; `event` names the entry in errors.
pub(super) fn rows(raw: Vec<Value>, event: &str) -> Result<Vec<RowSpec>, String> {
    let mut rows = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let at = format!("events[\"{event}\"].rows[{i}]");
        let raw: RawRow = serde_json::from_value(raw).map_err(|e| format!("{at}: {e}"))?;
        check_entity(&raw.entity).map_err(|e| format!("{at}.entity: {e}"))?;
        let at = format!("{at} ({})", raw.entity);
        let mode = match raw.mode.as_deref() {
            None | Some("upsert") => RowMode::Upsert,
            Some("update") => RowMode::Update,
            Some("create") => RowMode::Create,
            Some(other) => return Err(format!("{at}.mode: '{other}' is not one of upsert, update, create")),
        };
        let key = key_of(raw.key, &format!("{at}.key"))?;
        if key.is_empty() && mode == RowMode::Update {
            return Err(format!("{at}: mode update needs a key (an update never creates, so it must name the row)"));
        }
        let mut attributes = Vec::new();
        for (column, spec) in raw.attributes {
            check_name(&column).map_err(|e| format!("{at}.attributes: {e}"))?;
            if column.ends_with("@odata.bind") || (column.starts_with('_') && column.ends_with("_value")) {
                return Err(format!("{at}.attributes.{column}: a lookup is written with bind, not attributes (use bind)"));
            }
            let paths = paths_of(spec).map_err(|e| format!("{at}.attributes.{column}: {e}"))?;
            attributes.push((column, paths));
        }
        let mut bind = Vec::new();
        for (property, spec) in raw.bind {
            check_name(&property).map_err(|e| format!("{at}.bind: {e}"))?;
            if attributes.iter().any(|(c, _)| *c == property) {
                return Err(format!("{at}: '{property}' is under both attributes and bind (a lookup is written with bind)"));
            }
            bind.push((property.clone(), bind_of(&property, spec, &at)?));
        }
        if key.is_empty() && attributes.is_empty() && bind.is_empty() {
            return Err(format!("{at}: a row without a key needs attributes or a bind"));
        }
        rows.push(RowSpec { entity: raw.entity, key, mode, attributes, bind });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(rows_json: Value) -> Result<Vec<RowSpec>, String> {
        rows(rows_json.as_array().unwrap().clone(), "Order Completed")
    }

    #[test]
    fn the_spec_rows_parse() {
        let parsed = parse(json!([
            { "entity": "accounts", "key": { "accountnumber": "properties.account_id" }, "attributes": { "name": "properties.company" } },
            { "entity": "opportunities", "key": { "new_orderid": "properties.order_id" },
              "attributes": { "name": "properties.order_id", "estimatedvalue": ["properties.revenue", "properties.total"] },
              "bind": { "parentaccountid": { "entity": "accounts", "key": { "accountnumber": "properties.account_id" } },
                        "parentcontactid": "profile", "customerid_lead": {"profile": "leads"} } }
        ]))
        .unwrap();
        assert_eq!(parsed[0].key, vec![("accountnumber".to_string(), vec!["properties".to_string(), "account_id".to_string()])]);
        assert_eq!(parsed[0].mode, RowMode::Upsert);
        assert_eq!(parsed[1].attributes[0].1.len(), 2);
        assert_eq!(parsed[1].bind[1], ("parentaccountid".to_string(), BindSpec::Row { entity: "accounts".into(), key: parsed[0].key.clone() }));
        assert_eq!(parsed[1].bind[0].1, BindSpec::Profile { set: Some("leads".into()) });
        assert_eq!(parsed[1].bind[2].1, BindSpec::Profile { set: None });
        assert_eq!(parsed[1].label(), "opportunities(new_orderid)");
    }

    #[test]
    fn mapping_errors_name_the_event_and_the_row() {
        let e = parse(json!([{ "entity": "accounts", "mode": "update", "attributes": {"name": "p.n"} }])).unwrap_err();
        assert_eq!(e, "events[\"Order Completed\"].rows[0] (accounts): mode update needs a key (an update never creates, so it must name the row)");
        let e = parse(json!([{ "entity": "accounts", "key": {"accountnumber": "p.a"}, "mode": "merge" }])).unwrap_err();
        assert!(e.contains("rows[0] (accounts).mode: 'merge' is not one of upsert, update, create"), "{e}");
        let e = parse(json!([{ "entity": "accounts", "key": {"accountnumber": "p.a"}, "attributes": {"_parentaccountid_value": "p.x"} }])).unwrap_err();
        assert!(e.contains("use bind"), "{e}");
        for bad in [
            json!([{ "entity": "Accounts", "key": {"a": "p.a"} }]),
            json!([{ "entity": "accounts", "key": {"a": "p..a"} }]),
            json!([{ "entity": "accounts", "key": {"a": "p.a"}, "bind": {"x": "someone"} }]),
            json!([{ "entity": "accounts", "key": {"a": "p.a"}, "bind": {"x": {"entity": "accounts", "key": {}}} }]),
            json!([{ "entity": "accounts", "key": {"a": "p.a"}, "extra": 1 }]),
            json!([{ "entity": "accounts" }]),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
