//! d365-trigger-relay: raises Dynamics 365 Customer Insights – Journeys custom
//! triggers (and writes Dataverse rows) from SQS batches, webhooks, SNS,
//! EventBridge and direct Lambda invocations.
//!
//! The house is layered; an import only ever points to a layer above it in
//! this list (`python3 ../shared/tools/module-cycles.py src` finds no circle):
//!
//! 1. **Model** — no `async`, no clients: [`config`] (settings, the mapping
//!    document, the secret), [`fields`] (the event's fields and ids),
//!    [`plan`] (a record's plan of actions: trigger call, profile update,
//!    rows), [`outcome`] (errors, outcomes, the tally), [`deadline`] (the
//!    invocation's deadline and [`deadline::Cutoffs`]), [`redact`] (masking).
//! 2. **Domain** — pure functions over the model: [`mapping`] (event →
//!    decision), [`schema`] (a trigger's definition, a body fitted to it),
//!    [`rows`] (rows planned and fitted to their tables), [`envelope`] (SNS,
//!    EventBridge, Dataverse envelopes), identity planning (`identity::plan`),
//!    [`auth`] (sender schemes), [`segment_api`].
//! 3. **Engine** — [`delivery`]: its files a chain, `retry_class` (the one
//!    classifier) ← `budget` ← `pacer` ← `port` ← `pool` ← `retry` ←
//!    `actions` ← `scheduler`. Its one face to the outside is its port,
//!    [`delivery::DynamicsPort`]; the stages enter it through
//!    [`delivery::call`], records through [`delivery::deliver`].
//! 4. **Adapters** — [`dynamics`] (Entra tokens, the Web API transport, the
//!    CI-J ceiling's table; it implements the port and never calls the
//!    engine), [`secrets`], [`idempotency`], [`enqueue`] and [`backlog`]
//!    (SQS), [`metrics`].
//! 5. **Stages** — [`stages`] (a destination; the trigger and entity
//!    definition catalogs over one generic cache; the rows' stage) and
//!    identity resolution (`identity`): the engine's only callers besides
//!    the scheduler.
//! 6. **Entry** — [`intake`] and [`webhook`] (payloads in, answers out),
//!    [`handler`] (an invocation), [`check`], [`cli`], [`send`], [`dlq`] (a
//!    DLQ summed up, listed, replayed by reason or exported),
//!    [`command_line`], [`lint`] (`check --mapping`: a document checked
//!    offline, every problem by its JSON pointer), and [`startup`], the composition root: the only
//!    place that builds pools, clients, caches and stores.

pub mod auth;
pub(crate) mod backlog;
pub(crate) mod check;
pub mod cli;
pub(crate) mod command_line;
pub mod config;
pub mod deadline;
pub mod delivery;
pub mod dlq;
pub mod dynamics;
pub mod enqueue;
pub(crate) mod envelope;
pub(crate) mod fields;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod handler;
pub mod idempotency;
pub(crate) mod identity;
pub mod intake;
pub mod lint;
pub mod mapping;
pub mod metrics;
pub mod outcome;
pub(crate) mod plan;
pub(crate) mod record_log;
pub(crate) mod redact;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod secrets;
pub(crate) mod segment_api;
pub mod send;
pub(crate) mod stages;
pub mod startup;
pub mod webhook;

pub use handler::Relay;

/// A std mutex whose poisoning is harmless: the state behind every one of the
/// relay's locks stays consistent (each update is a few assignments), so a
/// panic elsewhere must not fail every later invocation of the execution
/// environment. The one way the relay takes a std lock.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Time limits of every AWS call (Secrets Manager, DynamoDB, SQS): a peer that accepts
/// and never answers is given up well inside an invocation. The callers bound
/// each call by the invocation's deadline as well.
pub fn aws_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(1))
        .read_timeout(std::time::Duration::from_secs(2))
        .operation_attempt_timeout(std::time::Duration::from_secs(2))
        .operation_timeout(std::time::Duration::from_secs(5))
        .build()
}

/// One line for a failed AWS call: the service's error code and message once,
/// or what went wrong on the way (timeout, connection), without the SDK's
/// nested context or Debug output.
/// (`SdkError` and its metadata are the same types in every AWS SDK crate.)
pub fn aws_error<E, R>(error: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata,
{
    use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
    match error {
        SdkError::ServiceError(_) => {
            let code = error.code().unwrap_or("unknown error");
            match error.message() {
                Some(message) if !message.is_empty() => format!("{code}: {message}"),
                _ => code.to_string(),
            }
        }
        SdkError::TimeoutError(_) => "no answer in time".to_string(),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "no answer in time".to_string(),
        SdkError::DispatchFailure(failure) if failure.is_io() => "the connection failed".to_string(),
        SdkError::DispatchFailure(_) => "the request could not be sent".to_string(),
        SdkError::ResponseError(_) => "the answer could not be read".to_string(),
        SdkError::ConstructionFailure(_) => "the request could not be built".to_string(),
        _ => "the call failed".to_string(),
    }
}

/// Removes the `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_*` variables that are set
/// but empty — what SAM's local runtime passes for a declared, unset variable.
/// Empty means unset, as for the `D365_*` settings; the SDK would otherwise panic
/// ("URL was unset"). Call it first in `main`, before any other thread reads
/// the environment.
pub fn forget_empty_endpoint_overrides() {
    for (name, value) in std::env::vars_os() {
        let is_endpoint = name.to_str().is_some_and(|n| n == "AWS_ENDPOINT_URL" || n.starts_with("AWS_ENDPOINT_URL_"));
        if is_endpoint && value.to_str().is_some_and(|v| v.trim().is_empty()) {
            std::env::remove_var(&name);
        }
    }
}

/// The AWS configuration chain (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_*`),
/// with [`aws_timeouts`] and the one HTTPS client of every AWS client
/// ([`aws_http_client`], trusting [`Roots::system`]).
pub async fn aws_config_from_env() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(aws_timeouts()).http_client(aws_http_client(Roots::system())).load().await
}

/// The AWS configuration of an emulator on `endpoint` (the sandbox, moto):
/// static test credentials, `us-east-1`, [`aws_timeouts`] and the same HTTPS
/// client as [`aws_config_from_env`]. Every AWS client of the tests is made from it.
pub fn aws_config_for_endpoint(endpoint: &str) -> aws_config::SdkConfig {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("testing", "testing", None, None, "test")))
        .endpoint_url(endpoint)
        .timeout_config(aws_timeouts())
        .http_client(aws_http_client(Roots::system()))
        .build()
}

/// A DynamoDB client for an emulator on `endpoint` (moto): [`aws_config_for_endpoint`].
pub fn dynamodb_client_for_endpoint(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&aws_config_for_endpoint(endpoint))
}

/// A Secrets Manager client for an emulator on `endpoint` (the sandbox or
/// moto): [`aws_config_for_endpoint`].
pub fn secrets_client_for_endpoint(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&aws_config_for_endpoint(endpoint))
}

/// The trusted root certificates of every TLS client the relay builds.
///
/// Reading the system's store is most of a cold start (on Debian about 150
/// files under `/etc/ssl/certs`), and each TLS stack would read it for itself:
/// reqwest through `rustls-platform-verifier`, the AWS SDK through
/// `rustls-native-certs`. Here it is read once per process ([`Roots::system`])
/// and handed to both, which verify servers against it just as they would
/// against their own reading: WebPKI path building to the same anchors, with
/// hostname checks, and nothing trusted that the store does not hold.
#[derive(Clone)]
pub struct Roots(std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]>);

static SYSTEM_ROOTS: std::sync::OnceLock<Roots> = std::sync::OnceLock::new();

impl Roots {
    /// The system's store (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the
    /// platform's usual places), read on first use and kept for the process.
    pub fn system() -> &'static Roots {
        SYSTEM_ROOTS.get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(message = "A root certificate of the system could not be read.", error = %error);
            }
            let roots = Roots::from_der(loaded.certs);
            if roots.0.is_empty() {
                tracing::error!(message = "No root certificate found: every TLS connection will fail.");
            }
            roots
        })
    }

    /// Keeps the certificates rustls takes as trust anchors, as both stacks
    /// would (each skips the rest; handed one, reqwest and the SDK would fail).
    fn from_der(certs: Vec<rustls::pki_types::CertificateDer<'static>>) -> Roots {
        let mut check = rustls::RootCertStore::empty();
        let (anchors, skipped): (Vec<_>, Vec<_>) = certs.into_iter().partition(|cert| check.add(cert.clone()).is_ok());
        if !skipped.is_empty() {
            tracing::warn!(message = "Root certificates skipped: not usable as trust anchors.", count = skipped.len());
        }
        Roots(anchors.into())
    }

    /// The roots for reqwest's `tls_certs_only`.
    pub(crate) fn reqwest_certificates(&self) -> Vec<reqwest::Certificate> {
        self.0.iter().filter_map(|der| reqwest::Certificate::from_der(der).ok()).collect()
    }

    /// The roots as the AWS SDK takes them (PEM), the SDK's own reading of the store off.
    fn aws_tls_context(&self) -> aws_smithy_http_client::tls::TlsContext {
        use base64::Engine as _;
        let mut store = aws_smithy_http_client::tls::TrustStore::empty().with_native_roots(false);
        for der in self.0.iter() {
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in body.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
            store.add_pem_certificate(pem);
        }
        aws_smithy_http_client::tls::TlsContext::builder().with_trust_store(store).build().expect("a TLS context builds")
    }
}

/// The HTTPS client of the AWS SDK clients: the SDK's default (hyper with
/// rustls on aws-lc, proxies from the environment, a connection pool per
/// timeout setting) trusting `roots` instead of reading the store again. Give
/// one to an `SdkConfig` and every client made from it shares it.
pub(crate) fn aws_http_client(roots: &Roots) -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    let roots = roots.clone();
    // What `aws_smithy_runtime`'s default HTTPS client does, with a TLS
    // context: its public `build_https` would turn proxies off.
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector =
            aws_smithy_http_client::ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc)).tls_context(roots.aws_tls_context());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(aws_smithy_http_client::proxy::ProxyConfig::from_env()));
        connector.build()
    })
}

/// Settings for a relay running against a sandbox at `url`, with `overrides`
/// (name, value) on top; a value of "" removes the setting.
pub fn sandbox_settings(url: &str, overrides: &[(&str, &str)]) -> Result<config::Settings, config::ConfigError> {
    let mut env: std::collections::HashMap<String, String> =
        [("D365_SECRET_ID", "d365/relay-demo"), ("D365_AUTHORITY_HOST", url), ("D365_DATAVERSE_BASE_URL", url)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    config::Settings::from_lookup(|k| env.get(k).cloned())
}
