//! The composition root: one place builds the relay from its settings, its
//! clients and its options, for the Lambda function (`main`), `send`, `check`
//! and `schema`, the tests, the demo and the benches. Every part is given at
//! construction, so nothing can be added once the relay serves (no builder
//! that silently does nothing once its parts are shared).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backlog::Backlog;
use crate::config::secret::DEFAULT_DESTINATION;
use crate::config::{ConfigError, Settings, WebhookAuth, WebhookMode};
use crate::delivery::{PacerSettings, Pool};
use crate::dynamics::ceiling::Ceiling;
use crate::dynamics::Dynamics;
use crate::enqueue::Queue;
use crate::handler::{Lane, Relay, Wiring};
use crate::idempotency::Idempotency;
use crate::identity::Identities;
pub use crate::record_log::RecordLines;
use crate::stages::entities::Entities;
use crate::stages::triggers::Schemas;
use crate::stages::Destination;

/// The clients the relay talks through. Without an SQS client there is no
/// backoff by visibility, no DLQ with reasons (SPEC §18) and no enqueue mode
/// (SPEC §15); without a DynamoDB client no idempotency table and no shared
/// trigger ceiling (SPEC §11, §17.1).
pub struct Clients {
    pub secrets: aws_sdk_secretsmanager::Client,
    pub http: reqwest::Client,
    pub sqs: Option<aws_sdk_sqs::Client>,
    pub dynamodb: Option<aws_sdk_dynamodb::Client>,
}

impl Clients {
    /// Every client, from the AWS configuration chain (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL_*`).
    pub async fn from_env() -> Clients {
        let aws = crate::aws_config_from_env().await;
        Clients {
            secrets: aws_sdk_secretsmanager::Client::new(&aws),
            http: crate::dynamics::http_client(),
            sqs: Some(crate::enqueue::sqs_client(&aws)),
            dynamodb: Some(aws_sdk_dynamodb::Client::new(&aws)),
        }
    }

    /// Secrets Manager at `endpoint` (the sandbox, moto), with static test
    /// credentials; no SQS and no DynamoDB client until given.
    pub fn for_endpoint(endpoint: &str) -> Clients {
        Clients { secrets: crate::secrets_client_for_endpoint(endpoint), http: crate::dynamics::http_client(), sqs: None, dynamodb: None }
    }

    pub fn with_sqs(self, sqs: aws_sdk_sqs::Client) -> Clients {
        Clients { sqs: Some(sqs), ..self }
    }

    pub fn with_dynamodb(self, dynamodb: aws_sdk_dynamodb::Client) -> Clients {
        Clients { dynamodb: Some(dynamodb), ..self }
    }
}

/// How the relay runs beside its settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The secret's JSON read from this file instead of Secrets Manager (`D365_SECRET_FILE`, commands only).
    pub secret_file: Option<PathBuf>,
    /// `send --dry-run` (SPEC §16): records are mapped and coerced; nothing is sent or claimed.
    pub dry_run: bool,
    /// `send --rate`: trigger-call starts capped at this many a second.
    pub rate: Option<f64>,
    /// One CloudWatch EMF line per invocation on stdout (the Lambda function).
    pub metrics: bool,
    /// Where record lines (SPEC §22.1) go: standard output unless a test or the demo says otherwise.
    pub record_lines: RecordLines,
}

/// The Lambda function's relay: the settings from the environment, every client from the AWS chain, metrics on.
pub async fn lambda() -> Relay {
    relay(Settings::from_env(), Clients::from_env().await, Options { metrics: true, ..Options::default() })
}

/// Builds the relay. A bad setting does not stop the function: every
/// invocation then reports its records failed, with one clear log line.
pub fn relay(settings: Result<Settings, ConfigError>, clients: Clients, options: Options) -> Relay {
    match &settings {
        Ok(s) if s.webhook_auth.contains(&WebhookAuth::None) => {
            tracing::warn!(message = "D365_WEBHOOK_AUTH=none: webhook requests are not signature-checked; only safe behind an API Gateway authorizer.")
        }
        Ok(_) => {}
        Err(error) => tracing::error!(message = "Configuration error: every record will fail until it is fixed.", error = %error),
    }
    let Clients { secrets, http, sqs, dynamodb } = clients;
    let mut idempotency = Idempotency::in_memory();
    let mut queue = None;
    let wiring = settings.map(|settings| {
        // One ceiling per destination; with the table, shared through it by host (SPEC §17.1, §23.3).
        let ceiling = || match (&dynamodb, &settings.idempotency_table) {
            (Some(client), Some(table)) => Ceiling::for_settings(&settings).with_table(client.clone(), table.clone()),
            _ => Ceiling::for_settings(&settings),
        };
        if let (Some(client), Some(table)) = (&dynamodb, &settings.idempotency_table) {
            idempotency = Idempotency::in_memory().with_table(client.clone(), table.clone(), settings.idempotency_expires_after);
        }
        // Several Dynamics environments (SPEC §23): each its own adapter, pool,
        // ceiling, definition and identity caches.
        let lanes: Vec<Lane> = settings
            .mapping
            .destinations
            .iter()
            .map(|route| {
                let destination = destination_with(&settings, secrets.clone(), http.clone(), options.secret_file.clone(), ceiling(), &route.name);
                let entities = Arc::new(Entities::new(settings.schema_ttl));
                Lane {
                    route: route.clone(),
                    destination,
                    schemas: Arc::new(Schemas::new(settings.schema_ttl)),
                    identities: Arc::new(Identities::new(settings.identity_ttl).with_entities(entities.clone())),
                    entities,
                }
            })
            .collect();
        let destination = match lanes.first() {
            Some(lane) => lane.destination.clone(),
            None => destination_with(&settings, secrets, http, options.secret_file.clone(), ceiling(), DEFAULT_DESTINATION),
        };
        if let (Some(client), WebhookMode::Enqueue(target)) = (&sqs, &settings.webhook_mode) {
            tracing::info!(message = "Webhook events are queued, not delivered inline.", queue_url = %target.url, fifo = target.fifo);
            queue = Some(Queue::new(client.clone(), target.clone()));
        }
        let entities = lanes.first().map_or_else(|| Arc::new(Entities::new(settings.schema_ttl)), |l| l.entities.clone());
        Wiring {
            destination,
            schemas: lanes.first().map_or_else(|| Arc::new(Schemas::new(settings.schema_ttl)), |l| l.schemas.clone()),
            identities: lanes
                .first()
                .map_or_else(|| Arc::new(Identities::new(settings.identity_ttl).with_entities(entities.clone())), |l| l.identities.clone()),
            entities,
            lanes,
            settings,
        }
    });
    let pool = match &wiring {
        Ok(wiring) => wiring.destination.pool.clone(),
        // A pool of one that never sends: the records fail with the configuration error.
        Err(_) => {
            let settings = PacerSettings {
                max_in_flight: 1,
                learned_cap_period: crate::delivery::pacer::LEARNED_CAP_PERIOD,
                budget_window: crate::delivery::budget::BUDGET_WINDOW,
            };
            Arc::new(Pool::new(settings, Duration::ZERO))
        }
    };
    if let Some(rate) = options.rate {
        pool.set_rate(rate);
    }
    Relay {
        wiring,
        pool,
        idempotency: Arc::new(idempotency),
        emit_metrics: options.metrics,
        queue,
        backlog: sqs.map(Backlog::new),
        dry_run: options.dry_run,
        record_lines: options.record_lines,
    }
}

/// The destination (one Dynamics environment) as the relay builds it, for the
/// commands that read from it alone (`schema`, `check`): the ceiling in memory.
pub fn destination(settings: &Settings, secrets: aws_sdk_secretsmanager::Client, http: reqwest::Client, secret_file: Option<PathBuf>) -> Destination {
    destination_with(settings, secrets, http, secret_file, Ceiling::for_settings(settings), DEFAULT_DESTINATION)
}

/// The destination: the pool of its application users, and the Dynamics
/// adapter that tells the pool the secret's principals and takes trigger
/// permits from `ceiling`.
fn destination_with(
    settings: &Settings,
    secrets: aws_sdk_secretsmanager::Client,
    http: reqwest::Client,
    secret_file: Option<PathBuf>,
    ceiling: Ceiling,
    name: &str,
) -> Destination {
    let pacers =
        PacerSettings { max_in_flight: settings.max_in_flight.max(1), learned_cap_period: settings.learned_cap_period, budget_window: settings.budget_window };
    let pool = Arc::new(Pool::new(pacers, settings.secret_ttl));
    let mut dynamics = Dynamics::new(settings, secrets, http, ceiling, pool.clone()).for_destination(name);
    if let Some(path) = secret_file {
        dynamics.use_secret_file(path);
    }
    Destination::new(Arc::new(dynamics), pool)
}
