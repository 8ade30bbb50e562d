//! Webhooks end to end: API Gateway REST (v1), HTTP API (v2) and function URL
//! payloads through the real handler, against the sandbox.

use crate::helpers::*;
use base64::Engine;
use d365_sandbox::Faults;
use serde_json::{json, Value};

const SECRET: &[u8] = b"sandbox-webhook-secret";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Clone, Copy)]
enum Shape {
    Rest,
    HttpApi,
    FunctionUrl,
}

/// A request of `shape` carrying `body`, with the given headers.
fn request(shape: Shape, method: &str, body: &str, headers: &[(&str, String)], base64: bool) -> Value {
    let file = match shape {
        Shape::Rest => "apigw-rest.json",
        Shape::HttpApi => "apigw-http.json",
        Shape::FunctionUrl => "function-url.json",
    };
    let mut event = event_file(file);
    let header_map: serde_json::Map<String, Value> = headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    event["headers"] = Value::Object(header_map);
    if let Some(multi) = event.get_mut("multiValueHeaders") {
        *multi = json!({});
    }
    event["body"] = json!(if base64 { base64::engine::general_purpose::STANDARD.encode(body) } else { body.to_string() });
    event["isBase64Encoded"] = json!(base64);
    match shape {
        Shape::Rest => {
            event["httpMethod"] = json!(method);
            event["requestContext"]["httpMethod"] = json!(method);
        }
        Shape::HttpApi | Shape::FunctionUrl => event["requestContext"]["http"]["method"] = json!(method),
    }
    event
}

fn signed(shape: Shape, body: &str) -> Value {
    let ts = now_ms().to_string();
    let sig = relay::webhook::sign(SECRET, &ts, body.as_bytes());
    request(shape, "POST", body, &[("Content-Type", "application/json".into()), ("X-Timestamp", ts), ("X-Signature", sig)], false)
}

/// Status, Retry-After and parsed body of an HTTP answer.
fn answer(response: &Value) -> (u16, Option<String>, Value) {
    let status = response["statusCode"].as_u64().unwrap() as u16;
    let retry_after = response["headers"].get("retry-after").and_then(Value::as_str).map(str::to_string);
    let body = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    (status, retry_after, body)
}

#[tokio::test]
async fn a_signed_request_of_each_shape_delivers_one_call_per_event() {
    for shape in [Shape::Rest, Shape::HttpApi, Shape::FunctionUrl] {
        let h = Harness::new(&[]).await;
        let body = json!({"batch": [order("1"), order("2"), order("3")]}).to_string();
        let (status, _, body) = answer(&h.invoke(signed(shape, &body)).await);
        assert_eq!(status, 200);
        assert_eq!(body, json!({"delivered": 3, "dropped": 0, "duplicates": 0, "failed": []}));
        assert_eq!(h.sandbox.stats().calls(), 3);
        assert_eq!(h.sandbox.accepted().len(), 3);
    }
}

#[tokio::test]
async fn the_sample_requests_are_accepted_once_re_signed() {
    let h = Harness::new(&[]).await;
    for file in ["apigw-rest.json", "apigw-http.json", "function-url.json"] {
        let mut event = event_file(file);
        relay::webhook::resign_event(&mut event, SECRET, now_ms());
        let (status, _, body) = answer(&h.invoke(event).await);
        assert_eq!((status, body["delivered"].as_u64()), (200, Some(2)), "{file}");
    }
}

#[tokio::test]
async fn bad_signatures_get_401_and_nothing_is_delivered() {
    let h = Harness::new(&[]).await;
    let body = json!(order("1")).to_string();
    let ts = now_ms().to_string();
    let good = relay::webhook::sign(SECRET, &ts, body.as_bytes());
    let stale_ts = (now_ms() - 10 * 60 * 1000).to_string();
    let stale = relay::webhook::sign(SECRET, &stale_ts, body.as_bytes());
    let cases = [
        ("wrong signature", vec![("X-Timestamp", ts.clone()), ("X-Signature", relay::webhook::sign(b"other", &ts, body.as_bytes()))]),
        ("stale timestamp", vec![("X-Timestamp", stale_ts), ("X-Signature", stale)]),
        ("missing signature", vec![("X-Timestamp", ts.clone())]),
        ("missing timestamp", vec![("X-Signature", good.clone())]),
        ("no headers", vec![]),
        ("signature over another body", vec![("X-Timestamp", ts.clone()), ("X-Signature", relay::webhook::sign(SECRET, &ts, b"{}"))]),
    ];
    for (case, headers) in cases {
        let headers: Vec<(&str, String)> = headers;
        let (status, _, answer_body) = answer(&h.invoke(request(Shape::HttpApi, "POST", &body, &headers, false)).await);
        assert_eq!(status, 401, "{case}");
        assert!(answer_body["error"].is_string(), "{case}");
    }
    assert_eq!(h.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn header_names_are_case_insensitive() {
    let h = Harness::new(&[]).await;
    let body = json!(order("1")).to_string();
    let ts = now_ms().to_string();
    let sig = relay::webhook::sign(SECRET, &ts, body.as_bytes());
    let event = request(Shape::Rest, "POST", &body, &[("x-TIMESTAMP", ts), ("X-signature", sig)], false);
    assert_eq!(answer(&h.invoke(event).await).0, 200);
}

#[tokio::test]
async fn without_a_webhook_secret_every_webhook_gets_401() {
    let mut config = sandbox_config();
    config.secrets.get_mut("d365/relay-demo").unwrap().as_object_mut().unwrap().remove("webhook_secret");
    let h = Harness::with_config(config, &[]).await;
    let (status, _, body) = answer(&h.invoke(signed(Shape::HttpApi, &json!(order("1")).to_string())).await);
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("webhook_secret"));
    assert_eq!(h.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn auth_none_accepts_unsigned_requests() {
    let h = Harness::new(&[("D365_WEBHOOK_AUTH", "none")]).await;
    let event = request(Shape::HttpApi, "POST", &json!(order("1")).to_string(), &[], false);
    assert_eq!(answer(&h.invoke(event).await).0, 200);
}

#[tokio::test]
async fn base64_bodies_are_decoded_and_signed_as_sent() {
    let h = Harness::new(&[]).await;
    let body = json!([order("1"), order("2")]).to_string();
    let ts = now_ms().to_string();
    let sig = relay::webhook::sign(SECRET, &ts, body.as_bytes());
    let event = request(Shape::FunctionUrl, "POST", &body, &[("X-Timestamp", ts), ("X-Signature", sig)], true);
    let (status, _, answer_body) = answer(&h.invoke(event).await);
    assert_eq!((status, answer_body["delivered"].clone()), (200, json!(2)));
}

#[tokio::test]
async fn get_is_405_with_allow() {
    let h = Harness::new(&[]).await;
    for shape in [Shape::Rest, Shape::HttpApi] {
        let response = h.invoke(request(shape, "GET", "", &[], false)).await;
        assert_eq!(response["statusCode"], 405);
        assert_eq!(response["headers"]["allow"], "POST");
    }
}

#[tokio::test]
async fn non_json_is_400_and_not_events_is_400() {
    let h = Harness::new(&[]).await;
    for body in ["not json", "[1, 2]", "\"text\"", "[]", "{\"batch\": 7}"] {
        let (status, _, answer_body) = answer(&h.invoke(signed(Shape::HttpApi, body)).await);
        assert_eq!(status, 400, "{body}");
        assert!(answer_body["error"].is_string());
    }
    assert_eq!(h.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn too_many_events_or_bytes_is_413() {
    let h = Harness::new(&[]).await;
    let events: Vec<Value> = (0..600).map(|i| order(&i.to_string())).collect();
    let (status, _, _) = answer(&h.invoke(signed(Shape::Rest, &Value::Array(events).to_string())).await);
    assert_eq!(status, 413);
    let huge = json!({"event": "Order Completed", "pad": "x".repeat(1_100_000)}).to_string();
    // Size is checked before the signature, so an unsigned huge body is 413 too.
    let (status, _, _) = answer(&h.invoke(request(Shape::HttpApi, "POST", &huge, &[], false)).await);
    assert_eq!(status, 413);
    assert_eq!(h.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn a_mixed_batch_with_an_invalid_event_is_422_listing_it() {
    let h = Harness::new(&[]).await;
    let mut invalid = order("2");
    invalid.as_object_mut().unwrap().remove("userId");
    let body = json!([order("1"), invalid, order("3"), {"event": "Page Viewed", "userId": "u"}]).to_string();
    let (status, retry_after, answer_body) = answer(&h.invoke(signed(Shape::HttpApi, &body)).await);
    assert_eq!(status, 422);
    assert_eq!(retry_after, None);
    assert_eq!(
        answer_body,
        json!({"delivered": 2, "dropped": 1, "duplicates": 0, "failed": [{"index": 1, "messageId": "2", "outcome": "invalid", "error": "missing userId"}]})
    );
    assert_eq!(h.sandbox.accepted().len(), 2);
}

#[tokio::test]
async fn dataverse_503_answers_503_with_retry_after() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { unavailable_rate: 1.0, ..Faults::default() });
    let (status, retry_after, body) = answer(&h.invoke(signed(Shape::HttpApi, &json!(order("1")).to_string())).await);
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("30"));
    assert_eq!(body["failed"][0]["outcome"], "failed");
    assert_eq!(body["failed"][0]["status"], 503);
}

#[tokio::test]
async fn throttled_answers_carry_the_largest_retry_after() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { throttle_rate: 1.0, retry_after_secs: Some(90), ..Faults::default() });
    let (status, retry_after, _) = answer(&h.invoke(signed(Shape::Rest, &json!(order("1")).to_string())).await);
    assert_eq!((status, retry_after.as_deref()), (503, Some("90")));
}

#[tokio::test]
async fn configuration_errors_answer_503_and_deliver_nothing() {
    // A secret that does not exist (a Secrets Manager outage is not a configuration error: relay.rs).
    let h = Harness::new(&[("D365_SECRET_ID", "d365/no-such-secret")]).await;
    let (status, retry_after, body) = answer(&h.invoke(signed(Shape::HttpApi, &json!(order("1")).to_string())).await);
    assert_eq!(status, 503);
    assert!(retry_after.is_some());
    assert!(body["error"].as_str().unwrap().contains("misconfigured"));
    assert_eq!(h.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn a_rejected_event_is_422() {
    let h = Harness::new(&[]).await;
    // The definition unreadable, the wrong type reaches Dataverse, which rejects it.
    h.sandbox.set_faults(Faults { metadata_status: Some(403), ..Faults::default() });
    let mut bad = order("1");
    bad["properties"]["revenue"] = json!("not a number");
    let (status, _, body) = answer(&h.invoke(signed(Shape::HttpApi, &bad.to_string())).await);
    assert_eq!(status, 422);
    assert_eq!(body["failed"][0]["outcome"], "rejected");
    assert_eq!(body["failed"][0]["status"], 400);
}

#[tokio::test]
async fn a_malformed_sqs_batch_is_never_answered_as_a_success() {
    let h = Harness::new(&[]).await;
    for payload in [json!({"Records": "x"}), json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}), json!({"requestContext": {}})] {
        assert!(h.invoke_within(payload, 5.0).await.is_err());
    }
}
