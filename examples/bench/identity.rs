//! `identity`: 1,000 events from 50 customers identified by e-mail against the
//! same batch with GUIDs (SPEC §14).

use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox};
use serde_json::{json, Value};

use crate::batches::batch;
use crate::harness::{config, LATENCY_MS, ROOT};

/// One cold-cache invocation of 1,000 Order Completed events from 50 customers,
/// identified by e-mail only (`by_email`) or by their contact GUIDs, in a fresh
/// execution environment (secret, token and definition fetched by a warm-up
/// record with a GUID). Returns the wall time, Dataverse requests of the batch
/// (trigger calls + identity lookups + definition reads) and failures.
async fn one_run(by_email: bool) -> (Duration, u64, u64, usize) {
    let mut config = config(Faults { latency_ms: LATENCY_MS, rows_latency_ms: LATENCY_MS, ..Faults::default() });
    let id = |c: usize| format!("c0000000-0000-4000-8000-{c:012}");
    let contacts: Vec<Value> = (0..50).map(|c| json!({"contactid": id(c), "emailaddress1": format!("customer{c}@example.com")})).collect();
    config.rows.insert("contacts".into(), contacts);
    let sandbox = Sandbox::start(config, 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let settings = relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", &mapping), ("D365_MAX_IN_FLIGHT", "8")]);
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), crate::harness::quiet());
    relay.handle(batch(1, "warm"), Instant::now() + Duration::from_secs(60)).await.unwrap();
    let records: Vec<Value> = (0..1_000)
        .map(|i| {
            let customer = i % 50;
            let mut event = json!({"type": "track", "event": "Order Completed", "messageId": format!("id-{i}"), "timestamp": "2026-06-06T15:30:00Z",
                "properties": {"order_id": format!("ORD-{i}"), "revenue": 10.5, "currency": "GBP"},
                "context": {"traits": {"email": format!("Customer{customer}@Example.com")}}});
            if !by_email {
                event["userId"] = id(customer).into();
            }
            json!({"messageId": format!("sqs-{i}"), "receiptHandle": "h", "body": event.to_string(), "attributes": {},
                   "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"})
        })
        .collect();
    let before = sandbox.stats();
    let started = Instant::now();
    let response = relay.handle(json!({ "Records": records }), Instant::now() + Duration::from_secs(120)).await.unwrap();
    let wall = started.elapsed();
    let stats = sandbox.stats();
    let calls = stats.calls() - before.calls();
    let lookups = stats.row_requests - before.row_requests;
    let requests = calls + lookups + stats.metadata_requests - before.metadata_requests;
    (wall, requests, lookups, response["batchItemFailures"].as_array().unwrap().len())
}

/// 1,000 events from 50 customers identified by e-mail against the same batch
/// with GUIDs (SPEC §14): target ≤ 1.10× the wall time and ≤ 1,050 Dataverse
/// requests. Medians of 3 alternating runs, each in a fresh environment (cold cache).
pub async fn run(line: &mut impl FnMut(String)) {
    let mut email = Vec::new();
    let mut guid = Vec::new();
    for _ in 0..3 {
        email.push(one_run(true).await);
        guid.push(one_run(false).await);
    }
    email.sort_by_key(|r| r.0);
    guid.sort_by_key(|r| r.0);
    let (e, g) = (&email[1], &guid[1]);
    line(String::new());
    line(
        "| identity, 1,000 events from 50 customers, C = 8, Dataverse at 50 ms (median of 3, cold cache) | wall | Dataverse requests | lookups | failures |"
            .into(),
    );
    line("|---|---|---|---|---|".into());
    line(format!("| GUID userIds (pass through) | {:.0} ms | {} | {} | {} |", g.0.as_secs_f64() * 1000.0, g.1, g.2, g.3));
    line(format!(
        "| identified by e-mail only | {:.0} ms = **{:.3}×** GUIDs (target ≤ 1.10) | **{}** (target ≤ 1,050) | {} | {} |",
        e.0.as_secs_f64() * 1000.0,
        e.0.as_secs_f64() / g.0.as_secs_f64(),
        e.1,
        e.2,
        e.3
    ));
}
