//! The Entra ID token endpoint (client-credentials grant) and its error JSON:
//! the app registrations it accepts, the tokens it issued (and to whom), and its
//! faults. A token lives a lifetime drawn from 60–90 minutes, as Entra's do
//! (DOMAIN.md), unless the config or [`Sandbox::set_token_lifetime`](crate::Sandbox::set_token_lifetime)
//! fixes one; the `short_token_*` faults issue some that live minutes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{App, TokenRequest};
use crate::{json_response, Reply, State};

/// The lifetimes Entra draws from when none is fixed: 60–90 minutes.
const LIFETIMES_SECS: std::ops::RangeInclusive<u64> = 3_600..=5_400;
/// A short token's lifetime unless `short_token_secs` says otherwise.
const SHORT_SECS: u64 = 300;

/// The faults of [`Faults`](crate::Faults) that Entra injects.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EntraFaults {
    /// The token endpoint answers this status (429, 500, 503) instead of tokens.
    pub status: Option<u16>,
    /// Share of tokens issued with the short lifetime.
    pub short_token_rate: f64,
    pub short_token_secs: Option<u64>,
}

/// What the emulated Entra holds and has seen.
pub(crate) struct Entra {
    apps: Mutex<Vec<App>>,
    /// A fixed lifetime; `None` draws one per token.
    lifetime: Mutex<Option<Duration>>,
    pub(crate) faults: Mutex<EntraFaults>,
    dice: Mutex<fastrand::Rng>,
    /// Token → when it expires (forgotten by [`Entra::revoke`]).
    tokens: Mutex<HashMap<String, Instant>>,
    /// Token → the application user (client id) it was issued to (kept after a revoke).
    holders: Mutex<HashMap<String, String>>,
    /// Token → the environment (`org_url_host`) its scope named.
    audiences: Mutex<HashMap<String, String>>,
    log: Mutex<Vec<TokenRequest>>,
    requests: AtomicU64,
}

impl Entra {
    pub(crate) fn new(lifetime: Option<Duration>, seed: u64) -> Entra {
        Entra {
            apps: Mutex::new(Vec::new()),
            lifetime: Mutex::new(lifetime),
            faults: Mutex::new(EntraFaults::default()),
            dice: Mutex::new(fastrand::Rng::with_seed(seed)),
            tokens: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
            audiences: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_apps(&self, apps: Vec<App>) {
        *self.apps.lock().unwrap() = apps;
    }

    /// Accepts `derived` too (an app registration named by a secret), replacing an equal one.
    pub(crate) fn add_apps(&self, derived: Vec<App>) {
        let mut apps = self.apps.lock().unwrap();
        for app in derived {
            apps.retain(|a| a != &app);
            apps.push(app);
        }
    }

    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock().unwrap() = Some(lifetime);
    }

    /// Whether `token` was issued here and has not expired.
    pub(crate) fn is_valid(&self, token: &str) -> bool {
        self.tokens.lock().unwrap().get(token).is_some_and(|expires| *expires > Instant::now())
    }

    /// The application user `token` was issued to (empty for a token never issued).
    pub(crate) fn holder(&self, token: &str) -> String {
        self.holders.lock().unwrap().get(token).cloned().unwrap_or_default()
    }

    /// The environment (`org_url_host`) `token` was issued for (empty for a token never issued).
    pub(crate) fn audience(&self, token: &str) -> String {
        self.audiences.lock().unwrap().get(token).cloned().unwrap_or_default()
    }

    /// Forgets issued tokens (as if they had all expired).
    pub(crate) fn revoke(&self) {
        self.tokens.lock().unwrap().clear();
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn log(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn reset(&self) {
        self.log.lock().unwrap().clear();
        self.requests.store(0, Ordering::SeqCst);
    }

    /// The lifetime of a token issued now.
    fn draw_lifetime(&self) -> Duration {
        let faults = self.faults.lock().unwrap().clone();
        let fixed = *self.lifetime.lock().unwrap();
        let mut dice = self.dice.lock().unwrap();
        if faults.short_token_rate > 0.0 && dice.f64() < faults.short_token_rate {
            return Duration::from_secs(faults.short_token_secs.unwrap_or(SHORT_SECS));
        }
        fixed.unwrap_or_else(|| Duration::from_secs(dice.u64(LIFETIMES_SECS)))
    }
}

pub(crate) fn token(state: &State, tenant: &str, body: &[u8]) -> Reply {
    let entra = &state.entra;
    entra.requests.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let response = entra_answer(entra, tenant, &form);
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    entra.log.lock().unwrap().push(TokenRequest {
        tenant: tenant.to_string(),
        grant_type: field("grant_type"),
        client_id: field("client_id"),
        client_secret_sent: form.get("client_secret").is_some_and(|s| !s.is_empty()),
        scope: field("scope"),
        status: response.status().as_u16(),
    });
    response
}

fn entra_answer(entra: &Entra, tenant: &str, form: &HashMap<String, String>) -> Reply {
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
    if let Some(status) = entra.faults.lock().unwrap().status {
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
    let app = {
        let apps = entra.apps.lock().unwrap();
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
        (**app).clone()
    };
    if field("scope") != format!("https://{}/.default", app.org_url_host) {
        return error(400, "invalid_scope", 1002012, "The provided value for scope is not valid.");
    }
    let lifetime = entra.draw_lifetime();
    let token = format!("sbx_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    entra.tokens.lock().unwrap().insert(token.clone(), Instant::now() + lifetime);
    entra.holders.lock().unwrap().insert(token.clone(), app.client_id.clone());
    entra.audiences.lock().unwrap().insert(token.clone(), app.org_url_host.to_ascii_lowercase());
    json_response(200, &json!({ "token_type": "Bearer", "expires_in": lifetime.as_secs(), "ext_expires_in": lifetime.as_secs(), "access_token": token }))
}
