//! Dataverse table rows (SPEC §10, §14, §19): `accounts`, `contacts`, `leads`
//! and `opportunities` (and any other set the config seeds), answering `GET`
//! with an `eq` `$filter`, `$select` and `$top`; `POST` (create, `Prefer:
//! return=representation`); `PATCH /{set}({id})` and `PATCH
//! /{set}({column}={value},…)` by an alternate key the entity defines (400 for
//! one it does not, as Dataverse), honouring `If-Match: *` (404 when the row is
//! missing) and `If-None-Match: *` (412 when it exists). Bodies are checked
//! against the entity's definition ([`crate::entities`]): unknown columns and
//! values of the wrong type are 400s, and `{property}@odata.bind` is resolved
//! (404 when the bound row is missing) into the lookup's `_{column}_value`.
//! Every request is logged and counted (apart from trigger calls) so tests can
//! assert the relay's cache; the `rows_*` faults apply here only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::config::RowRequest;
use crate::dataverse::Dataverse;
use crate::entities;
use crate::{dataverse_error, empty, json_response, timestamp, Answer, Dropped, Env, Reply};

/// The sets every sandbox has, even when the config seeds no rows.
pub(crate) const DEFAULT_SETS: &[&str] = &["accounts", "contacts", "leads", "opportunities"];
/// Columns every contact and lead has, whether or not a seeded row sets them.
const STANDARD_COLUMNS: &[&str] =
    &["emailaddress1", "emailaddress2", "emailaddress3", "firstname", "lastname", "fullname", "mobilephone", "telephone1", "companyname"];

/// `contacts` → `contactid`.
pub(crate) fn id_column(set: &str) -> String {
    let singular = set.strip_suffix("ies").map(|s| format!("{s}y")).unwrap_or_else(|| set.strip_suffix('s').unwrap_or(set).to_string());
    format!("{singular}id")
}

fn singular(set: &str) -> String {
    id_column(set).trim_end_matches("id").to_string()
}

/// The tables (entity set → rows) of one environment and the requests made
/// of them (the log of every environment's requests is the sandbox's).
pub(crate) struct Tables {
    pub(crate) rows: Mutex<BTreeMap<String, Vec<Value>>>,
    requests: AtomicU64,
}

impl Tables {
    /// The default sets, and the rows the config seeds.
    pub(crate) fn new(seeded: BTreeMap<String, Vec<Value>>) -> Tables {
        Tables { rows: Mutex::new(DEFAULT_SETS.iter().map(|s| (s.to_string(), Vec::new())).chain(seeded).collect()), requests: AtomicU64::new(0) }
    }

    pub(crate) fn rows(&self, set: &str) -> Vec<Value> {
        self.rows.lock().unwrap().get(set).cloned().unwrap_or_default()
    }

    pub(crate) fn set_rows(&self, set: &str, rows: Vec<Value>) {
        self.rows.lock().unwrap().insert(set.to_string(), rows);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
    }
}

pub(crate) fn is_table(env: &Env<'_>, segment: &str) -> bool {
    let set = segment.split('(').next().unwrap_or(segment);
    env.dataverse.tables.rows.lock().unwrap().contains_key(set)
}

fn columns(rows: &[Value], set: &str) -> Vec<String> {
    let mut columns: Vec<String> = match entities::definition(set) {
        Some(definition) => definition.all_columns().into_iter().map(|(c, _)| c.to_string()).collect(),
        None => STANDARD_COLUMNS.iter().map(|c| c.to_string()).collect(),
    };
    columns.push(id_column(set));
    for row in rows {
        if let Some(object) = row.as_object() {
            columns.extend(object.keys().cloned());
        }
    }
    columns
}

fn no_property(set: &str, name: &str) -> Reply {
    dataverse_error(400, "0x80060888", &format!("Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.", singular(set)))
}

fn new_id(dataverse: &Dataverse) -> String {
    let mut dice = dataverse.dice.lock().unwrap();
    let hex = |dice: &mut fastrand::Rng, n: usize| (0..n).map(|_| char::from_digit(dice.u32(0..16), 16).expect("a hex digit")).collect::<String>();
    format!("{}-{}-4{}-8{}-{}", hex(&mut dice, 8), hex(&mut dice, 4), hex(&mut dice, 3), hex(&mut dice, 3), hex(&mut dice, 12))
}

pub(crate) async fn handle(env: &Env<'_>, method: &str, segment: &str, query: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    let arrived = Instant::now();
    let (state, dataverse) = (env.state, &*env.dataverse);
    let tables = &dataverse.tables;
    tables.requests.fetch_add(1, Ordering::SeqCst);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let log = |status: u16| {
        let kept = ["prefer", "if-match", "if-none-match", "content-type"];
        state.row_log.lock().unwrap().push(RowRequest {
            environment: dataverse.name.clone(),
            method: method.to_string(),
            path: segment.to_string(),
            query: pairs.iter().cloned().collect(),
            headers: headers.iter().filter(|(k, _)| kept.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect(),
            body: parsed.clone(),
            status,
            received_at: timestamp(),
        });
    };
    let faults = env.faults().lock().unwrap().clone();
    if faults.rows_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.rows_latency_ms)).await;
    }
    let scripted = {
        let mut faults = env.faults().lock().unwrap();
        (!faults.rows_script.is_empty()).then(|| faults.rows_script.remove(0))
    };
    match scripted {
        Some(0) => {
            log(0);
            return Err(Dropped);
        }
        Some(429) => {
            log(429);
            let mut r = dataverse_error(429, "0x80072322", "Number of requests exceeded the limit (scripted).");
            r.headers_mut().insert("retry-after", faults.retry_after_secs.unwrap_or(1).to_string().parse().expect("a header value"));
            return Ok(r);
        }
        Some(status) if status >= 400 => {
            log(status);
            return Ok(dataverse_error(status, "0x80040216", &format!("Scripted answer {status}.")));
        }
        _ => {}
    }
    let token = headers.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    if !env.is_valid(token) {
        log(401);
        return Ok(dataverse_error(401, "0x80072243", "The user is not authenticated: the token is missing, unknown or expired."));
    }
    let client_id = state.entra.holder(token);
    if let Some(reply) = crate::dataverse::forbidden(&faults, &client_id) {
        log(403);
        return Ok(reply);
    }
    // The request and time budgets are met late: after the request has run.
    let remaining = match dataverse.admit(&faults.limits, &client_id, arrived, Duration::from_millis(faults.rows_latency_ms)) {
        Ok(remaining) => remaining,
        Err(reply) => {
            log(429);
            return Ok(*reply);
        }
    };
    let reply = match method {
        "GET" => query_rows(dataverse, segment, &pairs),
        "POST" => create(dataverse, segment, &parsed, headers),
        "PATCH" => update(dataverse, segment, &parsed, headers),
        _ => dataverse_error(405, "0x80060888", &format!("{method} is not supported on {segment} by this sandbox")),
    };
    log(reply.status().as_u16());
    Ok(crate::protection::with_headers(reply, remaining))
}

/// `GET {set}?$select=a,b&$filter=attr eq 'value'&$top=n`.
fn query_rows(dataverse: &Dataverse, set: &str, pairs: &[(String, String)]) -> Reply {
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim().to_string());
    let tables = dataverse.tables.rows.lock().unwrap();
    let rows = tables.get(set).cloned().unwrap_or_default();
    let known = columns(&rows, set);
    let select: Vec<String> = get("$select").map(|s| s.split(',').map(|c| c.trim().to_string()).collect()).unwrap_or_default();
    if let Some(unknown) = select.iter().find(|c| !known.contains(c)) {
        return no_property(set, unknown);
    }
    let filter = get("$filter").unwrap_or_default();
    let condition = if filter.is_empty() {
        None
    } else {
        let Some((attribute, literal)) = filter.split_once(" eq '").and_then(|(a, rest)| rest.strip_suffix('\'').map(|l| (a.trim(), l))) else {
            return dataverse_error(400, "0x80060888", &format!("The query parameter $filter '{filter}' is not supported by this sandbox (attribute eq '…')."));
        };
        // An OData string literal: '' is one quote; a lone quote ends the literal early.
        if literal.replace("''", "").contains('\'') {
            return dataverse_error(400, "0x80060888", &format!("Syntax error in $filter '{filter}': unescaped quote."));
        }
        if !known.iter().any(|c| c == attribute) {
            return no_property(set, attribute);
        }
        Some((attribute.to_string(), literal.replace("''", "'")))
    };
    let top = get("$top").and_then(|t| t.parse::<usize>().ok()).unwrap_or(5000);
    let matching: Vec<Value> = rows
        .iter()
        .filter(|row| match &condition {
            // Dataverse compares strings without regard to case.
            Some((attribute, value)) => row.get(attribute).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(value)),
            None => true,
        })
        .take(top)
        .map(|row| {
            let mut out = Map::new();
            for column in if select.is_empty() { row.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default() } else { select.clone() } {
                out.insert(column.clone(), row.get(&column).cloned().unwrap_or(Value::Null));
            }
            Value::Object(out)
        })
        .collect();
    json_response(200, &json!({ "@odata.context": format!("$metadata#{set}"), "value": matching }))
}

/// How a row is addressed: by its id, or by the values of an alternate key.
enum Address {
    Id(String),
    Key(Vec<(String, Literal)>),
}

/// A key value as written in the URL: `'text'` (quotes doubled) or bare (`42`).
enum Literal {
    Quoted(String),
    Bare(String),
}

impl Literal {
    fn text(&self) -> &str {
        match self {
            Literal::Quoted(t) | Literal::Bare(t) => t,
        }
    }

    /// The value a created row stores.
    fn value(&self) -> Value {
        match self {
            Literal::Quoted(t) => Value::String(t.clone()),
            Literal::Bare(t) => t.parse::<i64>().map(Value::from).or_else(|_| t.parse::<f64>().map(Value::from)).unwrap_or_else(|_| Value::String(t.clone())),
        }
    }
}

/// `%XX` sequences decoded (a path segment; `+` stays `+`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad_key(set: &str, detail: &str) -> Reply {
    dataverse_error(400, "0x80060888", &format!("Invalid key for the entity set '{set}': {detail}"))
}

/// `{set}({inner})` → the set and how the row is addressed; 400 for a key the entity does not define.
fn address(segment: &str) -> Result<(String, Address), Box<Reply>> {
    let Some((set, inner)) = segment.strip_suffix(')').and_then(|s| s.split_once('(')) else {
        return Err(Box::new(dataverse_error(400, "0x80060888", &format!("PATCH needs a row: {segment}({{id}}) or {segment}({{key}}={{value}})"))));
    };
    let inner = percent_decode(inner);
    if !inner.contains('=') {
        return Ok((set.to_string(), Address::Id(inner.trim_matches('\'').to_string())));
    }
    // Split on the commas outside quoted literals.
    let mut parts = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in inner.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    let mut key = Vec::new();
    for part in parts {
        let Some((column, literal)) = part.split_once('=') else { return Err(Box::new(bad_key(set, &format!("'{part}' is not column=value")))) };
        let literal = match literal.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')) {
            Some(text) if !text.replace("''", "").contains('\'') => Literal::Quoted(text.replace("''", "'")),
            Some(_) => return Err(Box::new(bad_key(set, "an unescaped quote in a string literal"))),
            None => Literal::Bare(literal.to_string()),
        };
        key.push((column.trim().to_string(), literal));
    }
    let columns: Vec<&str> = key.iter().map(|(c, _)| c.as_str()).collect();
    let Some(definition) = entities::definition(set).filter(|d| d.is_key(&columns)) else {
        return Err(Box::new(bad_key(
            set,
            &format!("{} is not an alternate key of this table (define one, or address the row by its id)", columns.join(", ")),
        )));
    };
    for (column, literal) in &key {
        let kind = definition.column_type(column).unwrap_or("String");
        let quoted = matches!(literal, Literal::Quoted(_));
        if quoted != matches!(kind, "String" | "Memo") {
            return Err(Box::new(dataverse_error(
                400,
                "0x80048d19",
                &format!("Cannot convert the literal for key '{column}' to the expected type 'Edm.{}'.", edm(kind)),
            )));
        }
    }
    Ok((set.to_string(), Address::Key(key)))
}

fn edm(kind: &str) -> &'static str {
    match kind {
        "Integer" | "Picklist" | "State" | "Status" => "Int32",
        "BigInt" => "Int64",
        "Money" | "Decimal" => "Decimal",
        "Double" => "Double",
        "Boolean" => "Boolean",
        "DateTime" => "DateTimeOffset",
        "Uniqueidentifier" | "Lookup" | "Customer" | "Owner" => "Guid",
        _ => "String",
    }
}

/// The position of the addressed row in `rows`.
fn find(rows: &[Value], set: &str, address: &Address) -> Option<usize> {
    let column = entities::definition(set).map_or_else(|| id_column(set), |d| d.primary_id.to_string());
    rows.iter().position(|row| match address {
        Address::Id(id) => row.get(&column).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(id)),
        Address::Key(key) => key.iter().all(|(c, literal)| match row.get(c) {
            // Dataverse compares strings without regard to case.
            Some(Value::String(v)) => v.eq_ignore_ascii_case(literal.text()),
            Some(Value::Number(n)) => n.to_string() == literal.text(),
            _ => false,
        }),
    })
}

fn missing(set: &str, address: &Address) -> Reply {
    match address {
        Address::Id(id) => dataverse_error(404, "0x80040217", &format!("{} With Id = {id} Does Not Exist", singular(set))),
        Address::Key(_) => dataverse_error(404, "0x80040217", &format!("A record with the specified key values does not exist in {} entity", singular(set))),
    }
}

/// Whether a value fits a column type as Dataverse reads JSON (null clears any column).
fn fits(kind: &str, value: &Value) -> bool {
    match kind {
        _ if value.is_null() => true,
        "String" | "Memo" | "Uniqueidentifier" => value.is_string(),
        "Integer" | "Picklist" | "State" | "Status" => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "BigInt" => value.as_i64().is_some(),
        "Money" | "Decimal" | "Double" => value.is_number(),
        "Boolean" => value.is_boolean(),
        "DateTime" => {
            value.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok() || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok())
        }
        _ => true,
    }
}

/// A write's body checked against the set's columns, its binds resolved: the values to store.
fn values(tables: &BTreeMap<String, Vec<Value>>, set: &str, body: &Value) -> Result<Map<String, Value>, Box<Reply>> {
    let Some(attributes) = body.as_object() else {
        return Err(Box::new(dataverse_error(400, "0x80048d19", "The request body is not a JSON object.")));
    };
    let rows = tables.get(set).map(Vec::as_slice).unwrap_or_default();
    let definition = entities::definition(set);
    // The defined (or standard) columns first; the seeded rows' own columns only for a name they lack.
    let standard = |name: &str| match definition {
        Some(d) => d.column_type(name).is_some(),
        None => STANDARD_COLUMNS.contains(&name) || name == id_column(set),
    };
    let known = |name: &str| standard(name) || rows.iter().any(|r| r.get(name).is_some());
    let mut out = Map::new();
    for (name, value) in attributes {
        if let Some(property) = name.strip_suffix("@odata.bind") {
            let Some(navigation) = definition.and_then(|d| d.navigation(property)) else {
                return Err(Box::new(dataverse_error(400, "0x80060888", &format!("An undeclared property '{property}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."))));
            };
            let Some(target) = value.as_str() else {
                return Err(Box::new(dataverse_error(400, "0x80048d19", &format!("The value of '{name}' must be a URL such as /accounts(id)."))));
            };
            let segment = target.rsplit_once("/v9.2/").map_or(target.trim_start_matches('/'), |(_, s)| s);
            let (bound_set, bound) = address(segment)?;
            if bound_set != navigation.target {
                return Err(Box::new(dataverse_error(400, "0x80048d19", &format!("'{property}' refers to {}, not {bound_set}.", navigation.target))));
            }
            let rows = tables.get(&bound_set).map(Vec::as_slice).unwrap_or_default();
            let Some(position) = find(rows, &bound_set, &bound) else { return Err(Box::new(missing(&bound_set, &bound))) };
            let id_column = entities::definition(&bound_set).map_or_else(|| id_column(&bound_set), |d| d.primary_id.to_string());
            out.insert(format!("_{}_value", navigation.column), rows[position].get(&id_column).cloned().unwrap_or(Value::Null));
            continue;
        }
        if !known(name) {
            return Err(Box::new(no_property(set, name)));
        }
        if let Some(kind) = definition.and_then(|d| d.column_type(name)) {
            if matches!(kind, "Lookup" | "Customer" | "Owner") && !value.is_null() {
                return Err(Box::new(dataverse_error(400, "0x80060888", &format!("A 'PrimitiveValue' node with non-null value was found when trying to read the value of the navigation property '{name}'; bind it with {name}@odata.bind."))));
            }
            if !fits(kind, value) {
                return Err(Box::new(dataverse_error(
                    400,
                    "0x80048d19",
                    &format!("Cannot convert the literal '{value}' to the expected type 'Edm.{}' for '{name}'.", edm(kind)),
                )));
            }
        }
        out.insert(name.clone(), value.clone());
    }
    Ok(out)
}

fn created(set: &str, id: &str) -> Reply {
    let mut reply = empty(204);
    reply.headers_mut().insert("odata-entityid", format!("http://sandbox/api/data/v9.2/{set}({id})").parse().expect("a header value"));
    reply
}

/// `POST {set}`: a new row with a new id; 201 with it under `Prefer: return=representation`, else 204 + `OData-EntityId`.
fn create(dataverse: &Dataverse, set: &str, body: &Value, headers: &BTreeMap<String, String>) -> Reply {
    let mut tables = dataverse.tables.rows.lock().unwrap();
    let mut row = match values(&tables, set, body) {
        Ok(row) => row,
        Err(reply) => return *reply,
    };
    let id = new_id(dataverse);
    row.insert(entities::definition(set).map_or_else(|| id_column(set), |d| d.primary_id.to_string()), Value::String(id.clone()));
    tables.entry(set.to_string()).or_default().push(Value::Object(row.clone()));
    if headers.get("prefer").is_some_and(|p| p.contains("return=representation")) {
        return json_response(201, &Value::Object(row));
    }
    created(set, &id)
}

/// `PATCH {set}({id})` or `PATCH {set}({key}={value},…)`: an upsert; with
/// `If-Match: *` an update of an existing row only (404 if none), with
/// `If-None-Match: *` a create only (412 if the row exists).
fn update(dataverse: &Dataverse, segment: &str, body: &Value, headers: &BTreeMap<String, String>) -> Reply {
    let (set, address) = match address(segment) {
        Ok(a) => a,
        Err(reply) => return *reply,
    };
    let mut tables = dataverse.tables.rows.lock().unwrap();
    let attributes = match values(&tables, &set, body) {
        Ok(values) => values,
        Err(reply) => return *reply,
    };
    let rows = tables.entry(set.clone()).or_default();
    let existing = find(rows, &set, &address);
    let must_exist = headers.get("if-match").is_some_and(|v| v == "*");
    let must_not_exist = headers.get("if-none-match").is_some_and(|v| v == "*");
    match existing {
        // Dataverse answers this 412 with an empty error code.
        Some(_) if must_not_exist => dataverse_error(412, "", "A record with matching key values already exists."),
        Some(position) => {
            if let Some(object) = rows[position].as_object_mut() {
                object.extend(attributes);
            }
            empty(204)
        }
        None if must_exist => missing(&set, &address),
        None => {
            // An upsert that creates: the key's values are the new row's.
            let column = entities::definition(&set).map_or_else(|| id_column(&set), |d| d.primary_id.to_string());
            let mut row = attributes;
            let id = match &address {
                Address::Id(id) => id.clone(),
                Address::Key(key) => {
                    for (c, literal) in key {
                        row.insert(c.clone(), literal.value());
                    }
                    new_id(dataverse)
                }
            };
            row.insert(column, Value::String(id.clone()));
            rows.push(Value::Object(row));
            created(&set, &id)
        }
    }
}
