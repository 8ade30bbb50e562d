//! `d365-trigger-relay send` (SPEC §16): the real binary from a shell against
//! the sandbox — a file delivered once through faults, the report, invalid
//! lines, dry run, resume after Ctrl-C, `D365_SECRET_FILE`, standard input,
//! `--rate`, and the exit codes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox};
use serde_json::{json, Value};

use crate::helpers::{order, relay_command, run, sandbox_config, ROOT};

/// A scratch directory of its own per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-send-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` Order Completed events, one a line.
fn orders(n: usize) -> String {
    (1..=n).map(|i| order(&format!("o{i}")).to_string() + "\n").collect()
}

fn report_lines(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How many times Dynamics accepted each order id.
fn accepted_orders(sandbox: &Sandbox) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for signal in sandbox.accepted() {
        *seen.entry(signal.body["msdynmkt_orderid"].as_str().unwrap_or("").to_string()).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn a_file_is_delivered_once_each_through_5xx_and_429s_with_a_report_in_input_order() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    // The first answers fail (500, 503, 429, 500), then one call in five is throttled with Retry-After 0.
    sandbox.set_faults(Faults { script: vec![500, 503, 429, 500], throttle_rate: 0.2, retry_after_secs: Some(0), ..Faults::default() });
    let dir = scratch("faults");
    let (input, report) = (dir.join("events.ndjson"), dir.join("report.ndjson"));
    std::fs::write(&input, orders(60)).unwrap();
    let out = run(relay_command(&sandbox, &[]), &["send", input.to_str().unwrap(), "--report", report.to_str().unwrap(), "--max-in-flight", "6"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "the report goes to --report; standard output stays empty");
    let lines = report_lines(&report);
    assert_eq!(lines.iter().map(|l| l["line"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=60).collect::<Vec<_>>());
    assert!(lines.iter().all(|l| l["outcome"] == "delivered"), "{lines:?}");
    assert_eq!(lines[0], json!({"line": 1, "messageId": "o1", "event": "Order Completed", "trigger": "msdynmkt_OrderCompleted", "outcome": "delivered"}));
    let accepted = accepted_orders(&sandbox);
    assert_eq!(accepted.len(), 60);
    assert!(accepted.values().all(|n| *n == 1), "every event raised once: {accepted:?}");
    let stats = sandbox.stats();
    assert!(stats.calls_by_status.get(&429).copied().unwrap_or(0) >= 1 && stats.calls_by_status.get(&500).copied().unwrap_or(0) >= 2, "{stats:?}");
    assert!(stats.max_concurrency_seen <= 6, "--max-in-flight caps concurrency: {}", stats.max_concurrency_seen);
    let summary = stderr(&out);
    assert!(summary.contains("send: 60 records: 60 delivered in "), "one summary line on standard error: {summary}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_backfill_sample_reports_every_line_by_number_and_exits_1_for_its_invalid_lines() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let dir = scratch("sample");
    let report = dir.join("report.ndjson");
    let input = format!("{ROOT}/events/backfill.ndjson");
    let out = run(relay_command(&sandbox, &[]), &["send", &input, "--report", report.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let lines = report_lines(&report);
    let seen: Vec<(u64, &str)> = lines.iter().map(|l| (l["line"].as_u64().unwrap(), l["outcome"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [
            (1, "delivered"),
            (2, "delivered"),
            (3, "delivered"),
            // line 4 is blank: skipped, but counted
            (5, "delivered"),
            (6, "delivered"),
            (7, "invalid"),
            (8, "dropped"),
            (9, "delivered"),
            (10, "duplicate"),
            (11, "invalid"),
            (12, "delivered"),
        ]
    );
    assert!(lines[5]["error"].as_str().unwrap().starts_with("line 7 is not JSON"), "{}", lines[5]);
    assert_eq!(lines[8]["messageId"], "backfill-1");
    assert_eq!(lines[9]["error"], "missing required attribute msdynmkt_orderid");
    assert_eq!(lines[3]["trigger"], "msdynmkt_ProductAdded", "the SNS envelope unwrapped");
    assert_eq!(lines[4]["event"], "Lead Generated", "the EventBridge envelope unwrapped");
    assert_eq!(sandbox.accepted().len(), 7);
    assert!(stderr(&out).contains("send: 11 records: 7 delivered, 1 duplicate, 1 dropped, 2 invalid"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_dry_run_sends_nothing_and_reports_each_body() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let dir = scratch("dry");
    let (input, report) = (dir.join("events.ndjson"), dir.join("report.ndjson"));
    std::fs::write(&input, orders(3)).unwrap();
    let out = run(relay_command(&sandbox, &[]), &["send", input.to_str().unwrap(), "--dry-run", "--report", report.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "a dry run of good events succeeds: {}", stderr(&out));
    assert!(sandbox.signals().is_empty(), "no trigger call");
    let lines = report_lines(&report);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["outcome"], "dry-run");
    let mut body = lines[0]["body"].clone();
    assert!(body.as_object_mut().unwrap().remove("msdynmkt_signalingestiontimestamp").is_some());
    assert_eq!(
        body,
        json!({"msdynmkt_orderid": "ORD-o1", "msdynmkt_ordertotal": 10.5, "msdynmkt_currency": "GBP", "msdynmkt_profileid": "user-o1",
               "msdynmkt_signaluserauthid": "user-o1", "msdynmkt_signaltimestamp": "2026-06-06T15:30:00Z"})
    );
    assert!(stderr(&out).contains("3 dry-run"));

    // Then the same file for real: every event is sent (the dry run claimed nothing).
    let out = run(relay_command(&sandbox, &[]), &["send", input.to_str().unwrap(), "--report", report.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(accepted_orders(&sandbox).len(), 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn ctrl_c_finishes_the_calls_in_flight_and_resume_sends_the_rest_never_one_twice() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    sandbox.set_faults(Faults { latency_ms: 40, ..Faults::default() });
    let dir = scratch("resume");
    let (input, report) = (dir.join("events.ndjson"), dir.join("report.ndjson"));
    std::fs::write(&input, orders(400)).unwrap();
    let mut command = relay_command(&sandbox, &[]);
    command.args(["send", input.to_str().unwrap(), "--report", report.to_str().unwrap(), "--max-in-flight", "4"]).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let started = Instant::now();
    while sandbox.accepted().len() < 40 {
        assert!(started.elapsed() < Duration::from_secs(20), "the run started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let first = report_lines(&report);
    let delivered_first = accepted_orders(&sandbox).len();
    assert!(delivered_first < 400, "stopped early: {delivered_first}");
    assert_eq!(first.len(), delivered_first, "the report lists exactly the calls made (in flight ones finished), nothing never started");
    assert!(first.iter().all(|l| l["outcome"] == "delivered"), "{first:?}");
    assert!(first.windows(2).all(|w| w[0]["line"].as_u64() < w[1]["line"].as_u64()), "input order");

    let out = run(relay_command(&sandbox, &[]), &["send", input.to_str().unwrap(), "--resume", report.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{delivered_first} skipped")), "{}", stderr(&out));
    let accepted = accepted_orders(&sandbox);
    assert_eq!(accepted.len(), 400, "none missed");
    assert!(accepted.values().all(|n| *n == 1), "none raised twice");
    let all = report_lines(&report);
    assert_eq!(all.len(), 400, "the second run appended the rest");
    let mut lines: Vec<u64> = all.iter().map(|l| l["line"].as_u64().unwrap()).collect();
    lines.sort();
    assert_eq!(lines, (1..=400).collect::<Vec<_>>());

    // A third resume has nothing left to do.
    let out = run(relay_command(&sandbox, &[]), &["send", input.to_str().unwrap(), "--resume", report.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sandbox.accepted().len(), 400);
    assert_eq!(report_lines(&report).len(), 400);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_json_array_on_standard_input_with_the_secret_from_a_file_reports_to_standard_output() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let dir = scratch("stdin");
    let secret = dir.join("secret.json");
    std::fs::write(&secret, sandbox_config().secrets["d365/relay-demo"].to_string()).unwrap();
    let mut command = relay_command(&sandbox, &[("D365_SECRET_ID", ""), ("D365_SECRET_FILE", secret.to_str().unwrap())]);
    command.args(["send", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let array = json!([order("a1"), order("a2"), {"no": "event"}]).to_string();
    child.stdin.take().unwrap().write_all(array.as_bytes()).unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "one item is no event: {}", stderr(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(u64, &str)> = lines.iter().map(|l| (l["line"].as_u64().unwrap(), l["outcome"].as_str().unwrap())).collect();
    assert_eq!(seen, [(1, "delivered"), (2, "delivered"), (3, "invalid")], "for an array, line is the index + 1");
    assert_eq!(lines[2]["error"], "not an event: no `event` or `type`");
    assert_eq!(sandbox.stats().secret_requests, 0, "Secrets Manager is not asked");
    assert_eq!(accepted_orders(&sandbox).len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn rate_caps_starts_per_second() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let dir = scratch("rate");
    let input = dir.join("events.ndjson");
    std::fs::write(&input, orders(12)).unwrap();
    let started = Instant::now();
    let out = run(relay_command(&sandbox, &[]), &["send", input.to_str().unwrap(), "--rate", "20", "--report", dir.join("r").to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // 12 starts at 20 a second: the last 550 ms after the first.
    assert!(started.elapsed() >= Duration::from_millis(550), "{:?}", started.elapsed());
    let times: Vec<String> = sandbox.accepted().iter().map(|s| s.received_at.clone()).collect();
    assert_eq!(times.len(), 12);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn exit_codes_name_usage_and_configuration_errors_and_rejections() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let dir = scratch("exit");
    let input = dir.join("events.ndjson");
    std::fs::write(&input, orders(2)).unwrap();
    let input = input.to_str().unwrap();
    let report = dir.join("r.ndjson");
    let report = report.to_str().unwrap();
    for (env, args, says) in [
        (vec![], vec!["send", input, "--bogus"], "unknown option --bogus"),
        (vec![], vec!["send", input, "--rate", "0"], "--rate must be a positive number"),
        (vec![], vec!["send", "/nonexistent/events.ndjson"], "cannot read /nonexistent/events.ndjson"),
        (vec![], vec!["send", input, "--resume", "/nonexistent/report.ndjson"], "--resume /nonexistent/report.ndjson"),
        (vec![], vec!["send", input, "--max-in-flight", "0"], "D365_MAX_IN_FLIGHT"),
        (vec![("D365_SECRET_ID", "")], vec!["send", input], "D365_SECRET_ID"),
        (vec![("D365_SECRET_ID", "d365/nope")], vec!["send", input], "configuration error"),
    ] {
        let out = run(relay_command(&sandbox, &env), &args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert!(sandbox.signals().is_empty());

    // A trigger Dataverse does not know: rejected, exit 1.
    let mapping = dir.join("mapping.json");
    std::fs::write(&mapping, json!({"events": {"Order Completed": {"trigger": "msdynmkt_Gone"}}}).to_string()).unwrap();
    let out = run(relay_command(&sandbox, &[("D365_MAPPING_FILE", mapping.to_str().unwrap())]), &["send", input, "--report", report]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(std::fs::read_to_string(report).unwrap().lines().all(|l| l.contains("\"outcome\":\"rejected\"")));

    let out = run(relay_command(&sandbox, &[]), &["send", "--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("send [FILE|-] [--report FILE] [--resume FILE] [--dry-run] [--rate N] [--max-in-flight N]"));
    let _ = std::fs::remove_dir_all(dir);
}
