//! What the scenarios share: the sandbox's configuration, the bound
//! ceil(N ÷ C) × latency, and warm invocations of SQS batches through the real
//! handler in one execution environment.

use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox, SandboxConfig};

use crate::batches::{batch, batch_of};

pub const LATENCY_MS: u64 = 50;
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn config(faults: Faults) -> SandboxConfig {
    let mut config: SandboxConfig = serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/sandbox/config.json")).unwrap()).unwrap();
    config.faults = faults;
    config
}

/// The relay's options in the bench: record lines built and let go (in Lambda they leave for the log), not printed among the table's.
pub fn quiet() -> relay::startup::Options {
    relay::startup::Options { record_lines: relay::startup::RecordLines::Discard, ..Default::default() }
}

pub fn bound(n: usize, c: usize) -> Duration {
    Duration::from_millis(n.div_ceil(c) as u64 * LATENCY_MS)
}

pub struct Run {
    pub wall: Duration,
    pub failures: usize,
    pub token_requests: u64,
    pub calls: u64,
    pub throttled: u64,
    /// Trigger-definition reads, warm-up included.
    pub metadata: u64,
}

/// One warm invocation of N records through the real handler.
pub async fn run(n: usize, in_flight: usize, faults: Faults) -> Run {
    run_with(n, in_flight, faults, false).await
}

/// One warm invocation of N records, sent raw or (`sns`) as SNS notifications in SQS bodies.
pub async fn run_with(n: usize, in_flight: usize, faults: Faults, sns: bool) -> Run {
    run_batches(&[n], in_flight, faults, sns).await.remove(0)
}

/// Warm invocations of `sizes` records one after another in one execution environment.
pub async fn run_batches(sizes: &[usize], in_flight: usize, faults: Faults, sns: bool) -> Vec<Run> {
    let sandbox = Sandbox::start(config(faults), 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let c = in_flight.to_string();
    // The relay's own speed, above CI-J's ceiling (the `ceiling` scenario measures that).
    let settings = relay::sandbox_settings(
        &sandbox.url(),
        &[("D365_MAPPING_FILE", &mapping), ("D365_MAX_IN_FLIGHT", &c), ("D365_DEFAULT_PHONE_REGION", "GB"), ("D365_MAX_TRIGGERS_PER_MINUTE", "0")],
    );
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), quiet());
    relay::mapping::warm_phone_metadata();
    // Warm (one record): the secret and token are fetched; the limiter learns nothing yet.
    relay.handle(batch(1, "warm"), Instant::now() + Duration::from_secs(60)).await.unwrap();
    let mut runs = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let before = sandbox.stats();
        // The payload is built before the clock starts: Lambda hands the function parsed JSON.
        let batch = batch_of(n, &format!("run{i}"), sns);
        let started = Instant::now();
        let response = relay.handle(batch, Instant::now() + Duration::from_secs(120)).await.unwrap();
        let wall = started.elapsed();
        let stats = sandbox.stats();
        runs.push(Run {
            wall,
            failures: response["batchItemFailures"].as_array().unwrap().len(),
            // For the whole run, warm-up included.
            token_requests: stats.token_requests,
            calls: stats.calls() - before.calls(),
            throttled: stats.calls_with(429) - before.calls_with(429),
            // Definition reads of this batch (the first batch counts the warm-up's read too).
            metadata: if i == 0 { stats.metadata_requests } else { stats.metadata_requests - before.metadata_requests },
        });
    }
    runs
}
