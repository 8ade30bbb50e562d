//! The Dataverse request budget per application user, learned (SPEC §17.2),
//! against the sandbox's budget (requests per sliding window, 429 `0x80072322`
//! with a Retry-After until the window has room).

use std::time::{Duration, Instant};

use d365_sandbox::Faults;
use serde_json::{json, Value};

use crate::helpers::*;

/// Drains `events` through `relay` in invocations of 20 (as SQS batches would
/// come), each with `seconds` to run, until every event is delivered.
async fn drain(h: &Harness, relay: &relay::Relay, events: usize, seconds: f64) -> (usize, Duration) {
    let mut pending: Vec<Value> = (0..events).map(|i| order(&format!("budget-{i}"))).collect();
    let started = Instant::now();
    let mut invocations = 0;
    while !pending.is_empty() && started.elapsed() < Duration::from_secs(60) {
        let batch: Vec<Value> = pending.drain(..pending.len().min(20)).collect();
        let answer = relay.handle(json!(batch.clone()), Instant::now() + Duration::from_secs_f64(seconds)).await.unwrap();
        invocations += 1;
        let failed: Vec<usize> = answer["failed"].as_array().unwrap().iter().map(|f| f["index"].as_u64().unwrap() as usize).collect();
        pending.extend(failed.into_iter().map(|i| batch[i].clone()));
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(pending.is_empty(), "{} events not delivered after {invocations} invocations", pending.len());
    assert_eq!(h.sandbox.accepted().len(), events);
    (h.sandbox.stats().calls_with(429) as usize, started.elapsed())
}

#[tokio::test]
async fn after_a_budget_429_calls_are_paced_at_what_the_window_accepted() {
    // 10 calls per 1 s window per application user; 8 calls in flight at 20 ms each would send 400 a second.
    let h = Harness::new(&[("D365_MAX_IN_FLIGHT", "8"), ("D365_BUDGET_WINDOW_SECONDS", "1")]).await;
    h.sandbox.set_faults(Faults { latency_ms: 20, budget_requests: Some(10), budget_window_secs: Some(1), ..Faults::default() });
    let (throttled, elapsed) = drain(&h, &h.relay, 60, 3.0).await;
    eprintln!("budget drain: {throttled} 429s, {elapsed:?}");
    let rate = h.relay.pacer().learned_rate().expect("a rate was learned");
    assert!((5.0..=15.0).contains(&rate), "about the budget's 10 a second: {rate}");
    // The first window's burst meets the budget once; after that the pace keeps within it.
    assert!(throttled <= 15, "{throttled} 429s for 60 accepted calls in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(12), "drained near the budget's rate: {elapsed:?}");
}
