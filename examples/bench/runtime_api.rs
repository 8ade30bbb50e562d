//! The release binary through a minimal Lambda Runtime API on loopback: the
//! server, the process with the bench's environment, cold start and one
//! invocation with its peak RSS.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::harness::ROOT;

/// A minimal Lambda Runtime API: serves `event` on the first `next`, reports when
/// `next` was first asked for and the function's response.
pub struct RuntimeApi {
    pub addr: std::net::SocketAddr,
    pub next_asked: mpsc::UnboundedReceiver<Instant>,
    pub responses: mpsc::UnboundedReceiver<(Instant, Value)>,
}

pub async fn runtime_api(event: Option<Value>) -> RuntimeApi {
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
                        let _ = resp_tx.send((Instant::now(), serde_json::from_slice(&body).unwrap_or(Value::Null)));
                        Ok(hyper::Response::builder().status(202).body(Full::new(Bytes::new())).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    RuntimeApi { addr, next_asked, responses }
}

pub fn relay_process(api: std::net::SocketAddr, sandbox: &str) -> Command {
    relay_process_as(&format!("{ROOT}/target/release/d365-trigger-relay"), api, sandbox)
}

/// `program` (the release binary, or a tracer given it as arguments) with the
/// release binary's environment.
pub fn relay_process_as(program: &str, api: std::net::SocketAddr, sandbox: &str) -> Command {
    let mut command = Command::new(program);
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
        // The release binary's own speed and memory, above CI-J's ceiling.
        .env("D365_MAX_TRIGGERS_PER_MINUTE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // To tell allocator fragmentation from live data: `MALLOC_ARENA_MAX=2 make bench`.
    if let Ok(arenas) = std::env::var("MALLOC_ARENA_MAX") {
        command.env("MALLOC_ARENA_MAX", arenas);
    }
    command
}

/// Process start → first `next` request, in milliseconds.
pub async fn cold_start(sandbox: &str) -> f64 {
    let mut api = runtime_api(None).await;
    let started = Instant::now();
    let mut child = relay_process(api.addr, sandbox).spawn().expect("build the release binary first: cargo build --release");
    let asked = tokio::time::timeout(Duration::from_secs(10), api.next_asked.recv()).await.expect("the runtime asked for an event").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    asked.duration_since(started).as_secs_f64() * 1000.0
}

pub struct ProcessRun {
    pub peak_rss_kib: u64,
    /// Event handed to the function → its response received.
    pub wall: Duration,
    pub failures: usize,
}

/// One invocation of the release binary with `event` through the Runtime API.
pub async fn process_run(event: Value, sandbox: &str) -> ProcessRun {
    let mut api = runtime_api(Some(event)).await;
    let mut child = relay_process(api.addr, sandbox).spawn().unwrap();
    let pid = child.id();
    let served = tokio::time::timeout(Duration::from_secs(10), api.next_asked.recv()).await.expect("the runtime asked for an event").unwrap();
    let (answered, response) = tokio::time::timeout(Duration::from_secs(60), api.responses.recv()).await.expect("a response").unwrap();
    // The runtime asks for the next event after answering; then the peak is final.
    let _ = tokio::time::timeout(Duration::from_secs(5), api.next_asked.recv()).await;
    let peak_rss_kib = peak_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    ProcessRun { peak_rss_kib, wall: answered.duration_since(served), failures: response["batchItemFailures"].as_array().map_or(usize::MAX, Vec::len) }
}

pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
