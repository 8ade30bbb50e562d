//! Backlogs wait in the queue (SPEC §18), against moto's SQS with a poller loop
//! as Lambda's event source mapping runs one: `ReceiveMessage` (all attributes),
//! the handler, `DeleteMessage` for what is not a batch item failure, a redrive
//! policy moving a message to the DLQ after `maxReceiveCount` receives, and
//! whole-second visibility timeouts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use d365_sandbox::Faults;
use relay::Relay;
use serde_json::json;

use crate::helpers::*;
use crate::moto::moto;
use crate::sqs_poller::Queues;

async fn queues(name: &str, visibility: u32, max_receives: u32) -> Queues {
    Queues::create(&moto().url, name, visibility, max_receives).await
}

fn relay_with_sqs(h: &Harness, overrides: &[(&str, &str)]) -> Relay {
    let mapping = mapping_file();
    let mut all = vec![("D365_MAPPING_FILE", mapping.as_str())];
    all.extend_from_slice(overrides);
    crate::helpers::relay_with(&h.sandbox, &all, |c| c.with_sqs(relay::enqueue::sqs_client_for_endpoint(&moto().url)), Default::default())
}

#[tokio::test]
async fn an_outage_longer_than_the_queues_receives_ends_with_no_valid_event_in_the_dlq() {
    // Visibility 1 s and 3 receives: without backoff, a 4 s outage parks every event.
    let q = queues("outage", 1, 3).await;
    let h = Harness::new(&[]).await;
    let relay = relay_with_sqs(&h, &[("D365_BACKOFF_BASE_SECONDS", "2"), ("D365_BACKOFF_MAX_SECONDS", "60")]);
    let bodies: Vec<String> = (0..5).map(|i| order(&format!("outage-{i}")).to_string()).collect();
    q.send(&bodies).await;
    h.sandbox.set_faults(Faults { unavailable_rate: 1.0, ..Faults::default() });
    let started = Instant::now();
    let mut receives: HashMap<String, u32> = HashMap::new();
    while started.elapsed() < Duration::from_secs(20) && h.sandbox.accepted().len() < 5 {
        if started.elapsed() > Duration::from_secs(4) {
            h.sandbox.set_faults(Faults::default());
        }
        if let Some((_, records)) = q.poll(&relay).await {
            for r in records {
                *receives.entry(r["messageId"].as_str().unwrap().to_string()).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(h.sandbox.accepted().len(), 5, "every event delivered once the outage ended");
    assert!(q.dead_letters().await.is_empty(), "no valid event in the DLQ");
    assert!(receives.values().all(|n| *n <= 3), "within the queue's receives: {receives:?}");
}

#[tokio::test]
async fn invalid_and_rejected_events_reach_the_dlq_within_one_invocation_with_their_reasons() {
    let q = queues("reasons", 30, 5).await;
    let h = Harness::new(&[]).await;
    let relay = relay_with_sqs(&h, &[("D365_DEAD_LETTER_QUEUE_URL", &q.dlq_url)]);
    let mut invalid = order("no-user");
    invalid.as_object_mut().unwrap().remove("userId");
    let bodies = vec![invalid.to_string(), order("refused").to_string()];
    q.send(&bodies).await;
    h.sandbox.set_faults(Faults { script: vec![400], ..Faults::default() });
    let (answer, records) = q.poll(&relay).await.expect("messages");
    assert_eq!(records.len(), 2);
    assert_eq!(failures(&answer), Vec::<String>::new(), "both parked by the relay, so SQS deletes them: {answer}");

    let mut parked = q.dead_letters().await;
    parked.sort_by_key(|(_, a)| a["d365-outcome"].clone());
    assert_eq!(parked.len(), 2);
    let (body, attributes) = &parked[0];
    assert_eq!(body, &bodies[0], "the body unchanged");
    assert_eq!(attributes["d365-outcome"], "invalid");
    assert!(attributes["d365-error"].contains("userId"), "{attributes:?}");
    assert_eq!(attributes["d365-receive-count"], "1");
    assert_eq!(attributes["origin"], "shop", "the record's own attributes are kept");
    assert_eq!(attributes["d365-message-id"], "no-user");
    assert!(!attributes.contains_key("d365-status") && !attributes.contains_key("d365-code"), "no status for an invalid record: {attributes:?}");
    let (body, attributes) = &parked[1];
    assert_eq!(body, &bodies[1]);
    assert_eq!((attributes["d365-outcome"].as_str(), attributes["d365-status"].as_str()), ("rejected", "400"));
    assert_eq!(attributes["d365-message-id"], "refused");
    assert!(attributes.values().all(|v| !v.is_empty()), "no empty attribute: {attributes:?}");
    assert!(q.poll(&relay).await.is_none(), "nothing left in the source queue");
}

#[tokio::test]
async fn a_record_past_the_retry_age_is_parked_as_expired() {
    let q = queues("expired", 30, 100).await;
    let h = Harness::new(&[]).await;
    let relay = relay_with_sqs(&h, &[("D365_DEAD_LETTER_QUEUE_URL", &q.dlq_url), ("D365_MAX_RETRY_AGE_SECONDS", "3600")]);
    h.sandbox.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let mut batch = sqs_batch(&[order("old").to_string(), order("young").to_string()], None);
    let now = chrono::Utc::now().timestamp_millis();
    batch["Records"][0]["attributes"]["ApproximateFirstReceiveTimestamp"] = json!((now - 7_200_000).to_string());
    batch["Records"][1]["attributes"]["ApproximateFirstReceiveTimestamp"] = json!((now - 60_000).to_string());
    for record in batch["Records"].as_array_mut().unwrap() {
        record["eventSourceARN"] = json!(q.arn);
    }
    let answer = relay.handle(batch, Instant::now() + Duration::from_secs(10)).await.unwrap();
    assert_eq!(failures(&answer), ["sqs-1"], "the old one is parked, the young one retried: {answer}");
    let parked = q.dead_letters().await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].1["d365-outcome"], "expired");
    assert_eq!(parked[0].1["d365-status"], "500");
    assert_eq!(parked[0].1["d365-message-id"], "old");
}

#[tokio::test]
async fn a_refused_dlq_send_loses_nothing() {
    let q = queues("refused-dlq", 30, 5).await;
    let h = Harness::new(&[]).await;
    let missing = format!("{}/123456789012/no-such-dlq", moto().url);
    let relay = relay_with_sqs(&h, &[("D365_DEAD_LETTER_QUEUE_URL", &missing)]);
    let mut invalid = order("lost?");
    invalid.as_object_mut().unwrap().remove("userId");
    q.send(&[invalid.to_string()]).await;
    let (answer, records) = q.poll(&relay).await.expect("a message");
    assert_eq!(failures(&answer), [records[0]["messageId"].as_str().unwrap()], "still a batch item failure: SQS keeps it");
}

#[tokio::test]
async fn a_parked_record_does_not_block_its_fifo_group() {
    let q = queues("fifo-park", 30, 5).await;
    let h = Harness::new(&[]).await;
    let relay = relay_with_sqs(&h, &[("D365_DEAD_LETTER_QUEUE_URL", &q.dlq_url)]);
    let mut invalid = order("first");
    invalid.as_object_mut().unwrap().remove("userId");
    let mut batch = sqs_batch(&[invalid.to_string(), order("second").to_string()], Some(&["g", "g"]));
    for record in batch["Records"].as_array_mut().unwrap() {
        record["eventSourceARN"] = json!(format!("{}.fifo", q.arn));
    }
    let answer = relay.handle(batch, Instant::now() + Duration::from_secs(10)).await.unwrap();
    assert_eq!(failures(&answer), Vec::<String>::new(), "{answer}");
    assert_eq!(h.sandbox.accepted().len(), 1, "the group went on past the parked record");
    assert_eq!(q.dead_letters().await.len(), 1);
}

#[tokio::test]
async fn a_paused_environment_makes_no_dataverse_call_and_backs_every_record_off() {
    let q = queues("paused", 1, 100).await;
    let h = Harness::new(&[]).await;
    let relay = relay_with_sqs(&h, &[]);
    // One 429 with a long Retry-After pauses the application user.
    h.sandbox.set_faults(Faults { script: vec![429], retry_after_secs: Some(120), ..Faults::default() });
    q.send(&[order("p-0").to_string()]).await;
    q.poll(&relay).await.expect("the first message");
    assert_eq!(h.sandbox.stats().calls(), 1);

    let bodies: Vec<String> = (1..6).map(|i| order(&format!("p-{i}")).to_string()).collect();
    q.send(&bodies).await;
    let started = Instant::now();
    let (answer, records) = q.poll(&relay).await.expect("the backlog");
    assert!(started.elapsed() < Duration::from_secs(1), "answered at once");
    assert_eq!(failures(&answer).len(), records.len(), "every record held back");
    assert_eq!(h.sandbox.stats().calls(), 1, "no Dataverse call while paused");
    // They wait out the pause in the queue, not the queue's 1 s visibility.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(q.poll(&relay).await.is_none(), "backed off past the queue's visibility");
}
