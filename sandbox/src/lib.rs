//! The sandbox (SPEC §10): Secrets Manager `GetSecretValue`, the Entra token
//! endpoint and the Dataverse Web API (custom triggers, the `customapis`
//! metadata query, entity definitions and the rows of `accounts`, `contacts`,
//! `leads` and `opportunities`) on one loopback port (and SQS
//! `SendMessageBatch`/`ReceiveMessage` for enqueue mode, SPEC §15), with
//! seeded fault injection and admin endpoints listing what it received.
//!
//! Several Dataverse environments on the one port (SPEC §23.4): a request to
//! `/{org_url_host}/api/data/v9.2/…` is that environment's — its triggers,
//! tables, counts, service protection and (when given their own) faults — and
//! one without a prefix is the default environment's. A prefixed environment
//! is created on its first request, with the default's trigger definitions
//! and the configured rows, answering under the default's faults until
//! [`Sandbox::set_environment_faults`] gives it its own; it accepts only
//! tokens issued for its host. The token endpoint and Secrets Manager are
//! shared, and what was received is one log, each entry naming its environment.

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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
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
    /// The default Dataverse environment (requests without a path prefix).
    dataverse: Arc<dataverse::Dataverse>,
    /// The environments path prefixes named, by host (lowercase).
    environments: Mutex<BTreeMap<String, Arc<dataverse::Dataverse>>>,
    /// The rows the config seeds, which a new environment starts with.
    seeded_rows: BTreeMap<String, Vec<serde_json::Value>>,
    seed: u64,
    /// Every trigger call received, in any environment, in order.
    signals: Mutex<Vec<Signal>>,
    /// Every table-row request received, in any environment, in order.
    row_log: Mutex<Vec<RowRequest>>,
    sqs: sqs::Sqs,
}

/// The Dataverse environment a request addresses.
struct Env<'a> {
    state: &'a State,
    dataverse: Arc<dataverse::Dataverse>,
}

impl Env<'_> {
    /// The faults the environment answers under: its own, else the default environment's.
    fn faults(&self) -> &Mutex<dataverse::DataverseFaults> {
        if self.dataverse.own_faults.load(Ordering::SeqCst) {
            &self.dataverse.faults
        } else {
            &self.state.dataverse.faults
        }
    }

    /// Whether `token` is valid here: issued, not expired, and — in an
    /// environment a prefix names — issued for its host (Dataverse checks the audience).
    fn is_valid(&self, token: &str) -> bool {
        self.state.entra.is_valid(token) && (self.dataverse.name.is_empty() || self.state.entra.audience(token) == self.dataverse.name)
    }
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
            dataverse: Arc::new(dataverse::Dataverse::new("", rows::Tables::new(config.rows.clone()), config.seed)),
            environments: Mutex::new(BTreeMap::new()),
            seeded_rows: config.rows.clone(),
            seed: config.seed,
            signals: Mutex::new(Vec::new()),
            row_log: Mutex::new(Vec::new()),
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

    /// Every Dataverse trigger call received, in every environment, in order.
    pub fn signals(&self) -> Vec<Signal> {
        self.state.signals.lock().unwrap().clone()
    }

    /// The trigger calls one environment received, in order (`host` as in the
    /// path prefix, e.g. `uat.api.crm.dynamics.com`; "" for the default environment).
    pub fn environment_signals(&self, host: &str) -> Vec<Signal> {
        let host = host.to_ascii_lowercase();
        self.signals().into_iter().filter(|s| s.environment == host).collect()
    }

    /// The calls one environment accepted (204).
    pub fn environment_accepted(&self, host: &str) -> Vec<Signal> {
        self.environment_signals(host).into_iter().filter(|s| s.status == 204).collect()
    }

    /// The environments path prefixes have named so far (their hosts).
    pub fn environments(&self) -> Vec<String> {
        self.state.environments.lock().unwrap().keys().cloned().collect()
    }

    /// Gives the environment `host` its own Dataverse faults (the Dataverse
    /// part of `faults`: statuses, throttling, script, rates, latency, budgets…;
    /// the token, Secrets Manager and SQS fields are ignored): from now on its
    /// requests answer under these, and the default environment's no longer apply to it.
    pub fn set_environment_faults(&self, host: &str, faults: Faults) {
        let environment = self.state.environment(host);
        *environment.faults.lock().unwrap() = faults.split().dataverse;
        environment.own_faults.store(true, Ordering::SeqCst);
    }

    /// Takes back the environment's own faults: it answers under the default environment's again.
    pub fn clear_environment_faults(&self, host: &str) {
        self.state.environment(host).own_faults.store(false, Ordering::SeqCst);
    }

    /// One environment's counts ("" for the default one).
    pub fn environment_stats(&self, host: &str) -> Stats {
        let mut stats = Stats::default();
        self.state.environment(host).stats(&mut stats);
        stats
    }

    /// Replaces one environment's trigger definitions.
    pub fn set_environment_triggers(&self, host: &str, triggers: Vec<TriggerDef>) {
        self.state.environment(host).set_triggers(triggers);
    }

    /// The rows of an entity set in one environment as they are now.
    pub fn environment_rows(&self, host: &str, set: &str) -> Vec<Value> {
        self.state.environment(host).tables.rows(set)
    }

    /// Replaces the rows of an entity set in one environment.
    pub fn set_environment_rows(&self, host: &str, set: &str, rows: Vec<Value>) {
        self.state.environment(host).tables.set_rows(set, rows);
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

    /// Replaces the trigger definitions (a trigger republished with other
    /// parameters), in the default environment and every other one so far.
    pub fn set_triggers(&self, triggers: Vec<TriggerDef>) {
        self.state.set_triggers(triggers);
    }

    /// Every table-row request received (identity lookups, creates, updates, row writes), in every environment, in order.
    pub fn row_requests(&self) -> Vec<RowRequest> {
        self.state.row_log.lock().unwrap().clone()
    }

    /// The rows of an entity set in the default environment as they are now (created and updated ones included).
    pub fn rows(&self, set: &str) -> Vec<Value> {
        self.state.dataverse.tables.rows(set)
    }

    /// Replaces the rows of an entity set in the default environment.
    pub fn set_rows(&self, set: &str, rows: Vec<Value>) {
        self.state.dataverse.tables.set_rows(set, rows);
    }

    /// Forgets issued tokens (as if they had all expired).
    pub fn revoke_tokens(&self) {
        self.state.entra.revoke();
    }
}

impl State {
    /// The environment a path prefix names ("" or the default's own name: the default one), created on first use.
    fn environment(&self, host: &str) -> Arc<dataverse::Dataverse> {
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return self.dataverse.clone();
        }
        let mut environments = self.environments.lock().unwrap();
        environments
            .entry(host.clone())
            .or_insert_with(|| {
                let seed = self.seed.wrapping_add(environments_seed(&host));
                let created = dataverse::Dataverse::new(&host, rows::Tables::new(self.seeded_rows.clone()), seed);
                created.set_triggers(self.dataverse.triggers());
                Arc::new(created)
            })
            .clone()
    }

    fn set_triggers(&self, triggers: Vec<TriggerDef>) {
        for environment in self.environments.lock().unwrap().values() {
            environment.set_triggers(triggers.clone());
        }
        self.dataverse.set_triggers(triggers);
    }

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

    /// The counts over every environment.
    fn stats(&self) -> Stats {
        let mut stats = Stats { token_requests: self.entra.requests(), secret_requests: self.secrets_manager.requests(), ..Stats::default() };
        self.dataverse.stats(&mut stats);
        for environment in self.environments.lock().unwrap().values() {
            environment.stats(&mut stats);
        }
        stats
    }

    fn reset(&self) {
        self.signals.lock().unwrap().clear();
        self.row_log.lock().unwrap().clear();
        for environment in self.environments.lock().unwrap().values() {
            environment.reset();
        }
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
    let full_path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_string);
    let headers: BTreeMap<String, String> = request.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let mut segments: Vec<&str> = full_path.trim_matches('/').split('/').collect();
    // `/{org_url_host}/api/…`: another environment's Web API (SPEC §23.4).
    let (host, path) = match segments.as_slice() {
        [host, "api", ..] if !host.is_empty() && *host != "_sandbox" => {
            let host = host.to_string();
            segments.remove(0);
            let inner = full_path.trim_start_matches('/').strip_prefix(host.as_str()).unwrap_or(&full_path).to_string();
            (host, inner)
        }
        _ => (String::new(), full_path.clone()),
    };
    let env = || Env { state: &state, dataverse: state.environment(&host) };
    match (&method, segments.as_slice()) {
        (&Method::POST, [..]) if target.as_deref().is_some_and(|t| t.starts_with("AmazonSQS.")) => {
            Ok(sqs::handle(&state, target.as_deref().unwrap_or(""), &body, headers.get("host").map_or("localhost", String::as_str)))
        }
        (&Method::POST, [""]) if target.is_some() => Ok(secrets_manager::get_secret_value(&state, target.as_deref().unwrap_or(""), &body)),
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => Ok(entra::token(&state, tenant, &body)),
        (&Method::GET, ["api", "data", "v9.2", "customapis"]) => Ok(dataverse::custom_apis(&env(), &query, &headers)),
        (&Method::GET, ["api", "data", "v9.2", "EntityDefinitions"]) => Ok(entities::entity_definitions(&env(), &query, &headers)),
        (&Method::GET | &Method::POST | &Method::PATCH, ["api", "data", "v9.2", set]) if rows::is_table(&env(), set) => {
            rows::handle(&env(), method.as_str(), set, &query, &headers, &body).await
        }
        (&Method::POST, ["api", "data", "v9.2", trigger]) => dataverse::trigger(&env(), trigger, &path, &headers, &body).await,
        (_, ["_sandbox", rest @ ..]) => Ok(admin::handle(&state, &method, rest, &body)),
        (&Method::POST, [""]) => Ok(json_response(400, &json!({"__type": "MissingAction", "message": "X-Amz-Target is required."}))),
        _ => Ok(dataverse_error(404, "0x80060888", &format!("No route for {method} {path}"))),
    }
}

/// A number drawn from a host, so each environment's dice differ from the others' and repeat from run to run.
fn environments_seed(host: &str) -> u64 {
    host.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Now as RFC 3339 UTC with milliseconds (`2026-06-06T14:30:00.250Z`).
fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
