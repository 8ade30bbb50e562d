//! Segment's HTTP API on the relay (SPEC §20): the paths that Segment's and
//! RudderStack's SDKs post to, and the calls of their bodies. Pointing an SDK's
//! `host` at the relay is all a sender changes; what the relay then does with a
//! call is what it does with any event (mapping, delivery, idempotency).

use serde_json::{Map, Value};

/// At most this many calls per request on a `/v1` path (Segment's own limit,
/// within [`crate::webhook::MAX_BODY_BYTES`]).
pub const MAX_CALLS: usize = 2_500;

/// A path of Segment's HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiPath {
    /// `/v1/track`, `/v1/identify`, … (and `/v1/t`, `/v1/i`, …): the body is one
    /// call, whose `type` defaults to this one.
    Call(&'static str),
    /// `/v1/batch`, `/v1/b` and `/v1/import`: `{"batch": [calls…], "context": …, "integrations": …}`.
    Batch,
}

/// The API path a request was posted to: its last two segments are `v1` and a
/// call name, whatever stage or prefix comes before (`/prod/v1/batch`). A
/// trailing slash is ignored; any other path is not Segment's API (`None`).
pub fn api_path(path: &str) -> Option<ApiPath> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let name = segments.next()?;
    if segments.next()? != "v1" {
        return None;
    }
    Some(match name {
        "track" | "t" => ApiPath::Call("track"),
        "identify" | "i" => ApiPath::Call("identify"),
        "page" | "p" => ApiPath::Call("page"),
        "screen" | "s" => ApiPath::Call("screen"),
        "group" | "g" => ApiPath::Call("group"),
        "alias" | "a" => ApiPath::Call("alias"),
        "batch" | "b" | "import" => ApiPath::Batch,
        _ => return None,
    })
}

/// The calls of a body posted to `api`. A single call takes the path's `type`
/// when it has none; a batch's top-level `context` and `integrations` are
/// merged into each of its calls ([`merge_defaults`]). The `writeKey` that
/// browser SDKs put in a call is authentication, not event data: it is removed
/// so that it never reaches a queue or a log.
pub fn calls(body: Value, api: ApiPath) -> Result<Vec<Value>, String> {
    match api {
        ApiPath::Call(kind) => {
            let Value::Object(mut call) = body else {
                return Err(format!("on /v1/{kind} the body must be one call object (a list of calls goes to /v1/batch)"));
            };
            call.remove("writeKey");
            if call.get("type").is_none_or(Value::is_null) {
                call.insert("type".into(), Value::String(kind.into()));
            }
            Ok(vec![Value::Object(call)])
        }
        ApiPath::Batch => match body {
            Value::Object(mut map) => {
                let Some(Value::Array(mut batch)) = map.remove("batch") else {
                    return Err("on /v1/batch the body must be {\"batch\": [calls…]}: \"batch\" is missing or not a list".into());
                };
                let shared: Map<String, Value> =
                    ["context", "integrations"].into_iter().filter_map(|key| Some((key.to_string(), map.remove(key).filter(Value::is_object)?))).collect();
                if !shared.is_empty() {
                    let shared = Value::Object(shared);
                    for call in batch.iter_mut().filter(|c| c.is_object()) {
                        merge_defaults(call, &shared);
                    }
                }
                Ok(batch)
            }
            Value::Array(batch) => Ok(batch),
            _ => Err("on /v1/batch the body must be {\"batch\": [calls…]}".into()),
        },
    }
}

/// Fills `target` with `defaults` where it has no value of its own, key by key
/// at every depth: where both hold an object the merge goes on inside it, and
/// anywhere else `target`'s value wins. A `null` in `target` is no value.
pub fn merge_defaults(target: &mut Value, defaults: &Value) {
    let (Value::Object(target), Value::Object(defaults)) = (target, defaults) else { return };
    for (key, default) in defaults {
        match target.get_mut(key) {
            None => {
                target.insert(key.clone(), default.clone());
            }
            Some(own @ Value::Null) => *own = default.clone(),
            Some(own) => merge_defaults(own, default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_long_short_and_behind_a_stage() {
        assert_eq!(api_path("/v1/batch"), Some(ApiPath::Batch));
        assert_eq!(api_path("/prod/v1/batch"), Some(ApiPath::Batch));
        assert_eq!(api_path("/some/prefix/v1/import"), Some(ApiPath::Batch));
        assert_eq!(api_path("/v1/b"), Some(ApiPath::Batch));
        assert_eq!(api_path("/v1/track/"), Some(ApiPath::Call("track")));
        for (long, short) in [("track", "t"), ("identify", "i"), ("page", "p"), ("screen", "s"), ("group", "g"), ("alias", "a")] {
            assert_eq!(api_path(&format!("/v1/{long}")), Some(ApiPath::Call(long)));
            assert_eq!(api_path(&format!("/stage/v1/{short}")), Some(ApiPath::Call(long)));
        }
        for other in ["/", "", "/events", "/v1", "/v1/", "/v1/unknown", "/v2/batch", "/v1/batch/extra", "/V1/batch", "/xv1/batch"] {
            assert_eq!(api_path(other), None, "{other}");
        }
    }

    #[test]
    fn a_single_call_takes_the_path_s_type_and_loses_its_write_key() {
        let calls = calls(json!({"event": "E", "writeKey": "wk"}), ApiPath::Call("track")).unwrap();
        assert_eq!(calls, vec![json!({"event": "E", "type": "track"})]);
        let own = super::calls(json!({"type": "identify", "userId": "u"}), ApiPath::Call("track")).unwrap();
        assert_eq!(own[0]["type"], "identify", "the call's own type wins");
        assert!(super::calls(json!([{"event": "E"}]), ApiPath::Call("track")).unwrap_err().contains("/v1/batch"));
    }

    #[test]
    fn a_batch_s_context_and_integrations_reach_every_call_and_the_call_wins() {
        let body = json!({
            "batch": [
                {"type": "track", "event": "A", "context": {"traits": {"phone": "1"}, "library": {"name": "own"}}},
                {"type": "track", "event": "B", "context": {"traits": {"email": "own@example.com"}}, "integrations": {"All": true}},
                {"type": "track", "event": "C", "context": null},
                7,
            ],
            "context": {"traits": {"email": "batch@example.com"}, "library": {"name": "analytics-python", "version": "2.4.0"}},
            "integrations": {"All": false, "Dynamics": true},
            "sentAt": "2026-06-06T15:30:00Z",
            "writeKey": "wk",
        });
        let calls = calls(body, ApiPath::Batch).unwrap();
        assert_eq!(calls[0]["context"], json!({"traits": {"phone": "1", "email": "batch@example.com"}, "library": {"name": "own", "version": "2.4.0"}}));
        assert_eq!(calls[0]["integrations"], json!({"All": false, "Dynamics": true}));
        assert_eq!(calls[1]["context"]["traits"], json!({"email": "own@example.com"}));
        assert_eq!(calls[1]["integrations"], json!({"All": true, "Dynamics": true}));
        assert_eq!(calls[2]["context"]["traits"]["email"], "batch@example.com", "null is no value");
        assert_eq!(calls[3], json!(7), "left for the body check to refuse");
        assert!(calls.iter().all(|c| c.get("writeKey").is_none() && c.get("sentAt").is_none()));
    }

    #[test]
    fn batch_bodies_that_are_not_batches() {
        assert!(calls(json!({"event": "E"}), ApiPath::Batch).unwrap_err().contains("batch"));
        assert!(calls(json!({"batch": {}}), ApiPath::Batch).is_err());
        assert!(calls(json!("text"), ApiPath::Batch).is_err());
        assert_eq!(calls(json!([{"event": "E"}]), ApiPath::Batch).unwrap().len(), 1);
    }
}
