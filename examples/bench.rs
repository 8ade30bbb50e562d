//! Benchmarks of delivery speed (`make bench`): the real handler and real HTTP to
//! the sandbox, reported as ratios to the bound ceil(N ÷ C) × latency; cold start
//! and peak RSS of the release binary through a minimal Lambda Runtime API on
//! loopback. Writes a Markdown table to `target/bench.md`.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use d365_sandbox::{Faults, Sandbox, SandboxConfig};
use relay::Relay;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const LATENCY_MS: u64 = 50;
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn config(faults: Faults) -> SandboxConfig {
    let mut config: SandboxConfig = serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/sandbox/config.json")).unwrap()).unwrap();
    config.faults = faults;
    config
}

fn batch(n: usize, tag: &str) -> Value {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let event = json!({"type": "track", "event": "Order Completed", "messageId": format!("{tag}-{i}"), "userId": format!("user-{i}"),
                "timestamp": "2026-06-06T15:30:00Z", "properties": {"order_id": format!("ORD-{tag}-{i}"), "revenue": 10.5, "currency": "GBP"},
                "context": {"traits": {"email": format!("Customer{i}@Example.com"), "phone": "07700 900123"}, "locale": "en-GB"}});
            json!({"messageId": format!("{tag}-sqs-{i}"), "receiptHandle": "h", "body": event.to_string(), "attributes": {},
                   "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"})
        })
        .collect();
    json!({ "Records": records })
}

fn bound(n: usize, c: usize) -> Duration {
    Duration::from_millis(n.div_ceil(c) as u64 * LATENCY_MS)
}

struct Run {
    wall: Duration,
    failures: usize,
    token_requests: u64,
    calls: u64,
    throttled: u64,
    /// Trigger-definition reads, warm-up included.
    metadata: u64,
}

/// One warm invocation of N records through the real handler.
async fn run(n: usize, in_flight: usize, faults: Faults) -> Run {
    let sandbox = Sandbox::start(config(faults), 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let c = in_flight.to_string();
    let settings = relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", &mapping), ("D365_MAX_IN_FLIGHT", &c), ("D365_DEFAULT_PHONE_REGION", "GB")]);
    let relay = Relay::new(settings, relay::secrets_client_for_endpoint(&sandbox.url()), relay::dynamics::http_client());
    relay::mapping::warm_phone_metadata();
    // Warm (one record): the secret and token are fetched; the limiter learns nothing yet.
    relay.handle(batch(1, "warm"), Instant::now() + Duration::from_secs(60)).await.unwrap();
    let before = sandbox.stats();
    let started = Instant::now();
    let response = relay.handle(batch(n, "run"), Instant::now() + Duration::from_secs(120)).await.unwrap();
    let wall = started.elapsed();
    let stats = sandbox.stats();
    Run {
        wall,
        failures: response["batchItemFailures"].as_array().unwrap().len(),
        // For the whole run, warm-up included.
        token_requests: stats.token_requests,
        calls: stats.calls() - before.calls(),
        throttled: stats.calls_with(429) - before.calls_with(429),
        metadata: stats.metadata_requests,
    }
}

/// A minimal Lambda Runtime API: serves `event` on the first `next`, reports when
/// `next` was first asked for and the function's response.
struct RuntimeApi {
    addr: std::net::SocketAddr,
    next_asked: mpsc::UnboundedReceiver<Instant>,
    responses: mpsc::UnboundedReceiver<Value>,
}

async fn runtime_api(event: Option<Value>) -> RuntimeApi {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (next_tx, next_asked) = mpsc::unbounded_channel();
    let (resp_tx, responses) = mpsc::unbounded_channel();
    let event = Arc::new(Mutex::new(event));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (next_tx, resp_tx, event) = (next_tx.clone(), resp_tx.clone(), event.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (next_tx, resp_tx, event) = (next_tx.clone(), resp_tx.clone(), event.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        if path.ends_with("/invocation/next") {
                            let _ = next_tx.send(Instant::now());
                            let payload = event.lock().unwrap().take();
                            let Some(payload) = payload else {
                                std::future::pending::<()>().await;
                                unreachable!()
                            };
                            let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
                            return Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("lambda-runtime-aws-request-id", "bench-1")
                                    .header("lambda-runtime-deadline-ms", deadline.to_string())
                                    .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:000000000000:function:relay")
                                    .body(Full::new(Bytes::from(payload.to_string())))
                                    .unwrap(),
                            );
                        }
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let _ = resp_tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        Ok(hyper::Response::builder().status(202).body(Full::new(Bytes::new())).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    RuntimeApi { addr, next_asked, responses }
}

fn relay_process(api: std::net::SocketAddr, sandbox: &str) -> Command {
    let mut command = Command::new(format!("{ROOT}/target/release/d365-trigger-relay"));
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "relay")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "sandbox")
        .env("AWS_SECRET_ACCESS_KEY", "sandbox")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", sandbox)
        .env("D365_SECRET_ID", "d365/relay-demo")
        .env("D365_MAPPING_FILE", format!("{ROOT}/events/mapping.json"))
        .env("D365_AUTHORITY_HOST", sandbox)
        .env("D365_DATAVERSE_BASE_URL", sandbox)
        .env("D365_MAX_IN_FLIGHT", "32")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Process start → first `next` request, in milliseconds.
async fn cold_start(sandbox: &str) -> f64 {
    let mut api = runtime_api(None).await;
    let started = Instant::now();
    let mut child = relay_process(api.addr, sandbox).spawn().expect("build the release binary first: cargo build --release");
    let asked = tokio::time::timeout(Duration::from_secs(10), api.next_asked.recv()).await.expect("the runtime asked for an event").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    asked.duration_since(started).as_secs_f64() * 1000.0
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

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
    let latency = Faults { latency_ms: LATENCY_MS, ..Faults::default() };
    for c in [8, 32] {
        for n in [10, 100, 1_000] {
            let r = run(n, c, latency.clone()).await;
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
    let capped = Faults { latency_ms: LATENCY_MS, max_concurrency: Some(16), retry_after_secs: Some(1), ..Faults::default() };
    let r = run(1_000, 32, capped).await;
    let b = bound(1_000, 16);
    line(format!(
        "| capped at 16 (429, Retry-After 1) | 1000 | 32 | {:.0} ms | {} ms (C = 16) | **{:.3}** | {:.1}% ({} of {}) | {} | {} | {:.3} |",
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

    // Cold start and peak RSS of the release binary through the Runtime API.
    let sandbox = Sandbox::start(config(latency.clone()), 0).await.unwrap();
    let url = sandbox.url();
    let _ = cold_start(&url).await; // page cache
    let mut starts = Vec::new();
    for _ in 0..9 {
        starts.push(cold_start(&url).await);
    }
    starts.sort_by(f64::total_cmp);
    let binary = std::fs::metadata(format!("{ROOT}/target/release/d365-trigger-relay")).map(|m| m.len()).unwrap_or(0);

    let mut api = runtime_api(Some(batch(1_000, "rss"))).await;
    let child = relay_process(api.addr, &url).spawn().unwrap();
    let pid = child.id();
    let response = tokio::time::timeout(Duration::from_secs(60), api.responses.recv()).await.expect("a response").unwrap();
    // The runtime asks for the next event after answering; then the peak is final.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        api.next_asked.recv().await;
        api.next_asked.recv().await
    })
    .await;
    let rss = peak_rss_kib(pid);
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    let failures = response["batchItemFailures"].as_array().map_or(usize::MAX, Vec::len);

    line(String::new());
    line("| release binary | figure |".into());
    line("|---|---|".into());
    line(format!("| cold start: process start → first Runtime API `next` (median of 9, min–max) | **{:.1} ms** ({:.1}–{:.1}) |", starts[4], starts[0], starts[8]));
    line(format!("| binary size (x86_64, LTO, stripped) | {:.1} MB |", binary as f64 / 1e6));
    line(format!("| peak RSS, 1,000-record SQS batch through the Runtime API | {:.1} MB (batch item failures: {failures}) |", rss as f64 / 1024.0));
    line(format!("| token requests for that process | {} |", sandbox.stats().token_requests));
    std::fs::create_dir_all(format!("{ROOT}/target")).unwrap();
    std::fs::write(format!("{ROOT}/target/bench.md"), &table).unwrap();
    println!("\nwritten to target/bench.md");
}
