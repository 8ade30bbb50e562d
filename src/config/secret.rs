//! The Secrets Manager secret (SPEC §2.2): credentials and targets, with the
//! host checks that keep the token from reaching any other host.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{check_name, ConfigError};

/// DNS suffixes of Dataverse environments (public, US Government, China, DoD).
/// A token is only ever requested for, and sent to, a host under one of these.
pub const DATAVERSE_SUFFIXES: &[&str] = &[".dynamics.com", ".microsoftdynamics.us", ".dynamics.cn", ".appsplatform.us"];

/// Credentials and targets from the Secrets Manager secret (SPEC §2.2).
#[derive(Clone)]
pub struct Credentials {
    pub tenant_id: String,
    /// The application users (SPEC §17.3): the top-level `client_id` /
    /// `client_secret` first, then `principals`; never empty, no client id twice.
    pub principals: Vec<PrincipalCredentials>,
    pub org_url_host: String,
    pub trigger_name: Option<String>,
    /// What senders prove themselves with: the relay's side, apart from the destination's credentials.
    pub senders: SenderSecrets,
    /// Secrets Manager's VersionId, to tell a rotated secret from the one in use.
    pub version: String,
    /// `destinations` (SPEC §23.1): each further Dynamics environment's
    /// credentials, or the error confined to its block.
    pub destinations: std::collections::BTreeMap<String, Result<std::sync::Arc<Credentials>, ConfigError>>,
    /// `max_triggers_per_minute`: this destination's CI-J ceiling, over `D365_MAX_TRIGGERS_PER_MINUTE`.
    pub max_triggers_per_minute: Option<u32>,
}

/// The secrets webhook senders are checked against (SPEC §12, §20); they never
/// reach Dynamics, and the destination's credentials never reach a sender check.
#[derive(Clone, Default)]
pub struct SenderSecrets {
    /// The signing secret of the `hmac`, `standard` and `segment` schemes.
    pub webhook_secret: Option<SecretString>,
    /// The shared key of the `key` sender scheme (SPEC §12).
    pub webhook_key: Option<SecretString>,
    /// The write key of the `writekey` sender scheme (SPEC §20): what analytics SDKs send.
    pub write_key: Option<SecretString>,
}

/// One application user's client credentials (SPEC §17.3).
#[derive(Clone)]
pub struct PrincipalCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl Credentials {
    /// The credentials of the application user `client_id`, if the secret still holds it.
    pub fn principal(&self, client_id: &str) -> Option<&PrincipalCredentials> {
        self.principals.iter().find(|p| p.client_id == client_id)
    }

    /// The client ids of the pool, in the secret's order.
    pub fn client_ids(&self) -> impl Iterator<Item = &str> {
        self.principals.iter().map(|p| p.client_id.as_str())
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tenant_id", &self.tenant_id)
            .field("client_ids", &self.client_ids().collect::<Vec<_>>())
            .field("org_url_host", &self.org_url_host)
            .field("trigger_name", &self.trigger_name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize, Clone)]
struct RawCredentials {
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    org_url_host: Option<String>,
    trigger_name: Option<String>,
    webhook_secret: Option<String>,
    webhook_key: Option<String>,
    write_key: Option<String>,
    principals: Option<Vec<RawPrincipal>>,
    max_triggers_per_minute: Option<u32>,
    destinations: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// The name of the top-level destination (SPEC §23.1).
pub const DEFAULT_DESTINATION: &str = "default";

/// A destination's name: `^[a-z0-9][a-z0-9_-]{0,31}$`.
pub fn check_destination_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 32
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("'{name}' is not a destination name (lower-case letters, digits, '_' and '-', at most 32, starting with a letter or digit)"))
    }
}

#[derive(Deserialize, Clone)]
struct RawPrincipal {
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl Credentials {
    /// Parses and validates the secret's JSON. Errors name the field, never its value.
    pub fn parse(secret_string: &str, version: &str) -> Result<Credentials, ConfigError> {
        const SETTING: &str = "secret";
        let raw: RawCredentials = serde_json::from_str(secret_string).map_err(|_| {
            ConfigError::new(SETTING, "the SecretString is not a JSON object with string fields tenant_id, client_id, client_secret, org_url_host")
        })?;
        let destinations = raw.destinations.clone().unwrap_or_default();
        let mut credentials = Credentials::block(raw, SETTING, version)?;
        let top_trigger = credentials.trigger_name.clone();
        let senders = credentials.senders.clone();
        for (name, block) in destinations {
            let at = format!("{SETTING}.destinations.{name}");
            let parsed = check_destination_name(&name)
                .map_err(|e| ConfigError::new(at.clone(), e))
                .and_then(|()| {
                    if name == DEFAULT_DESTINATION {
                        return Err(ConfigError::new(at.clone(), "'default' is the top-level block's name; give this destination another"));
                    }
                    let raw: RawCredentials = serde_json::from_value(block)
                        .map_err(|_| ConfigError::new(at.clone(), "is not an object with string fields tenant_id, client_id, client_secret, org_url_host"))?;
                    if raw.webhook_secret.is_some() || raw.webhook_key.is_some() || raw.write_key.is_some() || raw.destinations.is_some() {
                        return Err(ConfigError::new(at.clone(), "sender secrets and destinations belong at the top level of the secret"));
                    }
                    // The trigger chain ends at the destination's trigger_name, else the top level's (SPEC §23.2).
                    // Sender secrets belong to the senders: every destination checks them as the top level has them.
                    let senders = senders.clone();
                    Credentials::block(raw, &at, version).map(|c| Credentials { trigger_name: c.trigger_name.or_else(|| top_trigger.clone()), senders, ..c })
                })
                .map(std::sync::Arc::new);
            credentials.destinations.insert(name, parsed);
        }
        Ok(credentials)
    }

    /// One destination's block: the top level (`at` = `secret`) or `secret.destinations.NAME`.
    fn block(raw: RawCredentials, at: &str, version: &str) -> Result<Credentials, ConfigError> {
        let need = |value: Option<String>, field: &str| {
            value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).ok_or_else(|| ConfigError::new(format!("{at}.{field}"), "is missing or empty"))
        };
        let tenant_id = need(raw.tenant_id, "tenant_id")?;
        if !tenant_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(ConfigError::new(format!("{at}.tenant_id"), "must be a tenant GUID or domain name (letters, digits, '-' and '.')"));
        }
        let principals = principals(raw.client_id, raw.client_secret, raw.principals.unwrap_or_default(), at)?;
        let org_url_host = need(raw.org_url_host, "org_url_host")?.to_ascii_lowercase();
        check_org_host(&org_url_host).map_err(|e| ConfigError::new(format!("{at}.org_url_host"), e))?;
        let trigger_name = raw.trigger_name.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        if let Some(name) = &trigger_name {
            check_name(name).map_err(|e| ConfigError::new(format!("{at}.trigger_name"), e))?;
        }
        Ok(Credentials {
            tenant_id,
            principals,
            org_url_host,
            trigger_name,
            senders: SenderSecrets {
                webhook_secret: raw.webhook_secret.filter(|s| !s.is_empty()).map(SecretString::from),
                webhook_key: raw.webhook_key.filter(|s| !s.is_empty()).map(SecretString::from),
                write_key: raw.write_key.filter(|s| !s.is_empty()).map(SecretString::from),
            },
            version: version.to_string(),
            destinations: Default::default(),
            max_triggers_per_minute: raw.max_triggers_per_minute,
        })
    }

    /// The credentials of destination `name` (SPEC §23.1): the top level for
    /// `default`, else its block — or why it cannot be used.
    pub fn destination(self: &std::sync::Arc<Self>, name: &str) -> Result<std::sync::Arc<Credentials>, ConfigError> {
        if name == DEFAULT_DESTINATION {
            return Ok(self.clone());
        }
        match self.destinations.get(name) {
            Some(Ok(credentials)) => Ok(credentials.clone()),
            Some(Err(error)) => Err(error.clone()),
            None => Err(ConfigError::new(
                format!("secret.destinations.{name}"),
                "is not in the secret: add the destination's block, or remove it from the mapping's destinations",
            )),
        }
    }

    /// Every destination the secret defines: `default`, then each block's name.
    pub fn destination_names(&self) -> Vec<String> {
        std::iter::once(DEFAULT_DESTINATION.to_string()).chain(self.destinations.keys().cloned()).collect()
    }
}

/// The pool of application users (SPEC §17.3): the top-level pair (a pool of
/// one), then each of `principals`. A half-given pair, an empty field or a
/// client id given twice names the field, never a value.
fn principals(client_id: Option<String>, client_secret: Option<String>, listed: Vec<RawPrincipal>, at: &str) -> Result<Vec<PrincipalCredentials>, ConfigError> {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
    let mut pool = Vec::with_capacity(listed.len() + 1);
    let mut add = |id: Option<String>, secret: Option<String>, field: &str| -> Result<(), ConfigError> {
        let id = id.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let secret = secret.filter(|v| !v.trim().is_empty());
        match (id, secret) {
            (Some(client_id), Some(secret)) => {
                // The same pair at the top level and in the list is one principal (a second
                // application user is added by listing both); one id with two secrets is a mistake.
                if let Some(known) = pool.iter().find(|p: &&PrincipalCredentials| p.client_id == client_id) {
                    if known.client_secret.expose_secret() == secret.as_str() {
                        return Ok(());
                    }
                    return Err(ConfigError::new(format!("{at}.{field}client_id"), "names an application user already in the pool with another client_secret"));
                }
                pool.push(PrincipalCredentials { client_id, client_secret: SecretString::from(secret) });
                Ok(())
            }
            (None, _) => Err(ConfigError::new(format!("{at}.{field}client_id"), "is missing or empty")),
            (Some(_), None) => Err(ConfigError::new(format!("{at}.{field}client_secret"), "is missing or empty")),
        }
    };
    if given(&client_id) || given(&client_secret) || listed.is_empty() {
        add(client_id, client_secret, "")?;
    }
    for (i, p) in listed.into_iter().enumerate() {
        add(p.client_id, p.client_secret, &format!("principals[{i}]."))?;
    }
    Ok(pool)
}

/// `org_url_host` is a bare DNS name of a Dataverse environment: no scheme, path or port.
pub fn check_org_host(host: &str) -> Result<(), String> {
    if host.contains("://") || host.contains(['/', ':', '?', '#', '@', ' ']) {
        return Err(format!("'{host}' must be a bare host name such as contoso.api.crm.dynamics.com (no scheme, slash, path or port)"));
    }
    let labels_ok = host.len() <= 253
        && host.split('.').count() >= 3
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !labels_ok {
        return Err(format!("'{host}' is not a valid DNS host name"));
    }
    if !DATAVERSE_SUFFIXES.iter().any(|s| host.ends_with(s)) {
        return Err(format!(
            "'{host}' is not a Dataverse host (expected a name ending in {}); the token is never sent elsewhere",
            DATAVERSE_SUFFIXES.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn principals_join_the_top_level_pair_in_order() {
        let c = Credentials::parse(
            &GOOD.replace(
                "\"webhook_secret\"",
                r#""principals":[{"client_id":"d","client_secret":"t0p"},{"client_id":" e ","client_secret":"x"}],"webhook_secret""#,
            ),
            "v1",
        )
        .unwrap();
        assert_eq!(c.client_ids().collect::<Vec<_>>(), ["c", "d", "e"]);
        assert!(!format!("{c:?}").contains("t0p"));
        // A list alone is a pool; the top-level pair is then optional.
        let only = GOOD.replace("\"client_id\":\"c\",\"client_secret\":\"s3cret\",", r#""principals":[{"client_id":"d","client_secret":"t"}],"#);
        assert_eq!(Credentials::parse(&only, "v1").unwrap().client_ids().collect::<Vec<_>>(), ["d"]);
        for (principals, field) in [
            (r#"[{"client_id":"d"}]"#, "secret.principals[0].client_secret"),
            (r#"[{"client_id":"d","client_secret":"t"},{"client_secret":"t"}]"#, "secret.principals[1].client_id"),
            (r#"[{"client_id":"c","client_secret":"t"}]"#, "secret.principals[0].client_id"),
        ] {
            let text = GOOD.replace("\"webhook_secret\"", &format!(r#""principals":{principals},"webhook_secret""#));
            let err = Credentials::parse(&text, "v1").unwrap_err();
            assert_eq!(err.setting, field, "{principals}");
            assert!(!err.to_string().contains("s3cret"));
        }
        // The top-level pair listed again is the same principal, not a second one (SPEC §17.3).
        let again = GOOD.replace(
            "\"webhook_secret\"",
            r#""principals":[{"client_id":"c","client_secret":"s3cret"},{"client_id":"d","client_secret":"t"}],"webhook_secret""#,
        );
        assert_eq!(Credentials::parse(&again, "v1").unwrap().client_ids().collect::<Vec<_>>(), ["c", "d"]);
        let half = GOOD.replace("\"client_secret\":\"s3cret\",", r#""principals":[{"client_id":"d","client_secret":"t"}],"#);
        assert_eq!(Credentials::parse(&half, "v1").unwrap_err().setting, "secret.client_secret");
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
}
