//! Admin endpoints under `/_sandbox/`: what was received, faults, secrets,
//! apps, triggers and table rows — each read from or handed to its service.

use hyper::Method;
use serde_json::{json, Value};

use crate::config::{App, Faults, TriggerDef};
use crate::{empty, json_response, Reply, State};

pub(crate) fn handle(state: &State, method: &Method, path: &[&str], body: &[u8]) -> Reply {
    let bad = |message: String| json_response(400, &json!({ "error": message }));
    match (method, path) {
        (&Method::GET, ["signals"]) => json_response(200, &serde_json::to_value(state.dataverse.signals()).expect("signals serialise")),
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
            &json!({ "error": "admin endpoints: GET signals, GET stats, GET rows, GET/PUT rows/{set}, POST reset, GET/PUT faults, PUT secrets/{name}, PUT apps, PUT triggers" }),
        ),
    }
}
