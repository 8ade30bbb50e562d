//! config/mapping.schema.json, the JSON Schema of the mapping document (SPEC
//! §21.2): every key described, every mapping the project ships valid under it,
//! and documents the relay rejects rejected by it too.

use std::path::Path;

use relay::config::{Mapping, DEFAULT_PRESET};
use serde_json::{json, Value};

use crate::helpers::ROOT;

fn schema() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/config/mapping.schema.json")).unwrap()).expect("the schema is JSON")
}

fn validator() -> jsonschema::Validator {
    let schema = schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::draft202012::new(&schema).expect("the schema is a valid draft 2020-12 schema")
}

/// The schema's complaints about `document`, as `pointer: message` lines.
fn complaints(validator: &jsonschema::Validator, document: &Value) -> Vec<String> {
    validator.iter_errors(document).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// Every mapping document the project ships: the files, and the JSON blocks of
/// the README and the manual whose top level has `events` (an event has `event`).
fn shipped_mappings() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in ["events/mapping.json", "config/mapping.json"] {
        found.push((file.to_string(), std::fs::read_to_string(format!("{ROOT}/{file}")).unwrap()));
    }
    let mut markdown = vec![format!("{ROOT}/README.md")];
    let mut json_files = Vec::new();
    for dir in ["docs", "sandbox", "config", "events"] {
        walk(Path::new(&format!("{ROOT}/{dir}")), &mut |path| match path.extension().and_then(|e| e.to_str()) {
            Some("md") => markdown.push(path.display().to_string()),
            Some("json") => json_files.push(path.display().to_string()),
            _ => {}
        });
    }
    for file in json_files {
        let text = std::fs::read_to_string(&file).unwrap();
        if is_mapping(&text) && !found.iter().any(|(f, _)| file.ends_with(f.as_str())) && !file.ends_with("mapping.schema.json") {
            found.push((file, text));
        }
    }
    for file in markdown {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for (i, block) in text.split("```json\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap_or_default();
            if is_mapping(block) {
                found.push((format!("{file} (JSON block {})", i + 1), block.to_string()));
            }
        }
    }
    found
}

fn is_mapping(text: &str) -> bool {
    matches!(serde_json::from_str::<Value>(text), Ok(Value::Object(o)) if o.get("events").is_some_and(Value::is_object) && !o.contains_key("event") && !o.contains_key("Records"))
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") {
                walk(&path, visit);
            }
        } else {
            visit(&path);
        }
    }
}

#[test]
fn every_key_of_the_schema_has_a_description() {
    fn visit(node: &Value, at: &str, missing: &mut Vec<String>) {
        let Value::Object(object) = node else {
            if let Value::Array(items) = node {
                for (i, item) in items.iter().enumerate() {
                    visit(item, &format!("{at}/{i}"), missing);
                }
            }
            return;
        };
        for section in ["properties", "$defs"] {
            if let Some(Value::Object(keys)) = object.get(section) {
                for (key, spec) in keys {
                    if spec.get("description").and_then(Value::as_str).is_none_or(|d| d.len() < 10) {
                        missing.push(format!("{at}/{section}/{key}"));
                    }
                }
            }
        }
        // anyOf, if and then restate keys as constraints (a row's key, once more with minProperties): not keys of their own.
        for (key, value) in object.iter().filter(|(k, _)| !matches!(k.as_str(), "anyOf" | "if" | "then")) {
            visit(value, &format!("{at}/{key}"), missing);
        }
    }
    let mut missing = Vec::new();
    visit(&schema(), "", &mut missing);
    assert!(missing.is_empty(), "keys without a description: {missing:#?}");
}

#[test]
fn every_mapping_the_project_ships_is_valid_under_the_schema_and_for_the_relay() {
    let validator = validator();
    let shipped = shipped_mappings();
    assert!(shipped.len() >= 3, "{:?}", shipped.iter().map(|(f, _)| f).collect::<Vec<_>>());
    for (file, text) in shipped.iter().map(|(f, t)| (f.as_str(), t.as_str())).chain([("the Default preset", DEFAULT_PRESET)]) {
        let document: Value = serde_json::from_str(text).unwrap();
        let problems = complaints(&validator, &document);
        assert!(problems.is_empty(), "{file} is not valid under config/mapping.schema.json:\n{}", problems.join("\n"));
        Mapping::parse(text).unwrap_or_else(|e| panic!("{file}: the relay rejects it: {e}"));
    }
}

#[test]
fn the_destinations_section_is_accepted() {
    let document = json!({"destinations": {"prod": {"fallback": true}, "uat": {"best_effort": true, "events": ["Order Completed"], "rows": false},
                          "fab": {"when": {"context.traits.brand": "fabrikam"}, "triggers": {"msdynmkt_OrderCompleted": "msdynmkt_OrderCompleted_fab"}}}});
    assert!(complaints(&validator(), &document).is_empty(), "{:?}", complaints(&validator(), &document));
    assert!(Mapping::parse(&document.to_string()).is_ok());
}

#[test]
fn a_schema_line_is_accepted_and_ignored_by_the_relay() {
    let with = Mapping::parse(r#"{"$schema": "./mapping.schema.json", "trigger": "msdynmkt_A", "events": {"A": {}}}"#).unwrap();
    let without = Mapping::parse(r#"{"trigger": "msdynmkt_A", "events": {"A": {}}}"#).unwrap();
    assert_eq!(with, without);
}

/// Kinds of mistake the relay refuses when it loads a document.
pub(crate) fn mistakes() -> Vec<(&'static str, Value)> {
    let row = |extra: Value| {
        let mut row = json!({"entity": "accounts", "key": {"accountnumber": "properties.account_id"}});
        row.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"events": {"Order Completed": {"rows": [row]}}})
    };
    vec![
        ("a misspelt top-level key", json!({"evnts": {}})),
        ("a trigger name with a hyphen", json!({"trigger": "msdynmkt-Order"})),
        ("an unknown defaults.action", json!({"defaults": {"action": "keep"}})),
        ("an attribute name Dataverse cannot have", json!({"events": {"A": {"attributes": {"bad-name": "properties.x"}}}})),
        ("a path with an empty segment", json!({"events": {"A": {"attributes": {"x": "properties..x"}}}})),
        ("a list of paths holding a number", json!({"events": {"A": {"attributes": {"x": [1]}}}})),
        ("an empty list of paths", json!({"events": {"A": {"attributes": {"x": []}}}})),
        (
            "more than 30 attributes",
            json!({"events": {"A": {"attributes": (0..31).map(|i| (format!("a{i}"), json!("p.x"))).collect::<serde_json::Map<_, _>>()}}}),
        ),
        ("an unknown key in an event entry", json!({"events": {"A": {"trigers": "msdynmkt_A"}}})),
        ("an unknown row mode", row(json!({"mode": "upsrt"}))),
        ("update without a key", json!({"events": {"A": {"rows": [{"entity": "accounts", "mode": "update", "attributes": {"name": "p.n"}}]}}})),
        ("a lookup column under attributes", row(json!({"attributes": {"_parentaccountid_value": "p.x"}}))),
        ("an entity set in capitals", json!({"events": {"A": {"rows": [{"entity": "Accounts", "key": {"a": "p.a"}}]}}})),
        ("a bind to neither profile nor a row", row(json!({"bind": {"parentcontactid": "someone"}}))),
        ("a bind to a row without a key", row(json!({"bind": {"parentaccountid": {"entity": "accounts", "key": {}}}}))),
        ("a row with nothing to write", json!({"events": {"A": {"rows": [{"entity": "accounts"}]}}})),
        ("an unknown key in a row", row(json!({"extra": 1}))),
        ("an identity with neither lookup nor create", json!({"identity": {}})),
        ("a lookup in an entity set in capitals", json!({"identity": {"lookup": [{"entity": "Contacts", "attribute": "x", "from": "userId"}]}})),
        ("a lookup without from", json!({"identity": {"lookup": [{"entity": "contacts", "attribute": "emailaddress1"}]}})),
        ("consent without categories", json!({"consent": {"categories": []}})),
        ("an unknown consent.missing", json!({"consent": {"categories": ["Marketing"], "missing": "maybe"}})),
        ("an identify section without an entity", json!({"identify": {"attributes": {"firstname": "traits.first_name"}}})),
        ("events as a list", json!({"events": ["Order Completed"]})),
        ("a fallback with when", json!({"destinations": {"prod": {"fallback": true, "when": {"context.traits.brand": "a"}}}})),
        ("a destination name in capitals", json!({"destinations": {"Prod": {}}})),
        ("an unknown key in a route", json!({"destinations": {"uat": {"best_efort": true}}})),
    ]
}

#[test]
fn what_the_relay_rejects_the_schema_rejects_too() {
    let validator = validator();
    let mistakes = mistakes();
    assert!(mistakes.len() >= 10);
    for (kind, document) in mistakes {
        let text = document.to_string();
        assert!(Mapping::parse(&text).is_err(), "{kind}: the relay accepts {text}");
        assert!(!complaints(&validator, &document).is_empty(), "{kind}: the schema accepts {text}");
    }
}
