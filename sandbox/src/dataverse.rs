//! The Dataverse Web API: custom-trigger calls checked against the trigger
//! definitions, with the faults of [`Faults`](crate::Faults) injected; the
//! `customapis` metadata query; and the state of the emulated Dataverse (its
//! triggers, tables, service protection limits and what it received).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{Signal, TriggerDef};
use crate::protection::{self, Limits, Protection};
use crate::rows::Tables;
use crate::{dataverse_error, empty, timestamp, Answer, Dropped, Env, Reply};

/// The faults of [`Faults`](crate::Faults) that Dataverse injects (see there for each).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DataverseFaults {
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
    pub throttle_rate: f64,
    pub retry_after_secs: Option<u64>,
    pub error_rate: f64,
    pub unavailable_rate: f64,
    pub drop_rate: f64,
    pub slow_rate: f64,
    pub slow_ms: u64,
    pub script: Vec<u16>,
    pub max_concurrency: Option<usize>,
    pub dop_hint: Option<usize>,
    pub metadata_status: Option<u16>,
    pub entities_status: Option<u16>,
    pub rows_script: Vec<u16>,
    pub rows_latency_ms: u64,
    pub forbidden_clients: Vec<String>,
    /// The service protection limits (`budget_*`).
    pub limits: Limits,
}

/// What one emulated Dataverse environment holds and has seen: the default
/// one (requests without a path prefix, `name` empty) or the one a path
/// prefix names (`/{org_url_host}/api/data/v9.2/…`, SPEC §23.4).
pub(crate) struct Dataverse {
    /// The environment's host (`uat.api.crm.dynamics.com`); empty for the default one.
    pub(crate) name: String,
    /// Whether `faults` are the environment's own; else it answers under the default environment's.
    pub(crate) own_faults: AtomicBool,
    triggers: Mutex<HashMap<String, TriggerDef>>,
    pub(crate) tables: Tables,
    pub(crate) faults: Mutex<DataverseFaults>,
    /// The fault dice (and the ids of created rows), seeded so runs repeat.
    pub(crate) dice: Mutex<fastrand::Rng>,
    pub(crate) protection: Protection,
    calls_by_status: Mutex<BTreeMap<u16, u64>>,
    calls_per_minute: Mutex<BTreeMap<String, u64>>,
    metadata_requests: AtomicU64,
    /// `EntityDefinitions` queries received (SPEC §19).
    pub(crate) entity_requests: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Dataverse {
    pub(crate) fn new(name: &str, tables: Tables, seed: u64) -> Dataverse {
        Dataverse {
            name: name.to_string(),
            own_faults: AtomicBool::new(false),
            triggers: Mutex::new(HashMap::new()),
            tables,
            faults: Mutex::new(DataverseFaults::default()),
            dice: Mutex::new(fastrand::Rng::with_seed(seed)),
            protection: Protection::default(),
            calls_by_status: Mutex::new(BTreeMap::new()),
            calls_per_minute: Mutex::new(BTreeMap::new()),
            metadata_requests: AtomicU64::new(0),
            entity_requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_triggers(&self, triggers: Vec<TriggerDef>) {
        *self.triggers.lock().unwrap() = triggers.into_iter().map(|t| (t.name.clone(), t)).collect();
    }

    pub(crate) fn triggers(&self) -> Vec<TriggerDef> {
        let mut triggers: Vec<TriggerDef> = self.triggers.lock().unwrap().values().cloned().collect();
        triggers.sort_by(|a, b| a.name.cmp(&b.name));
        triggers
    }

    /// Adds this environment's counts to `stats` (the sums over environments;
    /// the largest concurrency seen in any one).
    pub(crate) fn stats(&self, stats: &mut crate::Stats) {
        for (status, n) in self.calls_by_status.lock().unwrap().iter() {
            *stats.calls_by_status.entry(*status).or_default() += n;
        }
        stats.max_concurrency_seen = stats.max_concurrency_seen.max(self.max_in_flight.load(Ordering::SeqCst));
        stats.metadata_requests += self.metadata_requests.load(Ordering::SeqCst);
        stats.entity_requests += self.entity_requests.load(Ordering::SeqCst);
        stats.row_requests += self.tables.requests();
        for (minute, n) in self.calls_per_minute.lock().unwrap().iter() {
            *stats.trigger_calls_per_minute.entry(minute.clone()).or_default() += n;
        }
        stats.sent_during_pause += self.protection.sent_during_pause();
    }

    pub(crate) fn reset(&self) {
        self.protection.reset();
        self.calls_by_status.lock().unwrap().clear();
        self.calls_per_minute.lock().unwrap().clear();
        self.metadata_requests.store(0, Ordering::SeqCst);
        self.entity_requests.store(0, Ordering::SeqCst);
        self.tables.reset();
        self.max_in_flight.store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// A trigger call received now, in its UTC minute.
    fn count_minute(&self) {
        let minute = chrono::Utc::now().format("%Y-%m-%dT%H:%M").to_string();
        *self.calls_per_minute.lock().unwrap().entry(minute).or_default() += 1;
    }

    fn count(&self, status: u16) {
        *self.calls_by_status.lock().unwrap().entry(status).or_default() += 1;
    }

    /// A request of the holder of `token` past the service protection limits
    /// (SPEC §17.2): what it has left, or the 429 to answer.
    /// `limits`: the budget faults the environment answers under.
    pub(crate) fn admit(&self, limits: &Limits, client: &str, arrived: Instant, executed: Duration) -> Result<protection::Remaining, Box<Reply>> {
        self.protection.admit(limits, client, arrived, executed)
    }
}

/// Decrements the in-flight count however the call ends.
struct InFlight<'a>(&'a Dataverse);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) async fn trigger(env: &Env<'_>, trigger: &str, path: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    let arrived = Instant::now();
    let (state, dataverse) = (env.state, &*env.dataverse);
    let authorization = headers.get("authorization").map(String::as_str);
    dataverse.count_minute();
    let now_in_flight = dataverse.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(dataverse);
    dataverse.max_in_flight.fetch_max(now_in_flight, Ordering::SeqCst);
    let faults = env.faults().lock().unwrap().clone();
    let (roll, jitter, slow) = {
        let mut dice = dataverse.dice.lock().unwrap();
        (dice.f64(), if faults.latency_jitter_ms > 0 { dice.u64(0..=faults.latency_jitter_ms) } else { 0 }, dice.f64() < faults.slow_rate)
    };
    let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    let client_id = state.entra.holder(token);
    let record = |status: u16, body: Value| {
        dataverse.count(status);
        state.signals.lock().unwrap().push(Signal {
            environment: dataverse.name.clone(),
            trigger: trigger.to_string(),
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), if k == "authorization" && v.starts_with("Bearer ") { "Bearer <token>".to_string() } else { v.clone() }))
                .collect(),
            body,
            status,
            received_at: timestamp(),
            client_id: client_id.clone(),
        });
    };
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let retry_after = faults.retry_after_secs.unwrap_or(1).to_string();
    let with_hint = |mut r: Reply| {
        if let Some(hint) = faults.dop_hint {
            r.headers_mut().insert("x-ms-dop-hint", hint.into());
        }
        r
    };
    let throttled = |code: &str, message: &str| {
        let mut r = dataverse_error(429, code, message);
        r.headers_mut().insert("retry-after", retry_after.parse().expect("a header value"));
        r
    };

    // Over the concurrency cap is refused at admission, as Dataverse does.
    if faults.max_concurrency.is_some_and(|cap| now_in_flight > cap) {
        record(429, parsed);
        return Ok(throttled("0x80072326", "Number of concurrent requests exceeded the limit."));
    }
    let delay = faults.latency_ms + jitter + if slow { faults.slow_ms } else { 0 };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let scripted = {
        let mut faults = env.faults().lock().unwrap();
        (!faults.script.is_empty()).then(|| faults.script.remove(0))
    };
    match scripted {
        Some(0) => {
            dataverse.count(0);
            return Err(Dropped);
        }
        Some(429) => {
            record(429, parsed);
            return Ok(throttled("0x80072322", "Number of requests exceeded the limit (scripted)."));
        }
        Some(status) if status >= 400 && status != 401 => {
            record(status, parsed);
            return Ok(dataverse_error(status, "0x80040216", &format!("Scripted answer {status}.")));
        }
        _ => {}
    }
    let mut edge = faults.drop_rate;
    if roll < edge {
        dataverse.count(0);
        return Err(Dropped);
    }
    edge += faults.throttle_rate;
    if roll < edge {
        record(429, parsed);
        return Ok(throttled("0x80072322", "Number of requests exceeded the limit of 6000 over time window of 300 seconds."));
    }
    edge += faults.error_rate;
    if roll < edge {
        record(500, parsed);
        return Ok(dataverse_error(500, "0x80040216", "An unexpected error occurred (sandbox fault)."));
    }
    edge += faults.unavailable_rate;
    if roll < edge {
        record(503, parsed);
        return Ok(dataverse_error(503, "0x80044151", "The service is temporarily unavailable (sandbox fault)."));
    }

    if !env.is_valid(token) {
        record(401, parsed);
        return Ok(unauthenticated());
    }
    if let Some(reply) = forbidden(&faults, &client_id) {
        record(403, parsed);
        return Ok(reply);
    }
    // The request and time budgets are met late: after the call has run.
    let remaining = match dataverse.admit(&faults.limits, &client_id, arrived, Duration::from_millis(delay)) {
        Ok(remaining) => remaining,
        Err(reply) => {
            record(429, parsed);
            return Ok(*reply);
        }
    };
    let definition = dataverse.triggers.lock().unwrap().get(trigger).cloned();
    let Some(definition) = definition else {
        record(404, parsed);
        return Ok(protection::with_headers(dataverse_error(404, "0x8006088a", &format!("Resource not found for the segment '{trigger}'.")), remaining));
    };
    let problem = check_body(&definition, &parsed);
    match problem {
        Some((code, message)) => {
            record(400, parsed);
            Ok(protection::with_headers(with_hint(dataverse_error(400, code, &message)), remaining))
        }
        None => {
            record(204, parsed);
            Ok(protection::with_headers(with_hint(empty(204)), remaining))
        }
    }
}

/// Dataverse's 401 for a missing, unknown or expired token.
pub(crate) fn unauthenticated() -> Reply {
    let mut r = dataverse_error(401, "0x80072243", "The user is not authenticated: the token is missing, unknown or expired.");
    r.headers_mut()
        .insert("www-authenticate", "Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize".parse().expect("a header value"));
    r
}

/// The system parameters of a custom trigger: the first four on every
/// trigger, the contact-point fallbacks only on triggers bound to a CI-Data
/// profile (Dataverse answers 400 "not a valid parameter" elsewhere).
const SYSTEM_PARAMETERS: &[(&str, &str, bool)] = &[
    ("msdynmkt_profileid", "String", true),
    ("msdynmkt_signaluserauthid", "String", false),
    ("msdynmkt_signaltimestamp", "DateTime", false),
    ("msdynmkt_signalingestiontimestamp", "DateTime", false),
];
const CONTACT_POINT_PARAMETERS: &[(&str, &str, bool)] = &[("contactpoint_email", "String", false), ("contactpoint_phone", "String", false)];

/// Every parameter of a trigger: (name, type, required, entity).
fn parameters_of(definition: &TriggerDef) -> Vec<(String, String, bool, Option<String>)> {
    let contact_points = if definition.has_contact_points() { CONTACT_POINT_PARAMETERS } else { &[] };
    SYSTEM_PARAMETERS
        .iter()
        .chain(contact_points)
        .map(|(n, k, r)| (n.to_string(), k.to_string(), *r, None))
        .chain(definition.parameters.iter().map(|(n, p)| (n.clone(), p.kind.clone(), p.required, p.entity.clone())))
        .collect()
}

/// Dataverse's code of a Custom API parameter type.
fn type_code(kind: &str) -> i64 {
    match kind {
        "Boolean" => 0,
        "DateTime" => 1,
        "Decimal" => 2,
        "Entity" => 3,
        "EntityCollection" => 4,
        "EntityReference" => 5,
        "Float" => 6,
        "Integer" => 7,
        "Money" => 8,
        "Picklist" => 9,
        "StringArray" => 11,
        "Guid" => 12,
        _ => 10,
    }
}

/// `GET /api/data/v9.2/customapis?$filter=uniquename eq '…'&$select=…&$expand=CustomAPIRequestParameters(…)`:
/// a trigger's definition as Dataverse describes it (SPEC §13), or `{"value": []}`.
pub(crate) fn custom_apis(env: &Env<'_>, query: &str, headers: &BTreeMap<String, String>) -> Reply {
    let dataverse = &*env.dataverse;
    dataverse.metadata_requests.fetch_add(1, Ordering::SeqCst);
    let token = headers.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    if !env.is_valid(token) {
        return dataverse_error(401, "0x80072243", "The user is not authenticated: the token is missing, unknown or expired.");
    }
    let limits = env.faults().lock().unwrap().limits.clone();
    let remaining = match dataverse.admit(&limits, &env.state.entra.holder(token), Instant::now(), Duration::ZERO) {
        Ok(remaining) => remaining,
        Err(reply) => return *reply,
    };
    protection::with_headers(definitions(env, query), remaining)
}

fn definitions(env: &Env<'_>, query: &str) -> Reply {
    let dataverse = &*env.dataverse;
    if let Some(status) = env.faults().lock().unwrap().metadata_status {
        return match status {
            403 => dataverse_error(403, "0x80040220", "Principal user is missing prvReadCustomAPI privilege (sandbox fault)."),
            s => dataverse_error(s, "0x80040216", &format!("Scripted metadata answer {s}.")),
        };
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim().to_string());
    let filter = get("$filter").unwrap_or_default();
    let Some(name) = filter.strip_prefix("uniquename eq '").and_then(|f| f.strip_suffix('\'')) else {
        return dataverse_error(400, "0x80060888", &format!("The query parameter $filter '{filter}' is not supported by this sandbox (uniquename eq '…')."));
    };
    let name = name.replace("''", "'");
    if !get("$expand").is_some_and(|e| e.starts_with("CustomAPIRequestParameters")) {
        return dataverse_error(400, "0x80060888", "This sandbox answers customapis queries that $expand CustomAPIRequestParameters.");
    }
    // Dataverse compares unique names without regard to case here; the trigger call does not.
    let definition = dataverse.triggers.lock().unwrap().values().find(|t| t.name.eq_ignore_ascii_case(&name)).cloned();
    let rows: Vec<Value> = definition
        .map(|d| {
            let parameters: Vec<Value> = parameters_of(&d)
                .into_iter()
                .map(|(n, kind, required, entity)| serde_json::json!({"uniquename": n, "type": type_code(&kind), "isoptional": !required, "logicalentityname": entity}))
                .collect();
            serde_json::json!({"uniquename": d.name, "CustomAPIRequestParameters": parameters})
        })
        .into_iter()
        .collect();
    crate::json_response(
        200,
        &serde_json::json!({"@odata.context": "$metadata#customapis(uniquename,CustomAPIRequestParameters(uniquename,type,isoptional,logicalentityname))", "value": rows}),
    )
}

/// Dataverse's 400s: unknown parameter, null, wrong type, missing required.
fn check_body(definition: &TriggerDef, body: &Value) -> Option<(&'static str, String)> {
    let Some(object) = body.as_object() else {
        return Some(("0x80048d19", "Error identified in Payload provided by the user for Entity :'', the request body is not a JSON object.".into()));
    };
    let parameters = parameters_of(definition);
    let lookup = |name: &str| parameters.iter().find(|(n, ..)| n == name).map(|(_, kind, _, entity)| (kind.clone(), entity.clone()));
    for (name, value) in object {
        let Some((kind, entity)) = lookup(name) else {
            return Some((
                "0x80060888",
                format!("The parameter '{name}' in the request payload is not a valid parameter for the operation '{}'.", definition.name),
            ));
        };
        if value.is_null() {
            return Some(("0x80040203", format!("Parameter '{name}' cannot be null.")));
        }
        if !type_matches(&kind, entity.as_deref(), value) {
            return Some(("0x80048d19", format!("Cannot convert the literal for parameter '{name}' to the expected type 'Edm.{kind}'.")));
        }
    }
    for name in parameters.iter().filter(|(_, _, required, _)| *required).map(|(n, ..)| n.clone()) {
        if !object.contains_key(&name) {
            return Some(("0x80040203", format!("Required field '{name}' is missing")));
        }
    }
    None
}

fn type_matches(kind: &str, entity: Option<&str>, value: &Value) -> bool {
    match kind {
        "EntityReference" => {
            let entity = entity.unwrap_or("");
            value.get("@odata.type").and_then(Value::as_str) == Some(&format!("Microsoft.Dynamics.CRM.{entity}"))
                && value.get(format!("{entity}id")).and_then(Value::as_str).is_some()
        }
        "Integer" | "Picklist" => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "String" | "Guid" => value.is_string(),
        "DateTime" => value.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        "Decimal" | "Float" | "Money" => value.is_number(),
        "Boolean" => value.is_boolean(),
        "StringArray" => value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        _ => true,
    }
}

/// A 403 for an application user that lacks the privilege (`forbidden_clients`), as Dataverse answers it.
pub(crate) fn forbidden(faults: &DataverseFaults, client_id: &str) -> Option<Reply> {
    faults.forbidden_clients.iter().any(|c| c == client_id).then(|| {
        dataverse_error(
            403,
            "0x80040220",
            &format!("Principal user (Id={client_id}, type=8, roleCount=0) is missing prvCreatemsdynmkt_trigger privilege (sandbox fault)."),
        )
    })
}
