//! The sandbox (SPEC §10): Secrets Manager `GetSecretValue`, the Entra token
//! endpoint and the Dataverse custom-trigger API on one loopback port, with
//! seeded fault injection and admin endpoints listing what it received.

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
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Everything the sandbox is started with.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Secrets served by GetSecretValue, by name (values are the secret JSON).
    pub secrets: BTreeMap<String, Value>,
    /// App registrations Entra accepts; when empty, derived from the secrets.
    pub apps: Vec<App>,
    pub triggers: Vec<TriggerDef>,
    /// Lifetime of issued tokens (default 3599 s).
    pub token_lifetime_secs: Option<u64>,
    pub faults: Faults,
    /// Seed of the fault dice, so runs are repeatable.
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct App {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub org_url_host: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDef {
    pub name: String,
    /// Parameter name → type and required flag.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Custom API parameter type: String, Integer, Decimal, Float, Money, Boolean, DateTime, Guid, StringArray, Picklist.
    #[serde(rename = "type", default = "string_type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
}

fn string_type() -> String {
    "String".into()
}

/// Faults injected into Dataverse calls (and, where named, Entra and Secrets Manager).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every Dataverse call.
    pub latency_ms: u64,
    /// A random extra of up to this many ms.
    pub latency_jitter_ms: u64,
    /// Share of calls answered 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    pub retry_after_secs: Option<u64>,
    /// Share answered 500.
    pub error_rate: f64,
    /// Share answered 503.
    pub unavailable_rate: f64,
    /// Share whose connection is dropped without an answer.
    pub drop_rate: f64,
    /// Share delayed by `slow_ms` (e.g. past an invocation's deadline).
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Statuses for the next Dataverse calls, in order (e.g. [500, 500] then normal answers).
    pub script: Vec<u16>,
    /// Calls beyond this many at once get 429 `0x80072326`.
    pub max_concurrency: Option<usize>,
    /// `x-ms-dop-hint` sent on every answer.
    pub dop_hint: Option<usize>,
    /// The token endpoint answers this status (429, 500, 503) instead of tokens.
    pub token_status: Option<u16>,
    /// Secrets Manager answers this status instead of secrets.
    pub secrets_status: Option<u16>,
}

/// One Dataverse call as the sandbox received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub trigger: String,
    /// The request path, e.g. `/api/data/v9.2/msdynmkt_OrderCompleted`.
    pub path: String,
    /// Request headers (lowercase names); the bearer token is shown as `Bearer <token>`.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub status: u16,
    pub received_at: String,
}

/// One token request as the sandbox received it (the client secret is not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub tenant: String,
    pub grant_type: String,
    pub client_id: String,
    pub client_secret_sent: bool,
    pub scope: String,
    pub status: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub token_requests: u64,
    pub secret_requests: u64,
    pub calls_by_status: BTreeMap<u16, u64>,
    pub max_concurrency_seen: usize,
}

impl Stats {
    pub fn calls(&self) -> u64 {
        self.calls_by_status.values().sum()
    }
    pub fn calls_with(&self, status: u16) -> u64 {
        self.calls_by_status.get(&status).copied().unwrap_or(0)
    }
}

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
    signals: Mutex<Vec<Signal>>,
    token_log: Mutex<Vec<TokenRequest>>,
    calls_by_status: Mutex<BTreeMap<u16, u64>>,
    token_requests: AtomicU64,
    secret_requests: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
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

type Answer = Result<Response<Full<Bytes>>, Dropped>;

impl Sandbox {
    /// Starts on `127.0.0.1:port` (0 picks a free port).
    pub async fn start(config: SandboxConfig, port: u16) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            secrets: Mutex::new(BTreeMap::new()),
            apps: Mutex::new(Vec::new()),
            triggers: Mutex::new(HashMap::new()),
            token_lifetime: Mutex::new(Duration::from_secs(config.token_lifetime_secs.unwrap_or(3599))),
            faults: Mutex::new(config.faults.clone()),
            dice: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            tokens: Mutex::new(HashMap::new()),
            signals: Mutex::new(Vec::new()),
            token_log: Mutex::new(Vec::new()),
            calls_by_status: Mutex::new(BTreeMap::new()),
            token_requests: AtomicU64::new(0),
            secret_requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
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

    /// `http://127.0.0.1:{port}`.
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
            if let Ok(app) = serde_json::from_value::<App>(value.clone()) {
                let mut apps = self.apps.lock().unwrap();
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
        }
    }

    fn reset(&self) {
        self.signals.lock().unwrap().clear();
        self.token_log.lock().unwrap().clear();
        self.calls_by_status.lock().unwrap().clear();
        self.token_requests.store(0, Ordering::SeqCst);
        self.secret_requests.store(0, Ordering::SeqCst);
        self.max_in_flight.store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn count(&self, status: u16) {
        *self.calls_by_status.lock().unwrap().entry(status).or_default() += 1;
    }
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn empty(status: u16) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(Bytes::new())).expect("a valid response")
}

fn dataverse_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": { "code": code, "message": message } }))
}

async fn route(state: Arc<State>, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_string);
    let headers: BTreeMap<String, String> =
        request.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, [""]) if target.is_some() => Ok(secrets_manager(&state, target.as_deref().unwrap_or(""), &body)),
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => Ok(entra(&state, tenant, &body)),
        (&Method::POST, ["api", "data", "v9.2", trigger]) => dataverse(&state, trigger, &path, &headers, &body).await,
        (_, ["_sandbox", rest @ ..]) => Ok(admin(&state, &method, rest, &body)),
        (&Method::POST, [""]) => Ok(json_response(400, &json!({"__type": "MissingAction", "message": "X-Amz-Target is required."}))),
        _ => Ok(dataverse_error(404, "0x80060888", &format!("No route for {method} {path}"))),
    }
}

fn secrets_manager(state: &State, target: &str, body: &[u8]) -> Response<Full<Bytes>> {
    state.secret_requests.fetch_add(1, Ordering::SeqCst);
    let aws_error = |status: u16, kind: &str, message: &str| {
        let mut r = json_response(status, &json!({ "__type": kind, "message": message }));
        r.headers_mut().insert("x-amzn-errortype", kind.parse().expect("a header value"));
        r.headers_mut().insert("content-type", "application/x-amz-json-1.1".parse().expect("a header value"));
        r
    };
    if let Some(status) = state.faults.lock().unwrap().secrets_status {
        return aws_error(status, "InternalServiceError", "Secrets Manager is unavailable (sandbox fault).");
    }
    if target != "secretsmanager.GetSecretValue" {
        return aws_error(400, "UnknownOperationException", &format!("The sandbox serves GetSecretValue only, not {target}."));
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(id) = request.get("SecretId").and_then(Value::as_str) else {
        return aws_error(400, "InvalidParameterException", "SecretId is required.");
    };
    // A name, or an ARN whose last part is the name plus a six-character suffix.
    let name = match id.strip_prefix("arn:aws:secretsmanager:") {
        Some(rest) => rest.splitn(4, ':').nth(3).map(|n| n.rsplit_once('-').map_or(n, |(base, _)| base)).unwrap_or(id),
        None => id,
    };
    let secrets = state.secrets.lock().unwrap();
    let Some(secret) = secrets.get(name) else {
        return aws_error(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.");
    };
    let mut response = json_response(
        200,
        &json!({
            "ARN": format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}-Sbx001"),
            "Name": name,
            "SecretString": secret.value,
            "VersionId": format!("00000000-0000-4000-8000-{:012}", secret.version),
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1_767_225_600.0,
        }),
    );
    response.headers_mut().insert("content-type", "application/x-amz-json-1.1".parse().expect("a header value"));
    response
}

fn entra(state: &State, tenant: &str, body: &[u8]) -> Response<Full<Bytes>> {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let response = entra_answer(state, tenant, &form);
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    state.token_log.lock().unwrap().push(TokenRequest {
        tenant: tenant.to_string(),
        grant_type: field("grant_type"),
        client_id: field("client_id"),
        client_secret_sent: form.get("client_secret").is_some_and(|s| !s.is_empty()),
        scope: field("scope"),
        status: response.status().as_u16(),
    });
    response
}

fn entra_answer(state: &State, tenant: &str, form: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let error = |status: u16, error: &str, code: u64, description: &str| {
        json_response(
            status,
            &json!({
                "error": error,
                "error_description": format!("AADSTS{code}: {description} Trace ID: 00000000-0000-0000-0000-000000000000"),
                "error_codes": [code],
                "timestamp": "2026-01-01 00:00:00Z",
            }),
        )
    };
    if let Some(status) = state.faults.lock().unwrap().token_status {
        let mut r = error(status, "temporarily_unavailable", 90033, "The service is temporarily unavailable (sandbox fault).");
        if status == 429 {
            r.headers_mut().insert("retry-after", "1".parse().expect("a header value"));
        }
        return r;
    }
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.");
    }
    let apps = state.apps.lock().unwrap();
    let in_tenant: Vec<&App> = apps.iter().filter(|a| a.tenant_id.eq_ignore_ascii_case(tenant)).collect();
    if in_tenant.is_empty() {
        return error(400, "invalid_request", 90002, &format!("Tenant '{tenant}' not found."));
    }
    let with_client: Vec<&&App> = in_tenant.iter().filter(|a| a.client_id == field("client_id")).collect();
    if with_client.is_empty() {
        return error(400, "unauthorized_client", 700016, "Application was not found in the directory.");
    }
    let Some(app) = with_client.iter().find(|a| a.client_secret == field("client_secret")) else {
        return error(401, "invalid_client", 7000215, "Invalid client secret provided.");
    };
    if field("scope") != format!("https://{}/.default", app.org_url_host) {
        return error(400, "invalid_scope", 1002012, "The provided value for scope is not valid.");
    }
    let lifetime = *state.token_lifetime.lock().unwrap();
    let token = format!("sbx_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    state.tokens.lock().unwrap().insert(token.clone(), (Instant::now() + lifetime, app.org_url_host.clone()));
    json_response(
        200,
        &json!({ "token_type": "Bearer", "expires_in": lifetime.as_secs(), "ext_expires_in": lifetime.as_secs(), "access_token": token }),
    )
}

/// Decrements the in-flight count however the call ends.
struct InFlight<'a>(&'a State);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn dataverse(state: &State, trigger: &str, path: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> Answer {
    let authorization = headers.get("authorization").map(String::as_str);
    let now_in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(state);
    state.max_in_flight.fetch_max(now_in_flight, Ordering::SeqCst);
    let faults = state.faults.lock().unwrap().clone();
    let (roll, jitter, slow) = {
        let mut dice = state.dice.lock().unwrap();
        (dice.f64(), if faults.latency_jitter_ms > 0 { dice.u64(0..=faults.latency_jitter_ms) } else { 0 }, dice.f64() < faults.slow_rate)
    };
    let record = |status: u16, body: Value| {
        state.count(status);
        state.signals.lock().unwrap().push(Signal {
            trigger: trigger.to_string(),
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), if k == "authorization" && v.starts_with("Bearer ") { "Bearer <token>".to_string() } else { v.clone() }))
                .collect(),
            body,
            status,
            received_at: crate::mapping::format_timestamp(chrono::Utc::now()),
        });
    };
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let retry_after = faults.retry_after_secs.unwrap_or(1).to_string();
    let with_hint = |mut r: Response<Full<Bytes>>| {
        if let Some(hint) = faults.dop_hint {
            r.headers_mut().insert("x-ms-dop-hint", hint.into());
        }
        r
    };
    let throttled = |code: &str, message: &str| {
        let mut r = dataverse_error(429, code, message);
        r.headers_mut().insert("retry-after", retry_after.parse().expect("a header value"));
        r
    };

    // Over the concurrency cap is refused at admission, as Dataverse does.
    if faults.max_concurrency.is_some_and(|cap| now_in_flight > cap) {
        record(429, parsed);
        return Ok(throttled("0x80072326", "Number of concurrent requests exceeded the limit."));
    }
    let delay = faults.latency_ms + jitter + if slow { faults.slow_ms } else { 0 };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let scripted = {
        let mut faults = state.faults.lock().unwrap();
        (!faults.script.is_empty()).then(|| faults.script.remove(0))
    };
    match scripted {
        Some(0) => {
            state.count(0);
            return Err(Dropped);
        }
        Some(429) => {
            record(429, parsed);
            return Ok(throttled("0x80072322", "Number of requests exceeded the limit (scripted)."));
        }
        Some(status) if status >= 400 && status != 401 => {
            record(status, parsed);
            return Ok(dataverse_error(status, "0x80040216", &format!("Scripted answer {status}.")));
        }
        _ => {}
    }
    let mut edge = faults.drop_rate;
    if roll < edge {
        state.count(0);
        return Err(Dropped);
    }
    edge += faults.throttle_rate;
    if roll < edge {
        record(429, parsed);
        return Ok(throttled("0x80072322", "Number of requests exceeded the limit of 6000 over time window of 300 seconds."));
    }
    edge += faults.error_rate;
    if roll < edge {
        record(500, parsed);
        return Ok(dataverse_error(500, "0x80040216", "An unexpected error occurred (sandbox fault)."));
    }
    edge += faults.unavailable_rate;
    if roll < edge {
        record(503, parsed);
        return Ok(dataverse_error(503, "0x80044151", "The service is temporarily unavailable (sandbox fault)."));
    }

    let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    let valid = state.tokens.lock().unwrap().get(token).is_some_and(|(expires, _)| *expires > Instant::now());
    if !valid {
        record(401, parsed);
        let mut r = dataverse_error(401, "0x80072243", "The user is not authenticated: the token is missing, unknown or expired.");
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize".parse().expect("a header value"),
        );
        return Ok(r);
    }
    let definition = state.triggers.lock().unwrap().get(trigger).cloned();
    let Some(definition) = definition else {
        record(404, parsed);
        return Ok(dataverse_error(404, "0x8006088a", &format!("Resource not found for the segment '{trigger}'.")));
    };
    let problem = check_body(&definition, &parsed);
    match problem {
        Some((code, message)) => {
            record(400, parsed);
            Ok(with_hint(dataverse_error(400, code, &message)))
        }
        None => {
            record(204, parsed);
            Ok(with_hint(empty(204)))
        }
    }
}

/// The system parameters every trigger takes.
const SYSTEM_PARAMETERS: &[(&str, &str, bool)] = &[
    ("msdynmkt_profileid", "String", true),
    ("msdynmkt_signaluserauthid", "String", false),
    ("msdynmkt_signaltimestamp", "DateTime", false),
    ("msdynmkt_signalingestiontimestamp", "DateTime", false),
    ("contactpoint_email", "String", false),
    ("contactpoint_phone", "String", false),
];

/// Dataverse's 400s: unknown parameter, null, wrong type, missing required.
fn check_body(definition: &TriggerDef, body: &Value) -> Option<(&'static str, String)> {
    let Some(object) = body.as_object() else {
        return Some(("0x80048d19", "Error identified in Payload provided by the user for Entity :'', the request body is not a JSON object.".into()));
    };
    let lookup = |name: &str| -> Option<(String, bool)> {
        SYSTEM_PARAMETERS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, kind, required)| (kind.to_string(), *required))
            .or_else(|| definition.parameters.get(name).map(|p| (p.kind.clone(), p.required)))
    };
    for (name, value) in object {
        let Some((kind, _)) = lookup(name) else {
            return Some(("0x80060888", format!("The parameter '{name}' in the request payload is not a valid parameter for the operation '{}'.", definition.name)));
        };
        if value.is_null() {
            return Some(("0x80040203", format!("Parameter '{name}' cannot be null.")));
        }
        if !type_matches(&kind, value) {
            return Some(("0x80048d19", format!("Cannot convert the literal for parameter '{name}' to the expected type 'Edm.{kind}'.")));
        }
    }
    let required = SYSTEM_PARAMETERS
        .iter()
        .filter(|(_, _, r)| *r)
        .map(|(n, _, _)| n.to_string())
        .chain(definition.parameters.iter().filter(|(_, p)| p.required).map(|(n, _)| n.clone()));
    for name in required {
        if !object.contains_key(&name) {
            return Some(("0x80040203", format!("Required field '{name}' is missing")));
        }
    }
    None
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match kind {
        "String" | "Guid" => value.is_string(),
        "DateTime" => value.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        "Integer" | "Picklist" => value.is_i64() || value.is_u64(),
        "Decimal" | "Float" | "Money" => value.is_number(),
        "Boolean" => value.is_boolean(),
        "StringArray" => value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        _ => true,
    }
}

fn admin(state: &State, method: &Method, path: &[&str], body: &[u8]) -> Response<Full<Bytes>> {
    let bad = |message: String| json_response(400, &json!({ "error": message }));
    match (method, path) {
        (&Method::GET, ["signals"]) => json_response(200, &serde_json::to_value(&*state.signals.lock().unwrap()).expect("signals serialise")),
        (&Method::GET, ["stats"]) => json_response(200, &serde_json::to_value(state.stats()).expect("stats serialise")),
        (&Method::POST, ["reset"]) => {
            state.reset();
            empty(204)
        }
        (&Method::GET, ["faults"]) => json_response(200, &serde_json::to_value(&*state.faults.lock().unwrap()).expect("faults serialise")),
        (&Method::PUT | &Method::POST, ["faults"]) => match serde_json::from_slice::<Faults>(body) {
            Ok(faults) => {
                *state.faults.lock().unwrap() = faults;
                empty(204)
            }
            Err(e) => bad(format!("not a faults document: {e}")),
        },
        (&Method::PUT, ["secrets", name]) => match serde_json::from_slice::<Value>(body) {
            Ok(value) => {
                state.put_secret(name, &value, false);
                empty(204)
            }
            Err(e) => bad(format!("not JSON: {e}")),
        },
        (&Method::PUT, ["apps"]) => match serde_json::from_slice::<Vec<App>>(body) {
            Ok(apps) => {
                *state.apps.lock().unwrap() = apps;
                empty(204)
            }
            Err(e) => bad(format!("not a list of apps: {e}")),
        },
        (&Method::PUT, ["triggers"]) => match serde_json::from_slice::<Vec<TriggerDef>>(body) {
            Ok(triggers) => {
                state.set_triggers(triggers);
                empty(204)
            }
            Err(e) => bad(format!("not a list of triggers: {e}")),
        },
        _ => json_response(404, &json!({ "error": "admin endpoints: GET signals, GET stats, POST reset, GET/PUT faults, PUT secrets/{name}, PUT apps, PUT triggers" })),
    }
}
