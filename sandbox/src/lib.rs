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
mod rows;
mod secrets_manager;
mod sqs;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub use config::{App, Faults, Parameter, RowRequest, SandboxConfig, Signal, Stats, TokenRequest, TriggerDef};
pub use sqs::{QueuedMessage, VisibilityChange};

struct StoredSecret {
    value: String,
    version: u64,
}

struct State {
    secrets: Mutex<BTreeMap<String, StoredSecret>>,
    apps: Mutex<Vec<App>>,
    triggers: Mutex<HashMap<String, TriggerDef>>,
    token_lifetime: Mutex<Duration>,
    faults: Mutex<Faults>,
    dice: Mutex<fastrand::Rng>,
    tokens: Mutex<HashMap<String, (Instant, String)>>,
    /// The application user (client id) each token was issued to.
    token_clients: Mutex<HashMap<String, String>>,
    /// Accepted trigger calls per application user within the budget's window.
    budget_usage: Mutex<HashMap<String, std::collections::VecDeque<Instant>>>,
    signals: Mutex<Vec<Signal>>,
    token_log: Mutex<Vec<TokenRequest>>,
    calls_by_status: Mutex<BTreeMap<u16, u64>>,
    calls_per_minute: Mutex<BTreeMap<String, u64>>,
    token_requests: AtomicU64,
    secret_requests: AtomicU64,
    metadata_requests: AtomicU64,
    /// `EntityDefinitions` queries received (SPEC §19).
    entity_requests: AtomicU64,
    rows: Mutex<BTreeMap<String, Vec<Value>>>,
    row_log: Mutex<Vec<RowRequest>>,
    row_requests: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    queues: Mutex<sqs::Queues>,
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
            secrets: Mutex::new(BTreeMap::new()),
            apps: Mutex::new(Vec::new()),
            triggers: Mutex::new(HashMap::new()),
            token_lifetime: Mutex::new(Duration::from_secs(config.token_lifetime_secs.unwrap_or(3599))),
            faults: Mutex::new(config.faults.clone()),
            dice: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            tokens: Mutex::new(HashMap::new()),
            token_clients: Mutex::new(HashMap::new()),
            budget_usage: Mutex::new(HashMap::new()),
            signals: Mutex::new(Vec::new()),
            token_log: Mutex::new(Vec::new()),
            calls_by_status: Mutex::new(BTreeMap::new()),
            calls_per_minute: Mutex::new(BTreeMap::new()),
            token_requests: AtomicU64::new(0),
            secret_requests: AtomicU64::new(0),
            metadata_requests: AtomicU64::new(0),
            entity_requests: AtomicU64::new(0),
            rows: Mutex::new(rows::DEFAULT_SETS.iter().map(|s| (s.to_string(), Vec::new())).chain(config.rows.clone()).collect()),
            row_log: Mutex::new(Vec::new()),
            row_requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            queues: Mutex::new(sqs::Queues::default()),
        });
        let derived_apps = config.apps.is_empty();
        for (name, value) in &config.secrets {
            state.put_secret(name, value, derived_apps);
        }
        if !derived_apps {
            *state.apps.lock().unwrap() = config.apps.clone();
        }
        state.set_triggers(config.triggers);

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
        self.state.signals.lock().unwrap().clone()
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
        self.state.token_log.lock().unwrap().clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().unwrap() = faults;
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
        *self.state.apps.lock().unwrap() = apps;
    }

    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *self.state.token_lifetime.lock().unwrap() = lifetime;
    }

    /// The messages an emulated SQS queue holds (by name, e.g. `relay-events`), not yet received.
    pub fn queued(&self, queue: &str) -> Vec<QueuedMessage> {
        self.state.queues.lock().unwrap().peek(queue)
    }

    /// The visibility changes the emulated SQS was asked for, in order.
    pub fn visibility_changes(&self) -> Vec<VisibilityChange> {
        self.state.queues.lock().unwrap().visibility_changes.clone()
    }

    /// `{url}/000000000000/{name}`: a queue URL the emulated SQS serves.
    pub fn queue_url(&self, name: &str) -> String {
        format!("{}/000000000000/{name}", self.url())
    }

    /// Replaces the trigger definitions (a trigger republished with other parameters).
    pub fn set_triggers(&self, triggers: Vec<TriggerDef>) {
        self.state.set_triggers(triggers);
    }

    /// Every table-row request received (identity lookups, creates, updates, row writes), in order.
    pub fn row_requests(&self) -> Vec<RowRequest> {
        self.state.row_log.lock().unwrap().clone()
    }

    /// The rows of an entity set as they are now (created and updated ones included).
    pub fn rows(&self, set: &str) -> Vec<Value> {
        self.state.rows.lock().unwrap().get(set).cloned().unwrap_or_default()
    }

    /// Replaces the rows of an entity set.
    pub fn set_rows(&self, set: &str, rows: Vec<Value>) {
        self.state.rows.lock().unwrap().insert(set.to_string(), rows);
    }

    /// Forgets issued tokens (as if they had all expired).
    pub fn revoke_tokens(&self) {
        self.state.tokens.lock().unwrap().clear();
    }
}

impl State {
    fn put_secret(&self, name: &str, value: &Value, derive_app: bool) {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut secrets = self.secrets.lock().unwrap();
        let version = secrets.get(name).map_or(1, |s| s.version + 1);
        secrets.insert(name.to_string(), StoredSecret { value: text, version });
        if derive_app {
            // The top-level application user and each of `principals` (SPEC §17.3).
            let parsed: Value = match value {
                Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                other => other.clone(),
            };
            let mut derived: Vec<App> = serde_json::from_value::<App>(parsed.clone()).into_iter().collect();
            for principal in parsed.get("principals").and_then(Value::as_array).into_iter().flatten() {
                let mut entry = parsed.clone();
                for field in ["client_id", "client_secret"] {
                    entry[field] = principal.get(field).cloned().unwrap_or(Value::Null);
                }
                derived.extend(serde_json::from_value::<App>(entry));
            }
            let mut apps = self.apps.lock().unwrap();
            for app in derived {
                apps.retain(|a| a != &app);
                apps.push(app);
            }
        }
    }

    fn set_triggers(&self, triggers: Vec<TriggerDef>) {
        *self.triggers.lock().unwrap() = triggers.into_iter().map(|t| (t.name.clone(), t)).collect();
    }

    fn stats(&self) -> Stats {
        Stats {
            token_requests: self.token_requests.load(Ordering::SeqCst),
            secret_requests: self.secret_requests.load(Ordering::SeqCst),
            calls_by_status: self.calls_by_status.lock().unwrap().clone(),
            max_concurrency_seen: self.max_in_flight.load(Ordering::SeqCst),
            metadata_requests: self.metadata_requests.load(Ordering::SeqCst),
            entity_requests: self.entity_requests.load(Ordering::SeqCst),
            row_requests: self.row_requests.load(Ordering::SeqCst),
            trigger_calls_per_minute: self.calls_per_minute.lock().unwrap().clone(),
        }
    }

    fn reset(&self) {
        self.budget_usage.lock().unwrap().clear();
        self.signals.lock().unwrap().clear();
        self.token_log.lock().unwrap().clear();
        self.calls_by_status.lock().unwrap().clear();
        self.calls_per_minute.lock().unwrap().clear();
        self.token_requests.store(0, Ordering::SeqCst);
        self.secret_requests.store(0, Ordering::SeqCst);
        *self.queues.lock().unwrap() = sqs::Queues::default();
        self.metadata_requests.store(0, Ordering::SeqCst);
        self.entity_requests.store(0, Ordering::SeqCst);
        self.row_requests.store(0, Ordering::SeqCst);
        self.row_log.lock().unwrap().clear();
        self.max_in_flight.store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// A trigger call received now, in its UTC minute.
    fn count_minute(&self) {
        let minute = chrono::Utc::now().format("%Y-%m-%dT%H:%M").to_string();
        *self.calls_per_minute.lock().unwrap().entry(minute).or_default() += 1;
    }

    fn count(&self, status: u16) {
        *self.calls_by_status.lock().unwrap().entry(status).or_default() += 1;
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
