//! Configuration (SPEC §2): environment settings, the Secrets Manager secret and
//! the mapping document, each parsed and validated once into a typed value.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAuth {
    Hmac,
    None,
}

/// Settings read from the function's environment (SPEC §2.1).
#[derive(Debug, Clone)]
pub struct Settings {
    pub secret_id: String,
    pub mapping: Mapping,
    pub default_phone_region: Option<phonenumber::country::Id>,
    pub max_in_flight: usize,
    pub secret_ttl: Duration,
    pub webhook_auth: WebhookAuth,
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
}

impl Settings {
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
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::new("D365_MAPPING_FILE", format!("cannot read {path}: {e}")))?;
                Mapping::parse(&text).map_err(|e| ConfigError::new("D365_MAPPING_FILE", format!("{path}: {e}")))?
            }
            (None, None) => Mapping::default_preset(),
        };

        let default_phone_region = match get("D365_DEFAULT_PHONE_REGION") {
            None => None,
            Some(region) => Some(parse_region(&region).ok_or_else(|| {
                ConfigError::new("D365_DEFAULT_PHONE_REGION", format!("'{region}' is not an ISO 3166-1 alpha-2 region such as GB or US"))
            })?),
        };

        let max_in_flight = parse_number(get("D365_MAX_IN_FLIGHT"), "D365_MAX_IN_FLIGHT", 8, 1, 256)? as usize;
        let secret_ttl = Duration::from_secs(parse_number(get("D365_SECRET_TTL_SECONDS"), "D365_SECRET_TTL_SECONDS", 300, 0, 86_400)?);

        let webhook_auth = match get("D365_WEBHOOK_AUTH").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("hmac") => WebhookAuth::Hmac,
            Some("none") => WebhookAuth::None,
            Some(other) => return Err(ConfigError::new("D365_WEBHOOK_AUTH", format!("'{other}' is not one of hmac, none"))),
        };

        let authority_host = match get("D365_AUTHORITY_HOST") {
            None => "https://login.microsoftonline.com".to_string(),
            Some(url) => check_base_url(&url).map_err(|e| ConfigError::new("D365_AUTHORITY_HOST", e))?,
        };
        let dataverse_base_url = match get("D365_DATAVERSE_BASE_URL") {
            None => None,
            Some(url) => Some(check_base_url(&url).map_err(|e| ConfigError::new("D365_DATAVERSE_BASE_URL", e))?),
        };

        let trigger_name = match get("D365_TRIGGER_NAME") {
            None => None,
            Some(name) => Some(check_name(&name).map(|()| name).map_err(|e| ConfigError::new("D365_TRIGGER_NAME", e))?),
        };

        Ok(Settings {
            trigger_name,
            metrics_namespace: get("D365_METRICS_NAMESPACE").unwrap_or_else(|| "D365TriggerRelay".to_string()),
            secret_id,
            mapping,
            default_phone_region,
            max_in_flight,
            secret_ttl,
            webhook_auth,
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

/// A base URL: `https://host[:port]`, or `http://` for a loopback host only.
/// Returned without a trailing slash.
pub fn check_base_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("'{url}' is not an http(s) URL"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(format!("'{url}' must be a scheme and host only, without a path, query or user"));
    }
    let host = host_of(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(url.to_string()),
        "http" if is_loopback(host) => Ok(url.to_string()),
        "http" => Err(format!("'{url}': http:// is accepted only for a loopback host (127.0.0.1, localhost, [::1])")),
        _ => Err(format!("'{url}' is not an http(s) URL")),
    }
}

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host.parse::<std::net::Ipv4Addr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// DNS suffixes of Dataverse environments (public, US Government, China, DoD).
/// A token is only ever requested for, and sent to, a host under one of these.
pub const DATAVERSE_SUFFIXES: &[&str] = &[".dynamics.com", ".microsoftdynamics.us", ".dynamics.cn", ".appsplatform.us"];

/// Credentials and targets from the Secrets Manager secret (SPEC §2.2).
#[derive(Clone)]
pub struct Credentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub org_url_host: String,
    pub trigger_name: Option<String>,
    pub webhook_secret: Option<SecretString>,
    /// Secrets Manager's VersionId, to tell a rotated secret from the one in use.
    pub version: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("org_url_host", &self.org_url_host)
            .field("trigger_name", &self.trigger_name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawCredentials {
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    org_url_host: Option<String>,
    trigger_name: Option<String>,
    webhook_secret: Option<String>,
}

impl Credentials {
    /// Parses and validates the secret's JSON. Errors name the field, never its value.
    pub fn parse(secret_string: &str, version: &str) -> Result<Credentials, ConfigError> {
        const SETTING: &str = "secret";
        let raw: RawCredentials = serde_json::from_str(secret_string)
            .map_err(|_| ConfigError::new(SETTING, "the SecretString is not a JSON object with string fields tenant_id, client_id, client_secret, org_url_host"))?;
        let need = |value: Option<String>, field: &str| {
            value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError::new(format!("{SETTING}.{field}"), "is missing or empty"))
        };
        let tenant_id = need(raw.tenant_id, "tenant_id")?;
        if !tenant_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(ConfigError::new("secret.tenant_id", "must be a tenant GUID or domain name (letters, digits, '-' and '.')"));
        }
        let client_id = need(raw.client_id, "client_id")?;
        let client_secret = need(raw.client_secret, "client_secret")?;
        let org_url_host = need(raw.org_url_host, "org_url_host")?.to_ascii_lowercase();
        check_org_host(&org_url_host).map_err(|e| ConfigError::new("secret.org_url_host", e))?;
        let trigger_name = raw.trigger_name.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        if let Some(name) = &trigger_name {
            check_name(name).map_err(|e| ConfigError::new("secret.trigger_name", e))?;
        }
        Ok(Credentials {
            tenant_id,
            client_id,
            client_secret: SecretString::from(client_secret),
            org_url_host,
            trigger_name,
            webhook_secret: raw.webhook_secret.filter(|s| !s.is_empty()).map(SecretString::from),
            version: version.to_string(),
        })
    }
}

/// `org_url_host` is a bare DNS name of a Dataverse environment: no scheme, path or port.
pub fn check_org_host(host: &str) -> Result<(), String> {
    if host.contains("://") || host.contains(['/', ':', '?', '#', '@', ' ']) {
        return Err(format!("'{host}' must be a bare host name such as contoso.api.crm.dynamics.com (no scheme, slash, path or port)"));
    }
    let labels_ok = host.len() <= 253
        && host.split('.').count() >= 3
        && host.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !labels_ok {
        return Err(format!("'{host}' is not a valid DNS host name"));
    }
    if !DATAVERSE_SUFFIXES.iter().any(|s| host.ends_with(s)) {
        return Err(format!("'{host}' is not a Dataverse host (expected a name ending in {}); the token is never sent elsewhere", DATAVERSE_SUFFIXES.join(", ")));
    }
    Ok(())
}

/// Trigger and attribute names: `^[A-Za-z0-9_]+$`.
pub fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("'{name}' is not a valid name (letters, digits and '_' only)"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Drop,
    Raise,
}

/// The mapping document (SPEC §2.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub trigger: Option<String>,
    pub events: BTreeMap<String, EventMapping>,
    pub default_action: DefaultAction,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventMapping {
    pub trigger: Option<String>,
    /// Dataverse parameter → candidate paths (each split on '.'); the first present wins.
    pub attributes: Vec<(String, Vec<Vec<String>>)>,
    pub required: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    trigger: Option<String>,
    #[serde(default)]
    events: BTreeMap<String, RawEventMapping>,
    #[serde(default)]
    defaults: Option<RawDefaults>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventMapping {
    trigger: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
    #[serde(default)]
    required: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    action: Option<String>,
}

/// The built-in Default preset. Attribute names are illustrative: rename them
/// to your trigger's attributes with a mapping document.
pub const DEFAULT_PRESET: &str = r#"{
  "events": {
    "Signed Up": {
      "attributes": { "msdynmkt_signupsource": "properties.source" }
    },
    "Lead Generated": {
      "attributes": {
        "msdynmkt_leadsource": "properties.source",
        "msdynmkt_leadcampaign": "properties.campaign"
      }
    },
    "Product Added": {
      "attributes": {
        "msdynmkt_productid": "properties.product_id",
        "msdynmkt_productname": "properties.name",
        "msdynmkt_price": "properties.price",
        "msdynmkt_currency": "properties.currency"
      }
    },
    "Order Completed": {
      "attributes": {
        "msdynmkt_orderid": "properties.order_id",
        "msdynmkt_ordertotal": ["properties.revenue", "properties.total"],
        "msdynmkt_currency": "properties.currency"
      },
      "required": ["msdynmkt_orderid"]
    }
  },
  "defaults": { "action": "drop" }
}"#;

impl Mapping {
    pub fn default_preset() -> Mapping {
        Mapping::parse(DEFAULT_PRESET).expect("the built-in preset is valid")
    }

    /// Parses and validates a mapping document; the error says where it is wrong.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let raw: RawMapping = serde_json::from_str(text).map_err(|e| format!("not a valid mapping document: {e}"))?;
        if let Some(t) = &raw.trigger {
            check_name(t).map_err(|e| format!("trigger: {e}"))?;
        }
        let default_action = match raw.defaults.and_then(|d| d.action).as_deref() {
            None | Some("drop") => DefaultAction::Drop,
            Some("raise") => DefaultAction::Raise,
            Some(other) => return Err(format!("defaults.action: '{other}' is not one of drop, raise")),
        };
        let mut events = BTreeMap::new();
        for (name, raw_event) in raw.events {
            let at = |what: &str| format!("events[\"{name}\"].{what}");
            if let Some(t) = &raw_event.trigger {
                check_name(t).map_err(|e| format!("{}: {e}", at("trigger")))?;
            }
            let mut attributes = Vec::new();
            for (attribute, spec) in raw_event.attributes {
                check_name(&attribute).map_err(|e| format!("{}: {e}", at("attributes")))?;
                let paths: Vec<String> = match spec {
                    Value::String(p) => vec![p],
                    Value::Array(items) => items
                        .into_iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| format!("{}: a list of paths must hold strings only", at(&format!("attributes.{attribute}"))))?,
                    _ => return Err(format!("{}: must be a dotted path or a list of paths", at(&format!("attributes.{attribute}")))),
                };
                if paths.is_empty() || paths.iter().any(|p| p.is_empty() || p.split('.').any(str::is_empty)) {
                    return Err(format!("{}: paths must be non-empty dotted paths such as properties.order_id", at(&format!("attributes.{attribute}"))));
                }
                attributes.push((attribute, paths.iter().map(|p| p.split('.').map(str::to_string).collect()).collect()));
            }
            if attributes.len() > 30 {
                return Err(format!("{}: a trigger takes at most 30 attributes", at("attributes")));
            }
            for required in &raw_event.required {
                if !attributes.iter().any(|(a, _)| a == required) {
                    return Err(format!("{}: '{required}' is not one of the event's attributes", at("required")));
                }
            }
            events.insert(name, EventMapping { trigger: raw_event.trigger, attributes, required: raw_event.required });
        }
        Ok(Mapping { trigger: raw.trigger, events, default_action })
    }

    /// The trigger an event raises: the event's own, else the document's, else the secret's.
    pub fn trigger_for<'a>(&'a self, event: Option<&'a EventMapping>, secret_default: Option<&'a str>) -> Option<&'a str> {
        event
            .and_then(|e| e.trigger.as_deref())
            .or(self.trigger.as_deref())
            .or(secret_default)
    }

    /// Checks, once the secret is known, that every mapped event has a trigger.
    pub fn check_triggers(&self, secret_default: Option<&str>) -> Result<(), ConfigError> {
        for (name, event) in &self.events {
            if self.trigger_for(Some(event), secret_default).is_none() {
                return Err(ConfigError::new(
                    "secret.trigger_name",
                    format!("is missing, and the mapping names no trigger for event '{name}'"),
                ));
            }
        }
        Ok(())
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
        assert_eq!(s.webhook_auth, WebhookAuth::Hmac);
        assert_eq!(s.authority_host, "https://login.microsoftonline.com");
        assert_eq!(s.mapping, Mapping::default_preset());
        assert!(s.dataverse_base_url.is_none());
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
    fn loopback_http_is_accepted_for_the_sandbox() {
        let s = settings(&[
            ("D365_SECRET_ID", "x"),
            ("D365_AUTHORITY_HOST", "http://127.0.0.1:4566/"),
            ("D365_DATAVERSE_BASE_URL", "http://localhost:4566"),
        ])
        .unwrap();
        assert_eq!(s.authority_host, "http://127.0.0.1:4566");
        assert_eq!(s.dataverse_base_url.as_deref(), Some("http://localhost:4566"));
        assert!(check_base_url("http://[::1]:80").is_ok());
        assert!(check_base_url("http://127.0.0.1.evil.com").is_err());
    }

    const GOOD: &str = r#"{"tenant_id":"00000000-0000-0000-0000-000000000000","client_id":"c","client_secret":"s3cret","org_url_host":"contoso.api.crm.dynamics.com","trigger_name":"msdynmkt_OrderCompleted","webhook_secret":"w"}"#;

    #[test]
    fn secret_is_parsed_and_hidden_from_debug() {
        let c = Credentials::parse(GOOD, "v1").unwrap();
        assert_eq!(c.org_url_host, "contoso.api.crm.dynamics.com");
        assert_eq!(c.trigger_name.as_deref(), Some("msdynmkt_OrderCompleted"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn org_host_must_be_a_bare_dataverse_host() {
        for bad in [
            "https://contoso.crm.dynamics.com",
            "contoso.crm.dynamics.com/",
            "contoso.crm.dynamics.com:443",
            "contoso.crm.dynamics.com/api/data",
            "evil.example.com",
            "contoso.crm.dynamics.com.evil.net",
            "localhost",
        ] {
            let text = GOOD.replace("contoso.api.crm.dynamics.com", bad);
            let err = Credentials::parse(&text, "v1").unwrap_err();
            assert_eq!(err.setting, "secret.org_url_host", "{bad}");
        }
        for good in ["contoso.crm4.dynamics.com", "org.crm.microsoftdynamics.us", "org.crm.dynamics.cn", "CONTOSO.CRM.DYNAMICS.COM"] {
            let text = GOOD.replace("contoso.api.crm.dynamics.com", good);
            assert!(Credentials::parse(&text, "v1").is_ok(), "{good}");
        }
    }

    #[test]
    fn malformed_secret_names_the_field_not_the_value() {
        let err = Credentials::parse("not json s3cret", "v1").unwrap_err();
        assert_eq!(err.setting, "secret");
        assert!(!err.to_string().contains("s3cret"));
        let err = Credentials::parse(&GOOD.replace("\"client_secret\":\"s3cret\",", ""), "v1").unwrap_err();
        assert_eq!(err.setting, "secret.client_secret");
        let err = Credentials::parse(&GOOD.replace("msdynmkt_OrderCompleted", "bad name!"), "v1").unwrap_err();
        assert_eq!(err.setting, "secret.trigger_name");
    }

    #[test]
    fn mapping_document_is_validated() {
        let m = Mapping::parse(r#"{"trigger":"msdynmkt_A","events":{"Signed Up":{"trigger":"msdynmkt_SignedUp"}},"defaults":{"action":"raise"}}"#).unwrap();
        assert_eq!(m.default_action, DefaultAction::Raise);
        assert_eq!(m.trigger_for(m.events.get("Signed Up"), None), Some("msdynmkt_SignedUp"));
        assert!(Mapping::parse(r#"{"events":{"A":{"attributes":{"x":"p"},"required":["y"]}}}"#).unwrap_err().contains("required"));
        assert!(Mapping::parse(r#"{"events":{"A":{"attributes":{"bad-name":"p"}}}}"#).is_err());
        assert!(Mapping::parse(r#"{"events":{"A":{"attributes":{"x":"a..b"}}}}"#).is_err());
        assert!(Mapping::parse(r#"{"events":{"A":{"attributes":{"x":[1]}}}}"#).is_err());
        assert!(Mapping::parse(r#"{"defaults":{"action":"keep"}}"#).is_err());
        assert!(Mapping::parse(r#"{"evnts":{}}"#).is_err(), "unknown keys are typos, not ignored");
        let preset = Mapping::default_preset();
        assert!(preset.check_triggers(None).is_err());
        assert!(preset.check_triggers(Some("msdynmkt_OrderCompleted")).is_ok());
    }
}
