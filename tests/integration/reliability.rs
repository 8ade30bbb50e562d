//! Nothing lost, nothing leaked: chaos runs through a simulated SQS queue with a
//! DLQ, the FIFO and webhook invariants, and property tests on
//! hostile input (log hygiene has its own binary, `tests/log_hygiene.rs`).
//! `CHAOS_MESSAGES=N` changes the size of the chaos run.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::helpers::*;
use d365_sandbox::Faults;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use relay::intake::IntakeError;
use relay::Relay;
use serde_json::{json, Value};

const MAX_RECEIVES: u32 = 5;

fn chaos_faults() -> Faults {
    Faults {
        error_rate: 0.10,
        throttle_rate: 0.05,
        retry_after_secs: Some(1),
        drop_rate: 0.02,
        slow_rate: 0.005,
        // Past the invocation's deadline (6 s below).
        slow_ms: 8_000,
        latency_ms: 2,
        latency_jitter_ms: 8,
        ..Faults::default()
    }
}

struct Message {
    sqs_id: String,
    order: String,
    group: String,
    body: String,
    valid: bool,
    receives: u32,
}

#[derive(Default)]
struct Tally {
    invocations: u32,
    dlq: Vec<String>,
    slowest: Duration,
}

/// The simulated queue shared by the pollers: messages not in flight, how many
/// batches are in flight, and what has been seen so far.
struct Queue {
    waiting: VecDeque<Message>,
    in_flight: usize,
    tally: Tally,
}

/// A queue with receive counts and a DLQ after `MAX_RECEIVES`, drained by one
/// poller per execution environment in `relays` (as Lambda's event source mapping
/// runs several invocations at once): each poller takes a batch, invokes the real
/// handler, deletes what succeeded and returns the rest. FIFO takes one poller.
async fn drain(relays: &[Relay], waiting: VecDeque<Message>, fifo: bool, seed: u64, deadline_s: f64) -> Tally {
    let queue = Mutex::new(Queue { waiting, in_flight: 0, tally: Tally::default() });
    match relays {
        [one] => poll(one, &queue, fifo, seed, deadline_s).await,
        [a, b] => {
            assert!(!fifo, "a FIFO queue is drained by one poller here");
            tokio::join!(poll(a, &queue, fifo, seed, deadline_s), poll(b, &queue, fifo, seed + 1, deadline_s));
        }
        _ => panic!("one or two pollers"),
    }
    queue.into_inner().unwrap().tally
}

async fn poll(relay: &Relay, queue: &Mutex<Queue>, fifo: bool, seed: u64, deadline_s: f64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    loop {
        let next: Option<Vec<Message>> = {
            let mut q = queue.lock().unwrap();
            if q.waiting.is_empty() {
                if q.in_flight == 0 {
                    return;
                }
                None
            } else {
                let size = rng.usize(1..=if fifo { 10 } else { 100 }).min(q.waiting.len());
                q.in_flight += 1;
                Some(q.waiting.drain(..size).collect())
            }
        };
        let Some(batch) = next else {
            // Another poller's batch may come back.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let bodies: Vec<String> = batch.iter().map(|m| m.body.clone()).collect();
        let groups: Vec<&str> = batch.iter().map(|m| m.group.as_str()).collect();
        let mut payload = sqs_batch(&bodies, fifo.then_some(&groups[..]));
        for (record, message) in payload["Records"].as_array_mut().unwrap().iter_mut().zip(&batch) {
            record["messageId"] = json!(message.sqs_id);
        }
        let (started, limit) = (Instant::now(), Duration::from_secs_f64(deadline_s));
        let response = relay.handle(payload, started + limit).await.expect("no invocation error");
        let took = started.elapsed();
        assert!(took < limit, "answered before the deadline ({took:?})");
        let failed: HashSet<String> = failures(&response).into_iter().collect();
        let known: HashSet<&str> = batch.iter().map(|m| m.sqs_id.as_str()).collect();
        assert!(failed.iter().all(|id| known.contains(id.as_str())), "only real message ids are listed");

        let mut q = queue.lock().unwrap();
        q.in_flight -= 1;
        q.tally.slowest = q.tally.slowest.max(took);
        q.tally.invocations += 1;
        let mut returned = Vec::new();
        for mut message in batch {
            message.receives += 1;
            if !failed.contains(&message.sqs_id) {
                continue;
            }
            if message.receives >= MAX_RECEIVES {
                q.tally.dlq.push(message.sqs_id.clone());
            } else {
                returned.push(message);
            }
        }
        // Returned messages become visible again; FIFO keeps them ahead of their group.
        if fifo {
            for message in returned.into_iter().rev() {
                q.waiting.push_front(message);
            }
        } else {
            q.waiting.extend(returned);
        }
    }
}

fn messages(count: usize, groups: usize, seed: u64) -> VecDeque<Message> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|i| {
            let order_id = format!("{i:05}");
            let valid = rng.f64() >= 0.03;
            let mut event = order(&order_id);
            if !valid {
                match rng.u8(0..3) {
                    0 => {
                        event.as_object_mut().unwrap().remove("userId");
                    }
                    1 => {
                        event["properties"].as_object_mut().unwrap().remove("order_id");
                    }
                    _ => event = json!("{not json"),
                }
            }
            let body = match &event {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Message { sqs_id: format!("sqs-{i:05}"), order: format!("ORD-{order_id}"), group: format!("g{}", i % groups.max(1)), body, valid, receives: 0 }
        })
        .collect()
}

fn chaos_size(default: usize) -> usize {
    std::env::var("CHAOS_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_standard_queue_loses_nothing() {
    let count = chaos_size(2_000);
    let mut config = sandbox_config();
    config.faults = chaos_faults();
    config.seed = 7;
    let h = Harness::with_config(config, &[("D365_MAX_IN_FLIGHT", "16")]).await;
    // Two execution environments poll the queue at once, each with its own token,
    // caches and pauses, as the event source mapping scales out.
    let mapping = mapping_file();
    let environments = [h.relay, relay_for(&h.sandbox, &[("D365_MAPPING_FILE", &mapping), ("D365_MAX_IN_FLIGHT", "16")])];
    let queue = messages(count, 1, 11);
    let valid: HashSet<String> = queue.iter().filter(|m| m.valid).map(|m| m.order.clone()).collect();
    let invalid: HashSet<String> = queue.iter().filter(|m| !m.valid).map(|m| m.sqs_id.clone()).collect();
    let started = Instant::now();
    // 6 s invocations: with 5% of calls answered 429 and each pausing the whole
    // environment for a second, a 100-record batch needs a few seconds.
    let tally = drain(&environments, queue, false, 3, 6.0).await;

    let accepted = h.sandbox.accepted();
    let mut deliveries: HashMap<String, u32> = HashMap::new();
    for s in &accepted {
        *deliveries.entry(s.body["msdynmkt_orderid"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let lost: Vec<&String> = valid.iter().filter(|o| !deliveries.contains_key(*o)).collect();
    let dlq: HashSet<String> = tally.dlq.iter().cloned().collect();
    let stats = h.sandbox.stats();
    println!(
        "chaos standard: messages={count} environments=2 valid={} invalid={} deliveries={} duplicates={} invocations={} dlq={} token_requests={} calls={:?} slowest_invocation={:?} wall={:?}",
        valid.len(),
        invalid.len(),
        accepted.len(),
        accepted.len() - deliveries.len(),
        tally.invocations,
        dlq.len(),
        stats.token_requests,
        stats.calls_by_status,
        tally.slowest,
        started.elapsed()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(dlq, invalid, "exactly the invalid messages are parked in the DLQ");
    assert!(stats.calls_with(500) > 0 && stats.calls_with(429) > 0 && stats.calls_with(0) > 0, "the faults did happen: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_fifo_queue_keeps_group_order() {
    let count = chaos_size(2_000) / 5;
    let mut config = sandbox_config();
    config.faults = Faults { slow_rate: 0.0, ..chaos_faults() };
    config.seed = 8;
    let h = Harness::with_config(config, &[("D365_MAX_IN_FLIGHT", "8")]).await;
    let queue = messages(count, 7, 12);
    let group_of: HashMap<String, String> = queue.iter().map(|m| (m.order.clone(), m.group.clone())).collect();
    let order_of: HashMap<String, String> = queue.iter().map(|m| (m.sqs_id.clone(), m.order.clone())).collect();
    let valid: HashSet<String> = queue.iter().filter(|m| m.valid).map(|m| m.order.clone()).collect();
    let tally = drain(std::slice::from_ref(&h.relay), queue, true, 4, 6.0).await;

    let mut first_seen: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for s in h.sandbox.accepted() {
        let order = s.body["msdynmkt_orderid"].as_str().unwrap().to_string();
        if seen.insert(order.clone()) {
            first_seen.push(order);
        }
    }
    let mut per_group: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for order in &first_seen {
        per_group.entry(group_of[order].as_str()).or_default().push(order);
    }
    for (group, orders) in &per_group {
        assert!(orders.windows(2).all(|w| w[0] < w[1]), "group {group} delivered out of order: {orders:?}");
    }
    // A valid message held behind a failing one of its group also counts receives
    // (as on SQS), so it may be parked in the DLQ with it: parked, not lost.
    let parked: HashSet<&String> = tally.dlq.iter().map(|id| &order_of[id]).collect();
    let lost: Vec<&String> = valid.iter().filter(|o| !seen.contains(*o) && !parked.contains(o)).collect();
    let valid_parked = valid.iter().filter(|o| parked.contains(o)).count();
    println!(
        "chaos fifo: messages={count} deliveries={} invocations={} dlq={} (valid but parked behind an invalid one: {valid_parked})",
        first_seen.len(),
        tally.invocations,
        tally.dlq.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_webhooks_deliver_or_report_every_event() {
    let mut config = sandbox_config();
    config.faults = chaos_faults();
    config.seed = 9;
    let h = Harness::with_config(config, &[("D365_MAX_IN_FLIGHT", "16")]).await;
    let mut rng = fastrand::Rng::with_seed(5);
    let mut next = 0;
    let (mut ok, mut not_ok) = (0, 0);
    for _ in 0..30 {
        let size = rng.usize(1..=40);
        let events: Vec<Value> = (next..next + size).map(|i| order(&format!("w{i:04}"))).collect();
        next += size;
        let response = h.invoke_within(signed_http(&Value::Array(events.clone()).to_string()), 4.0).await.unwrap();
        let status = response["statusCode"].as_u64().unwrap();
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
        let reported: HashSet<u64> = body["failed"].as_array().unwrap().iter().map(|f| f["index"].as_u64().unwrap()).collect();
        let delivered: HashSet<String> = h.sandbox.accepted().iter().map(|s| s.body["msdynmkt_orderid"].as_str().unwrap().to_string()).collect();
        for (i, event) in events.iter().enumerate() {
            let order = format!("ORD-{}", event["messageId"].as_str().unwrap());
            let was_delivered = delivered.contains(&order);
            let was_reported = !(200..300).contains(&status) && reported.contains(&(i as u64));
            assert!(was_delivered || was_reported, "event {order} neither delivered nor reported (status {status})");
        }
        if status == 200 {
            ok += 1;
        } else {
            assert_eq!(status, 503, "{body}");
            not_ok += 1;
        }
    }
    println!("chaos webhooks: requests=30 events={next} answered_200={ok} answered_503={not_ok}");
}

/// Arbitrary JSON, biased towards the keys intake looks at.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Records".to_string()),
        Just("eventSource".to_string()),
        Just("messageId".to_string()),
        Just("body".to_string()),
        Just("requestContext".to_string()),
        Just("httpMethod".to_string()),
        Just("version".to_string()),
        Just("batch".to_string()),
        Just("event".to_string()),
        Just("userId".to_string()),
        Just("properties".to_string()),
        Just("EventSource".to_string()),
        Just("Sns".to_string()),
        Just("Message".to_string()),
        Just("MessageId".to_string()),
        Just("Type".to_string()),
        Just("detail-type".to_string()),
        Just("detail".to_string()),
        Just("source".to_string()),
        Just("elb".to_string()),
        Just("multiValueHeaders".to_string()),
        Just("messageAttributes".to_string()),
        Just("MessageName".to_string()),
        Just("PrimaryEntityName".to_string()),
        Just("InputParameters".to_string()),
        "[a-z]{1,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![
            Just("aws:sqs".to_string()),
            Just("aws:sns".to_string()),
            Just("Notification".to_string()),
            Just("2.0".to_string()),
            Just("Order Completed".to_string()),
            Just("POST".to_string()),
            Just("/Date(1506409448000-0700)/".to_string()),
            Just(r#"{"event":"Order Completed","userId":"u"}"#.to_string()),
            ".{0,12}"
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn any_json_payload_gets_a_well_formed_answer_for_its_source() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = runtime.block_on(Harness::new(&[]));
    let mut runner = TestRunner::new(Config { cases: 300, failure_persistence: None, ..Config::default() });
    runner
        .run(&arb_json(), |payload| {
            let is_sqs = payload.get("Records").is_some();
            let ids: HashSet<String> =
                payload["Records"].as_array().map(|r| r.iter().filter_map(|x| x["messageId"].as_str().map(str::to_string)).collect()).unwrap_or_default();
            let is_http = ["requestContext", "httpMethod", "routeKey", "rawPath"].iter().any(|k| payload.get(*k).is_some());
            let is_async = match payload.get("Records") {
                Some(records) => records.as_array().is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["EventSource"] == "aws:sns")),
                None => payload.get("detail-type").is_some_and(Value::is_string) && payload.get("source").is_some() && payload.get("detail").is_some(),
            };
            let result = runtime.block_on(h.invoke_within(payload, 5.0));
            match result {
                // SPEC's only invocation errors: an SQS batch that cannot be answered safely, an
                // asynchronous invocation (SNS, EventBridge) with records not done, an HTTP-looking
                // payload of no known HTTP shape.
                Err(IntakeError::NotDelivered { not_done, .. }) => prop_assert!(is_async && not_done > 0, "NotDelivered for an asynchronous invocation only"),
                Err(IntakeError::MalformedSqs(_) | IntakeError::MissingMessageId { .. }) => {
                    prop_assert!(is_sqs && !is_async, "an SQS error for a Records payload only")
                }
                Err(IntakeError::MalformedHttp(_)) => prop_assert!(is_http, "an HTTP error for an HTTP payload only"),
                Ok(answer) if is_async => {
                    prop_assert!(answer["failed"].as_array().is_some_and(Vec::is_empty), "an asynchronous success has nothing failed: {answer}");
                }
                Ok(answer) if is_sqs => {
                    for failure in answer["batchItemFailures"].as_array().expect("an SQS answer") {
                        let id = failure["itemIdentifier"].as_str().expect("a string identifier");
                        prop_assert!(!id.is_empty() && ids.contains(id), "unknown identifier {id}");
                    }
                }
                Ok(answer) if is_http => {
                    let status = answer["statusCode"].as_u64().expect("an HTTP answer");
                    prop_assert!(!(200..300).contains(&status), "an unsigned request never gets 2xx");
                }
                Ok(answer) => {
                    prop_assert!(answer["delivered"].is_u64() && answer["failed"].is_array(), "a summary: {answer}");
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Arbitrary content inside each envelope (SNS notification, EventBridge event,
/// Dataverse change event), alone or nested.
fn arb_enveloped() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        arb_json().prop_map(|v| json!({"event": "Order Completed", "userId": "u", "properties": v})),
        arb_json(),
        (arb_json(), arb_json(), arb_json(), prop_oneof![Just("Update"), Just("Modified"), Just("Win")]).prop_map(|(target, images, when, message)| {
            json!({"MessageName": message, "PrimaryEntityName": "contact", "PrimaryEntityId": "c-1",
                   "InputParameters": [{"key": "Target", "value": target}], "PostEntityImages": images, "OperationCreatedOn": when})
        }),
    ];
    leaf.prop_recursive(3, 12, 1, |inner| {
        prop_oneof![
            (inner.clone(), prop::option::of("[a-z0-9-]{0,8}")).prop_map(|(m, id)| json!({"Type": "Notification", "MessageId": id, "Message": m.to_string()})),
            (inner, prop::option::of("[a-z0-9-]{0,8}"), arb_json())
                .prop_map(|(d, id, time)| json!({"detail-type": "Order Completed", "source": "s", "id": id, "time": time, "detail": d})),
        ]
    })
}

#[test]
fn no_payload_inside_any_envelope_fails_the_invocation_unless_spec_says_so() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = runtime.block_on(Harness::new(&[]));
    let strategy = (prop::collection::vec(arb_enveloped(), 1..4), 0..3usize);
    let mut runner = TestRunner::new(Config { cases: 200, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(items, shape)| {
            let bodies: Vec<String> = items.iter().map(Value::to_string).collect();
            match shape {
                // In SQS bodies: never an invocation error; only real identifiers are listed.
                0 => {
                    let answer = runtime.block_on(h.invoke_within(sqs_batch(&bodies, None), 5.0)).expect("an SQS answer, never an error");
                    for id in failures(&answer) {
                        prop_assert!(id.starts_with("sqs-"), "unknown identifier {id}");
                    }
                }
                // SNS subscription records: the summary, or NotDelivered when some record is not done.
                1 => {
                    let records: Vec<Value> = bodies
                        .iter()
                        .enumerate()
                        .map(|(i, m)| json!({"EventSource": "aws:sns", "Sns": {"MessageId": format!("n-{i}"), "Message": m}}))
                        .collect();
                    match runtime.block_on(h.invoke_within(json!({"Records": records}), 5.0)) {
                        Ok(answer) => prop_assert!(answer["failed"].as_array().is_some_and(Vec::is_empty), "{answer}"),
                        Err(e) => prop_assert!(matches!(e, IntakeError::NotDelivered { .. }), "{e}"),
                    }
                }
                // A direct invocation: always the summary.
                _ => {
                    let answer = runtime.block_on(h.invoke_within(json!(items), 5.0)).expect("a summary, never an error");
                    prop_assert!(answer["delivered"].is_u64() && answer["failed"].is_array());
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_webhook_body_and_headers_get_2xx_only_with_a_valid_signature() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = runtime.block_on(Harness::new(&[]));
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..300),
        prop::option::of("[0-9]{0,14}"),
        prop::option::of("(sha256=)?[0-9a-f]{0,64}"),
        any::<bool>(),
        prop::bool::weighted(0.3),
    );
    let mut runner = TestRunner::new(Config { cases: 300, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(bytes, timestamp, signature, base64, sign_properly)| {
            let mut event = event_file("apigw-http.json");
            let mut headers = serde_json::Map::new();
            let body_bytes = if sign_properly { json!([order("p")]).to_string().into_bytes() } else { bytes };
            if sign_properly {
                let ts = chrono::Utc::now().timestamp_millis().to_string();
                headers.insert("X-Signature".into(), json!(relay::webhook::sign(b"sandbox-webhook-secret", &ts, &body_bytes)));
                headers.insert("X-Timestamp".into(), json!(ts));
            } else {
                if let Some(ts) = timestamp {
                    headers.insert("X-Timestamp".into(), json!(ts));
                }
                if let Some(sig) = signature {
                    headers.insert("X-Signature".into(), json!(sig));
                }
            }
            event["headers"] = Value::Object(headers);
            let body = if base64 || std::str::from_utf8(&body_bytes).is_err() {
                event["isBase64Encoded"] = json!(true);
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body_bytes)
            } else {
                event["isBase64Encoded"] = json!(false);
                String::from_utf8(body_bytes).unwrap()
            };
            event["body"] = json!(body);
            let answer = runtime.block_on(h.invoke_within(event, 5.0)).expect("an HTTP answer, not an invocation error");
            let status = answer["statusCode"].as_u64().unwrap();
            let parsed: Value = serde_json::from_str(answer["body"].as_str().unwrap()).expect("a JSON body");
            prop_assert!(parsed.is_object());
            if (200..300).contains(&status) {
                prop_assert!(sign_properly, "2xx without a valid signature");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn mapping_never_emits_a_null() {
    let mapping = relay::config::Mapping::parse(
        r#"{"defaults":{"action":"raise"},"events":{"Order Completed":{"attributes":{
            "a":"properties.a","b":["properties.b","properties.x.y"],"c":"properties.c.0","d":"context.traits","e":"properties"}}}}"#,
    )
    .unwrap();
    let strategy = (arb_json(), arb_json(), arb_json(), prop_oneof![Just("Order Completed"), Just("Other")]);
    let mut runner = TestRunner::new(Config { cases: 1_000, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(properties, traits, timestamp, name)| {
            let event = json!({"event": name, "userId": "u", "properties": properties, "timestamp": timestamp,
                               "context": {"traits": traits, "locale": "en-GB"}});
            let ctx =
                relay::mapping::MapContext { mapping: &mapping, default_trigger: Some("msdynmkt_T"), default_phone_region: None, now: chrono::Utc::now() };
            if let relay::mapping::Decision::Raise { call, .. } = relay::mapping::map_event(&event, &ctx) {
                let text = Value::Object(call.body).to_string();
                prop_assert!(!text.contains("null"), "{text}");
            }
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn connection_refused_for_dataverse_is_retried_then_failed() {
    let h = Harness::new(&[("D365_DATAVERSE_BASE_URL", "http://127.0.0.1:9")]).await;
    let response = h.invoke(sqs_batch(&[order("a").to_string()], None)).await;
    assert_eq!(failures(&response), ["sqs-0"]);
}

#[tokio::test]
async fn token_endpoint_throttling_backs_off_then_fails() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { token_status: Some(429), ..Faults::default() });
    let started = Instant::now();
    let response = h.invoke(json!([order("a"), order("b")])).await;
    assert_eq!(response["failed"].as_array().unwrap().len(), 2);
    assert_eq!(h.sandbox.stats().token_requests, 3);
    assert!(started.elapsed() >= Duration::from_millis(900), "backed off between attempts");
}
