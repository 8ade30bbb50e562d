//! Shared test harness: a sandbox on a free loopback port and a relay wired to it
//! exactly as `main.rs` wires it, but for the endpoints.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use d365_sandbox::{Sandbox, SandboxConfig};
use relay::startup::{Clients, Options};
use relay::Relay;
use serde_json::{json, Value};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn sandbox_config() -> SandboxConfig {
    let text = std::fs::read_to_string(format!("{ROOT}/sandbox/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn event_file(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{ROOT}/events/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The demo mapping (`events/mapping.json`) without its `identity` and
/// `identify` sections: the tests' events carry ids such as `user-1` that are
/// sent as they are. Identity tests (identity.rs) bring their own document.
pub fn mapping_file() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let mut document: Value = serde_json::from_str(&std::fs::read_to_string(demo_mapping_file()).unwrap()).unwrap();
        let object = document.as_object_mut().unwrap();
        object.remove("identity");
        object.remove("identify");
        let path = std::env::temp_dir().join(format!("d365-relay-tests-mapping-{}.json", std::process::id()));
        std::fs::write(&path, document.to_string()).unwrap();
        path.to_string_lossy().into_owned()
    })
    .clone()
}

/// `events/mapping.json` as the demo and smoke use it (identity included).
pub fn demo_mapping_file() -> String {
    format!("{ROOT}/events/mapping.json")
}

pub struct Harness {
    pub sandbox: Sandbox,
    pub relay: Relay,
}

impl Harness {
    /// The sandbox's default config; the relay with the demo mapping and `overrides`.
    pub async fn new(overrides: &[(&str, &str)]) -> Harness {
        Harness::with_config(sandbox_config(), overrides).await
    }

    pub async fn with_config(config: SandboxConfig, overrides: &[(&str, &str)]) -> Harness {
        Harness::with_clients(config, overrides, |clients| clients).await
    }

    /// As [`Harness::with_config`], with the clients `clients` adds (SQS, DynamoDB).
    pub async fn with_clients(config: SandboxConfig, overrides: &[(&str, &str)], clients: impl FnOnce(Clients) -> Clients) -> Harness {
        let sandbox = Sandbox::start(config, 0).await.unwrap();
        let mapping = mapping_file();
        let mut all = vec![("D365_MAPPING_FILE", mapping.as_str())];
        all.extend_from_slice(overrides);
        let relay = relay_with(&sandbox, &all, clients, Options::default());
        Harness { sandbox, relay }
    }

    /// Invokes the handler with `seconds` until the deadline.
    pub async fn invoke_within(&self, payload: Value, seconds: f64) -> Result<Value, relay::intake::IntakeError> {
        self.relay.handle(payload, Instant::now() + Duration::from_secs_f64(seconds)).await
    }

    pub async fn invoke(&self, payload: Value) -> Value {
        self.invoke_within(payload, 30.0).await.expect("the invocation succeeds")
    }
}

pub fn relay_for(sandbox: &Sandbox, overrides: &[(&str, &str)]) -> Relay {
    relay_with(sandbox, overrides, |clients| clients, Options::default())
}

/// A relay against `sandbox` built as the function builds it, with the clients
/// `clients` adds (SQS, DynamoDB) and `options`.
pub fn relay_with(sandbox: &Sandbox, overrides: &[(&str, &str)], clients: impl FnOnce(Clients) -> Clients, options: Options) -> Relay {
    let settings = relay::sandbox_settings(&sandbox.url(), overrides);
    relay::startup::relay(settings, clients(Clients::for_endpoint(&sandbox.url())), options)
}

/// An SQS batch of events (standard queue unless `fifo_groups` are given).
pub fn sqs_batch(bodies: &[String], fifo_groups: Option<&[&str]>) -> Value {
    let arn = if fifo_groups.is_some() { "arn:aws:sqs:us-east-1:123456789012:q.fifo" } else { "arn:aws:sqs:us-east-1:123456789012:q" };
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut attributes = serde_json::json!({"ApproximateReceiveCount": "1"});
            if let Some(groups) = fifo_groups {
                attributes["MessageGroupId"] = groups[i].into();
            }
            serde_json::json!({
                "messageId": format!("sqs-{i}"),
                "receiptHandle": "h",
                "body": body,
                "attributes": attributes,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// A valid Order Completed event for the demo mapping.
pub fn order(id: &str) -> Value {
    serde_json::json!({
        "type": "track", "event": "Order Completed", "messageId": id, "userId": format!("user-{id}"),
        "timestamp": "2026-06-06T15:30:00Z",
        "properties": {"order_id": format!("ORD-{id}"), "revenue": 10.5, "currency": "GBP"}
    })
}

pub fn failures(response: &Value) -> Vec<String> {
    response["batchItemFailures"].as_array().unwrap().iter().map(|f| f["itemIdentifier"].as_str().unwrap().to_string()).collect()
}

/// An HTTP API (v2) request carrying `body`, signed now with the sandbox's webhook secret.
pub fn signed_http(body: &str) -> Value {
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let sig = relay::webhook::sign(b"sandbox-webhook-secret", &ts, body.as_bytes());
    let mut event = event_file("apigw-http.json");
    event["headers"] = json!({"x-timestamp": ts, "x-signature": sig, "content-type": "application/json"});
    event["body"] = json!(body);
    event
}

/// The real binary from a shell (no Lambda Runtime API), with the sandbox's
/// settings and `env` on top (a value of "" removes the setting).
pub fn relay_command(sandbox: &Sandbox, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_d365-trigger-relay"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "sandbox")
        .env("AWS_SECRET_ACCESS_KEY", "sandbox")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", sandbox.url())
        .env("D365_SECRET_ID", "d365/relay-demo")
        .env("D365_MAPPING_FILE", mapping_file())
        .env("D365_AUTHORITY_HOST", sandbox.url())
        .env("D365_DATAVERSE_BASE_URL", sandbox.url());
    for (k, v) in env {
        if v.is_empty() {
            command.env_remove(k);
        } else {
            command.env(k, v);
        }
    }
    command
}

/// Runs `command` with `args` off the async runtime.
pub async fn run(mut command: Command, args: &[&str]) -> Output {
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs")).await.unwrap()
}
