//! The integration tests, one binary (as zero-to-production's `tests/api/`):
//! the real handler over loopback HTTP against `d365-sandbox`, and against
//! moto for the AWS protocol. Log hygiene lives alone in `tests/log_hygiene.rs`
//! because it installs a process-wide subscriber.

mod helpers;
mod moto;

mod backlog;
mod budget;
mod ceiling;
mod check_mapping;
mod destinations;
mod dlq;
mod docs_mappings;
mod enqueue;
mod idempotency;
mod identity;
mod learned_cap;
mod mapping_schema;
mod pool;
mod record_log;
mod relay;
mod reliability;
mod root_store;
mod rows;
mod sam_local;
mod schema;
mod sdk;
mod sdk_python;
mod send;
mod sources;
mod sqs_poller;
mod template;
mod upstream;
mod webhooks;
