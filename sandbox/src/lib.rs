//! The sandbox (SPEC §10): Secrets Manager `GetSecretValue`, the Entra token
//! endpoint and the Dataverse Web API (custom triggers, the `customapis`
//! metadata query, entity definitions and the rows of `accounts`, `contacts`,
//! `leads` and `opportunities`) on one loopback port (and SQS
//! `SendMessageBatch`/`ReceiveMessage` for enqueue mode, SPEC §15), with
//! seeded fault injection and admin endpoints listing what it received.

mod admin;
mod config;
mod dataverse;
mod entities;
mod entra;
mod protection;
mod rows;
mod secrets_manager;
mod sqs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub use config::{App, Faults, Parameter, RowRequest, SandboxConfig, Signal, Stats, TokenRequest, TriggerDef};
pub use sqs::{QueuedMessage, VisibilityChange};

/// The emulated services, each with its own state and faults.
struct State {
    secrets_manager: secrets_manager::SecretsManager,
    entra: entra::Entra,
    dataverse: dataverse::Dataverse,
    sqs: sqs::Sqs,
}

/// A running sandbox; stopped when dropped.
pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A connection the sandbox drops on purpose.
#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for Dropped {}

/// An HTTP answer of the sandbox.
type Reply = Response<Full<Bytes>>;
/// An answer, or a connection dropped on purpose.
type Answer = Result<Reply, Dropped>;

impl Sandbox {
    /// Starts on `127.0.0.1:port` (0 picks a free port).
    pub async fn start(config: SandboxConfig, port: u16) -> std::io::Result<Sandbox> {
        Sandbox::start_on(config, SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Starts on `addr`: loopback for tests and the demo, or an address a
    /// container can reach (Docker's bridge gateway for `sam local`).
    pub async fn start_on(config: SandboxConfig, addr: SocketAddr) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            secrets_manager: secrets_manager::SecretsManager::default(),
            entra: entra::Entra::new(config.token_lifetime_secs.map(Duration::from_secs), config.seed),
            dataverse: dataverse::Dataverse::new(rows::Tables::new(config.rows.clone()), config.seed),
            sqs: sqs::Sqs::new(config.seed),
        });
        state.set_faults(config.faults.clone());
        let derived_apps = config.apps.is_empty();
        for (name, value) in &config.secrets {
            state.put_secret(name, value, derived_apps);
        }
        if !derived_apps {
            state.entra.set_apps(config.apps.clone());
        }
        state.dataverse.set_triggers(config.triggers);

        let server_state = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let state = server_state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| route(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Sandbox { addr, state, server })
    }

    /// `http://{address}:{port}` (`http://127.0.0.1:{port}` unless started elsewhere).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every Dataverse call received, in order.
    pub fn signals(&self) -> Vec<Signal> {
        self.state.dataverse.signals()
    }

    /// The calls Dataverse accepted (204).
    pub fn accepted(&self) -> Vec<Signal> {
        self.signals().into_iter().filter(|s| s.status == 204).collect()
    }

    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Every token request received, in order.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state.entra.log()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    pub fn reset(&self) {
        self.state.reset();
    }

    /// Replaces a secret (a rotation): a new VersionId is served from now on.
    pub fn put_secret(&self, name: &str, value: &Value) {
        self.state.put_secret(name, value, false);
    }

    /// Replaces the app registrations Entra accepts.
    pub fn set_apps(&self, apps: Vec<App>) {
        self.state.entra.set_apps(apps);
    }

    /// Fixes the lifetime of the tokens issued from now on (instead of 60–90 minutes drawn).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.entra.set_lifetime(lifetime);
    }

    /// The messages an emulated SQS queue holds (by name, e.g. `relay-events`), not yet received.
    pub fn queued(&self, queue: &str) -> Vec<QueuedMessage> {
        self.state.sqs.queues.lock().unwrap().peek(queue)
    }

    /// The visibility changes the emulated SQS was asked for, in order.
    pub fn visibility_changes(&self) -> Vec<VisibilityChange> {
        self.state.sqs.queues.lock().unwrap().visibility_changes.clone()
    }

    /// `{url}/000000000000/{name}`: a queue URL the emulated SQS serves.
    pub fn queue_url(&self, name: &str) -> String {
        format!("{}/000000000000/{name}", self.url())
    }

    /// Replaces the trigger definitions (a trigger republished with other parameters).
    pub fn set_triggers(&self, triggers: Vec<TriggerDef>) {
        self.state.dataverse.set_triggers(triggers);
    }

    /// Every table-row request received (identity lookups, creates, updates, row writes), in order.
    pub fn row_requests(&self) -> Vec<RowRequest> {
        self.state.dataverse.tables.log()
    }

    /// The rows of an entity set as they are now (created and updated ones included).
    pub fn rows(&self, set: &str) -> Vec<Value> {
        self.state.dataverse.tables.rows(set)
    }

    /// Replaces the rows of an entity set.
    pub fn set_rows(&self, set: &str, rows: Vec<Value>) {
        self.state.dataverse.tables.set_rows(set, rows);
    }

    /// Forgets issued tokens (as if they had all expired).
    pub fn revoke_tokens(&self) {
        self.state.entra.revoke();
    }
}

impl State {
    /// Stores a secret; with `derive_app`, Entra accepts the application users it names.
    fn put_secret(&self, name: &str, value: &Value, derive_app: bool) {
        let apps = self.secrets_manager.put(name, value);
        if derive_app {
            self.entra.add_apps(apps);
        }
    }

    /// Hands each service its part of `faults`.
    fn set_faults(&self, faults: Faults) {
        let parts = faults.split();
        *self.entra.faults.lock().unwrap() = parts.entra;
        *self.dataverse.faults.lock().unwrap() = parts.dataverse;
        *self.secrets_manager.faults.lock().unwrap() = parts.secrets_manager;
        *self.sqs.faults.lock().unwrap() = parts.sqs;
    }

    /// The faults every service holds now, as one document.
    fn faults(&self) -> Faults {
        Faults::join(config::FaultsByService {
            entra: self.entra.faults.lock().unwrap().clone(),
            dataverse: self.dataverse.faults.lock().unwrap().clone(),
            secrets_manager: self.secrets_manager.faults.lock().unwrap().clone(),
            sqs: self.sqs.faults.lock().unwrap().clone(),
        })
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats { token_requests: self.entra.requests(), secret_requests: self.secrets_manager.requests(), ..Stats::default() };
        self.dataverse.stats(&mut stats);
        stats
    }

    fn reset(&self) {
        self.dataverse.reset();
        self.entra.reset();
        self.secrets_manager.reset();
        self.sqs.reset();
    }
}

fn json_response(status: u16, body: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn empty(status: u16) -> Reply {
    Response::builder().status(status).body(Full::new(Bytes::new())).expect("a valid response")
}

fn dataverse_error(status: u16, code: &str, message: &str) -> Reply {
    json_response(status, &json!({ "error": { "code": code, "message": message } }))
}

async fn route(state: Arc<State>, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_string);
    let headers: BTreeMap<String, String> = request.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, [..]) if target.as_deref().is_some_and(|t| t.starts_with("AmazonSQS.")) => {
            Ok(sqs::handle(&state, target.as_deref().unwrap_or(""), &body, headers.get("host").map_or("localhost", String::as_str)))
        }
        (&Method::POST, [""]) if target.is_some() => Ok(secrets_manager::get_secret_value(&state, target.as_deref().unwrap_or(""), &body)),
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => Ok(entra::token(&state, tenant, &body)),
        (&Method::GET, ["api", "data", "v9.2", "customapis"]) => Ok(dataverse::custom_apis(&state, &query, &headers)),
        (&Method::GET, ["api", "data", "v9.2", "EntityDefinitions"]) => Ok(entities::entity_definitions(&state, &query, &headers)),
        (&Method::GET | &Method::POST | &Method::PATCH, ["api", "data", "v9.2", set]) if rows::is_table(&state, set) => {
            rows::handle(&state, method.as_str(), set, &query, &headers, &body).await
        }
        (&Method::POST, ["api", "data", "v9.2", trigger]) => dataverse::trigger(&state, trigger, &path, &headers, &body).await,
        (_, ["_sandbox", rest @ ..]) => Ok(admin::handle(&state, &method, rest, &body)),
        (&Method::POST, [""]) => Ok(json_response(400, &json!({"__type": "MissingAction", "message": "X-Amz-Target is required."}))),
        _ => Ok(dataverse_error(404, "0x80060888", &format!("No route for {method} {path}"))),
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2026-06-06T14:30:00.250Z`).
fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
