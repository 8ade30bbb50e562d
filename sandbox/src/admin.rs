//! Admin endpoints under `/_sandbox/`: what was received, faults, secrets,
//! apps, triggers and table rows — each read from or handed to its service.

use std::sync::atomic::Ordering;

use hyper::Method;
use serde_json::{json, Value};

use crate::config::{App, Faults, TriggerDef};
use crate::{empty, json_response, Reply, State};

pub(crate) fn handle(state: &State, method: &Method, path: &[&str], body: &[u8]) -> Reply {
    let bad = |message: String| json_response(400, &json!({ "error": message }));
    match (method, path) {
        (&Method::GET, ["signals"]) => json_response(200, &serde_json::to_value(&*state.signals.lock().unwrap()).expect("signals serialise")),
        (&Method::GET, ["environments"]) => json_response(200, &json!(state.environments.lock().unwrap().keys().collect::<Vec<_>>())),
        (_, ["environments", host, rest @ ..]) => environment(state, method, host, rest, body),
        (&Method::GET, ["queues", name]) => json_response(200, &serde_json::to_value(state.sqs.queues.lock().unwrap().peek(name)).expect("messages serialise")),
        (&Method::GET, ["visibility"]) => {
            json_response(200, &serde_json::to_value(&state.sqs.queues.lock().unwrap().visibility_changes).expect("changes serialise"))
        }
        (&Method::GET, ["rows"]) => json_response(200, &serde_json::to_value(&*state.dataverse.tables.rows.lock().unwrap()).expect("rows serialise")),
        (&Method::GET, ["rows", set]) => json_response(200, &Value::Array(state.dataverse.tables.rows(set))),
        (&Method::PUT, ["rows", set]) => match serde_json::from_slice::<Vec<Value>>(body) {
            Ok(rows) => {
                state.dataverse.tables.set_rows(set, rows);
                empty(204)
            }
            Err(e) => bad(format!("not a list of rows: {e}")),
        },
        (&Method::GET, ["stats"]) => json_response(200, &serde_json::to_value(state.stats()).expect("stats serialise")),
        (&Method::POST, ["reset"]) => {
            state.reset();
            empty(204)
        }
        (&Method::GET, ["faults"]) => json_response(200, &serde_json::to_value(state.faults()).expect("faults serialise")),
        (&Method::PUT | &Method::POST, ["faults"]) => match serde_json::from_slice::<Faults>(body) {
            Ok(faults) => {
                state.set_faults(faults);
                empty(204)
            }
            Err(e) => bad(format!("not a faults document: {e}")),
        },
        (&Method::PUT, ["secrets", name]) => match serde_json::from_slice::<Value>(body) {
            Ok(value) => {
                state.put_secret(name, &value, false);
                empty(204)
            }
            Err(e) => bad(format!("not JSON: {e}")),
        },
        (&Method::PUT, ["apps"]) => match serde_json::from_slice::<Vec<App>>(body) {
            Ok(apps) => {
                state.entra.set_apps(apps);
                empty(204)
            }
            Err(e) => bad(format!("not a list of apps: {e}")),
        },
        (&Method::PUT, ["triggers"]) => match serde_json::from_slice::<Vec<TriggerDef>>(body) {
            Ok(triggers) => {
                state.dataverse.set_triggers(triggers);
                empty(204)
            }
            Err(e) => bad(format!("not a list of triggers: {e}")),
        },
        _ => json_response(
            404,
            &json!({ "error": "admin endpoints: GET signals, GET stats, GET rows, GET/PUT rows/{set}, POST reset, GET/PUT faults, PUT secrets/{name}, PUT apps, PUT triggers, GET environments, GET environments/{host}/signals|stats, GET/PUT/DELETE environments/{host}/faults, GET/PUT environments/{host}/rows/{set}" }),
        ),
    }
}

/// `/_sandbox/environments/{host}/…`: one Dataverse environment (SPEC §23.4).
fn environment(state: &State, method: &Method, host: &str, path: &[&str], body: &[u8]) -> Reply {
    let bad = |message: String| json_response(400, &json!({ "error": message }));
    let host = host.to_ascii_lowercase();
    let dataverse = state.environment(&host);
    match (method, path) {
        (&Method::GET, ["signals"]) => {
            let signals: Vec<_> = state.signals.lock().unwrap().iter().filter(|s| s.environment == host).cloned().collect();
            json_response(200, &serde_json::to_value(signals).expect("signals serialise"))
        }
        (&Method::GET, ["stats"]) => {
            let mut stats = crate::Stats::default();
            dataverse.stats(&mut stats);
            json_response(200, &serde_json::to_value(stats).expect("stats serialise"))
        }
        (&Method::GET, ["faults"]) => {
            let own = dataverse.own_faults.load(Ordering::SeqCst);
            let faults = if own { dataverse.faults.lock().unwrap().clone() } else { state.dataverse.faults.lock().unwrap().clone() };
            json_response(200, &json!({"own": own, "faults": crate::config::Faults::from_dataverse(faults)}))
        }
        (&Method::PUT | &Method::POST, ["faults"]) => match serde_json::from_slice::<Faults>(body) {
            Ok(faults) => {
                *dataverse.faults.lock().unwrap() = faults.split().dataverse;
                dataverse.own_faults.store(true, Ordering::SeqCst);
                empty(204)
            }
            Err(e) => bad(format!("not a faults document: {e}")),
        },
        (&Method::DELETE, ["faults"]) => {
            dataverse.own_faults.store(false, Ordering::SeqCst);
            empty(204)
        }
        (&Method::GET, ["rows", set]) => json_response(200, &Value::Array(dataverse.tables.rows(set))),
        (&Method::PUT, ["rows", set]) => match serde_json::from_slice::<Vec<Value>>(body) {
            Ok(rows) => {
                dataverse.tables.set_rows(set, rows);
                empty(204)
            }
            Err(e) => bad(format!("not a list of rows: {e}")),
        },
        _ => json_response(404, &json!({ "error": "environment endpoints: GET signals, GET stats, GET/PUT/DELETE faults, GET/PUT rows/{set}" })),
    }
}
