//! A concurrency cap learned from Dataverse's `0x80072326` 429 is kept by the
//! execution environment: later batches stay under it instead of probing past
//! it (and pausing everything for the Retry-After) once the growth hold is over.

use std::time::Duration;

use d365_sandbox::Faults;

use crate::helpers::*;

fn batch(tag: &str, n: usize) -> serde_json::Value {
    let bodies: Vec<String> = (0..n).map(|i| order(&format!("{tag}-{i}")).to_string()).collect();
    sqs_batch(&bodies, None)
}

/// Two batches through one relay (C = 8) against Dataverse capped at 4, the
/// second after the 5 s growth hold; the 429s the second batch drew.
async fn second_batch_429s(learned_cap_seconds: &str) -> u64 {
    let mut config = sandbox_config();
    config.faults = Faults { latency_ms: 20, max_concurrency: Some(4), retry_after_secs: Some(1), ..Faults::default() };
    let h = Harness::with_config(config, &[("D365_MAX_IN_FLIGHT", "8"), ("D365_LEARNED_CAP_SECONDS", learned_cap_seconds)]).await;
    let first = h.invoke(batch("first", 40)).await;
    assert_eq!(failures(&first), Vec::<String>::new());
    assert!(h.sandbox.stats().calls_with(429) >= 1, "the first batch discovers the cap");
    assert_eq!(h.relay.pacer().limit(), 4);
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let before = h.sandbox.stats().calls_with(429);
    let second = h.invoke(batch("second", 120)).await;
    assert_eq!(failures(&second), Vec::<String>::new());
    assert_eq!(h.sandbox.accepted().len(), 160, "every record delivered once");
    h.sandbox.stats().calls_with(429) - before
}

#[tokio::test]
async fn a_learned_cap_keeps_the_next_batch_under_it() {
    assert_eq!(second_batch_429s("300").await, 0, "the second batch stays at the learned cap");
}

#[tokio::test]
async fn without_the_learned_cap_the_next_batch_probes_past_it() {
    // D365_LEARNED_CAP_SECONDS=0: the limit grows past the cap after the hold and draws a 429.
    assert!(second_batch_429s("0").await >= 1);
}
