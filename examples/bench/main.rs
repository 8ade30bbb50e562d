//! Benchmarks of delivery speed (`make bench`): the real handler and real HTTP to
//! the sandbox, reported as ratios to the bound ceil(N ÷ C) × latency; cold start
//! and peak RSS of the release binary through a minimal Lambda Runtime API on
//! loopback. Writes a Markdown table to `target/bench.md`.
//!
//! `BENCH_ONLY=capped,rss` runs some scenarios only, one file each here
//! (`record_log`: the record line's CPU, all against none):
//! `uncapped` (batches of 10, 100, 1,000 at C = 8 and 32), `capped` (three
//! 1,000-record batches in one environment against a Dataverse cap of 16),
//! `binary` (cold start, size, peak RSS of a 1-record and a 1,000-record batch,
//! root-store reads at init), `6mb` (peak RSS and wall time of a 6 MiB SQS batch),
//! `sources` (100 records as SNS notifications in SQS against the same sent raw),
//! `webhook` (the webhook's answer time for 100 events, enqueue vs. deliver mode),
//! `identity` (1,000 events from 50 customers identified by e-mail against the same batch with GUIDs),
//! `gzip` (a gzipped 500-call `/v1/batch` from an analytics SDK against the same batch uncompressed),
//! `rows` (1,000 events that each upsert an account and an opportunity bound to it, then raise a trigger: SPEC §19).
//! `send` (the release binary's `send` of 10,000- and 100,000-line NDJSON files at
//! C = 32: events per second and peak RSS; `BENCH_SEND_LINES=1000000` adds a
//! file of that many lines), `ceiling` (a 600-event backlog through 3 execution
//! environments at a CI-J ceiling of 240 a minute, shared through moto's
//! DynamoDB table and by `D365_ENVIRONMENTS`: about 6 minutes), `destinations`
//! (two Dynamics environments, production answering 429 Retry-After 60: UAT's
//! batch time beside it ÷ its time alone, SPEC §23.3). The other
//! scenarios run with no ceiling (`D365_MAX_TRIGGERS_PER_MINUTE=0`).
//!
//! `BENCH_STRICT_ROOTS=1` makes the bench exit non-zero (after writing the
//! table) when `binary` counts more than one read of the system's root
//! certificate store at init, or cannot count them (strace missing).

mod batches;
mod harness;
mod runtime_api;

mod binary;
mod capped;
mod ceiling;
mod destinations;
mod gzip;
mod identity;
mod record_log;
mod rows;
mod send;
mod six_mib;
mod sources;
mod uncapped;
mod webhook;

use d365_sandbox::{Faults, Sandbox};

use harness::{config, LATENCY_MS, ROOT};

#[tokio::main]
async fn main() {
    let mut table = String::new();
    let mut line = |s: String| {
        println!("{s}");
        table.push_str(&s);
        table.push('\n');
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    line(format!("Machine: {cores} cores, {}; sandbox latency {LATENCY_MS} ms; release build.\n", std::env::consts::ARCH));
    line("| scenario | N | C | wall | bound | wall ÷ bound | 429 share | failures | token requests | Dataverse requests ÷ event |".into());
    line("|---|---|---|---|---|---|---|---|---|---|".into());
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |scenario: &str| only.is_empty() || only.split(',').any(|s| s.trim() == scenario);
    if wanted("uncapped") {
        uncapped::run(&mut line).await;
    }
    if wanted("capped") {
        capped::run(&mut line).await;
    }
    if wanted("record_log") {
        record_log::run(&mut line).await;
    }
    if wanted("destinations") {
        destinations::run(&mut line).await;
    }

    // The release binary through the Runtime API.
    let sandbox = Sandbox::start(config(Faults { latency_ms: LATENCY_MS, ..Faults::default() }), 0).await.unwrap();
    let mut rows = Vec::new();
    if wanted("sources") {
        sources::run(&mut line).await;
    }
    if wanted("identity") {
        identity::run(&mut line).await;
    }
    if wanted("rows") {
        rows::run(&mut line).await;
    }
    if wanted("ceiling") {
        ceiling::run(&mut line).await;
    }
    if wanted("webhook") {
        webhook::run(&mut line).await;
    }
    if wanted("gzip") {
        gzip::run(&mut line).await;
    }
    let roots = if wanted("binary") { Some(binary::run(&sandbox, &mut rows).await) } else { None };
    if wanted("6mb") {
        six_mib::run(&sandbox, &mut rows).await;
    }
    if wanted("send") {
        send::run(&sandbox, &mut rows).await;
    }
    if !rows.is_empty() {
        line(String::new());
        line("| release binary | figure |".into());
        line("|---|---|".into());
        for row in rows {
            line(row);
        }
    }
    std::fs::create_dir_all(format!("{ROOT}/target")).unwrap();
    std::fs::write(format!("{ROOT}/target/bench.md"), &table).unwrap();
    println!("\nwritten to target/bench.md");
    if std::env::var("BENCH_STRICT_ROOTS").is_ok_and(|v| v == "1") {
        match roots {
            Some(Ok(reads)) if reads > 1 => {
                eprintln!("BENCH_STRICT_ROOTS=1: the release binary reads the root certificate store {reads} times at init (at most 1)");
                std::process::exit(1);
            }
            Some(Err(why)) => {
                eprintln!("BENCH_STRICT_ROOTS=1: root-store reads at init not counted: {why}");
                std::process::exit(1);
            }
            _ => {}
        }
    }
}
