//! d365-trigger-relay: raises Dynamics 365 Customer Insights – Journeys custom
//! triggers from SQS batches, API Gateway / function URL webhooks and direct
//! Lambda invocations.
//!
//! - [`intake`]: Lambda payloads in, each source's answer out
//! - [`webhook`]: HTTP semantics and signatures
//! - [`mapping`]: event → trigger body (pure)
//! - [`delivery`]: concurrency, retries, FIFO order, deadline
//! - [`dynamics`]: Entra token cache and Dataverse client
//! - [`secrets`]: the Secrets Manager adapter
//! - [`idempotency`]: the same event is raised once
//! - [`relay`]: wires them per execution environment
//! - [`sandbox`]: loopback emulation of Secrets Manager, Entra and Dataverse

pub mod config;
pub mod delivery;
pub mod dynamics;
pub mod idempotency;
pub mod intake;
pub mod mapping;
pub mod outcome;
pub mod redact;
pub mod relay;
pub mod sandbox;
pub mod secrets;
pub mod webhook;

pub use relay::Relay;

/// The Secrets Manager client from the standard AWS configuration chain
/// (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_SECRETS_MANAGER`).
pub async fn secrets_client_from_env() -> aws_sdk_secretsmanager::Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_secretsmanager::Client::new(&config)
}
