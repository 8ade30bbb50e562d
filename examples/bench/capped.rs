//! `capped`: three 1,000-record batches in one environment against a Dataverse
//! cap of 16 concurrent calls (429 with Retry-After 1 above it).

use d365_sandbox::Faults;

use crate::harness::{bound, run_batches, LATENCY_MS};

pub async fn run(line: &mut impl FnMut(String)) {
    // Three batches back to back in one warm environment: the first discovers the cap.
    let capped = Faults { latency_ms: LATENCY_MS, max_concurrency: Some(16), retry_after_secs: Some(1), ..Faults::default() };
    let b = bound(1_000, 16);
    for (i, r) in run_batches(&[1_000; 3], 32, capped, false).await.iter().enumerate() {
        line(format!(
            "| capped at 16 (429, Retry-After 1), batch {} of 3 in one environment | 1000 | 32 | {:.0} ms | {} ms (C = 16) | **{:.3}** | {:.1}% ({} of {}) | {} | {} | {:.3} |",
            i + 1,
            r.wall.as_secs_f64() * 1000.0,
            b.as_millis(),
            r.wall.as_secs_f64() / b.as_secs_f64(),
            100.0 * r.throttled as f64 / r.calls.max(1) as f64,
            r.throttled,
            r.calls,
            r.failures,
            r.token_requests,
            (r.calls + r.metadata) as f64 / 1_000.0
        ));
    }
}
