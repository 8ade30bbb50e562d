//! Benchmarks of delivery speed (`make bench`): the real handler and real HTTP to
//! the sandbox, reported as ratios to the bound ceil(N ÷ C) × latency; cold start
//! and peak RSS of the release binary through a minimal Lambda Runtime API on
//! loopback. Writes a Markdown table to `target/bench.md`.
//!
//! `BENCH_ONLY=capped,rss` runs some scenarios only: `uncapped` (batches of 10,
//! 100, 1,000 at C = 8 and 32), `capped` (three 1,000-record batches in one
//! environment against a Dataverse cap of 16), `binary` (cold start, size, peak
//! RSS of a 1-record and a 1,000-record batch), `6mb` (peak RSS and wall time of a 6 MiB SQS batch),
//! `sources` (100 records as SNS notifications in SQS against the same sent raw),
//! `webhook` (the webhook's answer time for 100 events, enqueue vs. deliver mode),
//! `identity` (1,000 events from 50 customers identified by e-mail against the same batch with GUIDs),
//! `gzip` (a gzipped 500-call `/v1/batch` from an analytics SDK against the same batch uncompressed),
//! `rows` (1,000 events that each upsert an account and an opportunity bound to it, then raise a trigger: SPEC §19).
//! `send` (the release binary's `send` of 10,000- and 100,000-line NDJSON files at
//! C = 32: events per second and peak RSS; `BENCH_SEND_LINES=1000000` adds a
//! file of that many lines), `ceiling` (a 600-event backlog through 3 execution
//! environments at a CI-J ceiling of 240 a minute, shared through moto's
//! DynamoDB table and by `D365_ENVIRONMENTS`: about 6 minutes). The other
//! scenarios run with no ceiling (`D365_MAX_TRIGGERS_PER_MINUTE=0`).

#[path = "../tests/integration/moto.rs"]
mod moto;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use d365_sandbox::{Faults, Sandbox, SandboxConfig};
use http_body_util::{BodyExt, Full};
use relay::Relay;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const LATENCY_MS: u64 = 50;
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn config(faults: Faults) -> SandboxConfig {
    let mut config: SandboxConfig = serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/sandbox/config.json")).unwrap()).unwrap();
    config.faults = faults;
    config
}

fn batch(n: usize, tag: &str) -> Value {
    batch_of(n, tag, false)
}

/// An SQS batch of N Order Completed events, sent raw or (`sns`) as SNS
/// notifications in the bodies (an SNS topic → SQS subscription, raw delivery off).
fn batch_of(n: usize, tag: &str, sns: bool) -> Value {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let event = json!({"type": "track", "event": "Order Completed", "messageId": format!("{tag}-{i}"), "userId": format!("00000000-0000-4000-8000-{i:012}"),
                "timestamp": "2026-06-06T15:30:00Z", "properties": {"order_id": format!("ORD-{tag}-{i}"), "revenue": 10.5, "currency": "GBP"},
                "context": {"traits": {"email": format!("Customer{i}@Example.com"), "phone": "07700 900123"}, "locale": "en-GB"}});
            let body = if sns {
                json!({"Type": "Notification", "MessageId": format!("{tag}-sns-{i}"), "TopicArn": "arn:aws:sns:us-east-1:1:shop-events",
                       "Message": event.to_string(), "Timestamp": "2026-06-06T15:30:01.000Z", "SignatureVersion": "1",
                       "Signature": "EXAMPLEsignatureBASE64EXAMPLEsignatureBASE64EXAMPLEsignatureBASE64EXAMPLEsignatureBASE64==",
                       "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
                       "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:1:shop-events:0000"})
                .to_string()
            } else {
                event.to_string()
            };
            json!({"messageId": format!("{tag}-sqs-{i}"), "receiptHandle": "h", "body": body, "attributes": {},
                   "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"})
        })
        .collect();
    json!({ "Records": records })
}

fn bound(n: usize, c: usize) -> Duration {
    Duration::from_millis(n.div_ceil(c) as u64 * LATENCY_MS)
}

struct Run {
    wall: Duration,
    failures: usize,
    token_requests: u64,
    calls: u64,
    throttled: u64,
    /// Trigger-definition reads, warm-up included.
    metadata: u64,
}

/// One warm invocation of N records through the real handler.
async fn run(n: usize, in_flight: usize, faults: Faults) -> Run {
    run_with(n, in_flight, faults, false).await
}

/// One warm invocation of N records, sent raw or (`sns`) as SNS notifications in SQS bodies.
async fn run_with(n: usize, in_flight: usize, faults: Faults, sns: bool) -> Run {
    run_batches(&[n], in_flight, faults, sns).await.remove(0)
}

/// Warm invocations of `sizes` records one after another in one execution environment.
async fn run_batches(sizes: &[usize], in_flight: usize, faults: Faults, sns: bool) -> Vec<Run> {
    let sandbox = Sandbox::start(config(faults), 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let c = in_flight.to_string();
    // The relay's own speed, above CI-J's ceiling (the `ceiling` scenario measures that).
    let settings = relay::sandbox_settings(
        &sandbox.url(),
        &[("D365_MAPPING_FILE", &mapping), ("D365_MAX_IN_FLIGHT", &c), ("D365_DEFAULT_PHONE_REGION", "GB"), ("D365_MAX_TRIGGERS_PER_MINUTE", "0")],
    );
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), Default::default());
    relay::mapping::warm_phone_metadata();
    // Warm (one record): the secret and token are fetched; the limiter learns nothing yet.
    relay.handle(batch(1, "warm"), Instant::now() + Duration::from_secs(60)).await.unwrap();
    let mut runs = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let before = sandbox.stats();
        // The payload is built before the clock starts: Lambda hands the function parsed JSON.
        let batch = batch_of(n, &format!("run{i}"), sns);
        let started = Instant::now();
        let response = relay.handle(batch, Instant::now() + Duration::from_secs(120)).await.unwrap();
        let wall = started.elapsed();
        let stats = sandbox.stats();
        runs.push(Run {
            wall,
            failures: response["batchItemFailures"].as_array().unwrap().len(),
            // For the whole run, warm-up included.
            token_requests: stats.token_requests,
            calls: stats.calls() - before.calls(),
            throttled: stats.calls_with(429) - before.calls_with(429),
            // Definition reads of this batch (the first batch counts the warm-up's read too).
            metadata: if i == 0 { stats.metadata_requests } else { stats.metadata_requests - before.metadata_requests },
        });
    }
    runs
}

/// The bench batch, each event with the context a Segment browser source sends
/// (library, user agent, page, IP): about 1.3 KB a record, as production events.
fn batch_with_context(n: usize, tag: &str) -> Value {
    let mut value = batch(n, tag);
    for record in value["Records"].as_array_mut().unwrap() {
        let mut event: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        event["context"]["library"] = json!({"name": "analytics.js", "version": "next-1.81.0"});
        event["context"]["userAgent"] =
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36".into();
        event["context"]["ip"] = "203.0.113.42".into();
        event["context"]["page"] = json!({"path": "/checkout/complete", "referrer": "https://shop.example.com/checkout/payment?step=3&session=8f14e45fceea167a5a36dedd4bea2543",
            "title": "Thank you for your order", "url": "https://shop.example.com/checkout/complete?order=ORD-12345&utm_source=newsletter&utm_medium=email&utm_campaign=summer"});
        event["anonymousId"] = format!("anon-{tag}-{}", record["messageId"]).into();
        record["body"] = event.to_string().into();
        record["attributes"] = json!({"ApproximateReceiveCount": "1", "SentTimestamp": "1780759800000", "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1780759800100"});
        record["md5OfBody"] = "e4e68fb7bd0e697a0ae8f1bb342846b3".into();
        record["receiptHandle"] = "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...".into();
    }
    value
}

/// An SQS batch of as many context-rich records as fit in `bytes` (Lambda's payload limit is 6 MiB).
fn batch_of_size(bytes: usize, tag: &str) -> (Value, usize, usize) {
    let per_record = batch_with_context(100, tag).to_string().len() / 100;
    let mut n = bytes / per_record;
    loop {
        let candidate = batch_with_context(n, tag);
        let size = candidate.to_string().len();
        if size <= bytes {
            return (candidate, n, size);
        }
        n -= n / 100 + 1;
    }
}

/// One cold-cache invocation of 1,000 Order Completed events from 50 customers,
/// identified by e-mail only (`by_email`) or by their contact GUIDs, in a fresh
/// execution environment (secret, token and definition fetched by a warm-up
/// record with a GUID). Returns the wall time, Dataverse requests of the batch
/// (trigger calls + identity lookups + definition reads) and failures.
async fn identity_run(by_email: bool) -> (Duration, u64, u64, usize) {
    let mut config = config(Faults { latency_ms: LATENCY_MS, rows_latency_ms: LATENCY_MS, ..Faults::default() });
    let id = |c: usize| format!("c0000000-0000-4000-8000-{c:012}");
    let contacts: Vec<Value> = (0..50).map(|c| json!({"contactid": id(c), "emailaddress1": format!("customer{c}@example.com")})).collect();
    config.rows.insert("contacts".into(), contacts);
    let sandbox = Sandbox::start(config, 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let settings = relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", &mapping), ("D365_MAX_IN_FLIGHT", "8")]);
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), Default::default());
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
async fn identity_scenario(line: &mut impl FnMut(String)) {
    let mut email = Vec::new();
    let mut guid = Vec::new();
    for _ in 0..3 {
        email.push(identity_run(true).await);
        guid.push(identity_run(false).await);
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

/// 1,000 "Order Placed" events of the demo mapping (SPEC §19): each upserts its
/// account (50 accounts), an opportunity bound to it and to the contact, then
/// raises its trigger — three sequential Dataverse requests per event, at 50 ms
/// each. Targets: ≤ 3.05 Dataverse requests per event (entity and trigger
/// definitions read once) and a wall time ≤ 1.10 × the bound
/// ceil(N ÷ C) × 3 × latency. The median of 3 runs, each in a fresh environment.
async fn rows_scenario(line: &mut impl FnMut(String)) {
    const N: usize = 1_000;
    const C: usize = 32;
    let contact = |i: usize| format!("c0000000-0000-4000-8000-{i:012}");
    let mut runs = Vec::new();
    for run in 0..3 {
        let mut config = config(Faults { latency_ms: LATENCY_MS, rows_latency_ms: LATENCY_MS, ..Faults::default() });
        config.rows.insert("contacts".into(), (0..N).map(|i| json!({"contactid": contact(i), "emailaddress1": format!("c{i}@example.com")})).collect());
        let sandbox = Sandbox::start(config, 0).await.unwrap();
        let mapping = format!("{ROOT}/events/mapping.json");
        let settings = relay::sandbox_settings(
            &sandbox.url(),
            &[("D365_MAPPING_FILE", &mapping), ("D365_MAX_IN_FLIGHT", &C.to_string()), ("D365_MAX_TRIGGERS_PER_MINUTE", "0")],
        );
        let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), Default::default());
        // Warm: the secret and the token (an unmapped event sends nothing).
        relay.handle(json!({"batch": [{"event": "Page Viewed", "userId": contact(0)}]}), Instant::now() + Duration::from_secs(60)).await.unwrap();
        let records: Vec<Value> = (0..N)
            .map(|i| {
                let event = json!({"type": "track", "event": "Order Placed", "messageId": format!("rows-{run}-{i}"), "userId": contact(i),
                    "timestamp": "2026-06-06T15:30:00Z",
                    "properties": {"order_id": format!("ORD-{run}-{i}"), "account_id": format!("ACC-{}", i % 50), "company": format!("Company {}", i % 50),
                                   "revenue": 10.5, "currency": "GBP"}});
                json!({"messageId": format!("sqs-{i}"), "receiptHandle": "h", "body": event.to_string(), "attributes": {},
                       "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"})
            })
            .collect();
        let before = sandbox.stats();
        let started = Instant::now();
        let response = relay.handle(json!({ "Records": records }), Instant::now() + Duration::from_secs(300)).await.unwrap();
        let wall = started.elapsed();
        let stats = sandbox.stats();
        let requests = (stats.calls() - before.calls())
            + (stats.row_requests - before.row_requests)
            + (stats.entity_requests - before.entity_requests)
            + (stats.metadata_requests - before.metadata_requests);
        let failures = response["batchItemFailures"].as_array().unwrap().len();
        runs.push((wall, requests, failures, sandbox.rows("opportunities").len()));
    }
    runs.sort_by_key(|r| r.0);
    let (wall, requests, failures, opportunities) = runs[1];
    let bound = Duration::from_millis(N.div_ceil(C) as u64 * 3 * LATENCY_MS);
    line(String::new());
    line("| rows, 1,000 events × (account upsert, opportunity bound to it, trigger), C = 32, Dataverse at 50 ms (median of 3) | wall | bound ceil(N ÷ C) × 3 × 50 ms | wall ÷ bound | Dataverse requests ÷ event | failures |".into());
    line("|---|---|---|---|---|---|".into());
    line(format!(
        "| 2 rows + 1 trigger per event ({opportunities} opportunities written) | {:.0} ms | {} ms | **{:.3}** (target ≤ 1.10) | **{:.3}** (target ≤ 3.05) | {failures} |",
        wall.as_secs_f64() * 1000.0,
        bound.as_millis(),
        wall.as_secs_f64() / bound.as_secs_f64(),
        requests as f64 / N as f64
    ));
}

/// 100 records in SNS notifications in SQS bodies against the same 100 sent raw:
/// the envelope must cost at most 5 % (SPEC §12). Medians of alternating runs,
/// with the sandbox's 50 ms latency and with none (where parsing weighs most).
/// `BENCH_ONLY=sources cargo run --release --example bench` runs only this.
async fn sources_scenario(line: &mut impl FnMut(String)) {
    for latency_ms in [LATENCY_MS, 0] {
        let faults = Faults { latency_ms, ..Faults::default() };
        let (mut raw, mut sns) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            let r = run_with(100, 8, faults.clone(), false).await;
            let s = run_with(100, 8, faults.clone(), true).await;
            assert_eq!((r.failures, s.failures), (0, 0), "every record delivered");
            raw.push(r.wall.as_secs_f64());
            sns.push(s.wall.as_secs_f64());
        }
        raw.sort_by(f64::total_cmp);
        sns.sort_by(f64::total_cmp);
        let (raw, sns) = (raw[7], sns[7]);
        line(format!(
            "| SNS in SQS ÷ raw SQS (latency {latency_ms} ms, median of 15) | 100 | 8 | {:.1} ms | raw {:.1} ms | **{:.3}** | | 0 | |",
            sns * 1000.0,
            raw * 1000.0,
            sns / raw
        ));
    }
}

/// The ceiling scenario's figures (SPEC §17.1).
const CEILING: usize = 240;
const BACKLOG: usize = 600;

/// A queue drained by several execution environments as Lambda's event source
/// mapping does: batches of 10, a record reported failed is received again
/// after a visibility timeout of 5 s. Returns the invocations and redeliveries.
async fn drain_backlog(relays: Vec<Relay>, records: Vec<Value>) -> (usize, usize) {
    use std::collections::VecDeque;
    struct Queue {
        ready: VecDeque<(Value, Instant)>,
        in_flight: usize,
        invocations: usize,
        redeliveries: usize,
    }
    let queue =
        Arc::new(Mutex::new(Queue { ready: records.into_iter().map(|r| (r, Instant::now())).collect(), in_flight: 0, invocations: 0, redeliveries: 0 }));
    let mut environments = Vec::new();
    for relay in relays {
        let queue = queue.clone();
        environments.push(tokio::spawn(async move {
            loop {
                let batch: Vec<Value> = {
                    let mut q = queue.lock().unwrap();
                    if q.ready.is_empty() && q.in_flight == 0 {
                        return;
                    }
                    let now = Instant::now();
                    let mut batch = Vec::new();
                    let mut rest = VecDeque::new();
                    while let Some((record, visible_at)) = q.ready.pop_front() {
                        if batch.len() < 10 && visible_at <= now {
                            batch.push(record);
                        } else {
                            rest.push_back((record, visible_at));
                        }
                    }
                    q.ready = rest;
                    q.in_flight += batch.len();
                    if !batch.is_empty() {
                        q.invocations += 1;
                    }
                    batch
                };
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                let response = relay.handle(json!({ "Records": batch }), Instant::now() + Duration::from_secs(30)).await.unwrap();
                let failed: BTreeSet<String> =
                    response["batchItemFailures"].as_array().unwrap().iter().map(|f| f["itemIdentifier"].as_str().unwrap().to_string()).collect();
                let mut q = queue.lock().unwrap();
                q.in_flight -= batch.len();
                for record in batch {
                    if failed.contains(record["messageId"].as_str().unwrap()) {
                        q.redeliveries += 1;
                        q.ready.push_back((record, Instant::now() + Duration::from_secs(5)));
                    }
                }
            }
        }));
    }
    for environment in environments {
        environment.await.unwrap();
    }
    let q = queue.lock().unwrap();
    (q.invocations, q.redeliveries)
}

/// `BENCH_ONLY=ceiling`: a backlog of 2.5 minutes' worth at a CI-J ceiling of
/// 240 a minute through 3 execution environments (3 relays, each its own
/// `Relay`), shared through moto's DynamoDB table and by `D365_ENVIRONMENTS=3`.
/// In every UTC minute the sandbox must count at most 1.02 × the ceiling, and
/// every event must be delivered within ⌈N ÷ ceiling⌉ + 1 minutes of the first call.
async fn ceiling_scenario(line: &mut impl FnMut(String)) {
    line(String::new());
    line(format!(
        "| CI-J ceiling {CEILING} a minute, {BACKLOG}-event SQS backlog, 3 execution environments | shared | busiest UTC minute ÷ ceiling | first call → last 2xx ÷ bound ({} min) | delivered | calls per UTC minute | invocations, redeliveries |",
        BACKLOG.div_ceil(CEILING) + 1
    ));
    line("|---|---|---|---|---|---|---|".into());
    // moto serves one request at a time, as DynamoDB's conditional writes are atomic.
    let moto_url = moto::moto().url.clone();
    let client = relay::dynamodb_client_for_endpoint(&moto_url);
    {
        use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
        client
            .create_table()
            .table_name("bench-ceiling")
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build().unwrap())
            .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().unwrap())
            .send()
            .await
            .unwrap();
    }
    let ceiling = CEILING.to_string();
    for shared in ["table", "D365_ENVIRONMENTS=3"] {
        let sandbox = Sandbox::start(config(Faults { latency_ms: LATENCY_MS, ..Faults::default() }), 0).await.unwrap();
        let mapping = format!("{ROOT}/events/mapping.json");
        let mut overrides = vec![("D365_MAPPING_FILE", mapping.as_str()), ("D365_MAX_IN_FLIGHT", "8"), ("D365_MAX_TRIGGERS_PER_MINUTE", ceiling.as_str())];
        overrides.push(if shared == "table" { ("D365_IDEMPOTENCY_TABLE", "bench-ceiling") } else { ("D365_ENVIRONMENTS", "3") });
        let relays: Vec<Relay> = (0..3)
            .map(|_| {
                let settings = relay::sandbox_settings(&sandbox.url(), &overrides);
                relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()).with_dynamodb(client.clone()), Default::default())
            })
            .collect();
        let tag = if shared == "table" { "ct" } else { "ce" };
        let records: Vec<Value> = batch_of(BACKLOG, tag, false)["Records"].as_array().unwrap().clone();
        let (invocations, redeliveries) = drain_backlog(relays, records).await;

        let stats = sandbox.stats();
        let accepted = sandbox.accepted();
        let orders: BTreeSet<&str> = accepted.iter().filter_map(|s| s.body["msdynmkt_orderid"].as_str()).collect();
        let times: Vec<chrono::DateTime<chrono::Utc>> = sandbox.signals().iter().map(|s| s.received_at.parse().unwrap()).collect();
        let first = times.iter().min().copied().unwrap();
        let last_2xx = accepted.iter().map(|s| s.received_at.parse::<chrono::DateTime<chrono::Utc>>().unwrap()).max().unwrap();
        let minutes = (last_2xx - first).num_milliseconds() as f64 / 60_000.0;
        let bound = (BACKLOG.div_ceil(CEILING) + 1) as f64;
        let busiest = stats.busiest_minute();
        let per_minute: Vec<String> = stats.trigger_calls_per_minute.iter().map(|(m, n)| format!("{}: {n}", &m[11..])).collect();
        line(format!(
            "| {BACKLOG} events, 3 relays at C = 8, Dataverse at {LATENCY_MS} ms | {shared} | **{:.3}** ({busiest} ÷ {CEILING}) | **{:.3}** ({minutes:.2} min) | {} of {BACKLOG} ({} accepted calls) | {} | {invocations}, {redeliveries} |",
            busiest as f64 / CEILING as f64,
            minutes / bound,
            orders.len(),
            accepted.len(),
            per_minute.join(", "),
        ));
        assert!(busiest as f64 <= CEILING as f64 * 1.02, "{shared}: {busiest} trigger calls in one minute against a ceiling of {CEILING}");
        assert_eq!(orders.len(), BACKLOG, "{shared}: every event delivered");
        assert!(minutes <= bound, "{shared}: {minutes:.2} minutes from the first call to the last 2xx (bound {bound})");
    }
}

/// A Dataverse-style profile id (a GUID passes identity resolution untouched).
fn profile_id(i: usize) -> String {
    format!("b6a8c2e0-0000-4000-8000-{i:012}")
}

/// A webhook request of `n` events, signed now with the sandbox's webhook secret.
fn webhook(n: usize, tag: &str) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"type": "track", "event": "Order Completed", "messageId": format!("{tag}-{i}"), "userId": profile_id(i),
            "timestamp": "2026-06-06T15:30:00Z", "properties": {"order_id": format!("ORD-{tag}-{i}"), "revenue": 10.5, "currency": "GBP"}})
        })
        .collect();
    let body = json!({ "batch": events }).to_string();
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let signature = relay::webhook::sign(b"sandbox-webhook-secret", &ts, body.as_bytes());
    json!({"version": "2.0", "routeKey": "POST /events", "rawPath": "/events", "headers": {"content-type": "application/json", "x-timestamp": ts, "x-signature": signature},
           "requestContext": {"http": {"method": "POST", "path": "/events"}, "domainName": "bench.execute-api.us-east-1.amazonaws.com"}, "body": body, "isBase64Encoded": false})
}

/// The webhook's answer time for `n` events (median, min, max of `runs` warm
/// requests) in deliver mode (C concurrent Dataverse calls) or enqueue mode
/// (the sandbox's SQS on loopback), with the statuses seen.
async fn webhook_answer(n: usize, enqueue: bool, in_flight: usize, runs: usize) -> (Vec<Duration>, BTreeSet<u64>) {
    let sandbox = Sandbox::start(config(Faults { latency_ms: LATENCY_MS, ..Faults::default() }), 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let queue = sandbox.queue_url("bench-events");
    let c = in_flight.to_string();
    let mut overrides = vec![("D365_MAPPING_FILE", mapping.as_str()), ("D365_MAX_IN_FLIGHT", c.as_str())];
    if enqueue {
        overrides.extend([("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", queue.as_str())]);
    }
    let settings = relay::sandbox_settings(&sandbox.url(), &overrides);
    let relay = relay::startup::relay(
        settings,
        relay::startup::Clients::for_endpoint(&sandbox.url()).with_sqs(relay::enqueue::sqs_client_for_endpoint(&sandbox.url())),
        Default::default(),
    );
    relay::mapping::warm_phone_metadata();
    relay.handle(webhook(1, "warm"), Instant::now() + Duration::from_secs(60)).await.unwrap();
    let mut times = Vec::new();
    let mut statuses = BTreeSet::new();
    for run in 0..runs {
        let request = webhook(n, &format!("run{run}"));
        let started = Instant::now();
        let response = relay.handle(request, Instant::now() + Duration::from_secs(60)).await.unwrap();
        times.push(started.elapsed());
        statuses.insert(response["statusCode"].as_u64().unwrap_or(0));
    }
    times.sort();
    let expected = if enqueue { 202 } else { 200 };
    assert_eq!(statuses, BTreeSet::from([expected]), "every webhook request of the bench is accepted");
    (times, statuses)
}

/// A 500-call `/v1/batch` as an analytics SDK posts it to a function URL
/// (Basic auth with the write key), gzipped (base64, as Lambda passes a binary
/// body) or not. Each call carries an SDK's context, as production calls do.
fn sdk_batch(tag: &str, gzip: bool) -> Value {
    use std::io::Write;
    let calls: Vec<Value> = (0..500)
        .map(|i| {
            json!({"type": "track", "event": "Order Completed", "messageId": format!("{tag}-{i}"), "userId": profile_id(i),
                   "anonymousId": null, "integrations": {}, "timestamp": "2026-06-06T15:30:00+00:00",
                   "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
                   "properties": {"order_id": format!("ORD-{tag}-{i}"), "revenue": 10.5, "currency": "GBP"}})
        })
        .collect();
    let body = json!({"batch": calls, "sentAt": "2026-06-06T15:30:01+00:00", "writeKey": "sandbox-write-key"}).to_string();
    use base64::Engine;
    let authorization = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("sandbox-write-key:"));
    let mut headers = json!({"content-type": "application/json", "authorization": authorization, "user-agent": "analytics-python/2.4.0"});
    let (body, base64) = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(body.as_bytes()).unwrap();
        headers["content-encoding"] = json!("gzip");
        (base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap()), true)
    } else {
        (body, false)
    };
    json!({"version": "2.0", "routeKey": "$default", "rawPath": "/v1/batch", "headers": headers,
           "requestContext": {"http": {"method": "POST", "path": "/v1/batch"}, "domainName": "bench.lambda-url.us-east-1.on.aws"},
           "body": body, "isBase64Encoded": base64})
}

/// A gzipped 500-call `/v1/batch` against the same uncompressed, Dataverse at
/// 50 ms, C = 32 (SPEC §20): decoding must cost at most 5 %. Medians of
/// alternating warm requests, each of new messageIds.
/// `BENCH_ONLY=gzip cargo run --release --example bench` runs only this.
async fn gzip_scenario(line: &mut impl FnMut(String)) {
    let sandbox = Sandbox::start(config(Faults { latency_ms: LATENCY_MS, ..Faults::default() }), 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let overrides =
        [("D365_MAPPING_FILE", mapping.as_str()), ("D365_MAX_IN_FLIGHT", "32"), ("D365_WEBHOOK_AUTH", "writekey,hmac"), ("D365_MAX_TRIGGERS_PER_MINUTE", "0")];
    let relay =
        relay::startup::relay(relay::sandbox_settings(&sandbox.url(), &overrides), relay::startup::Clients::for_endpoint(&sandbox.url()), Default::default());
    relay::mapping::warm_phone_metadata();
    relay.handle(webhook(1, "warm"), Instant::now() + Duration::from_secs(60)).await.unwrap();
    let (mut plain, mut gzipped) = (Vec::new(), Vec::new());
    let (plain_bytes, gzip_bytes) = (sdk_batch("size", false)["body"].as_str().unwrap().len(), sdk_batch("size", true)["body"].as_str().unwrap().len());
    for run in 0..9 {
        for (gzip, times) in [(false, &mut plain), (true, &mut gzipped)] {
            let request = sdk_batch(&format!("r{run}-{gzip}"), gzip);
            let started = Instant::now();
            let response = relay.handle(request, Instant::now() + Duration::from_secs(60)).await.unwrap();
            times.push(started.elapsed().as_secs_f64());
            assert_eq!((response["statusCode"].as_u64(), response["body"].as_str()), (Some(200), Some(r#"{"success":true}"#)), "every call delivered");
        }
    }
    assert_eq!(sandbox.stats().calls(), 1 + 18 * 500, "each call raised once");
    plain.sort_by(f64::total_cmp);
    gzipped.sort_by(f64::total_cmp);
    let (p, g) = (plain[4], gzipped[4]);
    line(String::new());
    line("| analytics SDK `/v1/batch`, 500 calls, C = 32, Dataverse at 50 ms (median of 9 alternating) | body | wall | ÷ uncompressed |".into());
    line("|---|---|---|---|".into());
    line(format!("| uncompressed | {:.0} KB | {:.1} ms | 1 |", plain_bytes as f64 / 1e3, p * 1000.0));
    line(format!(
        "| gzip (`Content-Encoding: gzip`, base64 in the event) | {:.0} KB | {:.1} ms | **{:.3}** (target ≤ 1.05) |",
        gzip_bytes as f64 / 1e3,
        g * 1000.0,
        g / p
    ));
}

/// A minimal Lambda Runtime API: serves `event` on the first `next`, reports when
/// `next` was first asked for and the function's response.
struct RuntimeApi {
    addr: std::net::SocketAddr,
    next_asked: mpsc::UnboundedReceiver<Instant>,
    responses: mpsc::UnboundedReceiver<(Instant, Value)>,
}

async fn runtime_api(event: Option<Value>) -> RuntimeApi {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (next_tx, next_asked) = mpsc::unbounded_channel();
    let (resp_tx, responses) = mpsc::unbounded_channel();
    let event = Arc::new(Mutex::new(event));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (next_tx, resp_tx, event) = (next_tx.clone(), resp_tx.clone(), event.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (next_tx, resp_tx, event) = (next_tx.clone(), resp_tx.clone(), event.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        if path.ends_with("/invocation/next") {
                            let _ = next_tx.send(Instant::now());
                            let payload = event.lock().unwrap().take();
                            let Some(payload) = payload else {
                                std::future::pending::<()>().await;
                                unreachable!()
                            };
                            let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
                            return Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("lambda-runtime-aws-request-id", "bench-1")
                                    .header("lambda-runtime-deadline-ms", deadline.to_string())
                                    .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:000000000000:function:relay")
                                    .body(Full::new(Bytes::from(payload.to_string())))
                                    .unwrap(),
                            );
                        }
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let _ = resp_tx.send((Instant::now(), serde_json::from_slice(&body).unwrap_or(Value::Null)));
                        Ok(hyper::Response::builder().status(202).body(Full::new(Bytes::new())).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    RuntimeApi { addr, next_asked, responses }
}

fn relay_process(api: std::net::SocketAddr, sandbox: &str) -> Command {
    let mut command = Command::new(format!("{ROOT}/target/release/d365-trigger-relay"));
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "relay")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "sandbox")
        .env("AWS_SECRET_ACCESS_KEY", "sandbox")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", sandbox)
        .env("D365_SECRET_ID", "d365/relay-demo")
        .env("D365_MAPPING_FILE", format!("{ROOT}/events/mapping.json"))
        .env("D365_AUTHORITY_HOST", sandbox)
        .env("D365_DATAVERSE_BASE_URL", sandbox)
        .env("D365_MAX_IN_FLIGHT", "32")
        // The release binary's own speed and memory, above CI-J's ceiling.
        .env("D365_MAX_TRIGGERS_PER_MINUTE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // To tell allocator fragmentation from live data: `MALLOC_ARENA_MAX=2 make bench`.
    if let Ok(arenas) = std::env::var("MALLOC_ARENA_MAX") {
        command.env("MALLOC_ARENA_MAX", arenas);
    }
    command
}

/// Process start → first `next` request, in milliseconds.
async fn cold_start(sandbox: &str) -> f64 {
    let mut api = runtime_api(None).await;
    let started = Instant::now();
    let mut child = relay_process(api.addr, sandbox).spawn().expect("build the release binary first: cargo build --release");
    let asked = tokio::time::timeout(Duration::from_secs(10), api.next_asked.recv()).await.expect("the runtime asked for an event").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    asked.duration_since(started).as_secs_f64() * 1000.0
}

struct ProcessRun {
    peak_rss_kib: u64,
    /// Event handed to the function → its response received.
    wall: Duration,
    failures: usize,
}

/// One invocation of the release binary with `event` through the Runtime API.
async fn process_run(event: Value, sandbox: &str) -> ProcessRun {
    let mut api = runtime_api(Some(event)).await;
    let mut child = relay_process(api.addr, sandbox).spawn().unwrap();
    let pid = child.id();
    let served = tokio::time::timeout(Duration::from_secs(10), api.next_asked.recv()).await.expect("the runtime asked for an event").unwrap();
    let (answered, response) = tokio::time::timeout(Duration::from_secs(60), api.responses.recv()).await.expect("a response").unwrap();
    // The runtime asks for the next event after answering; then the peak is final.
    let _ = tokio::time::timeout(Duration::from_secs(5), api.next_asked.recv()).await;
    let peak_rss_kib = peak_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    ProcessRun { peak_rss_kib, wall: answered.duration_since(served), failures: response["batchItemFailures"].as_array().map_or(usize::MAX, Vec::len) }
}

struct SendRun {
    file_bytes: u64,
    per_second: f64,
    peak_rss_kib: u64,
    delivered: usize,
    exit: i32,
}

/// `d365-trigger-relay send FILE --report … --max-in-flight 32` of an
/// `n`-line file generated under target/, the peak RSS read while it runs.
/// The sandbox's call log is cleared as it goes (it would hold every body).
async fn send_run(n: usize, sandbox: &Sandbox) -> SendRun {
    use std::io::Write;
    let dir = format!("{ROOT}/target/bench-send");
    std::fs::create_dir_all(&dir).unwrap();
    let (input, report) = (format!("{dir}/events-{n}.ndjson"), format!("{dir}/report-{n}.ndjson"));
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for i in 0..n {
            let event = json!({"type": "track", "event": "Order Completed", "messageId": format!("send-{n}-{i}"), "userId": profile_id(i),
                "timestamp": "2026-06-06T15:30:00Z", "properties": {"order_id": format!("ORD-{n}-{i}"), "revenue": 10.5, "currency": "GBP"},
                "context": {"traits": {"email": format!("Customer{i}@Example.com")}, "locale": "en-GB"}});
            writeln!(out, "{event}").unwrap();
        }
    }
    let file_bytes = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
    let mut command = relay_process("127.0.0.1:9".parse().unwrap(), &sandbox.url());
    command.env_remove("AWS_LAMBDA_RUNTIME_API").args(["send", &input, "--report", &report, "--max-in-flight", "32"]);
    sandbox.reset();
    let started = Instant::now();
    let mut child = command.spawn().expect("build the release binary first: cargo build --release");
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(peak_rss_kib(pid));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        sandbox.reset();
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = started.elapsed();
    let delivered = std::fs::read_to_string(&report).map(|r| r.lines().filter(|l| l.contains("\"outcome\":\"delivered\"")).count()).unwrap_or(0);
    let _ = std::fs::remove_file(&input);
    SendRun { file_bytes, per_second: n as f64 / wall.as_secs_f64(), peak_rss_kib: peak, delivered, exit: status.code().unwrap_or(-1) }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let mut table = String::new();
    let mut line = |s: String| {
        println!("{s}");
        table.push_str(&s);
        table.push('\n');
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    line(format!("Machine: {cores} cores, {}; sandbox latency {LATENCY_MS} ms; release build.\n", std::env::consts::ARCH));
    line("| scenario | N | C | wall | bound | wall ÷ bound | 429 share | failures | token requests | Dataverse requests ÷ event |".into());
    line("|---|---|---|---|---|---|---|---|---|---|".into());
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |scenario: &str| only.is_empty() || only.split(',').any(|s| s.trim() == scenario);
    let latency = Faults { latency_ms: LATENCY_MS, ..Faults::default() };
    if wanted("uncapped") {
        for c in [8, 32] {
            for n in [10, 100, 1_000] {
                let r = run(n, c, latency.clone()).await;
                let b = bound(n, c);
                line(format!(
                    "| batch | {n} | {c} | {:.0} ms | {} ms | **{:.3}** | {:.1}% | {} | {} | {:.3} ({} calls + {} definition read) |",
                    r.wall.as_secs_f64() * 1000.0,
                    b.as_millis(),
                    r.wall.as_secs_f64() / b.as_secs_f64(),
                    100.0 * r.throttled as f64 / r.calls.max(1) as f64,
                    r.failures,
                    r.token_requests,
                    (r.calls + r.metadata) as f64 / n as f64,
                    r.calls,
                    r.metadata
                ));
            }
        }
    }
    if wanted("capped") {
        // Three batches back to back in one warm environment: the first discovers the cap.
        let capped = Faults { latency_ms: LATENCY_MS, max_concurrency: Some(16), retry_after_secs: Some(1), ..Faults::default() };
        let b = bound(1_000, 16);
        for (i, r) in run_batches(&[1_000; 3], 32, capped, false).await.iter().enumerate() {
            line(format!(
                "| capped at 16 (429, Retry-After 1), batch {} of 3 in one environment | 1000 | 32 | {:.0} ms | {} ms (C = 16) | **{:.3}** | {:.1}% ({} of {}) | {} | {} | {:.3} |",
                i + 1,
                r.wall.as_secs_f64() * 1000.0,
                b.as_millis(),
                r.wall.as_secs_f64() / b.as_secs_f64(),
                100.0 * r.throttled as f64 / r.calls.max(1) as f64,
                r.throttled,
                r.calls,
                r.failures,
                r.token_requests,
                (r.calls + r.metadata) as f64 / 1_000.0
            ));
        }
    }

    // The release binary through the Runtime API.
    let sandbox = Sandbox::start(config(latency.clone()), 0).await.unwrap();
    let url = sandbox.url();
    let mut rows = Vec::new();
    if wanted("sources") {
        sources_scenario(&mut line).await;
    }
    if wanted("identity") {
        identity_scenario(&mut line).await;
    }
    if wanted("rows") {
        rows_scenario(&mut line).await;
    }
    if wanted("ceiling") {
        ceiling_scenario(&mut line).await;
    }
    if wanted("webhook") {
        // The webhook's answer time, 100 events: delivered inline vs. queued (SPEC §15).
        line(String::new());
        line("| webhook answer, 100 events (median of 9 warm requests, min–max) | mode | answer time | statuses | ÷ enqueue |".into());
        line("|---|---|---|---|---|".into());
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (queued, statuses) = webhook_answer(100, true, 8, 9).await;
        let enqueue_median = ms(queued[4]);
        line(format!(
            "| enqueue, the sandbox's SQS on loopback (10 SendMessageBatch calls) | enqueue | **{:.1} ms** ({:.1}–{:.1}) | {statuses:?} | 1 |",
            enqueue_median,
            ms(queued[0]),
            ms(queued[8])
        ));
        for c in [8, 32] {
            let (times, statuses) = webhook_answer(100, false, c, 9).await;
            line(format!(
                "| deliver, Dataverse at {LATENCY_MS} ms, C = {c} | deliver | **{:.1} ms** ({:.1}–{:.1}) | {statuses:?} | {:.0}× |",
                ms(times[4]),
                ms(times[0]),
                ms(times[8]),
                ms(times[4]) / enqueue_median
            ));
        }
    }
    if wanted("gzip") {
        gzip_scenario(&mut line).await;
    }
    if wanted("binary") {
        let _ = cold_start(&url).await; // page cache
        let mut starts = Vec::new();
        for _ in 0..9 {
            starts.push(cold_start(&url).await);
        }
        starts.sort_by(f64::total_cmp);
        let binary = std::fs::metadata(format!("{ROOT}/target/release/d365-trigger-relay")).map(|m| m.len()).unwrap_or(0);
        let idle = process_run(batch(1, "rss-1"), &url).await;
        let thousand = batch(1_000, "rss");
        let thousand_mb = thousand.to_string().len() as f64 / 1e6;
        let r = process_run(thousand, &url).await;
        rows.push(format!(
            "| cold start: process start → first Runtime API `next` (median of 9, min–max) | **{:.1} ms** ({:.1}–{:.1}) |",
            starts[4], starts[0], starts[8]
        ));
        rows.push(format!("| binary size (x86_64, LTO, stripped) | {:.1} MB |", binary as f64 / 1e6));
        rows.push(format!(
            "| peak RSS, 1,000-record SQS batch ({thousand_mb:.2} MB) through the Runtime API | {:.1} MiB (batch item failures: {}) |",
            r.peak_rss_kib as f64 / 1024.0,
            r.failures
        ));
        rows.push(format!("| peak RSS, 1-record SQS batch (what the process costs before any batch) | {:.1} MiB |", idle.peak_rss_kib as f64 / 1024.0));
        rows.push(format!("| token requests for those two processes | {} (one each) |", sandbox.stats().token_requests));
    }
    if wanted("6mb") {
        const SIX_MIB: usize = 6 * 1024 * 1024;
        let (event, n, bytes) = batch_of_size(SIX_MIB, "big");
        let payload_mib = bytes as f64 / (1024.0 * 1024.0);
        let r = process_run(event, &url).await;
        let rss_mib = r.peak_rss_kib as f64 / 1024.0;
        let b = bound(n, 32);
        rows.push(format!(
            "| peak RSS, 6 MiB SQS batch ({n} records, {payload_mib:.2} MiB) through the Runtime API | **{rss_mib:.1} MiB** = {:.1}× the payload (target ≤ 3× + 20 MiB = {:.1} MiB; batch item failures: {}) |",
            rss_mib / payload_mib,
            3.0 * payload_mib + 20.0,
            r.failures
        ));
        rows.push(format!(
            "| wall time of that batch, C = 32 (event handed over → response) | {:.0} ms = **{:.3}×** the bound {} ms |",
            r.wall.as_secs_f64() * 1000.0,
            r.wall.as_secs_f64() / b.as_secs_f64(),
            b.as_millis()
        ));
    }
    if wanted("send") {
        // The backfill command streams: peak RSS must not grow with the file (SPEC §16).
        let mut sizes = vec![10_000, 100_000];
        if let Some(n) = std::env::var("BENCH_SEND_LINES").ok().and_then(|n| n.parse::<usize>().ok()) {
            sizes.push(n);
        }
        let target = 0.95 * 32.0 / (LATENCY_MS as f64 / 1000.0);
        for n in sizes {
            let r = send_run(n, &sandbox).await;
            assert_eq!((r.delivered, r.exit), (n, 0), "every line of the send bench is delivered");
            rows.push(format!(
                "| `send` of a {n}-line NDJSON file ({:.1} MB), C = 32, Dataverse at {LATENCY_MS} ms | **{:.0} events/s** = {:.3}× the target {target:.0}; peak RSS **{:.1} MB** (target ≤ 64 MB); {} delivered, exit {} |",
                r.file_bytes as f64 / 1e6,
                r.per_second,
                r.per_second / target,
                r.peak_rss_kib as f64 / 1024.0,
                r.delivered,
                r.exit
            ));
        }
    }
    if !rows.is_empty() {
        line(String::new());
        line("| release binary | figure |".into());
        line("|---|---|".into());
        for row in rows {
            line(row);
        }
    }
    std::fs::create_dir_all(format!("{ROOT}/target")).unwrap();
    std::fs::write(format!("{ROOT}/target/bench.md"), &table).unwrap();
    println!("\nwritten to target/bench.md");
}
