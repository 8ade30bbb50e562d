//! The `dlq` command (SPEC §22.3), the real binary against the sandbox's SQS:
//! a DLQ of parked records (the relay's `d365-` reasons, a message SQS moved,
//! a Lambda on-failure record) summed up, listed, replayed by outcome,
//! interrupted, and exported for `send`. After every command each message it
//! did not delete is visible again at once (the queues' visibility timeout is
//! long, so a message still held would not be received).

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};
use d365_sandbox::{Faults, Sandbox};
use serde_json::{json, Value};

use crate::helpers::*;

struct Queues {
    sandbox: Sandbox,
    client: aws_sdk_sqs::Client,
    dlq: String,
    events: String,
}

/// One message as a test reads it back.
#[derive(Debug, Clone)]
struct Got {
    receipt: String,
    body: String,
    attributes: BTreeMap<String, String>,
    group: Option<String>,
    dedup: Option<String>,
}

impl Queues {
    /// A DLQ and an events queue (`.fifo` names for FIFO), both with `visibility` seconds.
    async fn new(fifo: bool, visibility: u32) -> Queues {
        let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
        let client = relay::enqueue::sqs_client_for_endpoint(&sandbox.url());
        let suffix = if fifo { ".fifo" } else { "" };
        let mut urls = Vec::new();
        for name in ["relay-dlq", "relay-events"] {
            let mut create =
                client.create_queue().queue_name(format!("{name}{suffix}")).attributes(QueueAttributeName::VisibilityTimeout, visibility.to_string());
            if fifo {
                create = create.attributes(QueueAttributeName::FifoQueue, "true");
            }
            urls.push(create.send().await.unwrap().queue_url().unwrap().to_string());
        }
        Queues { sandbox, client, events: urls.pop().unwrap(), dlq: urls.pop().unwrap() }
    }

    /// Parks `body` in the DLQ with `attributes` (and the record's own `origin`); its MessageId.
    async fn park(&self, body: &str, attributes: &[(&str, &str)], group: Option<&str>) -> String {
        let text = |v: &str| MessageAttributeValue::builder().data_type("String").string_value(v).build().unwrap();
        let mut entry = SendMessageBatchRequestEntry::builder().id("0").message_body(body).message_attributes("origin", text("shop"));
        for (name, value) in attributes {
            entry = entry.message_attributes(*name, text(value));
        }
        if let Some(group) = group {
            entry = entry.message_group_id(group).message_deduplication_id(format!("park-{}", fastrand::u64(..)));
        }
        let out = self.client.send_message_batch().queue_url(&self.dlq).entries(entry.build().unwrap()).send().await.unwrap();
        out.successful()[0].message_id().to_string()
    }

    /// Every message `url` gives now (each then held for the queue's visibility timeout).
    async fn drain(&self, url: &str) -> Vec<Got> {
        let mut all = Vec::new();
        loop {
            let out = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            if out.messages().is_empty() {
                return all;
            }
            for m in out.messages() {
                let system = |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name).cloned());
                all.push(Got {
                    receipt: m.receipt_handle().unwrap().to_string(),
                    body: m.body().unwrap().to_string(),
                    attributes: m
                        .message_attributes()
                        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.string_value().unwrap_or("").to_string())).collect())
                        .unwrap_or_default(),
                    group: system(MessageSystemAttributeName::MessageGroupId),
                    dedup: system(MessageSystemAttributeName::MessageDeduplicationId),
                });
            }
        }
    }

    /// As [`Queues::drain`], then every message visible again.
    async fn peek(&self, url: &str) -> Vec<Got> {
        let all = self.drain(url).await;
        for m in &all {
            self.client.change_message_visibility().queue_url(url).receipt_handle(&m.receipt).visibility_timeout(0).send().await.unwrap();
        }
        all
    }

    async fn depth(&self, url: &str) -> u64 {
        let out = self.client.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::ApproximateNumberOfMessages).send().await.unwrap();
        out.attributes().unwrap()[&QueueAttributeName::ApproximateNumberOfMessages].parse().unwrap()
    }

    fn command(&self) -> Command {
        relay_command(&self.sandbox, &[("AWS_ENDPOINT_URL_SQS", &self.sandbox.url())])
    }

    async fn dlq(&self, args: &[&str]) -> Output {
        let mut all = vec!["dlq"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--queue", &self.dlq]);
        run(self.command(), &all).await
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn body(id: &str) -> String {
    order(id).to_string()
}

const FAILED: &[(&str, &str)] = &[("d365-outcome", "failed"), ("d365-status", "503"), ("d365-code", "0x80072321"), ("d365-receive-count", "4")];
const REJECTED: &[(&str, &str)] =
    &[("d365-outcome", "rejected"), ("d365-status", "400"), ("d365-code", "0x80040203"), ("d365-error", "j***@example.com is not a contact")];
const INVALID: &[(&str, &str)] = &[("d365-outcome", "invalid"), ("d365-error", "no userId")];

/// A Lambda on-failure record of an SNS invocation carrying two events.
fn on_failure(ids: [&str; 2]) -> String {
    let sns = |id: &str| json!({"EventSource": "aws:sns", "Sns": {"Type": "Notification", "MessageId": format!("sns-{id}"), "Message": body(id)}});
    json!({
        "version": "1.0",
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"Records": [sns(ids[0]), sns(ids[1])]},
        "responsePayload": {"errorMessage": "record 0 failed for jane.doe@example.com"}
    })
    .to_string()
}

#[tokio::test]
async fn summary_counts_by_outcome_and_code_then_every_message_is_visible_again() {
    let q = Queues::new(false, 300).await;
    for i in 0..3 {
        q.park(&body(&format!("f{i}")), FAILED, None).await;
    }
    q.park(&body("r0"), REJECTED, None).await;
    q.park(&body("r1"), REJECTED, None).await;
    q.park(r#"{"event":"Order Completed","messageId":"i0"}"#, INVALID, None).await;
    q.park(&body("moved"), &[], None).await;
    q.park(&on_failure(["a0", "a1"]), &[], None).await;

    let out = q.dlq(&["summary", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["messages"].as_u64(), summary["records"].as_u64()), (Some(8), Some(9)), "{summary}");
    assert_eq!(summary["outcome"], json!({"failed": 3, "rejected": 2, "invalid": 1, "moved": 3}), "the on-failure record by its two records");
    assert_eq!(summary["code"], json!({"0x80072321": 3, "0x80040203": 2, "(none)": 4}));
    assert_eq!(summary["status"]["503"], 3);
    assert_eq!(summary["event"]["Order Completed"], 9);
    assert_eq!(summary["age"], json!({"under 1h": 9}));
    assert!(stderr(&out).contains("scanned 8, matched 8, replayed 0, left 8"), "{}", stderr(&out));
    assert_eq!(q.peek(&q.dlq).await.len(), 8, "every message visible again at once");

    // list: one line per match, reasons masked, never a body.
    let out = q.dlq(&["list", "--outcome", "moved,rejected", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(!stdout.contains("jane.doe@example.com") && stdout.contains("j***@example.com"), "{stdout}");
    assert!(!stdout.contains("\"revenue\""), "no body: {stdout}");
    let failure = lines.iter().find(|l| l["records"] == 2).expect("the on-failure record");
    assert!(failure["error"].as_str().unwrap().starts_with("RetriesExhausted"), "{failure}");
    let out = q.dlq(&["list", "--message-id", "f1"]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("f1\tfailed\t503\t0x80072321\t-\tOrder Completed\t"), "{text}");
    assert_eq!(text.lines().count(), 1);
}

#[tokio::test]
async fn replay_of_failed_records_moves_exactly_those_bodies_unchanged_and_leaves_the_rest() {
    let q = Queues::new(false, 300).await;
    let failed: Vec<String> = (0..3).map(|i| body(&format!("f{i}"))).collect();
    for b in &failed {
        q.park(b, FAILED, None).await;
    }
    q.park(&body("r0"), REJECTED, None).await;
    q.park(&body("r1"), REJECTED, None).await;
    q.park(r#"{"event":"Order Completed"}"#, INVALID, None).await;

    let out = q.dlq(&["replay", "--outcome", "failed", "--to", &q.events]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("scanned 6, matched 3, replayed 3, left 3"), "{}", stderr(&out));
    let mut sent = q.drain(&q.events).await;
    sent.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(sent.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), failed, "bodies unchanged");
    for m in &sent {
        assert_eq!(m.attributes, BTreeMap::from([("origin".to_string(), "shop".to_string())]), "own attributes kept, d365- ones dropped");
    }
    let left = q.drain(&q.dlq).await;
    let mut outcomes: Vec<&str> = left.iter().map(|m| m.attributes["d365-outcome"].as_str()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["invalid", "rejected", "rejected"], "the rest stays, visible again");

    // Without --outcome: everything but invalid.
    let q = Queues::new(false, 300).await;
    q.park(&body("r0"), REJECTED, None).await;
    q.park(&body("m0"), &[], None).await;
    q.park(r#"{"event":"Order Completed"}"#, INVALID, None).await;
    let out = q.dlq(&["replay", "--to", &q.events]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("scanned 3, matched 2, replayed 2, left 1"), "{}", stderr(&out));
    let left = q.drain(&q.dlq).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attributes["d365-outcome"], "invalid");
}

#[tokio::test]
async fn a_dry_run_moves_nothing() {
    let q = Queues::new(false, 300).await;
    for i in 0..4 {
        q.park(&body(&format!("f{i}")), FAILED, None).await;
    }
    let out = q.dlq(&["replay", "--to", &q.events, "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("dry run: 4 messages would be replayed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("scanned 4, matched 4, replayed 0, left 4"), "{}", stderr(&out));
    assert!(q.drain(&q.events).await.is_empty());
    assert_eq!(q.drain(&q.dlq).await.len(), 4);
}

/// Every body parked is in the DLQ or the target (or both).
async fn nothing_lost(q: &Queues, parked: &[String]) -> (usize, usize) {
    let dlq = q.drain(&q.dlq).await;
    let events = q.drain(&q.events).await;
    for b in parked {
        assert!(dlq.iter().chain(&events).any(|m| &m.body == b), "lost: {b}");
    }
    (dlq.len(), events.len())
}

#[tokio::test]
async fn a_replay_interrupted_by_ctrl_c_loses_nothing_and_hands_the_rest_back_at_once() {
    let q = Queues::new(false, 300).await;
    let parked: Vec<String> = (0..40).map(|i| body(&format!("c{i}"))).collect();
    for b in &parked {
        q.park(b, FAILED, None).await;
    }
    let mut command = q.command();
    command.args(["dlq", "replay", "--queue", &q.dlq, "--to", &q.events, "--rate", "10"]).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let started = Instant::now();
    while q.depth(&q.events).await < 5 {
        assert!(started.elapsed() < Duration::from_secs(20), "the replay started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted: scanned") && stderr(&out).contains("(and the messages not scanned)"), "{}", stderr(&out));
    let (dlq, events) = nothing_lost(&q, &parked).await;
    assert!(events < 40, "stopped early: {events}");
    assert!(dlq + events >= 40, "DLQ {dlq} + events {events}");
}

#[tokio::test]
async fn a_replay_killed_mid_way_loses_nothing() {
    // Visibility 2 s: what the killed process held comes back on its own.
    let q = Queues::new(false, 2).await;
    let parked: Vec<String> = (0..40).map(|i| body(&format!("k{i}"))).collect();
    for b in &parked {
        q.park(b, FAILED, None).await;
    }
    let mut command = q.command();
    command.args(["dlq", "replay", "--queue", &q.dlq, "--to", &q.events, "--rate", "10"]).stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    while q.depth(&q.events).await < 5 {
        assert!(started.elapsed() < Duration::from_secs(20), "the replay started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (dlq, events) = nothing_lost(&q, &parked).await;
    assert!(dlq + events >= 40, "DLQ {dlq} + events {events}");
}

#[tokio::test]
async fn sends_the_target_refuses_stay_in_the_dlq_and_exit_1() {
    let q = Queues::new(false, 300).await;
    let parked: Vec<String> = (0..30).map(|i| body(&format!("s{i}"))).collect();
    for b in &parked {
        q.park(b, FAILED, None).await;
    }
    q.sandbox.set_faults(Faults { sqs_refuse_rate: 0.5, ..Faults::default() });
    let out = q.dlq(&["replay", "--to", &q.events]).await;
    q.sandbox.set_faults(Faults::default());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("messages were not sent (refused or failed); they stay in the DLQ"), "{}", stderr(&out));
    let (dlq, events) = nothing_lost(&q, &parked).await;
    assert_eq!(dlq + events, 30, "each message in one place: sent and deleted, or refused and kept");
    assert!(events > 0 && dlq > 0, "DLQ {dlq}, events {events}");
    assert!(stderr(&out).contains(&format!("replayed {events}, left {dlq}")), "{}", stderr(&out));
}

#[tokio::test]
async fn a_fifo_replay_keeps_each_group_in_order() {
    let q = Queues::new(true, 300).await;
    let mut parked = Vec::new();
    for (group, n) in [("user-a", 3), ("user-b", 2)] {
        for i in 0..n {
            let b = body(&format!("{group}-{i}"));
            let id = q.park(&b, FAILED, Some(group)).await;
            parked.push((group.to_string(), b, id));
        }
    }
    let out = q.dlq(&["replay", "--to", &q.events]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("scanned 5, matched 5, replayed 5, left 0"), "{}", stderr(&out));
    let sent = q.drain(&q.events).await;
    assert_eq!(sent.len(), 5);
    for (group, b, id) in &parked {
        let m = sent.iter().find(|m| &m.body == b).expect("replayed");
        assert_eq!(m.group.as_deref(), Some(group.as_str()), "the same group");
        assert_eq!(m.dedup.as_deref(), Some(format!("replay-{id}").as_str()));
    }
    for group in ["user-a", "user-b"] {
        let order: Vec<&str> = sent.iter().filter(|m| m.group.as_deref() == Some(group)).map(|m| m.body.as_str()).collect();
        let expected: Vec<&str> = parked.iter().filter(|(g, _, _)| g == group).map(|(_, b, _)| b.as_str()).collect();
        assert_eq!(order, expected, "{group} in order");
    }
    assert!(q.drain(&q.dlq).await.is_empty());
}

#[tokio::test]
async fn export_writes_what_send_accepts_and_leaves_the_messages() {
    let q = Queues::new(false, 300).await;
    for i in 0..3 {
        q.park(&body(&format!("e{i}")), FAILED, None).await;
    }
    q.park(&on_failure(["e3", "e4"]), &[], None).await;
    q.park(r#"{"event":"Order Completed"}"#, INVALID, None).await;
    let dir = std::env::temp_dir().join(format!("relay-dlq-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("parked.ndjson");
    let out = q.dlq(&["export", "--outcome", "failed,moved", "--out", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("5 records written"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 5, "one line per record, the on-failure record's two included");
    assert_eq!(q.drain(&q.dlq).await.len(), 5, "the messages stay in the DLQ");

    let report = dir.join("report.ndjson");
    let out = run(relay_command(&q.sandbox, &[]), &["send", file.to_str().unwrap(), "--dry-run", "--report", report.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<Value> = std::fs::read_to_string(&report).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["outcome"] == "dry-run"), "{lines:?}");
    let mut ids: Vec<&str> = lines.iter().map(|l| l["messageId"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4"]);
    let _ = std::fs::remove_dir_all(dir);
}
