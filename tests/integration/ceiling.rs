//! The CI-J trigger ceiling (SPEC §17.1): trigger calls started per UTC minute,
//! as the sandbox counts them — shared through moto's DynamoDB table by
//! several relays at once, split by `D365_ENVIRONMENTS` without a table, a
//! record failed with its reason when no permit can come in time, only
//! trigger calls counted, `send --rate` and the ceiling together, and `check`.
//!
//! The relays read the real clock; a test that needs its calls in one minute
//! first waits, if need be, until enough of the minute is left.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use relay::dynamics::ceiling::{until_next_minute, Ceiling};
use relay::outcome::DeliveryError;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::idempotency::{join_all, table};
use crate::moto::moto;

const REASON: &str = "over the per-minute trigger ceiling (D365_MAX_TRIGGERS_PER_MINUTE)";
const HOST: &str = "contoso.api.crm.dynamics.com";

/// Waits, if need be, for the next UTC minute, so that at least `needed` of
/// the current one is left.
async fn clear_of_the_minute(needed: Duration) {
    let left = until_next_minute(Utc::now());
    if left < needed {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

fn orders(tag: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| order(&format!("{tag}{i}"))).collect()
}

/// The `failed` entries of a direct invocation's summary, by error.
fn failed_reasons(summary: &Value) -> Vec<String> {
    summary["failed"].as_array().unwrap().iter().map(|f| f["error"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn takes_from_the_table_never_pass_the_minute_s_total_however_they_race() {
    let moto = moto();
    let client = table(moto, "ceiling-takes").await;
    // A minute of the tests' own: the permits of 2030-01-01T00:00, read at half past it.
    let now: DateTime<Utc> = "2030-01-01T00:00:30Z".parse().unwrap();
    let clock: relay::dynamics::ceiling::Clock = Arc::new(move || now);
    let environments: Vec<Ceiling> =
        (0..3).map(|_| Ceiling::in_memory(250, 1).with_table(client.clone(), "ceiling-takes".into()).with_clock(clock.clone())).collect();
    let until = Instant::now() + Duration::from_secs(10);
    let takes = join_all(environments.iter().flat_map(|e| (0..120).map(move |_| e.take(HOST, until))).collect()).await;
    let granted = takes.iter().filter(|t| t.is_ok()).count();
    assert_eq!(granted, 250, "exactly the ceiling, though 360 were asked for in takes of 3");
    for refused in takes.iter().filter_map(|t| t.as_ref().err()) {
        match refused {
            // The next minute's permits are 30 s away: past `until`, so no wait.
            DeliveryError::Ceiling { retry_after } => assert!(*retry_after >= Duration::from_secs(30) && *retry_after < Duration::from_secs(31)),
            other => panic!("{other:?}"),
        }
    }
    let item = client
        .get_item()
        .table_name("ceiling-takes")
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(format!("ceiling#{HOST}#2030-01-01T00:00")))
        .send()
        .await
        .unwrap();
    let item = item.item().expect("one item for the minute");
    assert_eq!(item["taken"].as_n().unwrap(), "250");
    let expires_at: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
    assert!(expires_at > "2030-01-01T00:01:00Z".parse::<DateTime<Utc>>().unwrap().timestamp(), "it expires after its minute, through the TTL attribute");
}

#[tokio::test]
async fn two_relays_sharing_the_table_never_pass_the_minute_s_total() {
    let moto = moto();
    let client = table(moto, "ceiling-relays").await;
    let sandbox = d365_sandbox::Sandbox::start(sandbox_config(), 0).await.unwrap();
    let mapping = mapping_file();
    let settings = [("D365_MAPPING_FILE", mapping.as_str()), ("D365_IDEMPOTENCY_TABLE", "ceiling-relays"), ("D365_MAX_TRIGGERS_PER_MINUTE", "250")];
    let first = crate::helpers::relay_with(&sandbox, &settings, |c| c.with_dynamodb(client.clone()), Default::default());
    let second = crate::helpers::relay_with(&sandbox, &settings, |c| c.with_dynamodb(client.clone()), Default::default());
    clear_of_the_minute(Duration::from_secs(15)).await;
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(8);
    let batch = |tag| json!({ "batch": orders(tag, 150) });
    let (a, b) = tokio::join!(first.handle(batch("a"), deadline), second.handle(batch("b"), deadline));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(started.elapsed() < Duration::from_secs(8), "answered before the deadline");

    let per_minute = sandbox.stats().trigger_calls_per_minute;
    assert_eq!(per_minute.len(), 1, "{per_minute:?}");
    assert_eq!(per_minute.values().sum::<u64>(), 250, "the two relays together kept to the ceiling: {per_minute:?}");
    assert_eq!(a["delivered"].as_u64().unwrap() + b["delivered"].as_u64().unwrap(), 250);
    let reasons: Vec<String> = failed_reasons(&a).into_iter().chain(failed_reasons(&b)).collect();
    assert_eq!(reasons.len(), 50);
    assert!(reasons.iter().all(|r| r == REASON), "{reasons:?}");
    assert!(a["delivered"].as_u64().unwrap() > 0 && b["delivered"].as_u64().unwrap() > 0, "both took permits: {a} {b}");

    // The admin endpoint shows the same count, for the demo and for people.
    let stats: Value = serde_json::from_str(&reqwest::get(format!("{}/_sandbox/stats", sandbox.url())).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(stats["trigger_calls_per_minute"], json!(per_minute));
}

#[tokio::test]
async fn without_a_table_each_environment_takes_its_share() {
    let sandbox = d365_sandbox::Sandbox::start(sandbox_config(), 0).await.unwrap();
    let mapping = mapping_file();
    let settings = [("D365_MAPPING_FILE", mapping.as_str()), ("D365_MAX_TRIGGERS_PER_MINUTE", "30"), ("D365_ENVIRONMENTS", "3")];
    let queue = relay_for(&sandbox, &settings);
    let direct = relay_for(&sandbox, &settings);
    clear_of_the_minute(Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let bodies: Vec<String> = orders("q", 15).iter().map(Value::to_string).collect();
    let (sqs, summary) = tokio::join!(queue.handle(sqs_batch(&bodies, None), deadline), direct.handle(json!({ "batch": orders("d", 15) }), deadline));
    let (sqs, summary) = (sqs.unwrap(), summary.unwrap());

    // 30 a minute ÷ 3 environments: 10 each.
    assert_eq!(failures(&sqs).len(), 5, "{sqs}");
    assert_eq!(summary["delivered"], 10, "{summary}");
    assert_eq!(failed_reasons(&summary), vec![REASON.to_string(); 5]);
    let per_minute = sandbox.stats().trigger_calls_per_minute;
    assert_eq!(per_minute.values().copied().collect::<Vec<_>>(), [20], "two environments, two shares: {per_minute:?}");
}

#[tokio::test]
async fn a_permit_that_cannot_come_in_time_fails_the_record_with_that_reason() {
    let h = Harness::new(&[("D365_MAX_TRIGGERS_PER_MINUTE", "3")]).await;
    clear_of_the_minute(Duration::from_secs(10)).await;
    let started = Instant::now();
    let summary = h.invoke_within(json!({ "batch": orders("p", 5) }), 3.0).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "no wait for permits that cannot come before the cut-off: {:?}", started.elapsed());
    assert_eq!(summary["delivered"], 3, "{summary}");
    let failed = summary["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    for f in failed {
        assert_eq!((f["outcome"].as_str(), f["error"].as_str()), (Some("failed"), Some(REASON)), "{f}");
        assert!(f.get("status").is_none(), "nothing was sent: {f}");
    }
    // A webhook in the same minute (with a few seconds to answer, so the next
    // minute's permits cannot come in time): 503, to be retried, with the same reason.
    let body = json!(orders("w", 1)[0]).to_string();
    let answer = h.invoke_within(signed_http(&body), 3.0).await.unwrap();
    assert_eq!(answer["statusCode"], 503, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["failed"][0]["error"], REASON, "{body}");
    assert_eq!(h.sandbox.stats().calls(), 3, "the over-ceiling records were never sent");
}

/// A relay whose events each need a contact lookup by e-mail (`c{i}@example.com`,
/// `contacts` of the sandbox) before their trigger call, under `ceiling` a minute.
async fn with_lookups(contacts: usize, ceiling: &str) -> Harness {
    let mapping = json!({
        "events": {"Order Completed": {"trigger": "msdynmkt_OrderCompleted", "attributes": {"msdynmkt_orderid": "properties.order_id"}}},
        "identity": {"lookup": [{"entity": "contacts", "attribute": "emailaddress1", "from": "context.traits.email"}]}
    })
    .to_string();
    let mut config = sandbox_config();
    let rows = (0..contacts).map(|i| json!({"contactid": format!("c0000000-0000-4000-8000-{i:012}"), "emailaddress1": format!("c{i}@example.com")})).collect();
    config.rows.insert("contacts".into(), rows);
    Harness::with_config(config, &[("D365_MAPPING", &mapping), ("D365_MAX_TRIGGERS_PER_MINUTE", ceiling)]).await
}

/// An order of contact `c{i}`.
fn looked_up(tag: &str, i: usize) -> Value {
    json!({"type": "track", "event": "Order Completed", "messageId": format!("{tag}{i}"), "properties": {"order_id": format!("ORD-{tag}{i}")}, "context": {"traits": {"email": format!("c{i}@example.com")}}})
}

#[tokio::test]
async fn only_trigger_calls_take_permits() {
    // Each event needs a contact lookup by e-mail before its trigger call.
    let h = with_lookups(4, "4").await;
    clear_of_the_minute(Duration::from_secs(10)).await;
    let events: Vec<Value> = (0..4).map(|i| looked_up("l", i)).collect();
    let summary = h.invoke_within(json!({ "batch": events }), 5.0).await.unwrap();
    assert_eq!(summary["delivered"], 4, "four lookups and the metadata read took no permit: {summary}");
    let stats = h.sandbox.stats();
    assert_eq!((stats.row_requests, stats.busiest_minute()), (4, 4), "{stats:?}");
}

#[tokio::test]
async fn a_spent_ceiling_makes_no_dataverse_request_at_all() {
    // Each event needs a contact lookup: with the minute's permits gone, not even that is made.
    let h = with_lookups(6, "2").await;
    clear_of_the_minute(Duration::from_secs(10)).await;
    let event = |i: usize| looked_up("spent-", i);
    let first = h.invoke_within(json!({ "batch": [event(0), event(1), event(2)] }), 3.0).await.unwrap();
    assert_eq!(first["delivered"], 2, "{first}");
    let (rows, calls) = (h.sandbox.stats().row_requests, h.sandbox.stats().calls());
    let second = h.invoke_within(json!({ "batch": [event(3), event(4), event(5)] }), 3.0).await.unwrap();
    let failed = second["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{second}");
    assert!(failed.iter().all(|f| f["error"] == REASON), "{second}");
    assert_eq!((h.sandbox.stats().row_requests, h.sandbox.stats().calls()), (rows, calls), "no lookup and no trigger call");
}

#[tokio::test]
async fn send_takes_the_lower_of_its_rate_and_the_ceiling() {
    let sandbox = d365_sandbox::Sandbox::start(sandbox_config(), 0).await.unwrap();
    let dir = std::env::temp_dir().join(format!("relay-ceiling-send-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, report) = (dir.join("events.ndjson"), dir.join("report.ndjson"));
    std::fs::write(&input, orders("s", 12).iter().map(|e| e.to_string() + "\n").collect::<String>()).unwrap();
    clear_of_the_minute(Duration::from_secs(12)).await;
    let mut command = relay_command(&sandbox, &[("D365_MAX_TRIGGERS_PER_MINUTE", "5")]);
    command.args(["send", input.to_str().unwrap(), "--rate", "20", "--report", report.to_str().unwrap()]).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let started = Instant::now();
    while sandbox.accepted().len() < 5 {
        assert!(started.elapsed() < Duration::from_secs(5), "the run started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // At 20 a second the 12 would all start within 0.6 s; the ceiling lets 5 start this minute.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let accepted = sandbox.accepted();
    assert_eq!(accepted.len(), 5, "the ceiling is the lower over the minute");
    // ... and within it, the rate: 50 ms between starts, not 5 at once.
    let times: Vec<DateTime<Utc>> = accepted.iter().map(|s| s.received_at.parse().unwrap()).collect();
    let span = times[4] - times[0];
    assert!(span >= chrono::Duration::milliseconds(180), "5 starts at 20 a second span 200 ms: {span:?}");

    // send waits for the next minute's permits (no deadline); Ctrl-C ends the wait.
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let interrupted = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(interrupted.elapsed() < Duration::from_secs(5), "a call waiting for a permit is not in flight");
    let lines: Vec<Value> = std::fs::read_to_string(&report).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5, "records still waiting for a permit are left for --resume");
    assert!(lines.iter().all(|l| l["outcome"] == "delivered"), "{lines:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn check_reports_the_ceiling_and_how_it_is_shared() {
    let h = Harness::new(&[("D365_MAX_TRIGGERS_PER_MINUTE", "2000"), ("D365_ENVIRONMENTS", "4")]).await;
    let report = h.invoke(json!({"check": true})).await;
    let ceiling = &report["ceiling"];
    assert_eq!(
        (ceiling["per_minute"].as_u64(), ceiling["shared"].as_str(), ceiling["per_environment"].as_u64()),
        (Some(2000), Some("environments"), Some(500)),
        "{ceiling}"
    );
    assert!(ceiling["detail"].as_str().unwrap().contains("bounds the SQS path only"), "{ceiling}");

    let h = Harness::new(&[("D365_IDEMPOTENCY_TABLE", "relay-keys")]).await;
    let ceiling = h.invoke(json!({"check": true})).await["ceiling"].clone();
    assert_eq!((ceiling["per_minute"].as_u64(), ceiling["shared"].as_str()), (Some(2500), Some("table")), "{ceiling}");
    assert_eq!(ceiling["item"], format!("ceiling#{HOST}#YYYY-MM-DDThh:mm"));
    assert_eq!(ceiling["take"], 25);
}
