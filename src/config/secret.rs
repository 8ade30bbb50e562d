//! The Secrets Manager secret (SPEC §2.2): credentials and targets, with the
//! host checks that keep the token from reaching any other host.

use secrecy::SecretString;
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

#[derive(Deserialize)]
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
}

#[derive(Deserialize)]
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
        let need = |value: Option<String>, field: &str| {
            value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).ok_or_else(|| ConfigError::new(format!("{SETTING}.{field}"), "is missing or empty"))
        };
        let tenant_id = need(raw.tenant_id, "tenant_id")?;
        if !tenant_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(ConfigError::new("secret.tenant_id", "must be a tenant GUID or domain name (letters, digits, '-' and '.')"));
        }
        let principals = principals(raw.client_id, raw.client_secret, raw.principals.unwrap_or_default())?;
        let org_url_host = need(raw.org_url_host, "org_url_host")?.to_ascii_lowercase();
        check_org_host(&org_url_host).map_err(|e| ConfigError::new("secret.org_url_host", e))?;
        let trigger_name = raw.trigger_name.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        if let Some(name) = &trigger_name {
            check_name(name).map_err(|e| ConfigError::new("secret.trigger_name", e))?;
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
        })
    }
}

/// The pool of application users (SPEC §17.3): the top-level pair (a pool of
/// one), then each of `principals`. A half-given pair, an empty field or a
/// client id given twice names the field, never a value.
fn principals(client_id: Option<String>, client_secret: Option<String>, listed: Vec<RawPrincipal>) -> Result<Vec<PrincipalCredentials>, ConfigError> {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
    let mut pool = Vec::with_capacity(listed.len() + 1);
    let mut add = |id: Option<String>, secret: Option<String>, field: &str| -> Result<(), ConfigError> {
        let id = id.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let secret = secret.filter(|v| !v.trim().is_empty());
        match (id, secret) {
            (Some(client_id), Some(secret)) => {
                if pool.iter().any(|p: &PrincipalCredentials| p.client_id == client_id) {
                    return Err(ConfigError::new(format!("secret.{field}client_id"), "names an application user already in the pool"));
                }
                pool.push(PrincipalCredentials { client_id, client_secret: SecretString::from(secret) });
                Ok(())
            }
            (None, _) => Err(ConfigError::new(format!("secret.{field}client_id"), "is missing or empty")),
            (Some(_), None) => Err(ConfigError::new(format!("secret.{field}client_secret"), "is missing or empty")),
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
