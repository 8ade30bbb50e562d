//! What the sandbox is started with (`sandbox/config.json`, flags, admin
//! endpoints) and what it reports (signals, token requests, stats).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataverse::DataverseFaults;
use crate::entra::EntraFaults;
use crate::protection::Limits;
use crate::secrets_manager::SecretsFaults;
use crate::sqs::SqsFaults;

/// Everything the sandbox is started with.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Secrets served by GetSecretValue, by name (values are the secret JSON).
    pub secrets: BTreeMap<String, Value>,
    /// App registrations Entra accepts; when empty, derived from the secrets.
    pub apps: Vec<App>,
    pub triggers: Vec<TriggerDef>,
    /// Table rows by entity set (`contacts`, `leads`): what identity lookups find (SPEC §14).
    pub rows: BTreeMap<String, Vec<Value>>,
    /// Lifetime of issued tokens; when unset each is drawn from 60–90 minutes
    /// (`expires_in` 3600–5400), as Entra's are.
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
    /// What the trigger's profile id names: `profile` (a CI-Data profile: the
    /// trigger also takes `contactpoint_email` and `contactpoint_phone`, the
    /// default), `contact` or `lead` (no contact-point parameters).
    #[serde(default = "profile_binding")]
    pub binding: String,
}

fn profile_binding() -> String {
    "profile".into()
}

impl TriggerDef {
    /// Whether the trigger takes the contact-point fallbacks (bound to a CI-Data profile).
    pub fn has_contact_points(&self) -> bool {
        self.binding == "profile"
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Custom API parameter type: String, Integer, Decimal, Float, Money, Boolean, DateTime, Guid, StringArray, Picklist, EntityReference.
    #[serde(rename = "type", default = "string_type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    /// The table an EntityReference refers to (`logicalentityname`, e.g. `account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
}

fn string_type() -> String {
    "String".into()
}

/// Faults injected into Dataverse calls (and, where named, Entra, Secrets
/// Manager and SQS): the document `sandbox/config.json`, `/_sandbox/faults` and
/// [`Sandbox::set_faults`](crate::Sandbox::set_faults) take. Each service keeps
/// its own part ([`Faults::split`]).
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
    /// SQS answers this status to every call.
    pub sqs_status: Option<u16>,
    /// Share of SendMessageBatch entries SQS refuses (listed under `Failed`).
    pub sqs_refuse_rate: f64,
    /// The `customapis` metadata query answers this status (403: the app user may not read Custom APIs).
    pub metadata_status: Option<u16>,
    /// The `EntityDefinitions` query answers this status (403: the app user may not read entity metadata).
    pub entities_status: Option<u16>,
    /// Statuses for the next table-row requests (lookups, creates, updates), in order; 0 drops the connection.
    pub rows_script: Vec<u16>,
    /// Added to every table-row request.
    pub rows_latency_ms: u64,
    /// Dataverse's request budget per application user (SPEC §17.2): at most this
    /// many requests (trigger calls, lookups, rows, metadata reads) per
    /// `budget_window_secs`, sliding; beyond it 429 `0x80072322` with a
    /// Retry-After until the window has room.
    pub budget_requests: Option<usize>,
    /// The budget's window (default 300 s, Dataverse's).
    pub budget_window_secs: Option<u64>,
    /// Dataverse's execution-time budget per application user: at most this many
    /// ms of combined execution time (the latency the sandbox gives each request)
    /// per `budget_window_secs`; once spent — met late, the request that passes it
    /// is accepted — 429 `0x80072321` with a Retry-After until the window has room.
    pub budget_time_ms: Option<u64>,
    /// After a budget 429 (`budget_requests` or `budget_time_ms`) the application
    /// user is paused for its Retry-After; each request it sends during the pause
    /// is answered 429 and lengthens what is left of the pause by this share
    /// (default 0.1, a tenth; 1.0 doubles it; up to 300 s or the window; 0 keeps it as it was).
    pub budget_pause_growth: Option<f64>,
    /// Share of tokens Entra issues with a short lifetime (`short_token_secs`).
    pub short_token_rate: f64,
    /// The short lifetime (default 300 s).
    pub short_token_secs: Option<u64>,
    /// Client ids whose application user lacks the privilege: Dataverse answers
    /// their trigger calls and table requests 403 `0x80040220` (the token is issued).
    pub forbidden_clients: Vec<String>,
}

/// Each service's part of a [`Faults`] document.
pub(crate) struct FaultsByService {
    pub entra: EntraFaults,
    pub dataverse: DataverseFaults,
    pub secrets_manager: SecretsFaults,
    pub sqs: SqsFaults,
}

impl Faults {
    /// The document cut into each service's part.
    pub(crate) fn split(self) -> FaultsByService {
        FaultsByService {
            entra: EntraFaults { status: self.token_status, short_token_rate: self.short_token_rate, short_token_secs: self.short_token_secs },
            dataverse: DataverseFaults {
                latency_ms: self.latency_ms,
                latency_jitter_ms: self.latency_jitter_ms,
                throttle_rate: self.throttle_rate,
                retry_after_secs: self.retry_after_secs,
                error_rate: self.error_rate,
                unavailable_rate: self.unavailable_rate,
                drop_rate: self.drop_rate,
                slow_rate: self.slow_rate,
                slow_ms: self.slow_ms,
                script: self.script,
                max_concurrency: self.max_concurrency,
                dop_hint: self.dop_hint,
                metadata_status: self.metadata_status,
                entities_status: self.entities_status,
                rows_script: self.rows_script,
                rows_latency_ms: self.rows_latency_ms,
                forbidden_clients: self.forbidden_clients,
                limits: Limits {
                    requests: self.budget_requests,
                    window_secs: self.budget_window_secs,
                    time_ms: self.budget_time_ms,
                    pause_growth: self.budget_pause_growth,
                },
            },
            secrets_manager: SecretsFaults { status: self.secrets_status },
            sqs: SqsFaults { status: self.sqs_status, refuse_rate: self.sqs_refuse_rate },
        }
    }

    /// The document holding only Dataverse's part (an environment's faults).
    pub(crate) fn from_dataverse(dataverse: DataverseFaults) -> Faults {
        Faults::join(FaultsByService { entra: EntraFaults::default(), dataverse, secrets_manager: SecretsFaults::default(), sqs: SqsFaults::default() })
    }

    /// The document the services' parts make (what `GET /_sandbox/faults` answers).
    pub(crate) fn join(parts: FaultsByService) -> Faults {
        let FaultsByService { entra, dataverse: d, secrets_manager, sqs } = parts;
        Faults {
            latency_ms: d.latency_ms,
            latency_jitter_ms: d.latency_jitter_ms,
            throttle_rate: d.throttle_rate,
            retry_after_secs: d.retry_after_secs,
            error_rate: d.error_rate,
            unavailable_rate: d.unavailable_rate,
            drop_rate: d.drop_rate,
            slow_rate: d.slow_rate,
            slow_ms: d.slow_ms,
            script: d.script,
            max_concurrency: d.max_concurrency,
            dop_hint: d.dop_hint,
            token_status: entra.status,
            secrets_status: secrets_manager.status,
            sqs_status: sqs.status,
            sqs_refuse_rate: sqs.refuse_rate,
            metadata_status: d.metadata_status,
            entities_status: d.entities_status,
            rows_script: d.rows_script,
            rows_latency_ms: d.rows_latency_ms,
            budget_requests: d.limits.requests,
            budget_window_secs: d.limits.window_secs,
            budget_time_ms: d.limits.time_ms,
            budget_pause_growth: d.limits.pause_growth,
            forbidden_clients: d.forbidden_clients,
            short_token_rate: entra.short_token_rate,
            short_token_secs: entra.short_token_secs,
        }
    }
}

/// One table-row request (lookup, create, update) as the sandbox received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowRequest {
    /// The environment addressed: the path prefix's host (`uat.api.crm.dynamics.com`), empty for the default one.
    #[serde(default)]
    pub environment: String,
    pub method: String,
    /// `contacts`, `contacts({id})`, or `accounts(accountnumber='A-1')` as sent (percent-encoded).
    pub path: String,
    /// Decoded query parameters (`$filter`, `$select`, `$top`).
    pub query: BTreeMap<String, String>,
    /// `prefer`, `if-match`, `if-none-match` and `content-type` only.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub status: u16,
    pub received_at: String,
}

/// One Dataverse call as the sandbox received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The environment called: the path prefix's host (`uat.api.crm.dynamics.com`
    /// for `/uat.api.crm.dynamics.com/api/data/v9.2/…`), empty for the default one.
    #[serde(default)]
    pub environment: String,
    pub trigger: String,
    /// The request path within the environment (its prefix removed), e.g. `/api/data/v9.2/msdynmkt_OrderCompleted`.
    pub path: String,
    /// Request headers (lowercase names); the bearer token is shown as `Bearer <token>`.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub status: u16,
    pub received_at: String,
    /// The application user whose token the call carried (empty without a known token).
    #[serde(default)]
    pub client_id: String,
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
    /// `customapis` metadata queries received (not counted in `calls_by_status`).
    #[serde(default)]
    pub metadata_requests: u64,
    /// Table-row requests received: identity lookups, creates, updates (not counted in `calls_by_status`).
    #[serde(default)]
    pub row_requests: u64,
    /// `EntityDefinitions` queries received (not counted in `calls_by_status`).
    #[serde(default)]
    pub entity_requests: u64,
    /// Trigger calls received in each UTC minute (`YYYY-MM-DDThh:mm`), as CI-J counts
    /// activations against its ceiling of about 2,500 a minute.
    #[serde(default)]
    pub trigger_calls_per_minute: BTreeMap<String, u64>,
    /// Requests an application user sent while paused by a budget 429 it had
    /// already been answered (each lengthened the pause; calls in flight at the
    /// 429 are not counted).
    #[serde(default)]
    pub sent_during_pause: u64,
}

impl Stats {
    pub fn calls(&self) -> u64 {
        self.calls_by_status.values().sum()
    }
    pub fn calls_with(&self, status: u16) -> u64 {
        self.calls_by_status.get(&status).copied().unwrap_or(0)
    }
    /// The most trigger calls received in one UTC minute.
    pub fn busiest_minute(&self) -> u64 {
        self.trigger_calls_per_minute.values().copied().max().unwrap_or(0)
    }
}
