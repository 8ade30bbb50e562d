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

/// Time limits of every AWS call (Secrets Manager, DynamoDB): a peer that accepts
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

/// The AWS configuration chain (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_*`), with [`aws_timeouts`].
pub async fn aws_config_from_env() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(aws_timeouts()).load().await
}

/// A DynamoDB client for an emulator on `endpoint` (moto), with static test credentials.
pub fn dynamodb_client_for_endpoint(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .timeout_config(aws_timeouts())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A Secrets Manager client for an emulator on `endpoint` (the sandbox or
/// moto), with static test credentials.
pub fn secrets_client_for_endpoint(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("sandbox", "sandbox", None, None, "sandbox"))
        .endpoint_url(endpoint)
        .timeout_config(aws_timeouts())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
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
