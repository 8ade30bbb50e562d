//! The burst bench (`make bench`, SPEC §17.2, §18): a burst of ten budget
//! windows' worth of order events in an SQS queue (the sandbox's, with a redrive
//! policy to a DLQ after 5 receives), drained by 3 execution environments of the real
//! handler, each polling as Lambda's event source mapping does, against a
//! sandbox that enforces Dataverse's request budget for their one application
//! user (scaled: 100 requests per 5 s window, Dataverse's 20 a second, at 50 ms a
//! call). Reports, as ratios: 2xx answers ÷ elapsed against the budget's rate,
//! the share of 429s, the drain time against events ÷ budget rate, valid events
//! in the DLQ, and receives per event (median, max). Appends to target/bench.md.
//!
//! Then the same with the last environment starting 8 s after the others, as
//! Lambda adds one when it scales up, after the budget is learned: it bursts into
//! the room left and must settle on its share without a run of 429s.
//!
//! Then the same with a pool of two application users (SPEC §17.3), twice the
//! burst: drain against events ÷ twice the budget's rate, and each principal's
//! share of the calls.
//!
//! `BURST_EVENTS=N` changes the burst of one principal (default 1,000: ten
//! windows); `BURST_PRINCIPALS=1` or `2` runs those scenarios only;
//! `BURST_LATE_SECONDS=S` changes how late the late environment starts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox, SandboxConfig};
use relay::Relay;
use serde_json::json;
use testkit::sqs_poller;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ENVIRONMENTS: usize = 3;
const BUDGET: usize = 100;
const WINDOW_SECS: u64 = 5;
const LATENCY_MS: u64 = 50;

const SECOND_CLIENT: &str = "22222222-2222-2222-2222-222222222222";

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("BURST_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10 * BUDGET);
    let only: Option<usize> = std::env::var("BURST_PRINCIPALS").ok().and_then(|v| v.parse().ok());
    // `BURST_LATE_SECONDS=S`: in the scenario with a late environment, it starts polling S
    // seconds after the others (default 8), as Lambda adds one when it scales up, after the budget is learned.
    let late: f64 = std::env::var("BURST_LATE_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8.0);
    let mut ok = true;
    for (principals, late) in [(1, 0.0), (1, late), (2, 0.0)] {
        if only.is_none_or(|n| n == principals) {
            ok &= scenario(principals, events * principals, late).await;
        }
    }
    if !ok {
        std::process::exit(1);
    }
}

/// Drains `events` with `principals` application users, the last environment
/// starting `late` seconds after the others; false when an event was lost.
async fn scenario(principals: usize, events: usize, late: f64) -> bool {
    let budget_rate = (BUDGET * principals) as f64 / WINDOW_SECS as f64;
    let mut config: SandboxConfig = serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/sandbox/config.json")).unwrap()).unwrap();
    config.faults = Faults { latency_ms: LATENCY_MS, budget_requests: Some(BUDGET), budget_window_secs: Some(WINDOW_SECS), ..Faults::default() };
    if principals > 1 {
        let secret = config.secrets.get_mut("d365/relay-demo").expect("the demo secret");
        secret["principals"] = json!([{"client_id": SECOND_CLIENT, "client_secret": "second-sandbox-secret"}]);
    }
    let sandbox = Sandbox::start(config, 0).await.expect("the sandbox starts");
    let name = format!("burst-{}-{principals}", std::process::id());
    // Visibility 30 s (above the 10 s function timeout, scaled, as the template's 390 s is above its 60 s)
    // and 5 receives, as a first deployment would have it.
    let queue = sqs_poller::Queues::create(&sandbox.url(), &name, 30, 5).await;
    let mapping = format!("{ROOT}/events/mapping.json");
    let window = WINDOW_SECS.to_string();
    let relays: Vec<Relay> = (0..ENVIRONMENTS)
        .map(|_| {
            let settings = relay::sandbox_settings(
                &sandbox.url(),
                &[
                    ("D365_MAPPING_FILE", &mapping),
                    ("D365_MAX_IN_FLIGHT", "8"),
                    ("D365_BUDGET_WINDOW_SECONDS", &window),
                    ("D365_BACKOFF_BASE_SECONDS", "2"),
                    ("D365_BACKOFF_MAX_SECONDS", "30"),
                    ("D365_DEAD_LETTER_QUEUE_URL", &queue.dlq_url),
                ],
            );
            relay::startup::relay(
                settings,
                relay::startup::Clients::for_endpoint(&sandbox.url()).with_sqs(relay::enqueue::sqs_client_for_endpoint(&sandbox.url())),
                // Record lines built and let go: in Lambda they leave for the log.
                relay::startup::Options { record_lines: relay::startup::RecordLines::Discard, ..Default::default() },
            )
        })
        .collect();

    let bodies: Vec<String> = (0..events)
        .map(|i| {
            json!({"type": "track", "event": "Order Completed", "messageId": format!("burst-{i}"), "userId": format!("00000000-0000-4000-8000-{i:012}"),
                "properties": {"order_id": format!("ORD-{i}"), "revenue": 10.5, "currency": "GBP"}})
            .to_string()
        })
        .collect();
    for chunk in bodies.chunks(10) {
        queue.send_batch(chunk).await;
    }
    eprintln!("burst: {events} events queued; draining with {ENVIRONMENTS} environments and {principals} application user(s), each {BUDGET} requests per {WINDOW_SECS} s");

    let receives: Mutex<HashMap<String, u32>> = Mutex::new(HashMap::new());
    let started = Instant::now();
    let limit = Duration::from_secs_f64(events as f64 / budget_rate * 3.0 + 60.0);
    let poller = |(n, relay): (usize, &'static Relay)| {
        let (queue, sandbox, receives) = (&queue, &sandbox, &receives);
        async move {
            if n + 1 == ENVIRONMENTS {
                tokio::time::sleep(Duration::from_secs_f64(late)).await;
            }
            while sandbox.accepted().len() < events && started.elapsed() < limit {
                match queue.poll_within(relay, 10.0).await {
                    Some((_, records)) => {
                        let mut seen = receives.lock().unwrap();
                        for r in records {
                            let count: u32 = r["attributes"]["ApproximateReceiveCount"].as_str().and_then(|c| c.parse().ok()).unwrap_or(1);
                            let id = r["messageId"].as_str().unwrap_or("").to_string();
                            let entry = seen.entry(id).or_default();
                            *entry = (*entry).max(count);
                        }
                    }
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    };
    let relays: &'static [Relay] = Box::leak(relays.into_boxed_slice());
    futures_util::future::join_all(relays.iter().enumerate().map(poller)).await;
    let elapsed = started.elapsed();

    let stats = sandbox.stats();
    let accepted = sandbox.accepted().len();
    let throttled = stats.calls_with(429);
    let answers = stats.calls();
    let parked = queue.dead_letters().await.len();
    let mut counts: Vec<u32> = receives.lock().unwrap().values().copied().collect();
    counts.sort_unstable();
    let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
    let max = counts.last().copied().unwrap_or(0);
    let rate = accepted as f64 / elapsed.as_secs_f64();
    let bound = events as f64 / budget_rate;
    let signals = sandbox.signals();
    if std::env::var("BURST_DEBUG").is_ok() {
        let mut buckets: std::collections::BTreeMap<String, [usize; 4]> = Default::default();
        for s in &signals {
            let b = buckets.entry(s.received_at[..19].to_string()).or_default();
            let i = if s.client_id == SECOND_CLIENT { 2 } else { 0 } + usize::from(s.status == 429);
            b[i] += 1;
        }
        eprintln!(
            "token requests {}, secret requests {}, row requests {}, metadata {}",
            stats.token_requests, stats.secret_requests, stats.row_requests, stats.metadata_requests
        );
        for (t, b) in buckets {
            eprintln!("{t} first 2xx {} 429 {} second 2xx {} 429 {}", b[0], b[1], b[2], b[3]);
        }
        for relay in relays {
            let rates: Vec<String> =
                relay.pool().members().iter().map(|m| format!("{}: {:?}", &m.principal.client_id()[..4], m.pacer.learned_rate())).collect();
            eprintln!("learned: {rates:?}");
        }
    }
    let second = signals.iter().filter(|s| s.client_id == SECOND_CLIENT).count();
    let share = (signals.len() - second).min(second) as f64 / signals.len().max(1) as f64;
    let mut rows = vec![
        format!("| burst: 2xx ÷ elapsed ÷ budget rate ({budget_rate:.0}/s) | {:.3} | ≥ 0.90 |", rate / budget_rate),
        format!("| burst: 429s ÷ all answers | {:.3} ({throttled} of {answers}) | ≤ 0.05 |", throttled as f64 / answers.max(1) as f64),
        format!("| burst: drain ÷ (events ÷ budget rate = {bound:.0} s) | {:.3} ({:.1} s) | ≤ 1.10 |", elapsed.as_secs_f64() / bound, elapsed.as_secs_f64()),
        format!("| burst: valid events in the DLQ | {parked} (delivered {accepted} of {events}) | 0 |"),
        format!("| burst: receives per event, median / max | {median} / {max} | max < 5 |"),
    ];
    if principals > 1 {
        rows.push(format!("| burst: the lesser principal's share of the calls | {share:.3} | ≥ 0.40 |"));
    }
    let users = if principals == 1 { "one application user".to_string() } else { format!("{principals} application users") };
    let users = if late > 0.0 { format!("{users}, the last environment {late:.0} s late") } else { users };
    let table = format!("\n| burst of {events} events, {ENVIRONMENTS} environments, {users} | figure | target |\n|---|---|---|\n{}\n", rows.join("\n"));
    println!("{table}");
    let path = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{ROOT}/target")) + "/bench.md";
    let mut previous = std::fs::read_to_string(&path).unwrap_or_default();
    previous.push_str(&table);
    let _ = std::fs::write(&path, previous);
    if parked > 0 || accepted < events {
        eprintln!("burst: {parked} valid events in the DLQ, {accepted} of {events} delivered");
        return false;
    }
    true
}
