//! `check --mapping FILE [--event FILE]` (SPEC §21.2): a mapping document
//! checked offline — no secret, no network, no other setting. Every problem is
//! one line, `JSON-pointer: what is wrong`; with an event, what it would become
//! under the document (trigger, attributes, rows), without reading Dataverse.
//!
//! The walk here finds every problem at once, where [`Mapping::parse`] (what the
//! relay loads at cold start) stops at the first; the parser has the last word:
//! a document the walk passes and the parser refuses is reported with the
//! parser's reason, so `check` never passes what the relay would refuse.

use serde_json::{Map, Value};

use crate::config::{check_name, Mapping};
use crate::mapping::{map_event, Decision, MapContext};

/// One mistake: where (an RFC 6901 JSON pointer into the document) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pointer: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

/// The usage line of `check --mapping`.
pub const USAGE: &str = "check --mapping FILE [--event FILE]";

/// A trigger attribute's most parameters (SPEC §2.3).
const MAX_ATTRIBUTES: usize = 30;

/// Every problem of a mapping document, in document order; empty when the relay would load it.
pub fn problems(text: &str) -> Vec<Problem> {
    let document: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![Problem { pointer: String::new(), message: format!("not JSON: {e}") }],
    };
    let mut walk = Walk::default();
    walk.document(&document);
    if walk.found.is_empty() {
        if let Err(reason) = Mapping::parse(text) {
            walk.found.push(Problem { pointer: String::new(), message: reason });
        }
    }
    walk.found
}

/// When `mapping` is the built-in Default preset (SPEC §2.3, §21.2): the notice
/// that names the events that would all raise one trigger.
pub fn preset_notice(mapping: &Mapping) -> Option<String> {
    if *mapping != Mapping::default_preset() {
        return None;
    }
    let events: Vec<String> = mapping.events.keys().map(|e| format!("\"{e}\"")).collect();
    Some(format!(
        "notice: this is the built-in Default preset: {} all raise one trigger (D365_TRIGGER_NAME, else the secret's trigger_name) \
with illustrative attribute names; write a mapping document for your triggers (config/mapping.json)\n",
        events.join(", ")
    ))
}

/// RFC 6901: `~` as `~0`, `/` as `~1`.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[derive(Default)]
struct Walk {
    found: Vec<Problem>,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The closest of `known` to a misspelt key, when it is close.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut previous = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let substituted = previous + usize::from(ca != *cb);
                previous = row[j + 1];
                row[j + 1] = substituted.min(row[j] + 1).min(row[j + 1] + 1);
            }
        }
        row[b.len()]
    }
    known.iter().map(|k| (distance(&key.to_ascii_lowercase(), k), *k)).filter(|(d, k)| *d <= 2.max(k.len() / 3)).min().map(|(_, k)| k)
}

impl Walk {
    fn report(&mut self, at: &str, message: impl Into<String>) {
        self.found.push(Problem { pointer: at.to_string(), message: message.into() });
    }

    /// `value` as an object, else a problem.
    fn object<'v>(&mut self, value: &'v Value, at: &str, what: &str) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.report(at, format!("must be {what}, not {}", kind(other)));
                None
            }
        }
    }

    /// Keys outside `known` are typos, not ignored (the relay refuses them).
    fn known_keys(&mut self, map: &Map<String, Value>, at: &str, known: &[&str]) {
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            let hint = match closest(key, known) {
                Some(k) => format!("; did you mean \"{k}\"?"),
                None => String::new(),
            };
            self.report(&format!("{at}/{}", escape(key)), format!("unknown key \"{key}\" (known here: {}){hint}", known.join(", ")));
        }
    }

    fn name(&mut self, value: &Value, at: &str) {
        match value {
            Value::String(s) => {
                if let Err(e) = check_name(s) {
                    self.report(at, e);
                }
            }
            other => self.report(at, format!("must be a name (letters, digits, '_'), not {}", kind(other))),
        }
    }

    fn key_name(&mut self, key: &str, at: &str) {
        if let Err(e) = check_name(key) {
            self.report(at, e);
        }
    }

    fn path(&mut self, value: &Value, at: &str, example: &str) {
        match value {
            Value::String(p) if !p.is_empty() && !p.split('.').any(str::is_empty) => {}
            Value::String(p) => self.report(at, format!("\"{p}\" is not a dotted path such as {example}")),
            other => self.report(at, format!("must be a dotted path such as {example}, not {}", kind(other))),
        }
    }

    /// A path, or a non-empty list of paths.
    fn paths(&mut self, value: &Value, at: &str) {
        match value {
            Value::Array(items) if items.is_empty() => self.report(at, "give at least one path"),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.path(item, &format!("{at}/{i}"), "properties.order_id");
                }
            }
            Value::String(_) => self.path(value, at, "properties.order_id"),
            other => self.report(at, format!("must be a dotted path or a list of paths, not {}", kind(other))),
        }
    }

    fn one_of(&mut self, value: &Value, at: &str, what: &str, allowed: &[&str]) {
        match value.as_str() {
            Some(v) if allowed.contains(&v) => {}
            Some(v) => self.report(at, format!("unknown {what} \"{v}\" ({})", allowed.join(", "))),
            None => self.report(at, format!("must be one of {}, not {}", allowed.join(", "), kind(value))),
        }
    }

    /// An entity set: lowercase letters, digits, underscores; profiles' sets end in `s`.
    fn entity(&mut self, value: &Value, at: &str, profile: bool) {
        let example = if profile { "contacts or leads" } else { "accounts or opportunities" };
        match value.as_str() {
            Some(e) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') && (!profile || e.ends_with('s')) => {}
            Some(e) => self.report(at, format!("\"{e}\" is not an entity set name such as {example} (plural, lowercase)")),
            None => self.report(at, format!("must be an entity set name such as {example}, not {}", kind(value))),
        }
    }

    fn document(&mut self, document: &Value) {
        let Some(root) = self.object(document, "", "a mapping document (a JSON object)") else { return };
        self.known_keys(root, "", &["$schema", "trigger", "events", "defaults", "identity", "identify", "consent", "destinations"]);
        if let Some(schema) = root.get("$schema").filter(|s| !s.is_string()) {
            self.report("/$schema", format!("must be a string (the schema's location), not {}", kind(schema)));
        }
        if let Some(trigger) = root.get("trigger") {
            self.name(trigger, "/trigger");
        }
        if let Some(defaults) = root.get("defaults") {
            if let Some(map) = self.object(defaults, "/defaults", "an object such as {\"action\": \"drop\"}") {
                self.known_keys(map, "/defaults", &["action"]);
                if let Some(action) = map.get("action") {
                    self.one_of(action, "/defaults/action", "action", &["drop", "raise"]);
                }
            }
        }
        if let Some(events) = root.get("events") {
            if let Some(map) = self.object(events, "/events", "an object of event name → entry") {
                for (name, entry) in map {
                    self.event(entry, &format!("/events/{}", escape(name)));
                }
            }
        }
        if let Some(identity) = root.get("identity") {
            self.identity(identity);
        }
        if let Some(identify) = root.get("identify") {
            self.write(identify, "/identify");
        }
        if let Some(consent) = root.get("consent") {
            self.consent(consent, "/consent");
        }
        if let Some(destinations) = root.get("destinations") {
            if let Some(map) = self.object(destinations, "/destinations", "an object of destination name → route") {
                for (name, route) in map {
                    self.route(name, route, &format!("/destinations/{}", escape(name)));
                }
            }
        }
    }

    /// One destination's route (SPEC §23.2).
    fn route(&mut self, name: &str, route: &Value, at: &str) {
        if let Err(problem) = crate::config::secret::check_destination_name(name) {
            self.report(at, problem);
        }
        let Some(map) = self.object(route, at, "an object such as {\"fallback\": true}") else { return };
        self.known_keys(map, at, &["fallback", "best_effort", "events", "when", "triggers", "rows", "identify"]);
        for flag in ["fallback", "best_effort", "rows", "identify"] {
            if let Some(value) = map.get(flag).filter(|v| !v.is_boolean()) {
                self.report(&format!("{at}/{flag}"), format!("must be true or false, not {}", kind(value)));
            }
        }
        let fallback = map.get("fallback").and_then(Value::as_bool).unwrap_or(false);
        if fallback && (map.contains_key("when") || map.contains_key("events")) {
            self.report(&format!("{at}/fallback"), "a fallback takes no `when` or `events` (it takes what no other destination took)");
        }
        if let Some(events) = map.get("events") {
            if !events.as_array().is_some_and(|list| list.iter().all(Value::is_string)) {
                self.report(&format!("{at}/events"), format!("must be a list of event names, not {}", kind(events)));
            }
        }
        if let Some(when) = map.get("when") {
            if let Some(paths) = self.object(when, &format!("{at}/when"), "an object of dotted path → value") {
                for (path, value) in paths {
                    let place = format!("{at}/when/{}", escape(path));
                    if path.is_empty() || path.split('.').any(str::is_empty) {
                        self.report(&place, format!("\"{path}\" is not a dotted path such as context.traits.brand"));
                    }
                    if value.is_object() || value.is_array() || value.is_null() {
                        self.report(&place, format!("must be a string, a number or a boolean, not {}", kind(value)));
                    }
                }
            }
        }
        if let Some(triggers) = map.get("triggers") {
            if let Some(renames) = self.object(triggers, &format!("{at}/triggers"), "an object of trigger → its name here") {
                for (from, to) in renames {
                    let place = format!("{at}/triggers/{}", escape(from));
                    self.key_name(from, &place);
                    self.name(to, &place);
                }
            }
        }
    }

    fn event(&mut self, entry: &Value, at: &str) {
        let Some(map) = self.object(entry, at, "an event entry (an object)") else { return };
        self.known_keys(map, at, &["trigger", "attributes", "required", "consent", "rows"]);
        if let Some(trigger) = map.get("trigger") {
            self.name(trigger, &format!("{at}/trigger"));
        }
        let mut attributes: Vec<&str> = Vec::new();
        if let Some(value) = map.get("attributes") {
            let here = format!("{at}/attributes");
            if let Some(attrs) = self.object(value, &here, "an object of parameter name → path") {
                if attrs.len() > MAX_ATTRIBUTES {
                    self.report(&here, format!("{} attributes: a trigger takes at most {MAX_ATTRIBUTES}", attrs.len()));
                }
                for (name, spec) in attrs {
                    let there = format!("{here}/{}", escape(name));
                    self.key_name(name, &there);
                    self.paths(spec, &there);
                    attributes.push(name);
                }
            }
        }
        if let Some(required) = map.get("required") {
            let here = format!("{at}/required");
            match required {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match item.as_str() {
                            Some(name) if attributes.contains(&name) => {}
                            Some(name) => self.report(&format!("{here}/{i}"), format!("\"{name}\" is not one of the event's attributes")),
                            None => self.report(&format!("{here}/{i}"), format!("must be an attribute's name, not {}", kind(item))),
                        }
                    }
                }
                other => self.report(&here, format!("must be a list of attribute names, not {}", kind(other))),
            }
        }
        if let Some(consent) = map.get("consent") {
            self.consent(consent, &format!("{at}/consent"));
        }
        if let Some(rows) = map.get("rows") {
            let here = format!("{at}/rows");
            match rows {
                Value::Array(items) => {
                    for (i, row) in items.iter().enumerate() {
                        self.row(row, &format!("{here}/{i}"));
                    }
                }
                other => self.report(&here, format!("must be a list of rows, not {}", kind(other))),
            }
        }
    }

    /// A row key: column → path; `Some(len)` when it is an object.
    fn key(&mut self, value: &Value, at: &str) -> Option<usize> {
        let map = self.object(value, at, "an object of column → path, e.g. {\"accountnumber\": \"properties.account_id\"}")?;
        for (column, path) in map {
            let there = format!("{at}/{}", escape(column));
            self.key_name(column, &there);
            self.path(path, &there, "properties.account_id");
        }
        Some(map.len())
    }

    fn row(&mut self, row: &Value, at: &str) {
        let Some(map) = self.object(row, at, "a row (an object with entity, key, attributes, bind)") else { return };
        self.known_keys(map, at, &["entity", "key", "mode", "attributes", "bind"]);
        match map.get("entity") {
            Some(entity) => self.entity(entity, &format!("{at}/entity"), false),
            None => self.report(at, "a row names its entity set (\"entity\": \"accounts\")"),
        }
        let key = map.get("key").and_then(|k| self.key(k, &format!("{at}/key"))).unwrap_or(0);
        let mode = map.get("mode");
        if let Some(mode) = mode {
            self.one_of(mode, &format!("{at}/mode"), "mode", &["upsert", "update", "create"]);
        }
        if key == 0 && mode.and_then(Value::as_str) == Some("update") {
            self.report(&format!("{at}/mode"), "mode update needs a key (an update never creates, so it must name the row)");
        }
        let mut columns: Vec<&str> = Vec::new();
        if let Some(value) = map.get("attributes") {
            let here = format!("{at}/attributes");
            if let Some(attrs) = self.object(value, &here, "an object of column → path") {
                for (column, spec) in attrs {
                    let there = format!("{here}/{}", escape(column));
                    if column.ends_with("@odata.bind") || (column.starts_with('_') && column.ends_with("_value")) {
                        self.report(&there, "a lookup is written with bind, not attributes (use bind)");
                    } else {
                        self.key_name(column, &there);
                    }
                    self.paths(spec, &there);
                    columns.push(column);
                }
            }
        }
        let mut binds = 0;
        if let Some(value) = map.get("bind") {
            let here = format!("{at}/bind");
            if let Some(bind) = self.object(value, &here, "an object of navigation property → \"profile\" or a row") {
                binds = bind.len();
                for (property, target) in bind {
                    let there = format!("{here}/{}", escape(property));
                    self.key_name(property, &there);
                    if columns.contains(&property.as_str()) {
                        self.report(&there, format!("\"{property}\" is under both attributes and bind (a lookup is written with bind)"));
                    }
                    self.bind(target, &there);
                }
            }
        }
        if key == 0 && columns.is_empty() && binds == 0 && map.contains_key("entity") {
            self.report(at, "a row without a key needs attributes or a bind");
        }
    }

    fn bind(&mut self, target: &Value, at: &str) {
        const SHAPES: &str = "\"profile\", {\"profile\": \"leads\"} or {\"entity\": …, \"key\": {…}}";
        match target {
            Value::String(s) if s == "profile" => {}
            Value::Object(map) if map.len() == 1 && map.contains_key("profile") => self.entity(&map["profile"], &format!("{at}/profile"), false),
            Value::Object(map) => {
                self.known_keys(map, at, &["entity", "key"]);
                match map.get("entity") {
                    Some(entity) => self.entity(entity, &format!("{at}/entity"), false),
                    None => self.report(at, format!("must be {SHAPES}")),
                }
                match map.get("key") {
                    Some(key) => {
                        if self.key(key, &format!("{at}/key")) == Some(0) {
                            self.report(&format!("{at}/key"), "name the bound row's key, e.g. {\"accountnumber\": \"properties.account_id\"}");
                        }
                    }
                    None => self.report(at, "name the bound row's key, e.g. \"key\": {\"accountnumber\": \"properties.account_id\"}"),
                }
            }
            other => self.report(at, format!("must be {SHAPES}, not {}", describe(other))),
        }
    }

    fn identity(&mut self, identity: &Value) {
        let Some(map) = self.object(identity, "/identity", "an object with lookup and create") else { return };
        self.known_keys(map, "/identity", &["lookup", "create"]);
        let mut lookups = 0;
        if let Some(lookup) = map.get("lookup") {
            match lookup {
                Value::Array(items) => {
                    lookups = items.len();
                    for (i, item) in items.iter().enumerate() {
                        let at = format!("/identity/lookup/{i}");
                        let Some(l) = self.object(item, &at, "a lookup {entity, attribute, from}") else { continue };
                        self.known_keys(l, &at, &["entity", "attribute", "from"]);
                        for field in ["entity", "attribute", "from"] {
                            let there = format!("{at}/{field}");
                            match (field, l.get(field)) {
                                (_, None) => self.report(&at, format!("a lookup needs \"{field}\"")),
                                ("entity", Some(v)) => self.entity(v, &there, true),
                                ("attribute", Some(v)) => self.name(v, &there),
                                (_, Some(v)) => self.path(v, &there, "context.traits.email"),
                            }
                        }
                    }
                }
                other => self.report("/identity/lookup", format!("must be a list of lookups, not {}", kind(other))),
            }
        }
        if let Some(create) = map.get("create") {
            self.write(create, "/identity/create");
        }
        if lookups == 0 && !map.contains_key("create") {
            self.report("/identity", "give at least one lookup (or a create)");
        }
    }

    /// A create or an update: `{entity, attributes: column → path}`.
    fn write(&mut self, value: &Value, at: &str) {
        let Some(map) = self.object(value, at, "an object with entity and attributes") else { return };
        self.known_keys(map, at, &["entity", "attributes"]);
        match map.get("entity") {
            Some(entity) => self.entity(entity, &format!("{at}/entity"), true),
            None => self.report(at, "name the entity set (\"entity\": \"contacts\")"),
        }
        if let Some(value) = map.get("attributes") {
            let here = format!("{at}/attributes");
            if let Some(attrs) = self.object(value, &here, "an object of column → path") {
                for (column, path) in attrs {
                    let there = format!("{here}/{}", escape(column));
                    self.key_name(column, &there);
                    self.path(path, &there, "context.traits.first_name");
                }
            }
        }
    }

    fn consent(&mut self, value: &Value, at: &str) {
        let Some(map) = self.object(value, at, "an object such as {\"categories\": [\"Marketing\"]}") else { return };
        self.known_keys(map, at, &["categories", "missing"]);
        match map.get("categories") {
            Some(Value::Array(items)) if !items.is_empty() && items.iter().all(|c| c.as_str().is_some_and(|c| !c.trim().is_empty())) => {}
            _ => self.report(&format!("{at}/categories"), "list one or more category names, e.g. [\"Marketing\"]"),
        }
        if let Some(missing) = map.get("missing") {
            self.one_of(missing, &format!("{at}/missing"), "value", &["allow", "deny"]);
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{s}\""),
        other => kind(other).to_string(),
    }
}

/// What `event` becomes under `mapping`, as report lines: its trigger and
/// attributes, its rows, and how its profile would be found. Nothing is read
/// or sent: the default trigger, coercion to the trigger's types and the
/// entities' definitions need the deployment (`check` without `--mapping`).
pub fn explain(mapping: &Mapping, event: &Value) -> Vec<String> {
    const DEFAULT_TRIGGER: &str = "<the default trigger: D365_TRIGGER_NAME, else the secret's trigger_name>";
    let ctx = MapContext { mapping, default_trigger: Some(DEFAULT_TRIGGER), default_phone_region: None, now: chrono::Utc::now() };
    let name = crate::fields::event_name(event).unwrap_or("(no name)");
    let mut lines = vec![format!("event \"{name}\":")];
    let show = |body: &Map<String, Value>, lines: &mut Vec<String>| {
        for (attribute, value) in body {
            lines.push(format!("    {attribute} = {value}"));
        }
    };
    if !mapping.destinations.is_empty() {
        let routes = crate::config::routes::route(&mapping.destinations, event, crate::fields::event_name(event));
        match routes.as_slice() {
            [] => lines.push("  destinations: none takes it (dropped once mapped)".into()),
            routes => {
                let names: Vec<String> = routes
                    .iter()
                    .map(|r| {
                        let renamed = r.triggers.iter().map(|(from, to)| format!("{from} → {to}")).collect::<Vec<_>>();
                        let mut name = r.name.clone();
                        if r.best_effort {
                            name.push_str(" (best effort)");
                        }
                        if !renamed.is_empty() {
                            name.push_str(&format!(" (raises {})", renamed.join(", ")));
                        }
                        name
                    })
                    .collect();
                lines.push(format!("  destinations: {}", names.join(", ")));
            }
        }
    }
    match map_event(event, &ctx) {
        Decision::Drop { reason } => lines.push(format!("  dropped: {reason}")),
        Decision::Invalid { reason } => lines.push(format!("  invalid: {reason} (never sent)")),
        Decision::Raise { call, warnings } => {
            lines.push(format!("  raises {}", call.trigger));
            show(&call.body, &mut lines);
            lines.extend(warnings.into_iter().map(|w| format!("  warning: {w}")));
        }
        Decision::Write { rows, call, warnings } => {
            for (i, row) in rows.iter().enumerate() {
                let key: Vec<String> = row.key.iter().map(|(c, v)| format!("{c}={v}")).collect();
                let target = if key.is_empty() { format!("{} (a new row)", row.entity) } else { format!("{}({})", row.entity, key.join(",")) };
                lines.push(format!("  row {}: {} {target}", i + 1, row.mode.name()));
                show(&row.attributes, &mut lines);
                for (property, bind) in &row.binds {
                    let to = match bind {
                        crate::plan::PlannedBind::Profile { set } => {
                            format!("the profile ({})", set.as_deref().unwrap_or("the set that resolved it, else contacts"))
                        }
                        crate::plan::PlannedBind::Row { entity, key } => {
                            format!("{entity}({})", key.iter().map(|(c, v)| format!("{c}={v}")).collect::<Vec<_>>().join(","))
                        }
                    };
                    lines.push(format!("    bind {property} → {to}"));
                }
            }
            match call {
                Some(call) => {
                    lines.push(format!("  then raises {}", call.trigger));
                    show(&call.body, &mut lines);
                }
                None => lines.push("  raises no trigger (an entry with rows raises only one it names)".into()),
            }
            lines.extend(warnings.into_iter().map(|w| format!("  warning: {w}")));
        }
    }
    if let Some(identity) = &mapping.identity {
        let user_id = crate::fields::user_id(event);
        if user_id.as_deref().is_some_and(crate::identity::is_guid) {
            lines.push("  profile: the userId, a GUID, as it is".into());
        } else {
            for lookup in &identity.lookups {
                let path: Vec<String> = lookup.from.split('.').map(str::to_string).collect();
                match crate::fields::lookup(event, &path).filter(|v| !v.is_null()) {
                    Some(value) => lines.push(format!("  profile lookup: {}?$filter={} eq {value} (not run offline)", lookup.entity, lookup.attribute)),
                    None => lines.push(format!("  profile lookup: {} by {} skipped (the event has no {})", lookup.entity, lookup.attribute, lookup.from)),
                }
            }
            if let Some(create) = &identity.create {
                lines.push(format!("  profile create: in {} when no lookup matches", create.entity));
            }
        }
    }
    lines
}

/// `check --mapping FILE [--event FILE]`: the exit status (0 clean, 1 a
/// mistake in the document, 2 unreadable or misused).
pub fn command(args: &[String]) -> i32 {
    let mut mapping_file = None;
    let mut event_file = None;
    let mut i = 0;
    while i < args.len() {
        let slot = match args[i].as_str() {
            "--mapping" => &mut mapping_file,
            "--event" => &mut event_file,
            other => {
                return crate::command_line::usage_error(&format!("{other}: usage: d365-trigger-relay {USAGE} (checks a document offline; no other option)"))
            }
        };
        let Some(value) = args.get(i + 1) else { return crate::command_line::usage_error(&format!("{} needs a FILE", args[i])) };
        if slot.replace(value.clone()).is_some() {
            return crate::command_line::usage_error(&format!("{} given twice", args[i]));
        }
        i += 2;
    }
    let Some(mapping_file) = mapping_file else { return crate::command_line::usage_error(&format!("usage: d365-trigger-relay {USAGE}")) };
    let text = match std::fs::read_to_string(&mapping_file) {
        Ok(text) => text,
        Err(e) => return crate::command_line::usage_error(&format!("--mapping {mapping_file}: cannot read it: {e}")),
    };
    let event = match &event_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(event @ Value::Object(_)) => Some(event),
            Ok(_) => return crate::command_line::usage_error(&format!("--event {path}: not one event (a JSON object)")),
            Err(e) => return crate::command_line::usage_error(&format!("--event {path}: {e}")),
        },
    };
    let found = problems(&text);
    if !found.is_empty() {
        for problem in &found {
            println!("{problem}");
        }
        eprintln!("{mapping_file}: {} problem(s); the relay would refuse this document", found.len());
        return 1;
    }
    let mapping = Mapping::parse(&text).expect("a document without problems parses");
    println!("{mapping_file}: a valid mapping document ({} events)", mapping.events.len());
    if let Some(notice) = preset_notice(&mapping) {
        print!("{notice}");
    }
    if let Some(event) = event {
        for line in explain(&mapping, &event) {
            println!("{line}");
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(text: &str) -> Vec<String> {
        problems(text).into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_spec_s_example_is_named_by_its_pointer() {
        let doc = r#"{"events": {"Order Completed": {"rows": [
            {"entity": "accounts", "key": {"accountnumber": "properties.account_id"}},
            {"entity": "opportunities", "key": {"new_orderid": "properties.order_id"}, "mode": "upsrt"}]}}}"#;
        assert_eq!(pointers(doc), vec![r#"/events/Order Completed/rows/1/mode: unknown mode "upsrt" (upsert, update, create)"#]);
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let doc = r#"{"evnts": {}, "trigger": "bad-name", "defaults": {"action": "keep"},
            "events": {"A/B": {"attributes": {"x": "a..b"}, "required": ["y"]}}, "consent": {"categories": []}}"#;
        let found = pointers(doc);
        assert_eq!(found.len(), 6, "{found:#?}");
        assert!(found[0].starts_with("/evnts: unknown key \"evnts\""), "{}", found[0]);
        assert!(found[0].ends_with("did you mean \"events\"?"), "{}", found[0]);
        assert!(found.contains(&"/events/A~1B/attributes/x: \"a..b\" is not a dotted path such as properties.order_id".to_string()), "{found:#?}");
        assert!(found.contains(&"/events/A~1B/required/0: \"y\" is not one of the event's attributes".to_string()), "{found:#?}");
    }

    #[test]
    fn the_parser_has_the_last_word() {
        assert!(problems(r#"{"events": {"A": {"attributes": {"x": "p.x"}}}}"#).is_empty());
        assert_eq!(pointers("{\"events\": "), vec!["".to_string() + ": not JSON: EOF while parsing a value at line 1 column 11"]);
        assert_eq!(pointers("[]"), vec![": must be a mapping document (a JSON object), not a list"]);
    }

    #[test]
    fn the_preset_is_noticed() {
        let notice = preset_notice(&Mapping::default_preset()).unwrap();
        for event in ["Signed Up", "Lead Generated", "Product Added", "Order Completed"] {
            assert!(notice.contains(event), "{notice}");
        }
        assert!(preset_notice(&Mapping::parse(r#"{"events": {"A": {}}}"#).unwrap()).is_none());
    }
}
