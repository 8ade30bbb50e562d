//! Untrusted upstreams: absurd numbers from Dataverse, a Secrets Manager that
//! never answers, a slow DynamoDB, and duplicates within one batch.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;
use bytes::Bytes;
use d365_sandbox::Faults;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A server that accepts connections and never answers; the URL.
async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    url
}

/// A DynamoDB stand-in answering every call `{}` (claims succeed), the `done`
/// write only after `done_delay`; counts the `done` writes that were answered.
async fn slow_done_dynamodb(done_delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        if String::from_utf8_lossy(&body).contains("\"done\"") {
                            tokio::time::sleep(done_delay).await;
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        let response = hyper::Response::builder()
                            .status(200)
                            .header("content-type", "application/x-amz-json-1.0")
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (url, answered)
}

fn direct_failures(answer: &Value) -> Vec<Value> {
    answer["failed"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_absurd_retry_after_fails_the_record_and_the_environment_keeps_working() {
    for absurd in [u64::MAX, 99_999_999_999_999] {
        let h = Harness::new(&[]).await;
        h.sandbox.set_faults(Faults { throttle_rate: 1.0, retry_after_secs: Some(absurd), ..Faults::default() });
        let started = Instant::now();
        let answer = h.invoke_within(json!([order("a")]), 5.0).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let failed = direct_failures(&answer);
        assert_eq!(failed.len(), 1, "{answer}");
        assert_eq!(failed[0]["outcome"], "failed");
        assert_eq!(failed[0]["status"], 429, "{answer}");

        // The same execution environment answers the next invocation normally.
        h.sandbox.set_faults(Faults::default());
        let answer = h.invoke_within(json!([order("b")]), 5.0).await.unwrap();
        let failed = direct_failures(&answer);
        assert!(failed.iter().all(|f| !f["error"].as_str().unwrap_or("").contains("internal")), "{answer}");
        assert!(h.relay.pacer().limit() >= 1);
    }
}

#[tokio::test]
async fn a_retry_after_is_clamped_so_the_environment_recovers() {
    // 429 with a Retry-After of days: at most 300 s are honoured, and records fail fast meanwhile.
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { throttle_rate: 1.0, retry_after_secs: Some(86_400 * 3), ..Faults::default() });
    let answer = h.invoke_within(json!([order("a")]), 3.0).await.unwrap();
    assert_eq!(direct_failures(&answer)[0]["error"].as_str().unwrap(), "Dataverse throttled the call (429 0x80072322), Retry-After 300s", "{answer}");
}

#[tokio::test]
async fn a_secrets_manager_that_never_answers_does_not_outlive_the_invocation() {
    let sandbox = d365_sandbox::Sandbox::start(sandbox_config(), 0).await.unwrap();
    let silent = silent_server().await;
    let mapping = mapping_file();
    let settings = relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", mapping.as_str())]);
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&silent), Default::default());
    let bodies: Vec<String> = (0..3).map(|i| order(&format!("s{i}")).to_string()).collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let answer = tokio::time::timeout(Duration::from_secs(10), relay.handle(sqs_batch(&bodies, None), deadline)).await;
    let elapsed = started.elapsed();
    let answer = answer.expect("the invocation answered").expect("a batch response");
    assert!(elapsed < Duration::from_secs(3), "answered after {elapsed:?}");
    assert_eq!(failures(&answer), ["sqs-0", "sqs-1", "sqs-2"]);
    assert_eq!(sandbox.accepted().len(), 0);
}

#[tokio::test]
async fn a_slow_done_write_at_the_cut_off_still_reports_the_record_delivered() {
    let (dynamo, answered) = slow_done_dynamodb(Duration::from_millis(150)).await;
    let sandbox = d365_sandbox::Sandbox::start(sandbox_config(), 0).await.unwrap();
    let mapping = mapping_file();
    let settings = relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", mapping.as_str()), ("D365_IDEMPOTENCY_TABLE", "keys")]);
    let clients = relay::startup::Clients::for_endpoint(&sandbox.url()).with_dynamodb(relay::dynamodb_client_for_endpoint(&dynamo));
    let relay = relay::startup::relay(settings, clients, Default::default());
    // Warm: the secret and the token are cached, the connections open.
    let warm = relay.handle(json!([order("warm")]), Instant::now() + Duration::from_secs(10)).await.unwrap();
    assert_eq!(warm["delivered"], 1, "{warm}");
    answered.store(0, Ordering::SeqCst);

    // Deadline 2 s: calls must end by 1.8 s; Dataverse answers at ~1.72 s, the done write takes 150 ms more.
    sandbox.set_faults(Faults { latency_ms: 1_720, ..Faults::default() });
    let started = Instant::now();
    let answer = relay.handle(json!([order("late")]), started + Duration::from_secs(2)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "answered before the deadline");
    assert_eq!(sandbox.accepted().len(), 2);
    assert_eq!(answer, json!({"delivered": 1, "dropped": 0, "duplicates": 0, "failed": []}));
    // The done write (150 ms) fits in the bookkeeping reserve when the machine is not loaded; it is not asserted.
    assert!(answered.load(Ordering::SeqCst) <= 1);
}

#[tokio::test]
async fn the_same_message_twice_in_a_batch_is_a_duplicate_after_the_first_is_delivered() {
    let h = Harness::new(&[]).await;
    let bodies = vec![order("twice").to_string(), order("twice").to_string(), order("once").to_string()];
    let response = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(h.sandbox.accepted().len(), 2);
    let answer = h.invoke(json!([order("d"), order("d")])).await;
    assert_eq!(answer, json!({"delivered": 1, "dropped": 0, "duplicates": 1, "failed": []}));
}

#[tokio::test]
async fn the_same_message_twice_in_a_batch_is_attempted_again_if_the_first_fails() {
    let h = Harness::new(&[]).await;
    // The first copy gets four 500s and fails; the second copy is then attempted and delivered.
    h.sandbox.set_faults(Faults { script: vec![500, 500, 500, 500], ..Faults::default() });
    let answer = h.invoke(json!([order("d"), order("d")])).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert_eq!(answer["duplicates"], 0, "{answer}");
    let failed = direct_failures(&answer);
    assert_eq!(failed.len(), 1, "{answer}");
    assert_eq!(failed[0]["index"], 0);
    assert_eq!(failed[0]["status"], 500);
    assert_eq!(h.sandbox.accepted().len(), 1);
}
