//! Durable webhooks (SPEC §15): a webhook in enqueue mode is checked as in §5,
//! its events go to SQS (moto's, an emulator independent of ours, and the
//! sandbox's for faults moto cannot make) and it is answered 202; the queue
//! path then raises each trigger once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::moto::moto;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use d365_sandbox::{Faults, Sandbox};
use relay::Relay;
use serde_json::{json, Value};

/// A queue in moto (`name` ending in `.fifo` makes a FIFO queue), its URL.
async fn moto_queue(name: &str, max_message_bytes: Option<u32>) -> (aws_sdk_sqs::Client, String) {
    let client = relay::enqueue::sqs_client_for_endpoint(&moto().url);
    let mut create = client.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    if let Some(bytes) = max_message_bytes {
        create = create.attributes(QueueAttributeName::MaximumMessageSize, bytes.to_string());
    }
    let url = create.send().await.unwrap().queue_url.unwrap();
    (client, url)
}

/// Everything the queue holds, in order: (body, MessageGroupId, MessageDeduplicationId).
async fn drain(client: &aws_sdk_sqs::Client, url: &str) -> Vec<(Value, Option<String>, Option<String>)> {
    let mut all = Vec::new();
    loop {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        for m in messages {
            let attributes = m.attributes.unwrap_or_default();
            let attribute = |name: MessageSystemAttributeName| attributes.get(&name).cloned();
            all.push((
                serde_json::from_str(m.body.as_deref().unwrap()).unwrap(),
                attribute(MessageSystemAttributeName::MessageGroupId),
                attribute(MessageSystemAttributeName::MessageDeduplicationId),
            ));
        }
    }
}

/// The sandbox and a relay in enqueue mode sending to `queue_url` through `client`.
async fn enqueueing(queue_url: &str, client: aws_sdk_sqs::Client) -> (Sandbox, Relay) {
    let overrides = [("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", queue_url)];
    let Harness { sandbox, relay } = Harness::with_clients(crate::helpers::sandbox_config(), &overrides, |c| c.with_sqs(client)).await;
    (sandbox, relay)
}

async fn post(relay: &Relay, request: Value) -> (u16, Option<String>, Value) {
    post_within(relay, request, 30.0).await
}

async fn post_within(relay: &Relay, request: Value, seconds: f64) -> (u16, Option<String>, Value) {
    let response = relay.handle(request, Instant::now() + Duration::from_secs_f64(seconds)).await.unwrap();
    let status = response["statusCode"].as_u64().unwrap() as u16;
    let retry_after = response["headers"].get("retry-after").and_then(Value::as_str).map(str::to_string);
    (status, retry_after, serde_json::from_str(response["body"].as_str().unwrap()).unwrap())
}

fn with_id(mut event: Value, id: &str) -> Value {
    event["messageId"] = json!(id);
    event
}

#[tokio::test]
async fn a_standard_queue_gets_one_message_per_event_and_the_sender_202() {
    let (client, url) = moto_queue("enqueue-standard", None).await;
    let (sandbox, relay) = enqueueing(&url, client.clone()).await;
    let unmapped = json!({"type": "track", "event": "Page Viewed", "messageId": "pv-1", "userId": "u-9"});
    let bare = json!({"type": "track", "event": "Signed Up", "userId": "u-7", "timestamp": "2026-06-06T15:30:00Z"});
    let snake = json!({"type": "track", "event": "Signed Up", "message_id": 42, "user_id": "u-8"});
    let mut events: Vec<Value> = (0..10).map(|i| order(&format!("std-{i}"))).collect();
    events.extend([unmapped.clone(), bare.clone(), snake.clone()]);

    let (status, retry_after, body) = post(&relay, signed_http(&json!({"batch": events}).to_string())).await;
    assert_eq!((status, retry_after), (202, None));
    assert_eq!(body, json!({"accepted": 13}), "unmapped events are queued and counted too");
    assert_eq!(sandbox.stats().calls(), 0, "nothing is sent to Dynamics inline");
    assert_eq!(sandbox.stats().token_requests, 0);

    let queued = drain(&client, &url).await;
    let bodies: Vec<Value> = queued.iter().map(|(b, _, _)| b.clone()).collect();
    let bare_key = relay::idempotency::key_for(&bare);
    assert!(bare_key.starts_with("sha256:"));
    let mut expected: Vec<Value> = events[..11].to_vec();
    expected.push(with_id(bare, &bare_key));
    expected.push(json!({"type": "track", "event": "Signed Up", "messageId": "42", "message_id": 42, "user_id": "u-8"}));
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(|b| b["messageId"].as_str().unwrap().to_string());
        v
    };
    assert_eq!(sorted(bodies), sorted(expected), "each body is the event with messageId set to its idempotency key");
    assert!(queued.iter().all(|(_, group, dedup)| group.is_none() && dedup.is_none()), "a standard queue's messages carry no group or deduplication id");
}

#[tokio::test]
async fn a_fifo_queue_gets_groups_in_order_and_deduplication_ids() {
    let (client, url) = moto_queue("enqueue-order.fifo", None).await;
    let (_sandbox, relay) = enqueueing(&url, client.clone()).await;
    let events = vec![
        json!({"event": "Order Completed", "messageId": "f-1", "userId": "u-1"}),
        json!({"event": "Order Completed", "messageId": "f-2", "anonymousId": "anon-1"}),
        json!({"event": "Order Completed", "messageId": "f-3", "userId": "u-1"}),
        json!({"event": "Order Completed", "messageId": "f-4"}),
        json!({"event": "Order Completed", "messageId": "f-5", "userId": "Jane Doe"}),
        json!({"event": "Order Completed", "userId": "u-1", "properties": {"n": 6}}),
    ];
    let request = json!(events).to_string();
    let (status, _, body) = post(&relay, signed_http(&request)).await;
    assert_eq!((status, body), (202, json!({"accepted": 6})));

    let queued = drain(&client, &url).await;
    let hashed = relay::idempotency::key_for(&events[5]);
    let sha = |s: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    };
    let seen: Vec<(String, Option<String>, Option<String>)> =
        queued.iter().map(|(b, g, d)| (b["messageId"].as_str().unwrap().to_string(), g.clone(), d.clone())).collect();
    let expected = |id: &str, group: &str| (id.to_string(), Some(group.to_string()), Some(id.to_string()));
    let mut sorted = seen.clone();
    sorted.sort();
    let mut want = vec![
        expected("f-1", "u-1"),
        expected("f-2", "anon-1"),
        expected("f-3", "u-1"),
        expected("f-4", "default"),
        expected("f-5", &sha("Jane Doe")),
        expected(&hashed, "u-1"),
    ];
    want.sort();
    assert_eq!(sorted, want);
    let u1: Vec<&str> = seen.iter().filter(|(_, g, _)| g.as_deref() == Some("u-1")).map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(u1, vec!["f-1", "f-3", hashed.as_str()], "a group's order is the request's");

    // The sender's retry of the same request: SQS drops the copies by deduplication id.
    let (status, _, _) = post(&relay, signed_http(&request)).await;
    assert_eq!(status, 202);
    assert!(drain(&client, &url).await.is_empty(), "the resent events were deduplicated by SQS");
}

#[tokio::test]
async fn requests_refused_at_the_edge_queue_nothing() {
    let (client, url) = moto_queue("enqueue-refused", None).await;
    let (_sandbox, relay) = enqueueing(&url, client.clone()).await;
    let good = json!([order("r-1")]).to_string();

    let mut get = signed_http(&good);
    get["requestContext"]["http"]["method"] = json!("GET");
    assert_eq!(post(&relay, get).await.0, 405);

    let mut big = signed_http(&"x".repeat(1024 * 1024 + 1));
    big["headers"]["x-signature"] = json!("sha256=00");
    assert_eq!(post(&relay, big).await.0, 413);

    let mut forged = signed_http(&good);
    forged["headers"]["x-signature"] = json!(relay::webhook::sign(b"not-the-secret", forged["headers"]["x-timestamp"].as_str().unwrap(), good.as_bytes()));
    let (status, _, body) = post(&relay, forged).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("X-Signature"));

    assert_eq!(post(&relay, signed_http("not json")).await.0, 400);
    let many: Vec<Value> = (0..501).map(|i| order(&format!("m-{i}"))).collect();
    assert_eq!(post(&relay, signed_http(&json!(many).to_string())).await.0, 413);

    assert!(drain(&client, &url).await.is_empty(), "no refused request put anything on the queue");
}

#[tokio::test]
async fn a_batch_sqs_refuses_is_listed_503_and_the_rest_is_queued() {
    // The queue takes messages up to 1 KiB; event 13 is larger, so SQS refuses its batch (events 10–19).
    let (client, url) = moto_queue("enqueue-partial", Some(1024)).await;
    let (_sandbox, relay) = enqueueing(&url, client.clone()).await;
    let mut events: Vec<Value> = (0..25).map(|i| order(&format!("p-{i}"))).collect();
    events[13]["properties"]["note"] = json!("x".repeat(2000));

    let (status, retry_after, body) = post(&relay, signed_http(&json!(events).to_string())).await;
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(body["accepted"], 15);
    let failed = body["failed"].as_array().unwrap();
    let indexes: Vec<u64> = failed.iter().map(|f| f["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (10..20).collect::<Vec<u64>>());
    for f in failed {
        assert_eq!(f["messageId"], json!(format!("p-{}", f["index"])));
        assert_eq!(f["outcome"], "failed");
        assert_eq!(f["code"], "InvalidParameterValue");
        assert!(f["error"].as_str().unwrap().contains("the queue did not take the event"), "{f}");
    }
    let queued: BTreeSet<String> = drain(&client, &url).await.into_iter().map(|(b, _, _)| b["messageId"].as_str().unwrap().to_string()).collect();
    let want: BTreeSet<String> = (0..10).chain(20..25).map(|i| format!("p-{i}")).collect();
    assert_eq!(queued, want);
}

#[tokio::test]
async fn on_a_fifo_queue_a_refused_event_holds_back_the_rest_of_its_group() {
    let (client, url) = moto_queue("enqueue-held.fifo", Some(1024)).await;
    let (_sandbox, relay) = enqueueing(&url, client.clone()).await;
    let event = |id: &str, user: &str| json!({"event": "Order Completed", "messageId": id, "userId": user});
    let mut events: Vec<Value> = (0..11).map(|i| event(&format!("a-{i}"), "user-a")).collect();
    events[3]["pad"] = json!("x".repeat(2000));
    events.push(event("b-0", "user-b"));

    let (status, _, body) = post(&relay, signed_http(&json!(events).to_string())).await;
    assert_eq!(status, 503);
    assert_eq!(body["accepted"], 1);
    let failed = body["failed"].as_array().unwrap();
    assert_eq!(failed.iter().map(|f| f["index"].as_u64().unwrap()).collect::<Vec<_>>(), (0..11).collect::<Vec<u64>>());
    assert!(failed[10]["error"].as_str().unwrap().contains("message group 'user-a'"), "{}", failed[10]);
    let queued: Vec<String> = drain(&client, &url).await.into_iter().map(|(b, _, _)| b["messageId"].as_str().unwrap().to_string()).collect();
    assert_eq!(queued, vec!["b-0"], "user-a's later event waits for the sender's retry; user-b's goes on");
}

#[tokio::test]
async fn entries_sqs_refuses_are_listed_exactly() {
    let mut config = sandbox_config();
    config.seed = 7;
    config.faults = Faults { sqs_refuse_rate: 0.5, ..Faults::default() };
    let sandbox = Sandbox::start(config, 0).await.unwrap();
    let queue = sandbox.queue_url("relay-events");
    let mapping = mapping_file();
    let overrides = [("D365_MAPPING_FILE", mapping.as_str()), ("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", queue.as_str())];
    let relay = crate::helpers::relay_with(&sandbox, &overrides, |c| c.with_sqs(relay::enqueue::sqs_client_for_endpoint(&sandbox.url())), Default::default());
    let events: Vec<Value> = (0..30).map(|i| order(&format!("e-{i}"))).collect();

    let (status, retry_after, body) = post(&relay, signed_http(&json!(events).to_string())).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("5")));
    let refused: BTreeSet<String> = body["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["code"], "InternalError");
            assert_eq!(f["messageId"], json!(format!("e-{}", f["index"])));
            f["messageId"].as_str().unwrap().to_string()
        })
        .collect();
    let queued: BTreeSet<String> = sandbox
        .queued("relay-events")
        .into_iter()
        .map(|m| serde_json::from_str::<Value>(&m.body).unwrap()["messageId"].as_str().unwrap().to_string())
        .collect();
    assert!(!refused.is_empty() && !queued.is_empty(), "the seed refuses some and takes some");
    assert!(refused.is_disjoint(&queued));
    assert_eq!(refused.len() + queued.len(), 30, "every event is either queued or listed");
    assert_eq!(body["accepted"], queued.len());

    // SQS down: every event listed, nothing lost.
    sandbox.set_faults(Faults { sqs_status: Some(500), ..Faults::default() });
    let (status, retry_after, body) = post(&relay, signed_http(&json!([order("down-1"), order("down-2")]).to_string())).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("5")));
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["failed"].as_array().unwrap().len(), 2);
    assert_eq!(body["failed"][0]["messageId"], "down-1");
    assert_eq!(sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn a_silent_queue_is_bounded_by_the_webhook_budget() {
    // A listener that takes connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let url = format!("{endpoint}/000000000000/silent");
    let (_sandbox, relay) = enqueueing(&url, relay::enqueue::sqs_client_for_endpoint(&endpoint)).await;
    relay.handle(signed_http(&json!([order("warm")]).to_string()), Instant::now()).await.unwrap(); // the secret is fetched

    let started = Instant::now();
    let (status, retry_after, body) = post_within(&relay, signed_http(&json!([order("s-1")]).to_string()), 1.5).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "answered within the invocation's time ({took:?})");
    assert_eq!((status, retry_after.as_deref()), (503, Some("5")));
    assert_eq!(body["failed"][0]["messageId"], "s-1");
    assert!(body["failed"][0]["error"].as_str().unwrap().contains("deadline"), "{body}");
}

#[tokio::test]
async fn queued_events_raise_each_trigger_once_through_the_queue_path() {
    let (client, url) = moto_queue("enqueue-e2e", None).await;
    let (sandbox, relay) = enqueueing(&url, client.clone()).await;
    let mut events: Vec<Value> = (0..8).map(|i| order(&format!("e2e-{i}"))).collect();
    events.push(json!({"type": "track", "event": "Page Viewed", "messageId": "pv", "userId": "u-1"}));
    events.push(json!({"type": "track", "event": "Signed Up", "userId": "u-signed", "timestamp": "2026-06-06T15:30:00Z"}));
    let request = json!({"batch": events}).to_string();

    // The sender did not see the first answer and sends the same request again.
    for _ in 0..2 {
        let (status, _, body) = post(&relay, signed_http(&request)).await;
        assert_eq!((status, body), (202, json!({"accepted": 10})));
    }
    let queued = drain(&client, &url).await;
    assert_eq!(queued.len(), 20, "a standard queue holds both copies");
    assert_eq!(sandbox.stats().calls(), 0);

    // Lambda's SQS event source hands them to the same function, in two batches.
    let bodies: Vec<String> = queued.iter().map(|(b, _, _)| b.to_string()).collect();
    for half in bodies.chunks(10) {
        let response = relay.handle(sqs_batch(half, None), Instant::now() + Duration::from_secs(30)).await.unwrap();
        assert!(failures(&response).is_empty(), "{response}");
    }

    let accepted = sandbox.accepted();
    let mut raised: BTreeMap<String, usize> = BTreeMap::new();
    for signal in &accepted {
        let what = signal.body.get("msdynmkt_orderid").and_then(Value::as_str).unwrap_or(&signal.trigger).to_string();
        *raised.entry(what).or_default() += 1;
    }
    let mut want: BTreeMap<String, usize> = (0..8).map(|i| (format!("ORD-e2e-{i}"), 1)).collect();
    want.insert("msdynmkt_SignedUp".into(), 1);
    assert_eq!(raised, want, "each trigger raised once; the unmapped event dropped; the copies duplicates");
    assert_eq!(sandbox.stats().calls(), 9);

    // Dynamics received what a webhook in deliver mode would have sent.
    let first = accepted.iter().find(|s| s.body["msdynmkt_orderid"] == "ORD-e2e-0").unwrap();
    assert_eq!(first.trigger, "msdynmkt_OrderCompleted");
    assert_eq!(first.body["msdynmkt_profileid"], "user-e2e-0");
    assert_eq!(first.body["msdynmkt_signaltimestamp"], "2026-06-06T15:30:00Z");
    assert_eq!(first.body["msdynmkt_ordertotal"], 10.5);
}

#[tokio::test]
async fn enqueue_mode_without_a_queue_is_a_configuration_error_not_inline_delivery() {
    // D365_WEBHOOK_MODE=enqueue without D365_QUEUE_URL: 503 naming the setting, nothing delivered.
    let h = Harness::new(&[("D365_WEBHOOK_MODE", "enqueue")]).await;
    let (status, retry_after, body) = post(&h.relay, signed_http(&json!([order("c-1")]).to_string())).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("60")));
    assert!(body["error"].as_str().unwrap().contains("D365_QUEUE_URL"), "{body}");

    // Enqueue mode wired without an SQS client (a wiring mistake): 503 too, never a silent inline delivery.
    let h = Harness::new(&[("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/q")]).await;
    let (status, _, body) = post(&h.relay, signed_http(&json!([order("c-2")]).to_string())).await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("enqueue"), "{body}");
    assert_eq!(h.sandbox.stats().calls(), 0);
}

#[tokio::test]
async fn on_a_v1_path_queued_calls_answer_success_true_with_the_batch_context_merged() {
    let (client, url) = moto_queue("enqueue-segment-api", None).await;
    let overrides = [("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", url.as_str()), ("D365_WEBHOOK_AUTH", "writekey")];
    let Harness { sandbox, relay } = Harness::with_clients(crate::helpers::sandbox_config(), &overrides, |c| c.with_sqs(client.clone())).await;
    let body = json!({
        "batch": [order("seg-q-1"), {"type": "page", "messageId": "seg-q-2", "anonymousId": "a-1", "name": "Home"}],
        "context": {"traits": {"email": "batch@example.com"}},
        "sentAt": "2026-06-06T15:30:01Z",
        "writeKey": crate::sdk::WRITE_KEY,
    })
    .to_string();
    let headers = vec![("Authorization", crate::sdk::basic(crate::sdk::WRITE_KEY)), ("Content-Encoding", "gzip".to_string())];
    let request = crate::sdk::function_url("/v1/batch", &headers, &crate::sdk::gzip(body.as_bytes()));
    let (status, retry_after, answer_body) = post(&relay, request).await;
    assert_eq!((status, retry_after, answer_body), (200, None, json!({"success": true})), "Segment's answer, not 202");
    assert_eq!(sandbox.stats().calls(), 0, "nothing is sent to Dynamics inline");
    let mut queued: Vec<Value> = drain(&client, &url).await.into_iter().map(|(b, _, _)| b).collect();
    queued.sort_by_key(|b| b["messageId"].as_str().unwrap().to_string());
    let mut first = order("seg-q-1");
    first["context"] = json!({"traits": {"email": "batch@example.com"}});
    let second = json!({"type": "page", "messageId": "seg-q-2", "anonymousId": "a-1", "name": "Home", "context": {"traits": {"email": "batch@example.com"}}});
    assert_eq!(queued, vec![first, second], "each call is queued with the batch's context, without the write key");
}
