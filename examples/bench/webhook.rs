//! `webhook`: the webhook's answer time for 100 events, delivered inline against
//! queued (SPEC §15).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox};

use crate::batches::webhook;
use crate::harness::{config, LATENCY_MS, ROOT};

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
        crate::harness::quiet(),
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

/// The webhook's answer time, 100 events: delivered inline vs. queued (SPEC §15).
pub async fn run(line: &mut impl FnMut(String)) {
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
