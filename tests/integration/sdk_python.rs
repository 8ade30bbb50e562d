//! A real analytics SDK from PyPI — `segment-analytics-python` (`make test`
//! installs it) — with its default settings but for `host` and the write key,
//! posting to a loopback HTTP server that turns each request into the function
//! URL event Lambda would build and hands it to the real handler (SPEC §20).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use relay::Relay;
use serde_json::{json, Value};

use crate::helpers::*;

/// What the bridge saw: each request's path, `Content-Encoding` and the relay's status.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    path: String,
    encoding: Option<String>,
    status: u16,
}

/// A loopback HTTP server in front of `relay`, as a function URL is in front of Lambda.
async fn bridge(relay: Arc<Relay>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (relay, log) = (relay.clone(), log.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (relay, log) = (relay.clone(), log.clone());
                    async move { Ok::<_, std::convert::Infallible>(relay_request(&relay, &log, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    (url, seen)
}

/// One HTTP request through the handler as a function URL event (payload v2,
/// the body base64-encoded as Lambda does for bodies it does not take for text).
async fn relay_request(relay: &Relay, log: &Mutex<Vec<Seen>>, request: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        headers.insert(name.as_str().to_string(), json!(value.to_str().unwrap_or("")));
    }
    let path = parts.uri.path().to_string();
    let event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "requestContext": {"domainName": "bridge.lambda-url.us-east-1.on.aws", "http": {"method": parts.method.as_str(), "path": path}},
        "body": base64::engine::general_purpose::STANDARD.encode(&body), "isBase64Encoded": true,
    });
    let response = relay.handle(event, Instant::now() + Duration::from_secs(30)).await.unwrap();
    let status = response["statusCode"].as_u64().unwrap() as u16;
    let encoding = parts.headers.get("content-encoding").and_then(|v| v.to_str().ok()).map(str::to_string);
    log.lock().unwrap().push(Seen { path, encoding, status });
    let mut answer = hyper::Response::builder().status(status);
    for (name, value) in response["headers"].as_object().into_iter().flatten() {
        answer = answer.header(name, value.as_str().unwrap_or(""));
    }
    answer.body(Full::new(Bytes::from(response["body"].as_str().unwrap_or("").to_string()))).unwrap()
}

/// Three orders, an identify and a page through the SDK's own queue and
/// consumer thread; prints the errors its `on_error` received.
const SCRIPT: &str = r#"
import json, sys
from segment.analytics import Client

host, write_key, gzip, tag = sys.argv[1], sys.argv[2], sys.argv[3] == "gzip", sys.argv[4]
errors = []
def on_error(error, batch):
    errors.append({"status": getattr(error, "status", None), "code": getattr(error, "code", None),
                   "message": getattr(error, "message", str(error)), "calls": len(batch)})

client = Client(write_key=write_key, host=host, gzip=gzip, on_error=on_error)
user = "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33"
for i in range(3):
    client.track(user_id=user, event="Order Completed",
                 properties={"order_id": "ORD-%s-%d" % (tag, i), "revenue": 10.5, "currency": "GBP"},
                 context={"traits": {"email": "Jane@Example.com"}})
client.identify(user_id=user, traits={"email": "jane@example.com"})
client.page(user_id=user, name="Home")
client.shutdown()
print(json.dumps({"errors": errors}))
"#;

async fn run_sdk(url: &str, write_key: &str, gzip: bool, tag: &str) -> Value {
    let mut command = std::process::Command::new("python3");
    command.args(["-c", SCRIPT, url, write_key, if gzip { "gzip" } else { "plain" }, tag]);
    let output = run(command, &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("No module named 'segment'"), "segment-analytics-python is not installed: `make tools-sdk` (which `make test` runs) installs it");
    assert!(output.status.success(), "the SDK script failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("the SDK script printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test]
async fn segment_analytics_python_delivers_every_event_once_and_a_wrong_key_gets_401_without_a_retry() {
    let sandbox = d365_sandbox::Sandbox::start(sandbox_config(), 0).await.unwrap();
    let mapping = mapping_file();
    let relay = Arc::new(relay_for(&sandbox, &[("D365_MAPPING_FILE", mapping.as_str()), ("D365_WEBHOOK_AUTH", "writekey")]));
    let (url, seen) = bridge(relay).await;

    // Its defaults (uncompressed), then with gzip=True as RudderStack's SDK does by default.
    for (gzip, tag) in [(false, "plain"), (true, "gzip")] {
        let result = run_sdk(&url, crate::sdk::WRITE_KEY, gzip, tag).await;
        assert_eq!(result, json!({"errors": []}), "gzip={gzip}");
    }
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|s| s.path == "/v1/batch" && s.status == 200), "{requests:?}");
    assert!(requests.iter().any(|s| s.encoding.as_deref() == Some("gzip")), "{requests:?}");
    let mut orders: Vec<(String, String)> = sandbox
        .accepted()
        .iter()
        .map(|s| (s.body["msdynmkt_orderid"].as_str().unwrap().to_string(), s.body["contactpoint_email"].as_str().unwrap_or("").to_string()))
        .collect();
    orders.sort();
    let expected: Vec<(String, String)> =
        ["gzip", "plain"].iter().flat_map(|tag| (0..3).map(move |i| (format!("ORD-{tag}-{i}"), "jane@example.com".to_string()))).collect();
    assert_eq!(orders, expected, "each track raised once; identify and page dropped by the mapping");
    assert_eq!(sandbox.stats().calls(), 6);

    // A wrong key: 401 with code and message, read by the SDK, and never retried.
    seen.lock().unwrap().clear();
    let result = run_sdk(&url, "not-the-write-key", true, "wrong").await;
    let errors = result["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{result}");
    assert_eq!((errors[0]["status"].as_u64(), errors[0]["code"].as_str()), (Some(401), Some("unauthorized")), "{result}");
    assert!(errors[0]["message"].as_str().unwrap().contains("does not match write_key"), "{result}");
    assert_eq!(errors[0]["calls"], 5);
    assert_eq!(seen.lock().unwrap().iter().map(|s| s.status).collect::<Vec<_>>(), [401], "one request, no retry");
    assert_eq!(sandbox.stats().calls(), 6, "nothing more delivered");
}
