//! The Dataverse Web API: custom-trigger calls checked against the trigger
//! definitions, with the faults of [`Faults`](crate::Faults) injected.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{Signal, TriggerDef};
use crate::{dataverse_error, empty, timestamp, Answer, Dropped, Reply, State};

/// Decrements the in-flight count however the call ends.
struct InFlight<'a>(&'a State);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) async fn trigger(state: &State, trigger: &str, path: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    let authorization = headers.get("authorization").map(String::as_str);
    let now_in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(state);
    state.max_in_flight.fetch_max(now_in_flight, Ordering::SeqCst);
    let faults = state.faults.lock().unwrap().clone();
    let (roll, jitter, slow) = {
        let mut dice = state.dice.lock().unwrap();
        (dice.f64(), if faults.latency_jitter_ms > 0 { dice.u64(0..=faults.latency_jitter_ms) } else { 0 }, dice.f64() < faults.slow_rate)
    };
    let record = |status: u16, body: Value| {
        state.count(status);
        state.signals.lock().unwrap().push(Signal {
            trigger: trigger.to_string(),
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), if k == "authorization" && v.starts_with("Bearer ") { "Bearer <token>".to_string() } else { v.clone() }))
                .collect(),
            body,
            status,
            received_at: timestamp(),
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
        let mut faults = state.faults.lock().unwrap();
        (!faults.script.is_empty()).then(|| faults.script.remove(0))
    };
    match scripted {
        Some(0) => {
            state.count(0);
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
        state.count(0);
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

    let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    let valid = state.tokens.lock().unwrap().get(token).is_some_and(|(expires, _)| *expires > Instant::now());
    if !valid {
        record(401, parsed);
        let mut r = dataverse_error(401, "0x80072243", "The user is not authenticated: the token is missing, unknown or expired.");
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize".parse().expect("a header value"),
        );
        return Ok(r);
    }
    let definition = state.triggers.lock().unwrap().get(trigger).cloned();
    let Some(definition) = definition else {
        record(404, parsed);
        return Ok(dataverse_error(404, "0x8006088a", &format!("Resource not found for the segment '{trigger}'.")));
    };
    let problem = check_body(&definition, &parsed);
    match problem {
        Some((code, message)) => {
            record(400, parsed);
            Ok(with_hint(dataverse_error(400, code, &message)))
        }
        None => {
            record(204, parsed);
            Ok(with_hint(empty(204)))
        }
    }
}

/// The system parameters every trigger takes.
const SYSTEM_PARAMETERS: &[(&str, &str, bool)] = &[
    ("msdynmkt_profileid", "String", true),
    ("msdynmkt_signaluserauthid", "String", false),
    ("msdynmkt_signaltimestamp", "DateTime", false),
    ("msdynmkt_signalingestiontimestamp", "DateTime", false),
    ("contactpoint_email", "String", false),
    ("contactpoint_phone", "String", false),
];

/// Dataverse's 400s: unknown parameter, null, wrong type, missing required.
fn check_body(definition: &TriggerDef, body: &Value) -> Option<(&'static str, String)> {
    let Some(object) = body.as_object() else {
        return Some(("0x80048d19", "Error identified in Payload provided by the user for Entity :'', the request body is not a JSON object.".into()));
    };
    let lookup = |name: &str| -> Option<(String, bool)> {
        SYSTEM_PARAMETERS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, kind, required)| (kind.to_string(), *required))
            .or_else(|| definition.parameters.get(name).map(|p| (p.kind.clone(), p.required)))
    };
    for (name, value) in object {
        let Some((kind, _)) = lookup(name) else {
            return Some(("0x80060888", format!("The parameter '{name}' in the request payload is not a valid parameter for the operation '{}'.", definition.name)));
        };
        if value.is_null() {
            return Some(("0x80040203", format!("Parameter '{name}' cannot be null.")));
        }
        if !type_matches(&kind, value) {
            return Some(("0x80048d19", format!("Cannot convert the literal for parameter '{name}' to the expected type 'Edm.{kind}'.")));
        }
    }
    let required = SYSTEM_PARAMETERS
        .iter()
        .filter(|(_, _, r)| *r)
        .map(|(n, _, _)| n.to_string())
        .chain(definition.parameters.iter().filter(|(_, p)| p.required).map(|(n, _)| n.clone()));
    for name in required {
        if !object.contains_key(&name) {
            return Some(("0x80040203", format!("Required field '{name}' is missing")));
        }
    }
    None
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match kind {
        "String" | "Guid" => value.is_string(),
        "DateTime" => value.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        "Integer" | "Picklist" => value.is_i64() || value.is_u64(),
        "Decimal" | "Float" | "Money" => value.is_number(),
        "Boolean" => value.is_boolean(),
        "StringArray" => value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        _ => true,
    }
}
