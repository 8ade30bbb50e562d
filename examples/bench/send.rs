//! `send`: the release binary's `send` of 10,000- and 100,000-line NDJSON files
//! at C = 32 (SPEC §16): events per second and peak RSS; `BENCH_SEND_LINES=N`
//! adds a file of N lines.

use std::time::{Duration, Instant};

use d365_sandbox::Sandbox;
use serde_json::json;

use crate::batches::profile_id;
use crate::harness::{LATENCY_MS, ROOT};
use crate::runtime_api::{peak_rss_kib, relay_process};

struct SendRun {
    file_bytes: u64,
    per_second: f64,
    peak_rss_kib: u64,
    delivered: usize,
    exit: i32,
}

/// `d365-trigger-relay send FILE --report … --max-in-flight 32` of an
/// `n`-line file generated under target/, the peak RSS read while it runs.
/// The sandbox's call log is cleared as it goes (it would hold every body).
async fn send_run(n: usize, sandbox: &Sandbox) -> SendRun {
    use std::io::Write;
    let dir = format!("{ROOT}/target/bench-send");
    std::fs::create_dir_all(&dir).unwrap();
    let (input, report) = (format!("{dir}/events-{n}.ndjson"), format!("{dir}/report-{n}.ndjson"));
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for i in 0..n {
            let event = json!({"type": "track", "event": "Order Completed", "messageId": format!("send-{n}-{i}"), "userId": profile_id(i),
                "timestamp": "2026-06-06T15:30:00Z", "properties": {"order_id": format!("ORD-{n}-{i}"), "revenue": 10.5, "currency": "GBP"},
                "context": {"traits": {"email": format!("Customer{i}@Example.com")}, "locale": "en-GB"}});
            writeln!(out, "{event}").unwrap();
        }
    }
    let file_bytes = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
    let mut command = relay_process("127.0.0.1:9".parse().unwrap(), &sandbox.url());
    command.env_remove("AWS_LAMBDA_RUNTIME_API").args(["send", &input, "--report", &report, "--max-in-flight", "32"]);
    sandbox.reset();
    let started = Instant::now();
    let mut child = command.spawn().expect("build the release binary first: cargo build --release");
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(peak_rss_kib(pid));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        sandbox.reset();
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = started.elapsed();
    let delivered = std::fs::read_to_string(&report).map(|r| r.lines().filter(|l| l.contains("\"outcome\":\"delivered\"")).count()).unwrap_or(0);
    let _ = std::fs::remove_file(&input);
    SendRun { file_bytes, per_second: n as f64 / wall.as_secs_f64(), peak_rss_kib: peak, delivered, exit: status.code().unwrap_or(-1) }
}

/// The backfill command streams: peak RSS must not grow with the file (SPEC §16).
pub async fn run(sandbox: &Sandbox, rows: &mut Vec<String>) {
    let mut sizes = vec![10_000, 100_000];
    if let Some(n) = std::env::var("BENCH_SEND_LINES").ok().and_then(|n| n.parse::<usize>().ok()) {
        sizes.push(n);
    }
    let target = 0.95 * 32.0 / (LATENCY_MS as f64 / 1000.0);
    for n in sizes {
        let r = send_run(n, sandbox).await;
        assert_eq!((r.delivered, r.exit), (n, 0), "every line of the send bench is delivered");
        rows.push(format!(
            "| `send` of a {n}-line NDJSON file ({:.1} MB), C = 32, Dataverse at {LATENCY_MS} ms | **{:.0} events/s** = {:.3}× the target {target:.0}; peak RSS **{:.1} MB** (target ≤ 64 MB); {} delivered, exit {} |",
            r.file_bytes as f64 / 1e6,
            r.per_second,
            r.per_second / target,
            r.peak_rss_kib as f64 / 1024.0,
            r.delivered,
            r.exit
        ));
    }
}
