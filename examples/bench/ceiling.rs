//! `ceiling`: a 600-event backlog through 3 execution environments at a CI-J
//! ceiling of 240 a minute, shared through moto's DynamoDB table and by
//! `D365_ENVIRONMENTS` (SPEC §17.1): about 6 minutes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox};
use relay::Relay;
use serde_json::{json, Value};
use testkit::moto;

use crate::batches::batch_of;
use crate::harness::{config, LATENCY_MS, ROOT};

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
pub async fn run(line: &mut impl FnMut(String)) {
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
                relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()).with_dynamodb(client.clone()), crate::harness::quiet())
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
