//! The Secrets Manager adapter (SPEC §2.2): the credentials secret, fetched with
//! the AWS SDK and cached for `D365_SECRET_TTL_SECONDS`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use tokio::sync::Mutex;

use crate::config::{ConfigError, Credentials};
use crate::outcome::DeliveryError;

/// Why the credentials cannot be had: a setting to fix, or a service that is
/// down or did not answer in time (SPEC §2.2, §6).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    /// A missing, forbidden or malformed secret.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Secrets Manager is down, throttling or stalled: the records fail and are retried.
    #[error("Secrets Manager is unavailable: {0}")]
    Unavailable(String),
}

impl From<SecretError> for DeliveryError {
    fn from(error: SecretError) -> DeliveryError {
        match error {
            SecretError::Config(error) => DeliveryError::Config(error),
            SecretError::Unavailable(detail) => DeliveryError::SecretsUnavailable { detail },
        }
    }
}

/// Error codes of `GetSecretValue` that a setting, a policy or the secret
/// itself must fix; every other failure means the service is unavailable.
const CONFIGURATION_CODES: &[&str] =
    &["ResourceNotFoundException", "AccessDeniedException", "DecryptionFailure", "InvalidRequestException", "InvalidParameterException"];

pub struct SecretStore {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    ttl: Duration,
    state: Mutex<State>,
    /// `D365_SECRET_FILE` (CLI commands only): the secret's JSON read from a file instead.
    file: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct State {
    current: Option<(Arc<Credentials>, Instant)>,
    /// A failed fetch is not repeated within the same invocation.
    failure: Option<(u64, SecretError)>,
}

impl SecretStore {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: String, ttl: Duration) -> Self {
        SecretStore { client, secret_id, ttl, state: Mutex::new(State::default()), file: None }
    }

    /// Reads the secret's JSON from `path` instead of Secrets Manager (SPEC §16).
    pub(crate) fn use_file(&mut self, path: impl Into<std::path::PathBuf>) {
        self.file = Some(path.into());
    }

    /// The cached credentials, fetched when missing or older than the TTL.
    /// Concurrent callers share one fetch. Answered by `deadline`: a Secrets
    /// Manager that does not answer in time counts as a failed fetch.
    pub async fn get(&self, invocation: u64, deadline: Instant) -> Result<Arc<Credentials>, SecretError> {
        let mut state = self.lock_until(deadline).await?;
        if let Some((creds, fetched)) = &state.current {
            if fetched.elapsed() < self.ttl {
                return Ok(creds.clone());
            }
        }
        let failed_already = matches!(&state.failure, Some((at, _)) if *at == invocation);
        let result = if failed_already {
            Err(state.failure.as_ref().map(|(_, e)| e.clone()).expect("checked"))
        } else {
            self.fetch_into(&mut state, invocation, deadline).await
        };
        match (result, &state.current) {
            // A Secrets Manager outage does not stop delivery: the expired copy is still used.
            (Err(error), Some((stale, _))) => {
                if !failed_already {
                    tracing::warn!(message = "Secret refresh failed; using the cached copy.", error = %error);
                }
                Ok(stale.clone())
            }
            (result, _) => result,
        }
    }

    /// Fetches the secret again unless someone already replaced `seen_version`
    /// (a rotated secret is picked up without a redeploy). Returns the credentials
    /// now current and whether they differ from `seen_version`.
    pub async fn refresh(&self, invocation: u64, seen_version: &str, deadline: Instant) -> Result<(Arc<Credentials>, bool), SecretError> {
        let mut state = self.lock_until(deadline).await?;
        if let Some((creds, _)) = &state.current {
            if creds.version != seen_version {
                return Ok((creds.clone(), true));
            }
        }
        let creds = self.fetch_into(&mut state, invocation, deadline).await?;
        let changed = creds.version != seen_version;
        Ok((creds, changed))
    }

    /// The state, unless another caller's fetch holds it past `deadline`.
    async fn lock_until(&self, deadline: Instant) -> Result<tokio::sync::MutexGuard<'_, State>, SecretError> {
        tokio::time::timeout_at(deadline.into(), self.state.lock()).await.map_err(|_| self.too_slow())
    }

    fn too_slow(&self) -> SecretError {
        SecretError::Unavailable(format!("secret '{}' not read: no answer before the invocation's cut-off", self.secret_id))
    }

    async fn fetch_into(&self, state: &mut State, invocation: u64, deadline: Instant) -> Result<Arc<Credentials>, SecretError> {
        let fetched = tokio::time::timeout_at(deadline.into(), self.fetch()).await.unwrap_or_else(|_| Err(self.too_slow()));
        match fetched {
            Ok(creds) => {
                let creds = Arc::new(creds);
                state.current = Some((creds.clone(), Instant::now()));
                state.failure = None;
                Ok(creds)
            }
            Err(error) => {
                state.failure = Some((invocation, error.clone()));
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<Credentials, SecretError> {
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new("D365_SECRET_FILE", format!("cannot read {}: {e}", path.display())))?;
            return Ok(Credentials::parse(&text, "file")?);
        }
        let output = self.client.get_secret_value().secret_id(&self.secret_id).send().await.map_err(|error| {
            let described = crate::aws_error(&error);
            match error.code() {
                Some(code) if CONFIGURATION_CODES.contains(&code) => {
                    SecretError::Config(ConfigError::new("D365_SECRET_ID", format!("cannot read secret '{}': {described}", self.secret_id)))
                }
                _ => SecretError::Unavailable(format!("secret '{}' not read: {described}", self.secret_id)),
            }
        })?;
        let text = output
            .secret_string()
            .ok_or_else(|| ConfigError::new("secret", format!("secret '{}' has no SecretString (binary secrets are not supported)", self.secret_id)))?;
        Ok(Credentials::parse(text, output.version_id().unwrap_or("unversioned"))?)
    }
}
