//! `6mb`: peak RSS and wall time of the release binary on a 6 MiB SQS batch
//! (Lambda's payload limit) through the Runtime API.

use d365_sandbox::Sandbox;

use crate::batches::batch_of_size;
use crate::harness::bound;
use crate::runtime_api::process_run;

pub async fn run(sandbox: &Sandbox, rows: &mut Vec<String>) {
    let url = sandbox.url();
    const SIX_MIB: usize = 6 * 1024 * 1024;
    let (event, n, bytes) = batch_of_size(SIX_MIB, "big");
    let payload_mib = bytes as f64 / (1024.0 * 1024.0);
    let r = process_run(event, &url).await;
    let rss_mib = r.peak_rss_kib as f64 / 1024.0;
    let b = bound(n, 32);
    rows.push(format!(
        "| peak RSS, 6 MiB SQS batch ({n} records, {payload_mib:.2} MiB) through the Runtime API | **{rss_mib:.1} MiB** = {:.1}× the payload (target ≤ 3× + 20 MiB = {:.1} MiB; batch item failures: {}) |",
        rss_mib / payload_mib,
        3.0 * payload_mib + 20.0,
        r.failures
    ));
    rows.push(format!(
        "| wall time of that batch, C = 32 (event handed over → response) | {:.0} ms = **{:.3}×** the bound {} ms |",
        r.wall.as_secs_f64() * 1000.0,
        r.wall.as_secs_f64() / b.as_secs_f64(),
        b.as_millis()
    ));
}
