//! `uncapped`: batches of 10, 100 and 1,000 records at C = 8 and 32, Dataverse at
//! 50 ms with no concurrency cap: wall time against the bound ceil(N ÷ C) × latency.

use d365_sandbox::Faults;

use crate::harness::{bound, run as one_run, LATENCY_MS};

pub async fn run(line: &mut impl FnMut(String)) {
    let latency = Faults { latency_ms: LATENCY_MS, ..Faults::default() };
    for c in [8, 32] {
        for n in [10, 100, 1_000] {
            let r = one_run(n, c, latency.clone()).await;
            let b = bound(n, c);
            line(format!(
                "| batch | {n} | {c} | {:.0} ms | {} ms | **{:.3}** | {:.1}% | {} | {} | {:.3} ({} calls + {} definition read) |",
                r.wall.as_secs_f64() * 1000.0,
                b.as_millis(),
                r.wall.as_secs_f64() / b.as_secs_f64(),
                100.0 * r.throttled as f64 / r.calls.max(1) as f64,
                r.failures,
                r.token_requests,
                (r.calls + r.metadata) as f64 / n as f64,
                r.calls,
                r.metadata
            ));
        }
    }
}
