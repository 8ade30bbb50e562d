//! The Dynamics adapter (SPEC §4, §7): Entra client-credentials token cached
//! across warm invocations, the Dataverse custom-trigger call, and the
//! classification of every answer into a [`DeliveryError`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::{ConfigError, Credentials, PrincipalCredentials, Settings};
pub use crate::delivery::{DynamicsPort, Sent};
use crate::delivery::{Principal, Principals, Request};
use crate::outcome::DeliveryError;
use crate::plan::{RowWrite, TriggerCall};
use crate::secrets::{SecretError, SecretStore};
use ceiling::Ceiling;

pub mod ceiling;
pub mod web_api;

/// The longest a single Dataverse or Entra request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Tokens are refreshed at least this long before they expire (as MSAL does).
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
const TOKEN_FETCH_ATTEMPTS: u32 = 3;
/// The most of a Retry-After that is honoured (upstream numbers are untrusted).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The longest token lifetime (`expires_in`, `refresh_in`) believed. Shorter
/// ones are kept as given: a token is never used past what Entra said (SPEC §4).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The longest the secret may take when the caller gives no deadline.
pub const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Counters {
    pub token_requests: AtomicU64,
}

pub struct Dynamics {
    http: reqwest::Client,
    secrets: SecretStore,
    authority: String,
    base_override: Option<String>,
    /// One token cache per application user, by client id (SPEC §17.3).
    tokens: std::sync::Mutex<std::collections::HashMap<String, Arc<Mutex<TokenState>>>>,
    /// Told the secret's principals whenever the secret is read (the pool).
    principals: Arc<dyn Principals>,
    invocation: AtomicU64,
    /// `x-ms-dop-hint` is kept within 1..=this (`D365_MAX_IN_FLIGHT`).
    max_dop: usize,
    pub counters: Counters,
    /// The CI-J ceiling (SPEC §17.1): permits for trigger calls.
    ceiling: Ceiling,
    /// The destination whose block of the secret it uses (SPEC §23.1).
    destination: String,
}

#[derive(Default)]
struct TokenState {
    token: Option<Token>,
    failure: Option<(u64, DeliveryError)>,
    serial: u64,
}

#[derive(Clone)]
struct Token {
    value: SecretString,
    refresh_at: Instant,
    creds: Arc<Credentials>,
    /// The application user it was issued to.
    client_id: String,
    serial: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "seconds")]
    refresh_in: Option<u64>,
}

/// Entra sends lifetimes as numbers, older endpoints as strings.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

#[derive(Deserialize, Default, Clone)]
struct EntraError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// AADSTS codes that mean the configured credentials are wrong.
const CREDENTIAL_CODES: &[u64] = &[7000215, 7000222, 700016, 90002];

/// The HTTP client of Entra and Dataverse, trusting the system's roots as read
/// once for every TLS client ([`crate::Roots::system`]).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // Verified by WebPKI against these roots, as reqwest's platform
        // verifier would after reading the store again.
        .tls_certs_only(crate::Roots::system().reqwest_certificates())
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Execution environments freeze between invocations; do not keep sockets the peer has closed.
        .pool_idle_timeout(Duration::from_secs(50))
        // A token must never follow a redirect to another host.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("d365-trigger-relay/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's TLS backend initialises")
}

impl Dynamics {
    /// The adapter of one Dynamics environment: its secret, its HTTP client, the
    /// CI-J `ceiling` its trigger calls take permits from, and the `principals`
    /// told of the secret's application users (the pool).
    pub fn new(
        settings: &Settings,
        secrets_client: aws_sdk_secretsmanager::Client,
        http: reqwest::Client,
        ceiling: Ceiling,
        principals: Arc<dyn Principals>,
    ) -> Self {
        Dynamics {
            http,
            secrets: SecretStore::new(secrets_client, settings.secret_id.clone(), settings.secret_ttl),
            authority: settings.authority_host.clone(),
            base_override: settings.dataverse_base_url.clone(),
            tokens: Default::default(),
            principals,
            invocation: AtomicU64::new(0),
            max_dop: settings.max_in_flight.max(1),
            counters: Counters::default(),
            ceiling,
            destination: crate::config::secret::DEFAULT_DESTINATION.to_string(),
        }
    }

    /// The adapter of destination `name`: its block of the secret (SPEC §23.1).
    pub fn for_destination(mut self, name: &str) -> Self {
        self.destination = name.to_string();
        self
    }

    /// The destination it serves.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// This destination's credentials in the secret `creds`, or the error confined to its block.
    fn select(&self, creds: Arc<Credentials>) -> Result<Arc<Credentials>, SecretError> {
        if self.destination == crate::config::secret::DEFAULT_DESTINATION {
            return Ok(creds);
        }
        creds.destination(&self.destination).map_err(SecretError::Config)
    }

    /// Starts a new invocation: failures remembered for the previous one are forgotten.
    pub fn begin_invocation(&self) -> u64 {
        self.invocation.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn current_invocation(&self) -> u64 {
        self.invocation.load(Ordering::SeqCst)
    }

    /// The credentials, within [`CREDENTIALS_TIMEOUT`].
    pub async fn credentials(&self) -> Result<Arc<Credentials>, SecretError> {
        self.credentials_until(Instant::now() + CREDENTIALS_TIMEOUT).await
    }

    /// The credentials, answered by `deadline`; the pool follows the secret's principals.
    pub async fn credentials_until(&self, deadline: Instant) -> Result<Arc<Credentials>, SecretError> {
        let creds = self.select(self.secrets.get(self.current_invocation(), deadline).await?)?;
        self.follow(&creds);
        Ok(creds)
    }

    fn follow(&self, creds: &Credentials) {
        let client_ids: Vec<&str> = creds.client_ids().collect();
        self.principals.follow(&client_ids, &creds.version);
    }

    pub fn secrets(&self) -> &SecretStore {
        &self.secrets
    }

    /// The Web API's base URL for `creds` (`D365_DATAVERSE_BASE_URL` when set).
    pub fn base_url(&self, creds: &Credentials) -> String {
        match &self.base_override {
            // `{org_url_host}` stands for each destination's host (SPEC §23.4: one sandbox, several environments).
            Some(base) => base.replace("{org_url_host}", &creds.org_url_host),
            None => format!("https://{}", creds.org_url_host),
        }
    }

    /// The principal's credentials in `creds`: the first for a pool not yet
    /// synced with the secret; an error naming it when the secret no longer holds it.
    fn who<'c>(creds: &'c Credentials, principal: &Principal) -> Result<&'c PrincipalCredentials, DeliveryError> {
        if principal.client_id().is_empty() {
            return Ok(&creds.principals[0]);
        }
        creds.principal(principal.client_id()).ok_or_else(|| DeliveryError::Credentials {
            code: "not in the secret".into(),
            detail: format!("application user {principal} is no longer in the secret"),
        })
    }

    fn token_state(&self, client_id: &str) -> Arc<Mutex<TokenState>> {
        let mut tokens = crate::lock(&self.tokens);
        tokens.entry(client_id.to_string()).or_default().clone()
    }

    /// A valid token of `principal` for `creds`; all concurrent callers share one refresh.
    async fn token(&self, creds: Arc<Credentials>, principal: &Principal, deadline: Instant) -> Result<Token, DeliveryError> {
        let invocation = self.current_invocation();
        let client_id = Self::who(&creds, principal)?.client_id.clone();
        let state = self.token_state(&client_id);
        let mut state = state.lock().await;
        if let Some(token) = &state.token {
            if token.creds.version == creds.version && Instant::now() < token.refresh_at {
                return Ok(token.clone());
            }
        }
        if let Some((at, error)) = &state.failure {
            if *at == invocation {
                return Err(error.clone());
            }
        }
        let mut creds = creds;
        let mut rotation_checked = false;
        loop {
            let who = match creds.principal(&client_id) {
                Some(who) => who,
                None => return Err(Self::who(&creds, &Principal::new(&client_id)).err().expect("not in the secret")),
            };
            match self.fetch_token(&creds, who, deadline).await {
                Ok((value, lifetime)) => {
                    state.serial += 1;
                    let token = Token { value, refresh_at: lifetime, creds, client_id: client_id.clone(), serial: state.serial };
                    state.token = Some(token.clone());
                    state.failure = None;
                    return Ok(token);
                }
                Err(error @ DeliveryError::Credentials { .. }) if !rotation_checked => {
                    // The secret may have been rotated: fetch it once more before giving up.
                    rotation_checked = true;
                    match self.secrets.refresh(invocation, &creds.version, deadline).await {
                        Ok((fresh, true)) => {
                            tracing::info!(message = "Entra rejected the cached credentials; retrying with the rotated secret.", client_id = %client_id);
                            let fresh = self.select(fresh).map_err(DeliveryError::from)?;
                            self.follow(&fresh);
                            creds = fresh;
                            continue;
                        }
                        Ok((_, false)) => {}
                        Err(refetch) => tracing::warn!(message = "Secret refetch failed.", error = %refetch),
                    }
                    return Err(self.remember_token_failure(&mut state, &client_id, invocation, error));
                }
                Err(error) => return Err(self.remember_token_failure(&mut state, &client_id, invocation, error)),
            }
        }
    }

    fn remember_token_failure(&self, state: &mut TokenState, client_id: &str, invocation: u64, error: DeliveryError) -> DeliveryError {
        match &error {
            DeliveryError::Credentials { code, detail } => tracing::error!(
                message = "Entra rejected the client credentials: check client_id, client_secret and tenant_id in the secret.",
                client_id,
                code = %code,
                error = %detail
            ),
            other => tracing::error!(message = "Could not get an Entra token.", client_id, error = %other),
        }
        state.failure = Some((invocation, error.clone()));
        error
    }

    /// Forgets the token a 401 was answered to (unless it was already replaced).
    async fn invalidate_token(&self, client_id: &str, serial: u64) {
        let state = self.token_state(client_id);
        let mut state = state.lock().await;
        if state.token.as_ref().map(|t| t.serial) == Some(serial) {
            state.token = None;
        }
    }

    /// The client-credentials grant, with a few quick retries for 429/5xx/network.
    /// Returns the token and when to refresh it.
    async fn fetch_token(&self, creds: &Credentials, who: &PrincipalCredentials, deadline: Instant) -> Result<(SecretString, Instant), DeliveryError> {
        let url = format!("{}/{}/oauth2/v2.0/token", self.authority, creds.tenant_id);
        let scope = format!("https://{}/.default", creds.org_url_host);
        let mut last = DeliveryError::TokenUnavailable { detail: "no attempt made".into() };
        let mut wait_at_least: Option<Duration> = None;
        for attempt in 0..TOKEN_FETCH_ATTEMPTS {
            if attempt > 0 {
                let pause = Duration::from_millis(200 * 4u64.pow(attempt - 1)).max(wait_at_least.take().unwrap_or_default());
                if Instant::now() + pause + Duration::from_millis(100) >= deadline {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            let Some(timeout) = time_left(deadline) else { break };
            self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", who.client_id.as_str()),
                ("client_secret", who.client_secret.expose_secret()),
                ("scope", scope.as_str()),
            ];
            let started = Instant::now();
            let response = match self.http.post(&url).form(&form).timeout(timeout).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = DeliveryError::TokenUnavailable { detail: network_detail(&e) };
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = DeliveryError::TokenUnavailable { detail: network_detail(&e) };
                    continue;
                }
            };
            if status.is_success() {
                let parsed: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|_| DeliveryError::TokenUnavailable { detail: "the token endpoint's answer is not a token".into() })?;
                let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3599)).min(MAX_TOKEN_LIFETIME);
                let mut refresh_after = refresh_after(lifetime);
                if let Some(refresh_in) = parsed.refresh_in {
                    refresh_after = refresh_after.min(Duration::from_secs(refresh_in).min(MAX_TOKEN_LIFETIME));
                }
                return Ok((SecretString::from(parsed.access_token), started + refresh_after));
            }
            match classify_token_error(status, &headers, &body) {
                TokenRefusal::Retry { error, retry_after } => {
                    last = error;
                    wait_at_least = retry_after;
                }
                TokenRefusal::Credentials(error) | TokenRefusal::Fail(error) => return Err(error),
            }
        }
        Err(last)
    }
}

/// When a token of `lifetime` is refreshed (SPEC §4): [`TOKEN_REFRESH_MARGIN`]
/// before it expires, or at half its lifetime when that is 10 minutes or less.
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > TOKEN_REFRESH_MARGIN * 2 {
        lifetime - TOKEN_REFRESH_MARGIN
    } else {
        lifetime / 2
    }
}

impl DynamicsPort for Dynamics {
    async fn execute(&self, request: Request<'_>, principal: &Principal, deadline: Instant) -> Result<Sent, DeliveryError> {
        match request {
            // Every step below is bounded too; this is the guarantee that nothing outlives the deadline.
            Request::Trigger(call) => match tokio::time::timeout_at(deadline.into(), self.send_once(call, principal, deadline)).await {
                Ok(result) => result,
                Err(_) => Err(DeliveryError::Transient { status: None, code: None, detail: "no answer before the invocation's cut-off".into() }),
            },
            Request::Update(update) if update.body.is_empty() => Ok(Sent::default()),
            Request::Update(update) => {
                let body = Value::Object(update.body.clone());
                let path = format!("{}({})", update.entity, update.id);
                self.row_request(principal, reqwest::Method::PATCH, &path, Some(&body), &[("If-Match", "*")], deadline)
                    .await
                    .map(|answer| Sent { status: Some(answer.status.as_u16()), ..Sent::default() })
            }
            Request::Row(row) => self.write_row_once(row, principal, deadline).await,
            Request::Get(path_and_query) => {
                let answer = self.row_request(principal, reqwest::Method::GET, path_and_query, None, &[], deadline).await?;
                Ok(Sent { status: Some(answer.status.as_u16()), answer: Some(answer), ..Sent::default() })
            }
            Request::Metadata(path_and_query) => {
                let answer = self.row_request(principal, reqwest::Method::GET, path_and_query, None, &[], deadline).await?;
                Ok(Sent { read: true, status: Some(answer.status.as_u16()), answer: Some(answer), ..Sent::default() })
            }
            Request::Create { entity, body } => {
                let body = Value::Object(body.clone());
                let prefer = [("Prefer", "return=representation")];
                let answer = self.row_request(principal, reqwest::Method::POST, entity, Some(&body), &prefer, deadline).await?;
                Ok(Sent { status: Some(answer.status.as_u16()), answer: Some(answer), ..Sent::default() })
            }
        }
    }

    fn permit(&self, until: Instant) -> impl std::future::Future<Output = Result<(), DeliveryError>> + Send {
        self.trigger_permit(until)
    }
}

impl Dynamics {
    async fn send_once(&self, call: &TriggerCall, principal: &Principal, deadline: Instant) -> Result<Sent, DeliveryError> {
        let body = serde_json::to_vec(&call.body).expect("a JSON map serialises");
        let answer = self.web_api_bytes(principal, reqwest::Method::POST, &call.trigger, Some(body), &[], deadline).await?;
        if answer.status.is_success() {
            let dop_hint = header_number(&answer.headers, "x-ms-dop-hint").filter(|h| *h > 0).map(|h| h.min(self.max_dop));
            return Ok(Sent { dop_hint, status: Some(answer.status.as_u16()), ..Sent::default() });
        }
        if answer.status == StatusCode::UNAUTHORIZED {
            return Err(DeliveryError::Unauthorized { detail: unauthorized_detail(&answer.headers, &answer.body) });
        }
        Err(error_of(answer.status, &answer.headers, &answer.body))
    }
}

fn time_left(deadline: Instant) -> Option<Duration> {
    let left = deadline.checked_duration_since(Instant::now())?;
    (left > Duration::from_millis(20)).then(|| left.min(REQUEST_TIMEOUT))
}

fn network_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "connection error"
    };
    // The innermost cause says what happened (refused, reset, closed); URLs carry no secrets.
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<usize> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`]: a number no clock can
/// add is clamped, not trusted (HTTP dates are not used by Dataverse or Entra).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// What a non-2xx answer of the token endpoint means (SPEC §7).
#[derive(Debug, Clone, PartialEq)]
pub enum TokenRefusal {
    /// The client credentials are wrong (or rotated): AADSTS7000215, 7000222,
    /// 700016, 90002, `invalid_client`.
    Credentials(DeliveryError),
    /// 429 or 5xx: may pass after `retry_after` (clamped).
    Retry { error: DeliveryError, retry_after: Option<Duration> },
    /// Any other refusal: not the credentials (a wrong scope, a malformed request,
    /// a proxy or the wrong host), and no retry will help within this invocation.
    Fail(DeliveryError),
}

/// Classifies the token endpoint's refusal by Entra's `error` and AADSTS codes,
/// not by the status alone: a 4xx is not necessarily bad credentials.
pub fn classify_token_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> TokenRefusal {
    let parsed: Option<EntraError> = serde_json::from_slice(body).ok().filter(|e: &EntraError| !e.error.is_empty() || !e.error_codes.is_empty());
    let error = parsed.clone().unwrap_or_default();
    let code = error.error_codes.first().map(|c| format!("AADSTS{c}")).unwrap_or_else(|| {
        if error.error.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            error.error.clone()
        }
    });
    let description: String = error.error_description.lines().next().unwrap_or("").chars().take(200).collect();
    let detail = format!("{} (HTTP {}): {}", if error.error.is_empty() { "error" } else { &error.error }, status.as_u16(), description);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = retry_after(headers);
        return TokenRefusal::Retry { error: DeliveryError::TokenUnavailable { detail: format!("throttled by Entra, {detail}") }, retry_after };
    }
    if status.is_server_error() {
        return TokenRefusal::Retry { error: DeliveryError::TokenUnavailable { detail }, retry_after: retry_after(headers) };
    }
    if error.error_codes.iter().any(|c| CREDENTIAL_CODES.contains(c)) || error.error == "invalid_client" {
        return TokenRefusal::Credentials(DeliveryError::Credentials { code, detail });
    }
    let problem = match &parsed {
        Some(_) => format!("Entra refused the token request, not for the credentials ({code}, {detail}): check org_url and tenant_id in the secret"),
        None => format!("the token endpoint answered HTTP {} without Entra's error JSON: check D365_AUTHORITY_HOST and any proxy on the way", status.as_u16()),
    };
    TokenRefusal::Fail(DeliveryError::Config(ConfigError::new(if parsed.is_some() { "secret" } else { "D365_AUTHORITY_HOST" }, problem)))
}

/// Dataverse's `{"error": {"code", "message"}}`.
fn dataverse_error(body: &[u8]) -> (Option<String>, String) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = value.pointer("/error/code").and_then(Value::as_str).map(str::to_string);
    let message = value
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string());
    (code, message.chars().take(300).collect())
}

fn unauthorized_detail(headers: &HeaderMap, body: &[u8]) -> String {
    let (_, message) = dataverse_error(body);
    let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
    format!(
        "check that the app registration is an application user in the environment ({}{})",
        message,
        if challenge.is_empty() { String::new() } else { format!("; {challenge}") }
    )
}

/// Classifies a non-2xx, non-401 Dataverse answer (SPEC §7).
pub fn error_of(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> DeliveryError {
    let (code, message) = dataverse_error(body);
    match status.as_u16() {
        429 => DeliveryError::Throttled { retry_after: retry_after(headers), code },
        408 => DeliveryError::Transient { status: Some(408), code, detail: format!("Dataverse answered 408: {message}") },
        s @ 500..=599 if s != 501 => DeliveryError::Transient { status: Some(s), code, detail: format!("Dataverse answered {s}: {message}") },
        s => DeliveryError::Rejected { status: s, code, message },
    }
}

impl Dynamics {
    pub fn ceiling(&self) -> &Ceiling {
        &self.ceiling
    }

    /// A permit for one trigger call (SPEC §17.1): the ceiling is counted per
    /// CI-J environment, the secret's `org_url_host`.
    async fn trigger_permit(&self, until: Instant) -> Result<(), DeliveryError> {
        if self.ceiling.per_minute() == 0 {
            return Ok(());
        }
        let creds = self.credentials_until(until).await?;
        self.ceiling.take(&creds.org_url_host, until).await
    }

    /// Gets a token of `principal` now (the `check` command's third step, once per principal).
    pub async fn check_token(&self, principal: &crate::delivery::Principal, deadline: Instant) -> Result<(), DeliveryError> {
        let creds = self.credentials_until(deadline).await?;
        self.token(creds, principal, deadline).await.map(|_| ())
    }

    /// Reads the credentials from a file holding the secret's JSON instead of
    /// Secrets Manager (`D365_SECRET_FILE`, commands only); at construction, by [`crate::startup`].
    pub(crate) fn use_secret_file(&mut self, path: impl Into<std::path::PathBuf>) {
        self.secrets.use_file(path);
    }

    /// One attempt at a row write (SPEC §19): the row's request through the one
    /// table-request path; a 412 to a create by key means the row exists (a
    /// success); a refusal names the row (entity and key).
    pub async fn write_row_once(&self, row: &RowWrite, principal: &Principal, deadline: Instant) -> Result<Sent, DeliveryError> {
        let body = Value::Object(row.body.clone());
        match self.row_request(principal, row.method.clone(), &row.path, Some(&body), &row.headers, deadline).await {
            Ok(answer) => Ok(Sent { status: Some(answer.status.as_u16()), ..Sent::default() }),
            Err(DeliveryError::Rejected { status: 412, .. }) if row.exists_is_success => Ok(Sent { status: Some(412), ..Sent::default() }),
            Err(DeliveryError::Rejected { status, code, message }) => {
                Err(DeliveryError::Rejected { status, code, message: format!("row {}: {message}", row.label) })
            }
            Err(DeliveryError::Transient { status, code, detail }) => {
                Err(DeliveryError::Transient { status, code, detail: format!("row {}: {detail}", row.label) })
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra(error: &str, codes: &[u64]) -> Vec<u8> {
        serde_json::to_vec(
            &serde_json::json!({"error": error, "error_description": format!("AADSTS{}: described.", codes.first().unwrap_or(&0)), "error_codes": codes}),
        )
        .unwrap()
    }

    #[test]
    fn token_refusals_are_classified_by_entra_code_not_status() {
        let h = HeaderMap::new();
        for (error, code) in [("invalid_client", 7000215), ("invalid_client", 7000222), ("unauthorized_client", 700016), ("invalid_request", 90002)] {
            let refusal = classify_token_error(StatusCode::BAD_REQUEST, &h, &entra(error, &[code]));
            assert!(matches!(&refusal, TokenRefusal::Credentials(DeliveryError::Credentials { code: c, .. }) if *c == format!("AADSTS{code}")), "{refusal:?}");
        }
        assert!(matches!(classify_token_error(StatusCode::UNAUTHORIZED, &h, &entra("invalid_client", &[])), TokenRefusal::Credentials(_)));
        // A wrong scope or a malformed request is not the credentials.
        for (error, code) in [("invalid_scope", 500011), ("invalid_request", 900144)] {
            match classify_token_error(StatusCode::BAD_REQUEST, &h, &entra(error, &[code])) {
                TokenRefusal::Fail(DeliveryError::Config(e)) => {
                    assert_eq!(e.setting, "secret");
                    assert!(e.problem.contains(&format!("AADSTS{code}")) && e.problem.contains("not for the credentials"), "{e}");
                }
                other => panic!("{other:?}"),
            }
        }
        // A 4xx without Entra's JSON: a proxy or the wrong host.
        match classify_token_error(StatusCode::FORBIDDEN, &h, b"<html>Forbidden</html>") {
            TokenRefusal::Fail(DeliveryError::Config(e)) => assert_eq!(e.setting, "D365_AUTHORITY_HOST"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify_token_error(StatusCode::NOT_FOUND, &h, b"{}"), TokenRefusal::Fail(DeliveryError::Config(_))));
        // 429: throttled, with Retry-After clamped; 5xx: unavailable.
        let mut throttled = HeaderMap::new();
        throttled.insert(RETRY_AFTER, "18446744073709551615".parse().unwrap());
        match classify_token_error(StatusCode::TOO_MANY_REQUESTS, &throttled, &entra("temporarily_unavailable", &[90033])) {
            TokenRefusal::Retry { error: DeliveryError::TokenUnavailable { detail }, retry_after } => {
                assert_eq!(retry_after, Some(MAX_RETRY_AFTER));
                assert!(detail.contains("throttled"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify_token_error(StatusCode::SERVICE_UNAVAILABLE, &h, b""), TokenRefusal::Retry { retry_after: None, .. }));
    }

    #[test]
    fn retry_after_is_clamped_where_it_is_parsed() {
        let at = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(at("7"), Some(Duration::from_secs(7)));
        assert_eq!(at("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(at("99999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(at("999999999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(at("-1"), None);
        assert_eq!(at("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let e = error_of(
            StatusCode::TOO_MANY_REQUESTS,
            &{
                let mut h = HeaderMap::new();
                h.insert(RETRY_AFTER, "99999999999999".parse().unwrap());
                h
            },
            b"{}",
        );
        assert_eq!(e, DeliveryError::Throttled { retry_after: Some(MAX_RETRY_AFTER), code: None });
    }

    #[test]
    fn answers_are_classified_by_status() {
        let h = HeaderMap::new();
        let body = br#"{"error":{"code":"0x8006088a","message":"Resource not found for the segment 'msdynmkt_X'."}}"#;
        let e = error_of(StatusCode::NOT_FOUND, &h, body);
        assert_eq!(
            e,
            DeliveryError::Rejected { status: 404, code: Some("0x8006088a".into()), message: "Resource not found for the segment 'msdynmkt_X'.".into() }
        );
        assert_eq!(crate::delivery::retry_class::class(&e), crate::delivery::retry_class::RetryClass::Permanent);
        assert!(matches!(error_of(StatusCode::BAD_REQUEST, &h, b"{}"), DeliveryError::Rejected { status: 400, .. }));
        assert!(matches!(error_of(StatusCode::FORBIDDEN, &h, b"{}"), DeliveryError::Rejected { status: 403, .. }));
        assert!(matches!(error_of(StatusCode::SERVICE_UNAVAILABLE, &h, b"oops"), DeliveryError::Transient { status: Some(503), .. }));
        assert!(matches!(error_of(StatusCode::NOT_IMPLEMENTED, &h, b""), DeliveryError::Rejected { status: 501, .. }));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        let e = error_of(StatusCode::TOO_MANY_REQUESTS, &h, br#"{"error":{"code":"0x80072322","message":"limit"}}"#);
        assert_eq!(e, DeliveryError::Throttled { retry_after: Some(Duration::from_secs(7)), code: Some("0x80072322".into()) });
        assert!(matches!(crate::delivery::retry_class::class(&e), crate::delivery::retry_class::RetryClass::Throttled { .. }));
    }
}
