//! Analytics SDKs as senders (SPEC §20): what Segment's and RudderStack's SDKs
//! post — Segment's HTTP API paths, the write key as HTTP Basic or a body field,
//! gzip, batches with a top-level context — and Svix's headers, through the real
//! handler against the sandbox.

use std::io::Write;

use crate::helpers::*;
use base64::Engine;
use d365_sandbox::Faults;
use serde_json::{json, Value};

pub const WRITE_KEY: &str = "sandbox-write-key";

pub fn basic(user: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:")))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A function URL request to `path` as Lambda delivers it: a body that is not
/// text (gzip) comes base64-encoded.
pub fn function_url(path: &str, headers: &[(&str, String)], body: &[u8]) -> Value {
    let mut event = event_file("function-url.json");
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["headers"] = Value::Object(headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), json!(v))).collect());
    match std::str::from_utf8(body) {
        Ok(text) if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-encoding")) => {
            event["body"] = json!(text);
            event["isBase64Encoded"] = json!(false);
        }
        _ => {
            event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
            event["isBase64Encoded"] = json!(true);
        }
    }
    event
}

/// An HTTP API (v2) request to `raw_path` (the stage included, as API Gateway gives it).
fn http_api(raw_path: &str, headers: &[(&str, String)], body: &str) -> Value {
    let mut event = event_file("apigw-http.json");
    event["rawPath"] = json!(raw_path);
    event["routeKey"] = json!("POST /v1/{proxy+}");
    event["headers"] = Value::Object(headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), json!(v))).collect());
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(false);
    event
}

/// Status, Retry-After and parsed body of an HTTP answer.
pub fn answer(response: &Value) -> (u16, Option<String>, Value) {
    let status = response["statusCode"].as_u64().unwrap() as u16;
    let retry_after = response["headers"].get("retry-after").and_then(Value::as_str).map(str::to_string);
    (status, retry_after, serde_json::from_str(response["body"].as_str().unwrap()).unwrap())
}

/// A call as `segment-analytics-python` 2.4 queues it: every field present, `anonymousId` null.
fn python_call(id: &str, user: &str) -> Value {
    json!({
        "integrations": {}, "anonymousId": null,
        "properties": {"order_id": format!("ORD-{id}"), "revenue": 10.5, "currency": "GBP"},
        "timestamp": "2026-06-06T15:30:00+00:00",
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        "userId": user, "type": "track", "event": "Order Completed", "messageId": id,
    })
}

/// `{"batch": …, "sentAt": …, "writeKey": …}` as the Python and Node SDKs post it.
fn sdk_batch(calls: Vec<Value>) -> Value {
    json!({"batch": calls, "sentAt": "2026-06-06T15:30:01.123456+00:00", "writeKey": WRITE_KEY})
}

fn sdk_headers(gzipped: bool) -> Vec<(&'static str, String)> {
    let mut headers =
        vec![("Content-Type", "application/json".to_string()), ("User-Agent", "analytics-python/2.4.0".into()), ("Authorization", basic(WRITE_KEY))];
    if gzipped {
        headers.push(("Content-Encoding", "gzip".into()));
    }
    headers
}

fn order_ids(h: &Harness) -> Vec<String> {
    let mut ids: Vec<String> = h.sandbox.accepted().iter().filter_map(|s| s.body["msdynmkt_orderid"].as_str().map(str::to_string)).collect();
    ids.sort();
    ids
}

async fn writekey_harness() -> Harness {
    Harness::new(&[("D365_WEBHOOK_AUTH", "writekey")]).await
}

#[tokio::test]
async fn a_gzipped_batch_with_basic_auth_as_the_python_sdk_sends_it_is_success_true() {
    let h = writekey_harness().await;
    let user = "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33";
    let body = sdk_batch(vec![python_call("py-1", user), python_call("py-2", user)]).to_string();
    let (status, retry_after, answer_body) = answer(&h.invoke(function_url("/v1/batch", &sdk_headers(true), &gzip(body.as_bytes()))).await);
    assert_eq!((status, retry_after, answer_body), (200, None, json!({"success": true})));
    let signals = h.sandbox.accepted();
    assert_eq!(signals.len(), 2);
    let mut first = signals.into_iter().find(|s| s.body["msdynmkt_orderid"] == "ORD-py-1").unwrap().body;
    first.as_object_mut().unwrap().remove("msdynmkt_signalingestiontimestamp").expect("an ingestion time");
    assert_eq!(
        first,
        json!({"msdynmkt_profileid": user, "msdynmkt_signaluserauthid": user, "msdynmkt_signaltimestamp": "2026-06-06T15:30:00Z",
               "msdynmkt_orderid": "ORD-py-1", "msdynmkt_ordertotal": 10.5, "msdynmkt_currency": "GBP"})
    );
    // The same batch uncompressed, as the SDKs send it by default: the messageIds make it duplicates.
    let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/batch", &sdk_headers(false), body.as_bytes())).await);
    assert_eq!((status, answer_body), (200, json!({"success": true})));
    assert_eq!(h.sandbox.stats().calls(), 2, "a resent batch raises nothing twice");
}

#[tokio::test]
async fn a_batch_s_top_level_context_reaches_every_call_behind_a_stage() {
    let h = writekey_harness().await;
    let mut own = order("ctx-2");
    own["context"] = json!({"traits": {"email": "own@example.com"}});
    let body = json!({
        "batch": [order("ctx-1"), own, {"type": "track", "event": "Order Completed", "messageId": "ctx-3", "userId": "user-ctx-3",
                                          "properties": {"order_id": "ORD-ctx-3"}, "context": null}],
        "context": {"traits": {"email": "Batch@Example.com", "phone": "+44 7700 900123"}, "library": {"name": "analytics-node", "version": "3.1.0"}},
        "integrations": {"All": true},
    })
    .to_string();
    let (status, _, answer_body) = answer(&h.invoke(http_api("/prod/v1/batch", &sdk_headers(false), &body)).await);
    assert_eq!((status, answer_body), (200, json!({"success": true})));
    let signals = h.sandbox.accepted();
    let by_order = |id: &str| signals.iter().find(|s| s.body["msdynmkt_orderid"] == id).unwrap().body.clone();
    assert_eq!(by_order("ORD-ctx-1")["contactpoint_email"], "batch@example.com");
    assert_eq!(by_order("ORD-ctx-1")["contactpoint_phone"], "+447700900123");
    assert_eq!(by_order("ORD-ctx-2")["contactpoint_email"], "own@example.com", "the call's own e-mail wins");
    assert_eq!(by_order("ORD-ctx-2")["contactpoint_phone"], "+447700900123", "key by key: the batch's phone fills the gap");
    assert_eq!(by_order("ORD-ctx-3")["contactpoint_email"], "batch@example.com", "a null context is no context");
}

#[tokio::test]
async fn single_call_paths_long_and_short_take_their_type() {
    let h = writekey_harness().await;
    let mut call = order("t-1");
    call.as_object_mut().unwrap().remove("type");
    for (path, call, delivered) in [
        ("/v1/track", call.clone(), 1),
        ("/v1/t", json!({"event": "Order Completed", "messageId": "t-2", "userId": "user-t-2", "properties": {"order_id": "ORD-t-2"}}), 2),
        // Types the mapping does not raise are dropped, and still a success for the SDK.
        ("/v1/identify", json!({"messageId": "i-1", "userId": "user-i", "traits": {"email": "x@example.com"}}), 2),
        ("/v1/p", json!({"messageId": "p-1", "anonymousId": "a-1", "name": "Home"}), 2),
        ("/v1/screen", json!({"messageId": "s-1", "userId": "user-s", "name": "Cart"}), 2),
        ("/stage/v1/g", json!({"messageId": "g-1", "userId": "user-g", "groupId": "acme"}), 2),
        ("/v1/alias", json!({"messageId": "a-1", "userId": "user-a", "previousId": "anon"}), 2),
    ] {
        let (status, _, body) = answer(&h.invoke(function_url(path, &sdk_headers(false), call.to_string().as_bytes())).await);
        assert_eq!((status, body), (200, json!({"success": true})), "{path}");
        assert_eq!(h.sandbox.accepted().len(), delivered, "{path}");
    }
    assert_eq!(order_ids(&h), ["ORD-t-1", "ORD-t-2"]);
    // A track path does not make an identify call a track.
    let identify = json!({"type": "identify", "event": "Order Completed", "messageId": "t-3", "userId": "user-t-3", "properties": {"order_id": "ORD-t-3"}});
    answer(&h.invoke(function_url("/v1/track", &sdk_headers(false), identify.to_string().as_bytes())).await);
    assert_eq!(h.sandbox.accepted().len(), 2);
}

#[tokio::test]
async fn analytics_js_puts_the_write_key_in_the_body_without_authorization() {
    let h = writekey_harness().await;
    let text_plain = || vec![("Content-Type", "text/plain".to_string())];
    let mut call = order("js-1");
    call["writeKey"] = json!(WRITE_KEY);
    let (status, _, body) = answer(&h.invoke(function_url("/v1/t", &text_plain(), call.to_string().as_bytes())).await);
    assert_eq!((status, body), (200, json!({"success": true})));
    assert_eq!(order_ids(&h), ["ORD-js-1"]);

    // Gzipped too: the field is read from the decoded body.
    let mut gzipped = order("js-2");
    gzipped["writeKey"] = json!(WRITE_KEY);
    let mut headers = text_plain();
    headers.push(("Content-Encoding", "gzip".into()));
    let (status, _, _) = answer(&h.invoke(function_url("/v1/t", &headers, &gzip(gzipped.to_string().as_bytes()))).await);
    assert_eq!(status, 200);

    let mut wrong = order("js-3");
    wrong["writeKey"] = json!("another-key");
    let mut right_in_body_wrong_in_header = order("js-4");
    right_in_body_wrong_in_header["writeKey"] = json!(WRITE_KEY);
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, &'a str);
    let cases: [Case; 4] = [
        ("another key in the body", text_plain(), wrong.to_string(), "does not match"),
        ("no key at all", text_plain(), order("js-5").to_string(), "missing write key"),
        ("a body that is not JSON", text_plain(), "writeKey=sandbox-write-key".into(), "not a JSON object"),
        ("an Authorization header wins over the body", vec![("Authorization", basic("wrong"))], right_in_body_wrong_in_header.to_string(), "does not match"),
    ];
    for (case, headers, body, reason) in cases {
        let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/t", &headers, body.as_bytes())).await);
        assert_eq!((status, answer_body["code"].as_str()), (401, Some("unauthorized")), "{case}");
        assert!(answer_body["message"].as_str().unwrap().contains(reason), "{case}: {answer_body}");
        assert!(!answer_body.to_string().contains(WRITE_KEY), "{case}: the key is never echoed");
    }
    assert_eq!(order_ids(&h), ["ORD-js-1", "ORD-js-2"]);
}

#[tokio::test]
async fn a_wrong_or_missing_write_key_is_401_and_nothing_is_delivered() {
    let h = writekey_harness().await;
    let body = sdk_batch(vec![python_call("w-1", "user-w")]).to_string();
    for (case, authorization) in [("another key", basic("not-the-key")), ("a bearer token", "Bearer abc".into()), ("an empty user", basic(""))] {
        let headers = vec![("Authorization", authorization), ("Content-Encoding", "gzip".to_string())];
        let (status, retry_after, answer_body) = answer(&h.invoke(function_url("/v1/batch", &headers, &gzip(body.as_bytes()))).await);
        assert_eq!((status, retry_after), (401, None), "{case}");
        assert_eq!(answer_body["code"], "unauthorized", "{case}");
        assert_eq!(answer_body["message"], answer_body["error"], "{case}");
    }
    // No write_key in the secret: fail closed.
    let mut config = sandbox_config();
    config.secrets.get_mut("d365/relay-demo").unwrap().as_object_mut().unwrap().remove("write_key");
    let unconfigured = Harness::with_config(config, &[("D365_WEBHOOK_AUTH", "writekey")]).await;
    let (status, _, answer_body) = answer(&unconfigured.invoke(function_url("/v1/batch", &sdk_headers(false), body.as_bytes())).await);
    assert_eq!(status, 401);
    assert!(answer_body["message"].as_str().unwrap().contains("add write_key to the secret"), "{answer_body}");
    assert_eq!(h.sandbox.stats().calls() + unconfigured.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn encodings_other_than_gzip_and_deflate_are_415_and_a_corrupt_stream_400_after_the_signature() {
    let h = writekey_harness().await;
    let body = sdk_batch(vec![python_call("e-1", "user-e")]).to_string();
    let with_encoding = |encoding: &str, authorization: String| vec![("Authorization", authorization), ("Content-Encoding", encoding.to_string())];
    let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/batch", &with_encoding("br", basic(WRITE_KEY)), body.as_bytes())).await);
    assert_eq!((status, answer_body["code"].as_str()), (415, Some("unsupported_encoding")));
    assert!(answer_body["message"].as_str().unwrap().contains("'br'"), "{answer_body}");
    // The sender is checked first: without the key, an odd encoding is still 401.
    let (status, _, _) = answer(&h.invoke(function_url("/v1/batch", &with_encoding("br", basic("wrong")), body.as_bytes())).await);
    assert_eq!(status, 401);

    let mut corrupt = gzip(body.as_bytes());
    corrupt.truncate(corrupt.len() - 12);
    let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/batch", &with_encoding("gzip", basic(WRITE_KEY)), &corrupt)).await);
    assert_eq!((status, answer_body["code"].as_str()), (400, Some("invalid_body")), "{answer_body}");
    assert!(answer_body["message"].as_str().unwrap().contains("not a valid gzip stream"));
    let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/batch", &with_encoding("gzip", basic(WRITE_KEY)), body.as_bytes())).await);
    assert_eq!((status, answer_body["code"].as_str()), (400, Some("invalid_body")), "plain JSON labelled gzip");
    let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/batch", &with_encoding("gzip", basic(WRITE_KEY)), &gzip(b"not json"))).await);
    assert_eq!((status, answer_body["code"].as_str()), (400, Some("invalid_json")), "decoded, then the body is checked");
    assert_eq!(h.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn deflate_on_the_events_path_is_decoded_after_the_hmac_over_the_body_as_sent() {
    let h = Harness::new(&[]).await;
    let json_body = json!({"batch": [order("d-1"), order("d-2")]}).to_string();
    let sent = zlib(json_body.as_bytes());
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let over_sent = relay::webhook::sign(b"sandbox-webhook-secret", &ts, &sent);
    let headers = |signature: String| vec![("X-Timestamp", ts.clone()), ("X-Signature", signature), ("Content-Encoding", "deflate".to_string())];
    let (status, _, answer_body) = answer(&h.invoke(function_url("/events", &headers(over_sent), &sent)).await);
    assert_eq!((status, answer_body), (200, json!({"delivered": 2, "dropped": 0, "duplicates": 0, "failed": []})), "§5's answer off /v1");
    // A signature over the decoded JSON is not a signature over what was sent.
    let over_decoded = relay::webhook::sign(b"sandbox-webhook-secret", &ts, json_body.as_bytes());
    let (status, _, answer_body) = answer(&h.invoke(function_url("/events", &headers(over_decoded), &sent)).await);
    assert_eq!((status, answer_body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(order_ids(&h), ["ORD-d-1", "ORD-d-2"]);
}

#[tokio::test]
async fn a_v1_path_takes_2500_calls_where_the_events_path_takes_500() {
    let h = Harness::new(&[("D365_WEBHOOK_AUTH", "writekey,none")]).await;
    // Page calls: dropped by the mapping, so 2,500 of them cost no Dataverse call.
    let calls: Vec<Value> = (0..2_500).map(|i| json!({"type": "page", "messageId": format!("pg-{i}"), "anonymousId": "a", "name": "Home"})).collect();
    let body = json!({ "batch": calls }).to_string();
    assert!(body.len() < 1024 * 1024);
    let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/import", &sdk_headers(false), body.as_bytes())).await);
    assert_eq!((status, answer_body), (200, json!({"success": true})));
    let (status, _, answer_body) = answer(&h.invoke(function_url("/events", &[], body.as_bytes())).await);
    assert_eq!((status, answer_body["code"].as_str()), (413, Some("too_large")));
    assert!(answer_body["message"].as_str().unwrap().contains("at most 500"), "{answer_body}");
    let over: Vec<Value> = (0..2_501).map(|i| json!({"type": "page", "messageId": format!("o-{i}")})).collect();
    let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/b", &sdk_headers(false), json!({ "batch": over }).to_string().as_bytes())).await);
    assert_eq!((status, answer_body["code"].as_str()), (413, Some("too_large")));
}

#[tokio::test]
async fn a_small_gzip_bomb_is_413_too_large() {
    let h = writekey_harness().await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(b"{\"batch\": [{\"event\": \"").unwrap();
    for _ in 0..48 {
        encoder.write_all(&[b'x'; 1024 * 1024]).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 60_000, "{} bytes", bomb.len());
    let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/batch", &sdk_headers(true), &bomb)).await);
    assert_eq!((status, answer_body["code"].as_str()), (413, Some("too_large")));
    assert!(answer_body["message"].as_str().unwrap().contains("decodes to more than 1048576 bytes"), "{answer_body}");
}

#[tokio::test]
async fn every_error_answer_carries_code_and_message_on_every_path() {
    let h = Harness::new(&[("D365_WEBHOOK_AUTH", "writekey")]).await;
    let auth = || sdk_headers(false);
    let mut invalid = order("x-2");
    invalid.as_object_mut().unwrap().remove("userId");
    for path in ["/events", "/v1/batch"] {
        let mut get = function_url(path, &auth(), b"");
        get["requestContext"]["http"]["method"] = json!("GET");
        let cases: Vec<(&str, Value, u16, &str)> = vec![
            ("GET", get, 405, "method_not_allowed"),
            ("too many bytes", function_url(path, &auth(), "x".repeat(1024 * 1024 + 1).as_bytes()), 413, "too_large"),
            ("no key", function_url(path, &[], b"{}"), 401, "unauthorized"),
            ("not JSON", function_url(path, &auth(), b"not json"), 400, "invalid_json"),
            ("not events", function_url(path, &auth(), b"{\"batch\": 7}"), 400, "invalid_body"),
            ("an invalid event", function_url(path, &auth(), json!({"batch": [order("x-1"), invalid.clone()]}).to_string().as_bytes()), 422, "unprocessable"),
        ];
        for (case, request, status, code) in cases {
            let (got, _, body) = answer(&h.invoke(request).await);
            assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{path} {case}: {body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{path} {case}: {body}");
            if status != 422 {
                assert_eq!(body["error"], body["message"], "{path} {case}: §5's error is kept");
            }
        }
    }
    // 422 keeps §5's summary beside the code.
    let (_, _, body) = answer(&h.invoke(function_url("/v1/batch", &auth(), json!({"batch": [invalid.clone()]}).to_string().as_bytes())).await);
    assert_eq!(body["failed"][0]["error"], "missing userId");
    assert!(body["message"].as_str().unwrap().contains("a retry will not pass"), "{body}");
}

#[tokio::test]
async fn a_503_with_retry_after_on_v1_then_the_sdk_s_retry_raises_each_trigger_once() {
    let h = writekey_harness().await;
    let body = sdk_batch(vec![python_call("r-1", "user-r"), python_call("r-2", "user-r")]).to_string();
    h.sandbox.set_faults(Faults { unavailable_rate: 1.0, ..Faults::default() });
    let (status, retry_after, answer_body) = answer(&h.invoke(function_url("/v1/batch", &sdk_headers(true), &gzip(body.as_bytes()))).await);
    assert_eq!((status, retry_after.as_deref(), answer_body["code"].as_str()), (503, Some("30"), Some("unavailable")));
    assert!(answer_body["message"].as_str().unwrap().contains("after 30 s"), "{answer_body}");
    assert_eq!(answer_body["failed"].as_array().unwrap().len(), 2);
    h.sandbox.set_faults(Faults::default());
    for _ in 0..2 {
        let (status, _, answer_body) = answer(&h.invoke(function_url("/v1/batch", &sdk_headers(true), &gzip(body.as_bytes()))).await);
        assert_eq!((status, answer_body), (200, json!({"success": true})));
    }
    assert_eq!(order_ids(&h), ["ORD-r-1", "ORD-r-2"]);
}

#[tokio::test]
async fn svix_headers_pass_the_standard_scheme_and_svix_id_is_the_idempotency_key() {
    let mut config = sandbox_config();
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    config.secrets.get_mut("d365/relay-demo").unwrap()["webhook_secret"] = json!(secret);
    let h = Harness::with_config(config, &[("D365_WEBHOOK_AUTH", "standard")]).await;
    let mut event = order("unused");
    event.as_object_mut().unwrap().remove("messageId");
    let body = event.to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = relay::auth::sign_standard(secret.as_bytes(), "msg_svix_1", &ts, body.as_bytes()).unwrap();
    let headers = vec![("svix-id", "msg_svix_1".to_string()), ("svix-timestamp", ts.clone()), ("svix-signature", signature.clone())];
    let (status, _, answer_body) = answer(&h.invoke(function_url("/events", &headers, body.as_bytes())).await);
    assert_eq!((status, answer_body["delivered"].as_u64()), (200, Some(1)));
    // Svix's retry carries the same svix-id: a duplicate, not a second trigger.
    let (status, _, answer_body) = answer(&h.invoke(function_url("/events", &headers, body.as_bytes())).await);
    assert_eq!((status, answer_body["duplicates"].as_u64()), (200, Some(1)));
    assert_eq!(h.sandbox.stats().calls(), 1);
    // Both families present: svix-* is read, so a wrong svix-signature fails even beside a right webhook-signature.
    let both = vec![
        ("svix-id", "msg_svix_2".to_string()),
        ("svix-timestamp", ts.clone()),
        ("svix-signature", "v1,AAAA".to_string()),
        ("webhook-id", "msg_svix_1".to_string()),
        ("webhook-timestamp", ts.clone()),
        ("webhook-signature", signature),
    ];
    let (status, _, answer_body) = answer(&h.invoke(function_url("/events", &both, body.as_bytes())).await);
    assert_eq!((status, answer_body["code"].as_str()), (401, Some("unauthorized")));
    assert!(answer_body["message"].as_str().unwrap().contains("svix-signature"), "{answer_body}");
}

#[tokio::test]
async fn the_sdk_sample_delivers_its_two_tracks_with_the_batch_s_e_mail_and_drops_its_page() {
    let h = writekey_harness().await;
    let (status, _, body) = answer(&h.invoke(event_file("segment-batch.json")).await);
    assert_eq!((status, body), (200, json!({"success": true})));
    let signals = h.sandbox.accepted();
    let mut triggers: Vec<&str> = signals.iter().map(|s| s.trigger.as_str()).collect();
    triggers.sort();
    assert_eq!(triggers, ["msdynmkt_OrderCompleted", "msdynmkt_SignedUp"]);
    let order = signals.iter().find(|s| s.trigger == "msdynmkt_OrderCompleted").unwrap();
    assert_eq!(order.body["contactpoint_email"], "jane@example.com", "the batch's context reached the call");
    assert_eq!(order.body["msdynmkt_orderid"], "ORD-20417");
}
