//! Dataverse table rows (SPEC §10, §14): `contacts` and `leads` (and any other
//! set the config seeds), answering `GET` with an `eq` `$filter`, `$select`
//! and `$top`; `POST` (create, `Prefer: return=representation`); `PATCH
//! /{set}({id})` honouring `If-Match: *`. Every request is logged and counted
//! (apart from trigger calls) so tests can assert the relay's cache; the
//! `rows_*` faults apply here only.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::config::RowRequest;
use crate::{dataverse_error, empty, json_response, timestamp, Answer, Dropped, Reply, State};

/// The sets every sandbox has, even when the config seeds no rows.
pub(crate) const DEFAULT_SETS: &[&str] = &["contacts", "leads"];
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

pub(crate) fn is_table(state: &State, segment: &str) -> bool {
    let set = segment.split('(').next().unwrap_or(segment);
    state.rows.lock().unwrap().contains_key(set)
}

fn columns(rows: &[Value], set: &str) -> Vec<String> {
    let mut columns: Vec<String> = STANDARD_COLUMNS.iter().map(|c| c.to_string()).collect();
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

fn new_id(state: &State) -> String {
    let mut dice = state.dice.lock().unwrap();
    let hex = |dice: &mut fastrand::Rng, n: usize| (0..n).map(|_| char::from_digit(dice.u32(0..16), 16).expect("a hex digit")).collect::<String>();
    format!("{}-{}-4{}-8{}-{}", hex(&mut dice, 8), hex(&mut dice, 4), hex(&mut dice, 3), hex(&mut dice, 3), hex(&mut dice, 12))
}

pub(crate) async fn handle(state: &State, method: &str, segment: &str, query: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    state.row_requests.fetch_add(1, Ordering::SeqCst);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let log = |status: u16| {
        let kept = ["prefer", "if-match", "content-type"];
        state.row_log.lock().unwrap().push(RowRequest {
            method: method.to_string(),
            path: segment.to_string(),
            query: pairs.iter().cloned().collect(),
            headers: headers.iter().filter(|(k, _)| kept.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect(),
            body: parsed.clone(),
            status,
            received_at: timestamp(),
        });
    };
    let faults = state.faults.lock().unwrap().clone();
    if faults.rows_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.rows_latency_ms)).await;
    }
    let scripted = {
        let mut faults = state.faults.lock().unwrap();
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
    if state.tokens.lock().unwrap().get(token).is_none_or(|(expires, _)| *expires <= Instant::now()) {
        log(401);
        return Ok(dataverse_error(401, "0x80072243", "The user is not authenticated: the token is missing, unknown or expired."));
    }
    let client_id = state.token_clients.lock().unwrap().get(token).cloned().unwrap_or_default();
    if let Some(reply) = crate::dataverse::forbidden(&state.faults.lock().unwrap(), &client_id) {
        log(403);
        return Ok(reply);
    }
    let reply = match method {
        "GET" => query_rows(state, segment, &pairs),
        "POST" => create(state, segment, &parsed, headers),
        "PATCH" => update(state, segment, &parsed, headers),
        _ => dataverse_error(405, "0x80060888", &format!("{method} is not supported on {segment} by this sandbox")),
    };
    log(reply.status().as_u16());
    Ok(reply)
}

/// `GET {set}?$select=a,b&$filter=attr eq 'value'&$top=n`.
fn query_rows(state: &State, set: &str, pairs: &[(String, String)]) -> Reply {
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim().to_string());
    let tables = state.rows.lock().unwrap();
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

/// `POST {set}`: a new row with a new id; 201 with it under `Prefer: return=representation`, else 204 + `OData-EntityId`.
fn create(state: &State, set: &str, body: &Value, headers: &BTreeMap<String, String>) -> Reply {
    let Some(attributes) = body.as_object() else {
        return dataverse_error(400, "0x80048d19", "The request body is not a JSON object.");
    };
    let mut tables = state.rows.lock().unwrap();
    let rows = tables.entry(set.to_string()).or_default();
    let known = columns(rows, set);
    if let Some(unknown) = attributes.keys().find(|c| !known.contains(c)) {
        return no_property(set, unknown);
    }
    let id = new_id(state);
    let mut row = attributes.clone();
    row.insert(id_column(set), Value::String(id.clone()));
    rows.push(Value::Object(row.clone()));
    if headers.get("prefer").is_some_and(|p| p.contains("return=representation")) {
        return json_response(201, &Value::Object(row));
    }
    let mut reply = empty(204);
    reply.headers_mut().insert("odata-entityid", format!("http://sandbox/api/data/v9.2/{set}({id})").parse().expect("a header value"));
    reply
}

/// `PATCH {set}({id})`: with `If-Match: *` an update of an existing row only (404 if none).
fn update(state: &State, segment: &str, body: &Value, headers: &BTreeMap<String, String>) -> Reply {
    let Some((set, id)) = segment.strip_suffix(')').and_then(|s| s.split_once('(')) else {
        return dataverse_error(400, "0x80060888", &format!("PATCH needs a row: {segment}({{id}})"));
    };
    let Some(attributes) = body.as_object() else {
        return dataverse_error(400, "0x80048d19", "The request body is not a JSON object.");
    };
    let mut tables = state.rows.lock().unwrap();
    let rows = tables.entry(set.to_string()).or_default();
    let known = columns(rows, set);
    if let Some(unknown) = attributes.keys().find(|c| !known.contains(c)) {
        return no_property(set, unknown);
    }
    let column = id_column(set);
    let existing = rows.iter_mut().find(|r| r.get(&column).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(id)));
    match (existing, headers.get("if-match").map(String::as_str)) {
        (Some(row), _) => {
            if let Some(object) = row.as_object_mut() {
                object.extend(attributes.clone());
            }
            empty(204)
        }
        (None, Some("*")) => dataverse_error(404, "0x80040217", &format!("{} With Id = {id} Does Not Exist", singular(set))),
        (None, _) => {
            // Without If-Match a PATCH is an upsert.
            let mut row = attributes.clone();
            row.insert(column, Value::String(id.to_string()));
            rows.push(Value::Object(row));
            empty(204)
        }
    }
}
