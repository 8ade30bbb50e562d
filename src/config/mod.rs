//! Configuration (SPEC §2): environment settings (§2.1, here), the Secrets
//! Manager secret (§2.2, [`secret`]) and the mapping document (§2.3,
//! [`document`]), each parsed and validated once into a typed value.

use std::time::Duration;

pub mod document;
pub mod identity;
mod renamed;
pub mod routes;
pub mod rows;
pub mod secret;

pub use document::{DefaultAction, EventMapping, Mapping, DEFAULT_PRESET};
pub use secret::{check_org_host, Credentials, PrincipalCredentials, SenderSecrets, DATAVERSE_SUFFIXES};

/// A configuration problem, naming the setting so the log line says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { setting: setting.into(), problem: problem.into() }
    }
}

/// A sender authentication scheme of `D365_WEBHOOK_AUTH` (SPEC §5, §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAuth {
    /// `X-Timestamp` + `X-Signature: sha256=…` (SPEC §5).
    Hmac,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// Segment's `X-Signature`: hex HMAC-SHA1 of the body.
    Segment,
    /// A shared key: `?code=` or `X-Api-Key` (Dataverse webhooks, Power Automate).
    Key,
    /// An analytics SDK's write key: the HTTP Basic user name, or a `writeKey` body field (SPEC §20).
    WriteKey,
    /// Nothing: only behind an API Gateway authorizer.
    None,
}

impl WebhookAuth {
    pub const ALL: [WebhookAuth; 6] =
        [WebhookAuth::Hmac, WebhookAuth::Standard, WebhookAuth::Segment, WebhookAuth::Key, WebhookAuth::WriteKey, WebhookAuth::None];

    pub fn name(self) -> &'static str {
        match self {
            WebhookAuth::Hmac => "hmac",
            WebhookAuth::Standard => "standard",
            WebhookAuth::Segment => "segment",
            WebhookAuth::Key => "key",
            WebhookAuth::WriteKey => "writekey",
            WebhookAuth::None => "none",
        }
    }

    /// `D365_WEBHOOK_AUTH`: a comma-separated list, in order, without repeats.
    pub fn parse_list(text: &str) -> Result<Vec<WebhookAuth>, String> {
        let mut schemes = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let scheme = WebhookAuth::ALL
                .into_iter()
                .find(|s| s.name().eq_ignore_ascii_case(item))
                .ok_or_else(|| format!("'{item}' is not one of hmac, standard, segment, key, writekey, none"))?;
            if !schemes.contains(&scheme) {
                schemes.push(scheme);
            }
        }
        if schemes.is_empty() {
            return Err("names no scheme; use a comma-separated list of hmac, standard, segment, key, writekey, none".into());
        }
        Ok(schemes)
    }
}

/// `D365_WEBHOOK_MODE` (SPEC §15): deliver inline, or check and queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookMode {
    /// Webhook events are delivered to Dataverse within the request (default).
    Deliver,
    /// Webhook events are checked, then sent to `D365_QUEUE_URL` and answered 202.
    Enqueue(QueueTarget),
}

/// The SQS queue of enqueue mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTarget {
    pub url: String,
    /// The URL ends in `.fifo`: messages carry a group and a deduplication id.
    pub fifo: bool,
}

/// How failed SQS records wait in the queue, and where the relay parks what needs a person (SPEC §18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogSettings {
    /// `D365_BACKOFF_BASE_SECONDS`: the first backoff of a retryable record (30 s).
    pub backoff_base: Duration,
    /// `D365_BACKOFF_MAX_SECONDS`: the longest backoff (3,600 s; at most 43,000).
    pub backoff_max: Duration,
    /// `D365_MAX_RETRY_AGE_SECONDS`: a retryable record first received longer ago is parked as `expired` (86,400 s).
    pub max_retry_age: Duration,
    /// `D365_DEAD_LETTER_QUEUE_URL`: the DLQ the relay parks records in, with their reasons.
    pub dead_letter_queue: Option<QueueTarget>,
}

/// The longest visibility backoff: SQS's limit is 12 hours (43,200 s).
pub const MAX_BACKOFF_SECONDS: u64 = 43_000;

/// Settings read from the function's environment (SPEC §2.1).
#[derive(Debug, Clone)]
pub struct Settings {
    pub secret_id: String,
    pub mapping: Mapping,
    pub default_phone_region: Option<phonenumber::country::Id>,
    pub max_in_flight: usize,
    /// `D365_LEARNED_CAP_SECONDS`: how long a concurrency cap learned from a
    /// `0x80072326` 429 is kept before one probe above it (300 s; 0: not kept).
    pub learned_cap_period: Duration,
    /// `D365_BUDGET_WINDOW_SECONDS`: Dataverse's request-budget window, from which a rate is learned (300 s).
    pub budget_window: Duration,
    pub secret_ttl: Duration,
    /// Accepted sender schemes, in the order listed (a request passes if one accepts it).
    pub webhook_auth: Vec<WebhookAuth>,
    /// `D365_WEBHOOK_MODE` with `D365_QUEUE_URL`.
    pub webhook_mode: WebhookMode,
    /// Entra authority, without a trailing slash.
    pub authority_host: String,
    /// Dataverse base URL override (sandbox and tests only), without a trailing slash.
    pub dataverse_base_url: Option<String>,
    pub idempotency_table: Option<String>,
    /// `D365_IDEMPOTENCY_EXPIRES_AFTER_SECONDS`: how long a delivered key is remembered (24 h).
    pub idempotency_expires_after: Duration,
    /// `D365_TRIGGER_NAME`: the default trigger, over the secret's `trigger_name`.
    pub trigger_name: Option<String>,
    /// `D365_METRICS_NAMESPACE`: CloudWatch namespace of the EMF metrics.
    pub metrics_namespace: String,
    /// `D365_SCHEMA_TTL_SECONDS`: how long a trigger's definition is reused (SPEC §13).
    pub schema_ttl: Duration,
    /// `D365_IDENTITY_TTL_SECONDS`: how long a resolved profile id is reused (SPEC §14).
    pub identity_ttl: Duration,
    /// `D365_MAX_TRIGGERS_PER_MINUTE`: trigger calls started per UTC minute by
    /// the whole deployment (SPEC §17.1; 2500, CI-J's fair use; 0: no ceiling).
    pub max_triggers_per_minute: u32,
    /// `D365_EXECUTION_ENVIRONMENTS` (formerly `D365_ENVIRONMENTS`): execution environments sharing the ceiling when
    /// there is no table (1; the template sets `MaximumConcurrency`).
    pub environments: u32,
    /// Backoff by visibility and the DLQ with reasons (SPEC §18).
    pub backlog: BacklogSettings,
    /// `D365_RECORD_LOG`: which records get a record line (SPEC §22.1).
    pub record_log: RecordLog,
}

/// Which records get a record line (SPEC §22.1); SPEC §9's lines stay in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordLog {
    /// Every record (the default).
    #[default]
    All,
    /// Only records not `delivered`, `dropped` or `duplicate`.
    Failures,
    None,
}

impl RecordLog {
    fn parse(text: Option<String>) -> Result<RecordLog, ConfigError> {
        match text.as_deref().map(str::trim) {
            None | Some("all") => Ok(RecordLog::All),
            Some("failures") => Ok(RecordLog::Failures),
            Some("none") => Ok(RecordLog::None),
            Some(other) => Err(ConfigError::new("D365_RECORD_LOG", format!("'{other}' is not all, failures or none"))),
        }
    }
}

impl Settings {
    /// The trigger of events whose entry names none (SPEC §2, §3):
    /// `D365_TRIGGER_NAME`, else the secret's `trigger_name`.
    pub fn default_trigger(&self, credentials: &Credentials) -> Option<String> {
        self.trigger_name.clone().or_else(|| credentials.trigger_name.clone())
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads settings through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let get = |key: &str| lookup(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());

        let secret_id = get("D365_SECRET_ID")
            .ok_or_else(|| ConfigError::new("D365_SECRET_ID", "is required: the name or ARN of the Secrets Manager secret holding the Dynamics credentials"))?;

        let mapping = match (get("D365_MAPPING"), get("D365_MAPPING_FILE")) {
            (Some(inline), _) => Mapping::parse(&inline).map_err(|e| ConfigError::new("D365_MAPPING", e))?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::new("D365_MAPPING_FILE", format!("cannot read {path}: {e}")))?;
                Mapping::parse(&text).map_err(|e| ConfigError::new("D365_MAPPING_FILE", format!("{path}: {e}")))?
            }
            (None, None) => Mapping::default_preset(),
        };

        let default_phone_region = match get("D365_DEFAULT_PHONE_REGION") {
            None => None,
            Some(region) => Some(
                parse_region(&region)
                    .ok_or_else(|| ConfigError::new("D365_DEFAULT_PHONE_REGION", format!("'{region}' is not an ISO 3166-1 alpha-2 region such as GB or US")))?,
            ),
        };

        let max_in_flight = parse_number(get("D365_MAX_IN_FLIGHT"), "D365_MAX_IN_FLIGHT", 8, 1, 256)? as usize;
        let learned_cap_period = Duration::from_secs(parse_number(get("D365_LEARNED_CAP_SECONDS"), "D365_LEARNED_CAP_SECONDS", 300, 0, 86_400)?);
        let budget_window = Duration::from_secs(parse_number(get("D365_BUDGET_WINDOW_SECONDS"), "D365_BUDGET_WINDOW_SECONDS", 300, 1, 3_600)?);
        let secret_ttl = Duration::from_secs(parse_number(get("D365_SECRET_TTL_SECONDS"), "D365_SECRET_TTL_SECONDS", 300, 0, 86_400)?);

        let webhook_auth = match get("D365_WEBHOOK_AUTH") {
            None => vec![WebhookAuth::Hmac],
            Some(list) => WebhookAuth::parse_list(&list).map_err(|e| ConfigError::new("D365_WEBHOOK_AUTH", e))?,
        };

        let webhook_mode = match get("D365_WEBHOOK_MODE").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("deliver") => WebhookMode::Deliver,
            Some("enqueue") => {
                let url = get("D365_QUEUE_URL").ok_or_else(|| {
                    ConfigError::new("D365_QUEUE_URL", "is required with D365_WEBHOOK_MODE=enqueue: the URL of the SQS queue the relay reads")
                })?;
                WebhookMode::Enqueue(check_queue_url(&url).map_err(|e| ConfigError::new("D365_QUEUE_URL", e))?)
            }
            Some(other) => return Err(ConfigError::new("D365_WEBHOOK_MODE", format!("'{other}' is not one of deliver, enqueue"))),
        };

        // SAM's local runtime sets AWS_SAM_LOCAL=true; Lambda never does.
        let http_hosts = if get("AWS_SAM_LOCAL").is_some_and(|v| v.eq_ignore_ascii_case("true")) { HttpHosts::SamLocal } else { HttpHosts::Loopback };
        let authority_host = match get("D365_AUTHORITY_HOST") {
            None => "https://login.microsoftonline.com".to_string(),
            Some(url) => check_base_url(&url, http_hosts).map_err(|e| ConfigError::new("D365_AUTHORITY_HOST", e))?,
        };
        let dataverse_base_url = match get("D365_DATAVERSE_BASE_URL") {
            None => None,
            // `…/{org_url_host}`: each destination's host as the path (SPEC §23.4: one sandbox serving several environments).
            Some(url) => {
                let (base, per_host) = match url.trim().trim_end_matches('/').strip_suffix("/{org_url_host}") {
                    Some(base) => (base.to_string(), "/{org_url_host}"),
                    None => (url, ""),
                };
                Some(check_base_url(&base, http_hosts).map_err(|e| ConfigError::new("D365_DATAVERSE_BASE_URL", e))? + per_host)
            }
        };

        let trigger_name = match get("D365_TRIGGER_NAME") {
            None => None,
            Some(name) => Some(check_name(&name).map(|()| name).map_err(|e| ConfigError::new("D365_TRIGGER_NAME", e))?),
        };

        let schema_ttl = Duration::from_secs(parse_number(get("D365_SCHEMA_TTL_SECONDS"), "D365_SCHEMA_TTL_SECONDS", 900, 0, 86_400)?);

        let identity_ttl = Duration::from_secs(parse_number(get("D365_IDENTITY_TTL_SECONDS"), "D365_IDENTITY_TTL_SECONDS", 3600, 0, 86_400)?);

        // D365_EXECUTION_ENVIRONMENTS; the old name D365_ENVIRONMENTS is still read, with one warning (SPEC §21.3).
        let execution_environments = match (get("D365_EXECUTION_ENVIRONMENTS"), get("D365_ENVIRONMENTS")) {
            (None, Some(old)) => {
                renamed::warn_once("D365_ENVIRONMENTS", "D365_EXECUTION_ENVIRONMENTS");
                ("D365_ENVIRONMENTS", Some(old))
            }
            (new, _) => ("D365_EXECUTION_ENVIRONMENTS", new),
        };
        let max_triggers_per_minute = parse_number(get("D365_MAX_TRIGGERS_PER_MINUTE"), "D365_MAX_TRIGGERS_PER_MINUTE", 2500, 0, 1_000_000)? as u32;
        let environments = parse_number(execution_environments.1, execution_environments.0, 1, 1, 10_000)? as u32;

        let backlog = BacklogSettings {
            backoff_base: Duration::from_secs(parse_number(get("D365_BACKOFF_BASE_SECONDS"), "D365_BACKOFF_BASE_SECONDS", 30, 1, MAX_BACKOFF_SECONDS)?),
            backoff_max: Duration::from_secs(parse_number(get("D365_BACKOFF_MAX_SECONDS"), "D365_BACKOFF_MAX_SECONDS", 3_600, 1, MAX_BACKOFF_SECONDS)?),
            max_retry_age: Duration::from_secs(parse_number(get("D365_MAX_RETRY_AGE_SECONDS"), "D365_MAX_RETRY_AGE_SECONDS", 86_400, 60, 14 * 86_400)?),
            dead_letter_queue: match get("D365_DEAD_LETTER_QUEUE_URL") {
                None => None,
                Some(url) => Some(check_queue_url(&url).map_err(|e| ConfigError::new("D365_DEAD_LETTER_QUEUE_URL", e))?),
            },
        };

        let record_log = RecordLog::parse(get("D365_RECORD_LOG"))?;
        // Several destinations behind one base URL would all reach one environment (SPEC §23.4).
        if mapping.destinations.len() > 1 && dataverse_base_url.as_deref().is_some_and(|url| !url.contains("{org_url_host}")) {
            return Err(ConfigError::new(
                "D365_DATAVERSE_BASE_URL",
                "with several destinations it must hold {org_url_host} (e.g. http://127.0.0.1:8765/{org_url_host}), or every destination would reach one environment",
            ));
        }

        Ok(Settings {
            max_triggers_per_minute,
            environments,
            backlog,
            record_log,
            identity_ttl,
            schema_ttl,
            trigger_name,
            metrics_namespace: get("D365_METRICS_NAMESPACE").unwrap_or_else(|| "D365TriggerRelay".to_string()),
            secret_id,
            mapping,
            default_phone_region,
            max_in_flight,
            learned_cap_period,
            budget_window,
            secret_ttl,
            webhook_auth,
            webhook_mode,
            authority_host,
            dataverse_base_url,
            idempotency_table: get("D365_IDEMPOTENCY_TABLE"),
            idempotency_expires_after: Duration::from_secs(parse_number(
                get("D365_IDEMPOTENCY_EXPIRES_AFTER_SECONDS"),
                "D365_IDEMPOTENCY_EXPIRES_AFTER_SECONDS",
                86_400,
                60,
                30 * 86_400,
            )?),
        })
    }
}

fn parse_number(value: Option<String>, setting: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(setting, format!("'{text}' is not a whole number from {min} to {max}"))),
        },
    }
}

/// An ISO 3166-1 alpha-2 region the phone library knows.
pub fn parse_region(text: &str) -> Option<phonenumber::country::Id> {
    let text = text.trim();
    if text.len() != 2 {
        return None;
    }
    text.to_ascii_uppercase().parse().ok()
}

/// The hosts a base URL may name with `http://` (SPEC §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpHosts {
    /// Loopback only: the sandbox and the tests, on the same machine.
    Loopback,
    /// Under SAM's local runtime (`AWS_SAM_LOCAL=true`) the function runs in a
    /// container and the sandbox is on the Docker host: loopback, a private
    /// (RFC 1918) IPv4 address or `host.docker.internal`.
    SamLocal,
}

impl HttpHosts {
    fn allow(self, host: &str) -> bool {
        is_loopback(host)
            || (self == HttpHosts::SamLocal
                && (host.eq_ignore_ascii_case("host.docker.internal") || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_private())))
    }

    fn describe(self) -> &'static str {
        match self {
            HttpHosts::Loopback => "a loopback host (127.0.0.1, localhost, [::1])",
            HttpHosts::SamLocal => "a loopback host, a private (RFC 1918) address or host.docker.internal under SAM local",
        }
    }
}

/// A base URL: `https://host[:port]`, or `http://` for the hosts of `http_hosts`.
/// Returned without a trailing slash.
pub fn check_base_url(url: &str, http_hosts: HttpHosts) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("'{url}' is not an http(s) URL"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(format!("'{url}' must be a scheme and host only, without a path, query or user"));
    }
    let host = host_of(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(url.to_string()),
        "http" if http_hosts.allow(host) => Ok(url.to_string()),
        "http" => Err(format!("'{url}': http:// is accepted only for {}", http_hosts.describe())),
        _ => Err(format!("'{url}' is not an http(s) URL")),
    }
}

/// An SQS queue URL: `https://{host}/{account}/{name}` (`http://` for a loopback
/// emulator only); FIFO when the name ends in `.fifo`.
pub fn check_queue_url(url: &str) -> Result<QueueTarget, String> {
    let url = url.trim().trim_end_matches('/');
    let shape = || format!("'{url}' is not an SQS queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/relay-events");
    let (scheme, rest) = url.split_once("://").ok_or_else(shape)?;
    let (authority, path) = rest.split_once('/').ok_or_else(shape)?;
    let name = path.rsplit('/').next().unwrap_or("");
    if authority.is_empty() || name.is_empty() || rest.contains(['?', '#', '@']) {
        return Err(shape());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => {}
        "http" if is_loopback(host_of(authority)) => {}
        "http" => return Err(format!("'{url}': http:// is accepted only for a loopback host (an emulator)")),
        _ => return Err(shape()),
    }
    Ok(QueueTarget { url: url.to_string(), fifo: name.ends_with(".fifo") })
}

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host == "::1" || host.parse::<std::net::Ipv4Addr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Trigger and attribute names: `^[A-Za-z0-9_]+$`.
pub fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("'{name}' is not a valid name (letters, digits and '_' only)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = settings(&[("D365_SECRET_ID", "d365/relay")]).unwrap();
        assert_eq!(s.max_in_flight, 8);
        assert_eq!(s.secret_ttl, Duration::from_secs(300));
        assert_eq!(s.webhook_auth, vec![WebhookAuth::Hmac]);
        assert_eq!(s.authority_host, "https://login.microsoftonline.com");
        assert_eq!(s.mapping, Mapping::default_preset());
        assert!(s.dataverse_base_url.is_none());
        assert_eq!(s.schema_ttl, Duration::from_secs(900));
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_SCHEMA_TTL_SECONDS", "soon")]).unwrap_err();
        assert_eq!(err.setting, "D365_SCHEMA_TTL_SECONDS");
        assert_eq!(s.learned_cap_period, Duration::from_secs(300));
    }

    #[test]
    fn the_trigger_ceiling_defaults_to_ci_j_s_and_may_be_off() {
        let s = settings(&[("D365_SECRET_ID", "x")]).unwrap();
        assert_eq!((s.max_triggers_per_minute, s.environments), (2500, 1));
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_MAX_TRIGGERS_PER_MINUTE", "0"), ("D365_ENVIRONMENTS", "5")]).unwrap();
        assert_eq!((s.max_triggers_per_minute, s.environments), (0, 5));
        for (name, bad) in [("D365_MAX_TRIGGERS_PER_MINUTE", "-1"), ("D365_MAX_TRIGGERS_PER_MINUTE", "lots"), ("D365_ENVIRONMENTS", "0")] {
            let err = settings(&[("D365_SECRET_ID", "x"), (name, bad)]).unwrap_err();
            assert_eq!(err.setting, name, "{bad}");
        }
    }

    #[test]
    fn execution_environments_has_its_new_name_and_still_reads_the_old_one() {
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_EXECUTION_ENVIRONMENTS", "7")]).unwrap();
        assert_eq!(s.environments, 7);
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_EXECUTION_ENVIRONMENTS", "7"), ("D365_ENVIRONMENTS", "3")]).unwrap();
        assert_eq!(s.environments, 7, "the new name wins");
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_ENVIRONMENTS", "3")]).unwrap();
        assert_eq!(s.environments, 3);
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_EXECUTION_ENVIRONMENTS", "0")]).unwrap_err();
        assert_eq!(err.setting, "D365_EXECUTION_ENVIRONMENTS");
    }

    #[test]
    fn the_learned_cap_period_may_be_zero_but_not_negative_or_huge() {
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_LEARNED_CAP_SECONDS", "0")]).unwrap();
        assert_eq!(s.learned_cap_period, Duration::ZERO);
        for bad in ["-1", "86401", "5m"] {
            let err = settings(&[("D365_SECRET_ID", "x"), ("D365_LEARNED_CAP_SECONDS", bad)]).unwrap_err();
            assert_eq!(err.setting, "D365_LEARNED_CAP_SECONDS", "{bad}");
        }
    }

    #[test]
    fn each_bad_setting_is_named() {
        let err = settings(&[]).unwrap_err();
        assert_eq!(err.setting, "D365_SECRET_ID");
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_MAX_IN_FLIGHT", "0")]).unwrap_err();
        assert_eq!(err.setting, "D365_MAX_IN_FLIGHT");
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_DEFAULT_PHONE_REGION", "Britain")]).unwrap_err();
        assert_eq!(err.setting, "D365_DEFAULT_PHONE_REGION");
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_AUTHORITY_HOST", "http://login.example.com")]).unwrap_err();
        assert_eq!(err.setting, "D365_AUTHORITY_HOST");
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_DATAVERSE_BASE_URL", "https://x.crm.dynamics.com/api")]).unwrap_err();
        assert_eq!(err.setting, "D365_DATAVERSE_BASE_URL");
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_MAPPING", "{\"events\": 3}")]).unwrap_err();
        assert_eq!(err.setting, "D365_MAPPING");
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_MAPPING_FILE", "/nonexistent/mapping.json")]).unwrap_err();
        assert_eq!(err.setting, "D365_MAPPING_FILE");
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_AUTH", "basic")]).unwrap_err();
        assert_eq!(err.setting, "D365_WEBHOOK_AUTH");
    }

    #[test]
    fn enqueue_mode_needs_a_queue_url() {
        assert_eq!(settings(&[("D365_SECRET_ID", "x")]).unwrap().webhook_mode, WebhookMode::Deliver);
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/relay-events";
        // The queue URL alone does not switch the mode (the template sets it in both modes).
        assert_eq!(settings(&[("D365_SECRET_ID", "x"), ("D365_QUEUE_URL", url)]).unwrap().webhook_mode, WebhookMode::Deliver);
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_MODE", "Enqueue"), ("D365_QUEUE_URL", url)]).unwrap();
        assert_eq!(s.webhook_mode, WebhookMode::Enqueue(QueueTarget { url: url.into(), fifo: false }));
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", "http://127.0.0.1:4566/000000000000/events.fifo/")])
            .unwrap();
        assert_eq!(s.webhook_mode, WebhookMode::Enqueue(QueueTarget { url: "http://127.0.0.1:4566/000000000000/events.fifo".into(), fifo: true }));

        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_MODE", "enqueue")]).unwrap_err();
        assert_eq!(err.setting, "D365_QUEUE_URL");
        for bad in ["relay-events", "https://sqs.eu-west-1.amazonaws.com", "http://sqs.eu-west-1.amazonaws.com/1/q", "ftp://h/1/q", "https://h/1/q?x=1"] {
            let err = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", bad)]).unwrap_err();
            assert_eq!(err.setting, "D365_QUEUE_URL", "{bad}");
        }
        let err = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_MODE", "queue")]).unwrap_err();
        assert_eq!(err.setting, "D365_WEBHOOK_MODE");
    }

    #[test]
    fn loopback_http_is_accepted_for_the_sandbox() {
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_AUTHORITY_HOST", "http://127.0.0.1:4566/"), ("D365_DATAVERSE_BASE_URL", "http://localhost:4566")])
            .unwrap();
        assert_eq!(s.authority_host, "http://127.0.0.1:4566");
        assert_eq!(s.dataverse_base_url.as_deref(), Some("http://localhost:4566"));
        assert!(check_base_url("http://[::1]:80", HttpHosts::Loopback).is_ok());
        assert!(check_base_url("http://127.0.0.1.evil.com", HttpHosts::Loopback).is_err());
    }

    #[test]
    fn private_hosts_take_http_only_under_sam_local() {
        let private = ["http://172.17.0.1:8765", "http://10.0.0.5", "http://192.168.1.20:80", "http://172.31.255.254:1", "http://HOST.docker.internal:8765"];
        for url in private {
            for (setting, other) in [("D365_AUTHORITY_HOST", "D365_DATAVERSE_BASE_URL"), ("D365_DATAVERSE_BASE_URL", "D365_AUTHORITY_HOST")] {
                // Lambda (no AWS_SAM_LOCAL, or anything but true): refused, naming the setting.
                for sam_local in [None, Some("false"), Some("1"), Some("")] {
                    let mut pairs = vec![("D365_SECRET_ID", "x"), (setting, url), (other, "https://login.example.com")];
                    pairs.extend(sam_local.map(|v| ("AWS_SAM_LOCAL", v)));
                    let err = settings(&pairs).unwrap_err();
                    assert_eq!(err.setting, setting, "{url} with AWS_SAM_LOCAL={sam_local:?}");
                    assert!(err.problem.contains("loopback"), "{}", err.problem);
                }
                // SAM local: accepted.
                let s = settings(&[("D365_SECRET_ID", "x"), ("AWS_SAM_LOCAL", "true"), (setting, url)]).unwrap();
                let got = if setting == "D365_AUTHORITY_HOST" { s.authority_host } else { s.dataverse_base_url.unwrap() };
                assert_eq!(got, url);
            }
        }
        assert!(check_base_url("http://172.17.0.1:8765/", HttpHosts::SamLocal).is_ok());
        assert!(check_base_url("http://127.0.0.1:8765", HttpHosts::SamLocal).is_ok());
        assert!(check_base_url("https://login.microsoftonline.com", HttpHosts::SamLocal).is_ok());
    }

    #[test]
    fn public_hosts_never_take_http_even_under_sam_local() {
        let public = [
            "http://login.microsoftonline.com",
            "http://172.32.0.1",     // just above 172.16.0.0/12
            "http://172.15.255.255", // just below
            "http://11.0.0.1",
            "http://192.169.0.1",
            "http://100.64.0.1",      // shared address space (RFC 6598), not RFC 1918
            "http://169.254.169.254", // link-local: the instance metadata service
            "http://8.8.8.8",
            "http://host.docker.internal.evil.com",
            "http://10.0.0.1.evil.com",
            "http://[fd00::1]:8765", // IPv6 unique local: not RFC 1918
            "http://docker.internal",
        ];
        for url in public {
            for setting in ["D365_AUTHORITY_HOST", "D365_DATAVERSE_BASE_URL"] {
                let err = settings(&[("D365_SECRET_ID", "x"), ("AWS_SAM_LOCAL", "true"), (setting, url)]).unwrap_err();
                assert_eq!(err.setting, setting, "{url}");
                assert!(err.problem.contains("RFC 1918"), "{}", err.problem);
            }
        }
    }

    #[test]
    fn sam_local_does_not_widen_the_queue_url() {
        let err =
            settings(&[("D365_SECRET_ID", "x"), ("AWS_SAM_LOCAL", "true"), ("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", "http://172.17.0.1:8765/0/q")])
                .unwrap_err();
        assert_eq!(err.setting, "D365_QUEUE_URL");
    }

    #[test]
    fn webhook_auth_is_a_list_of_schemes() {
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_AUTH", " HMAC, standard,segment ,key,WriteKey,none,hmac")]).unwrap();
        assert_eq!(s.webhook_auth, WebhookAuth::ALL.to_vec());
        let s = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_AUTH", "key")]).unwrap();
        assert_eq!(s.webhook_auth, vec![WebhookAuth::Key]);
        for bad in ["hmac,basic", ",", "sha1"] {
            let err = settings(&[("D365_SECRET_ID", "x"), ("D365_WEBHOOK_AUTH", bad)]).unwrap_err();
            assert_eq!(err.setting, "D365_WEBHOOK_AUTH", "{bad}");
        }
    }

    #[test]
    fn several_destinations_need_the_host_in_the_base_url() {
        let mapping = r#"{"destinations": {"default": {"fallback": true}, "uat": {"best_effort": true}}}"#;
        let plain = settings(&[("D365_SECRET_ID", "x"), ("D365_MAPPING", mapping), ("D365_DATAVERSE_BASE_URL", "http://127.0.0.1:8765")]);
        assert_eq!(plain.unwrap_err().setting, "D365_DATAVERSE_BASE_URL");
        let per_host = settings(&[("D365_SECRET_ID", "x"), ("D365_MAPPING", mapping), ("D365_DATAVERSE_BASE_URL", "http://127.0.0.1:8765/{org_url_host}")]);
        assert_eq!(per_host.unwrap().dataverse_base_url.as_deref(), Some("http://127.0.0.1:8765/{org_url_host}"));
        assert!(settings(&[("D365_SECRET_ID", "x"), ("D365_MAPPING", mapping)]).is_ok(), "without an override each host is its own");
    }
}
