//! The deployment check of rows (SPEC §19): per row of the mapping, the entity
//! set, each column and its type, whether the key is an alternate key whose
//! index is Active, each bind's navigation property; with an event, every
//! request it would make, in order. Reads only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::sample::{resolve_sample, Problem};
use crate::config::identity::id_column;
use crate::config::rows::{BindSpec, KeySpec, RowSpec};
use crate::config::Settings;
use crate::outcome::DeliveryError;
use crate::plan::ActionPlan;
use crate::rows::{fit, EntityDef, LOOKUP_TYPES};
use crate::stages::entities::Entities;
use crate::stages::triggers::Schemas;
use crate::stages::Destination;

const ENTITY_READ_FIX: &str =
    "give the application user Read on the entity metadata (a security role with Read on Entity, Attribute and Relationship; System Customizer has them)";

/// Checks every row of the mapping against its entity's definition.
pub async fn check_rows(settings: &Settings, destination: &Destination, deadline: Instant) -> (Vec<Value>, Vec<Problem>) {
    let entities = Entities::new(Duration::ZERO);
    let mut read: BTreeMap<String, Result<Option<EntityDef>, DeliveryError>> = BTreeMap::new();
    let mut views = Vec::new();
    let mut problems = Vec::new();
    for (event, entry) in &settings.mapping.events {
        for (i, row) in entry.rows.iter().enumerate() {
            let mut wanted = vec![row.entity.clone()];
            wanted.extend(row.bind.iter().filter_map(|(_, b)| if let BindSpec::Row { entity, .. } = b { Some(entity.clone()) } else { None }));
            for entity in wanted {
                if let std::collections::btree_map::Entry::Vacant(slot) = read.entry(entity) {
                    let definition = entities.read(destination, slot.key(), deadline).await;
                    slot.insert(definition);
                }
            }
            let at = format!("events[\"{event}\"].rows[{i}] ({})", row.entity);
            views.push(judge_row(event, i, row, &read, &at, &mut problems));
        }
    }
    (views, problems)
}

fn judge_row(
    event: &str,
    i: usize,
    row: &RowSpec,
    read: &BTreeMap<String, Result<Option<EntityDef>, DeliveryError>>,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Value {
    let mut view = json!({"event": event, "row": i, "entity": row.entity, "mode": row.mode.name()});
    let before = problems.len();
    let mut problem = |problem: String, fix: String| problems.push(Problem { problem: format!("{at}: {problem}"), fix });
    let definition = match &read[&row.entity] {
        Err(error) => {
            view["exists"] = Value::Null;
            let fix =
                if error.status() == Some(403) { ENTITY_READ_FIX.to_string() } else { "run the check again; rows are sent as mapped meanwhile".to_string() };
            problem(format!("the definition of {} cannot be read: {error}", row.entity), fix);
            view["ok"] = json!(false);
            return view;
        }
        Ok(None) => {
            view["exists"] = json!(false);
            problem(
                format!("no entity set named '{}' in this environment", row.entity),
                "use the table's entity set name (plural, lowercase: accounts, opportunities; `d365-trigger-relay schema --entity SET` prints a starter entry)"
                    .into(),
            );
            view["ok"] = json!(false);
            return view;
        }
        Ok(Some(definition)) => definition,
    };
    view["exists"] = json!(true);
    let mut columns = Vec::new();
    for (column, _) in &row.attributes {
        match definition.column_type(column) {
            None => {
                columns.push(json!({"column": column, "type": null}));
                problem(
                    format!("{} has no column '{column}'", row.entity),
                    format!("map a column of {} (names are lowercase logical names); it is omitted meanwhile", row.entity),
                );
            }
            Some(kind) => {
                columns.push(json!({"column": column, "type": kind}));
                if LOOKUP_TYPES.contains(&kind) {
                    problem(
                        format!("{column} is a {kind} column under attributes"),
                        format!("use bind: \"bind\": {{\"<navigation property of {column}>\": {{\"entity\": …, \"key\": {{…}}}}}}"),
                    );
                }
            }
        }
    }
    view["columns"] = json!(columns);
    view["key"] = judge_key(&row.entity, &row.key, definition, &mut problem);
    let mut binds = Vec::new();
    for (property, bind) in &row.bind {
        let target = definition.navigation.get(property);
        let mut b = json!({"property": property, "exists": target.is_some(), "refers_to": target});
        if target.is_none() {
            let similar: Vec<&String> = definition.navigation.keys().filter(|n| n.eq_ignore_ascii_case(property)).collect();
            let fix = match similar.first() {
                Some(name) => format!("navigation property names are case-sensitive: write {name}"),
                None => {
                    format!("bind a single-valued navigation property of {} (its ManyToOneRelationships' ReferencingEntityNavigationPropertyName)", row.entity)
                }
            };
            problem(format!("{} has no navigation property '{property}'", row.entity), fix);
        }
        if let BindSpec::Row { entity, key } = bind {
            match &read[entity] {
                Ok(Some(bound)) => {
                    if let Some(target) = target.filter(|t| **t != bound.logical_name) {
                        problem(
                            format!("bind {property} refers to {target}, not {}", bound.logical_name),
                            format!("bind {property} to a row of the {target} table"),
                        );
                    }
                    b["key"] = judge_key(entity, key, bound, &mut problem);
                }
                Ok(None) => problem(format!("bind {property}: no entity set named '{entity}'"), "use the bound table's entity set name".into()),
                Err(error) => problem(format!("bind {property}: the definition of {entity} cannot be read: {error}"), ENTITY_READ_FIX.into()),
            }
        }
        binds.push(b);
    }
    view["binds"] = json!(binds);
    view["ok"] = json!(problems.len() == before);
    view
}

/// Whether `key` addresses one row: the id column alone, or an alternate key whose index is Active.
fn judge_key(entity: &str, key: &KeySpec, definition: &EntityDef, problem: &mut impl FnMut(String, String)) -> Value {
    let columns: Vec<&str> = key.iter().map(|(c, _)| c.as_str()).collect();
    if columns.is_empty() {
        return json!({"columns": [], "detail": "no key: a create (POST) on every delivery"});
    }
    if columns == [definition.primary_id.as_str()] {
        return json!({"columns": columns, "detail": "the id column"});
    }
    match definition.key_for(&columns) {
        Some(k) if k.status == "Active" => json!({"columns": columns, "detail": "an Active alternate key"}),
        Some(k) => {
            problem(
                format!("the key's index is {}", k.status),
                "the key's index is Pending/Failed: wait, or reactivate it (Power Apps → Tables → Keys)".into(),
            );
            json!({"columns": columns, "detail": format!("an alternate key whose index is {}", k.status)})
        }
        None => {
            problem(
                format!("{} is not an alternate key of {entity}", columns.join(", ")),
                format!("define an alternate key on {}, or key by the id ({})", columns.join(", "), definition.primary_id),
            );
            json!({"columns": columns, "detail": "not an alternate key"})
        }
    }
}

/// `check --event` for an entry with rows: every request it would make, in order.
#[allow(clippy::too_many_arguments)]
pub async fn event_view(
    settings: &Settings,
    destination: &Destination,
    schemas: &Schemas,
    mut plan: ActionPlan,
    event: &Value,
    warnings: Vec<String>,
    deadline: Instant,
    view: &mut Value,
    problems: &mut Vec<Problem>,
) {
    view["trigger"] = json!(plan.trigger.as_ref().map(|c| c.trigger.clone()));
    view["warnings"] = json!(warnings);
    if let Some(spec) = settings.mapping.identity.as_ref().filter(|_| plan.trigger.is_some() || plan.binds_profile()) {
        let profile = resolve_sample(spec, event, destination, deadline).await;
        if let Ok(Some(id)) = &profile {
            if let Some(call) = &mut plan.trigger {
                crate::identity::fill_profile(&mut call.body, id);
            }
            plan.profile = Some(id.clone());
        }
        view["profile"] = json!(match &profile {
            Ok(Some(id)) => format!("resolves to {id}"),
            Ok(None) => "no lookup needed".to_string(),
            Err((reason, _)) => reason.clone(),
        });
    }
    let entities = Entities::new(Duration::ZERO);
    let definitions = entities.lookup_all(destination, plan.entities(), deadline).await;
    let key = crate::idempotency::key_for(event);
    match fit(&mut plan, &key, &definitions) {
        Err(outcome) => {
            let reason = outcome.detail().unwrap_or_default();
            view["outcome"] = json!(outcome.name());
            view["reason"] = json!(reason);
            problems.push(Problem {
                problem: format!("the event would be {}: {reason}", outcome.name()),
                fix: "fix the event (its producer) or the row's mapping".into(),
            });
            return;
        }
        Ok(omitted) => view["omitted"] = json!(omitted.iter().map(|(e, c)| format!("{e}.{c}")).collect::<Vec<_>>()),
    }
    if let Some(call) = &mut plan.trigger {
        match schemas.read(destination, &call.trigger, deadline).await {
            Ok(Some(definition)) => match crate::schema::fit(&definition, std::mem::take(&mut call.body)) {
                Ok(fitted) => call.body = fitted.body,
                Err(reason) => {
                    view["outcome"] = json!("invalid");
                    view["reason"] = json!(reason);
                    problems.push(Problem {
                        problem: format!("the event would be invalid: {reason}"),
                        fix: "send a value of the parameter's type, or map another field".into(),
                    });
                    return;
                }
            },
            Ok(None) => {
                view["outcome"] = json!("rejected");
                view["reason"] = json!(format!("no custom API named '{}': nothing would be sent", call.trigger));
                return;
            }
            Err(_) => {}
        }
    }
    view["outcome"] = json!("would be sent");
    view["requests"] = json!(plan.requests());
}

/// `schema --entity SET`: a starter `rows` entry for a table — its key (the
/// first Active alternate key, else the id), its writable columns with guessed
/// paths, and its navigation properties as binds to fill in.
pub fn starter_row(definition: &EntityDef) -> Value {
    let key_columns: Vec<String> =
        definition.keys.iter().find(|k| k.status == "Active").map(|k| k.columns.clone()).unwrap_or_else(|| vec![definition.primary_id.clone()]);
    let guess = |column: &str| format!("properties.{}", column.strip_prefix("new_").unwrap_or(column));
    let key: serde_json::Map<String, Value> = key_columns.iter().map(|c| (c.clone(), json!(guess(c)))).collect();
    let skipped = ["Lookup", "Customer", "Owner", "Virtual", "EntityName", "PartyList", "ManagedProperty", "CalendarRules"];
    let attributes: serde_json::Map<String, Value> = definition
        .columns
        .iter()
        .filter(|(c, t)| !skipped.contains(&t.as_str()) && !key_columns.contains(c) && **c != definition.primary_id)
        .map(|(c, _)| (c.clone(), json!(guess(c))))
        .collect();
    // The bound table's set is guessed from its logical name (opportunity → opportunities): check it.
    let bind: serde_json::Map<String, Value> = definition
        .navigation
        .iter()
        .map(|(p, e)| (p.clone(), json!({"entity": plural(e), "key": {id_column(&plural(e)): format!("properties.{e}_id")}})))
        .collect();
    json!({"entity": definition.entity_set, "key": key, "attributes": attributes, "bind": bind})
}

/// The usual entity set name of a logical name: `account` → `accounts`, `opportunity` → `opportunities`.
fn plural(logical: &str) -> String {
    match logical.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{stem}ies"),
        _ if logical.ends_with(['s', 'x']) || logical.ends_with("ch") || logical.ends_with("sh") => format!("{logical}es"),
        _ => format!("{logical}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::definition::AlternateKey;

    #[test]
    fn set_names_are_guessed_from_logical_names() {
        assert_eq!(
            [plural("account"), plural("opportunity"), plural("new_address"), plural("survey")],
            ["accounts", "opportunities", "new_addresses", "surveys"]
        );
    }

    fn account(status: &str) -> EntityDef {
        EntityDef {
            logical_name: "account".into(),
            entity_set: "accounts".into(),
            primary_id: "accountid".into(),
            columns: [("accountid", "Uniqueidentifier"), ("accountnumber", "String"), ("name", "String"), ("primarycontactid", "Lookup")]
                .into_iter()
                .map(|(c, t)| (c.to_string(), t.to_string()))
                .collect(),
            keys: vec![AlternateKey { columns: vec!["accountnumber".into()], status: status.into() }],
            navigation: [("primarycontactid".to_string(), "contact".to_string())].into_iter().collect(),
        }
    }

    fn key(columns: &[&str]) -> KeySpec {
        columns.iter().map(|c| (c.to_string(), vec!["properties".to_string(), c.to_string()])).collect()
    }

    #[test]
    fn a_key_is_the_id_or_an_active_alternate_key_else_the_fix_says_what_to_do() {
        let mut problems = Vec::new();
        let mut problem = |p: String, f: String| problems.push((p, f));
        assert_eq!(judge_key("accounts", &key(&["accountnumber"]), &account("Active"), &mut problem)["detail"], "an Active alternate key");
        assert_eq!(judge_key("accounts", &key(&["accountid"]), &account("Active"), &mut problem)["detail"], "the id column");
        assert_eq!(judge_key("accounts", &key(&[]), &account("Active"), &mut problem)["detail"], "no key: a create (POST) on every delivery");
        judge_key("accounts", &key(&["accountnumber"]), &account("Pending"), &mut problem);
        judge_key("accounts", &key(&["name"]), &account("Active"), &mut problem);
        assert_eq!(
            problems,
            [
                (
                    "the key's index is Pending".to_string(),
                    "the key's index is Pending/Failed: wait, or reactivate it (Power Apps → Tables → Keys)".to_string()
                ),
                ("name is not an alternate key of accounts".to_string(), "define an alternate key on name, or key by the id (accountid)".to_string()),
            ]
        );
    }

    #[test]
    fn a_starter_row_keys_by_the_active_key_and_binds_lookups() {
        let starter = starter_row(&account("Active"));
        assert_eq!(
            starter,
            json!({"entity": "accounts", "key": {"accountnumber": "properties.accountnumber"}, "attributes": {"name": "properties.name"},
                   "bind": {"primarycontactid": {"entity": "contacts", "key": {"contactid": "properties.contact_id"}}}})
        );
        assert_eq!(starter_row(&account("Failed"))["key"], json!({"accountid": "properties.accountid"}), "no Active key: by the id");
    }
}
