//! Idempotency (SPEC §11): the same event never raises its trigger twice.
//! The key is claimed before the Dataverse call, marked done after a 2xx and
//! released after a failure, so a retry can proceed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::outcome::DeliveryError;

/// How long a delivered key is remembered in memory.
pub const MEMORY_TTL: Duration = Duration::from_secs(24 * 3600);
/// At most this many keys are kept in memory per execution environment.
pub const MEMORY_CAPACITY: usize = 100_000;
/// The longest a table write may take when no cut-off is given.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

use crate::lock;

#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Not seen: go ahead.
    Claimed,
    /// Already raised.
    Done,
    /// Another delivery of the same event is under way.
    InProgress,
    /// The store could not be asked; the record is not sent.
    Unavailable(DeliveryError),
}

/// The event's `messageId`, else a stable hash of its canonical JSON
/// (serde_json orders object keys, so equal events serialise equally).
pub fn key_for(event: &Value) -> String {
    match crate::fields::message_id(event) {
        Some(id) => format!("msg:{id}"),
        None => {
            let canonical = serde_json::to_vec(event).expect("a JSON value serialises");
            format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
        }
    }
}

pub struct Idempotency {
    memory: Mutex<Memory>,
    table: Option<DynamoTable>,
}

/// The DynamoDB adapter: partition key `id` (S), TTL attribute `expires_at`
/// (epoch seconds), `status` = `in_progress` | `done`.
pub struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
    expires_after: Duration,
}

/// Each key is stored once and shared by the map and the eviction order.
struct Memory {
    entries: HashMap<Arc<str>, (State, Instant)>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    InProgress,
    Done,
}

impl Idempotency {
    pub fn in_memory() -> Idempotency {
        Idempotency::with_limits(MEMORY_CAPACITY, MEMORY_TTL)
    }

    pub fn with_limits(capacity: usize, ttl: Duration) -> Idempotency {
        Idempotency { memory: Mutex::new(Memory { entries: HashMap::new(), order: VecDeque::new(), capacity, ttl }), table: None }
    }

    /// Adds the DynamoDB table, extending the guarantee across execution environments.
    pub fn with_table(mut self, client: aws_sdk_dynamodb::Client, name: String, expires_after: Duration) -> Idempotency {
        self.table = Some(DynamoTable { client, name, expires_after });
        self
    }

    /// Claims `key` until `until` (the invocation's cut-off), after which a stale claim lapses.
    pub async fn claim(&self, key: &str, until: Instant) -> Claim {
        self.claim_within(key, until, until.max(Instant::now() + WRITE_TIMEOUT)).await
    }

    /// As [`Idempotency::claim`], the table given up at `answer_by` (the key is then `Unavailable`).
    pub async fn claim_within(&self, key: &str, until: Instant, answer_by: Instant) -> Claim {
        {
            let mut memory = lock(&self.memory);
            let now = Instant::now();
            match memory.entries.get(key) {
                Some((State::Done, expires)) if *expires > now => return Claim::Done,
                Some((State::InProgress, expires)) if *expires > now => return Claim::InProgress,
                _ => {}
            }
            memory.insert(key, State::InProgress, until.max(now) + Duration::from_secs(1));
        }
        let Some(table) = &self.table else { return Claim::Claimed };
        let claim = match tokio::time::timeout_at(answer_by.into(), table.claim(key, until)).await {
            Ok(claim) => claim,
            Err(_) => {
                tracing::warn!(message = "Idempotency table did not answer in time; the record is not sent.");
                Claim::Unavailable(DeliveryError::Transient { status: None, code: None, detail: "the idempotency table did not answer in time".into() })
            }
        };
        match &claim {
            Claim::Claimed => {}
            Claim::Done => self.complete_in_memory(key),
            Claim::InProgress | Claim::Unavailable(_) => {
                lock(&self.memory).entries.remove(key);
            }
        }
        claim
    }

    pub async fn complete(&self, key: &str) {
        self.complete_until(key, Instant::now() + WRITE_TIMEOUT).await;
    }

    pub async fn release(&self, key: &str) {
        self.release_until(key, Instant::now() + WRITE_TIMEOUT).await;
    }

    /// Marks `key` done; the table write is given up at `until` (the claim then lapses at its expiry).
    pub async fn complete_until(&self, key: &str, until: Instant) {
        self.complete_in_memory(key);
        if let Some(table) = &self.table {
            if tokio::time::timeout_at(until.into(), table.complete(key)).await.is_err() {
                tracing::warn!(message = "Could not mark an idempotency key done in time; the claim lapses at its expiry.");
            }
        }
    }

    /// Releases `key` after a failed call; the table write is given up at `until`.
    pub async fn release_until(&self, key: &str, until: Instant) {
        lock(&self.memory).entries.remove(key);
        if let Some(table) = &self.table {
            if tokio::time::timeout_at(until.into(), table.release(key)).await.is_err() {
                tracing::warn!(message = "Could not release an idempotency key in time; it lapses at its expiry.");
            }
        }
    }

    fn complete_in_memory(&self, key: &str) {
        let mut memory = lock(&self.memory);
        let ttl = memory.ttl;
        memory.insert(key, State::Done, Instant::now() + ttl);
    }
}

fn epoch_seconds(after: Duration) -> i64 {
    (chrono::Utc::now() + chrono::Duration::from_std(after).unwrap_or_default()).timestamp()
}

impl DynamoTable {
    /// A conditional write: succeeds if the key is new, or its item has expired
    /// (DynamoDB's TTL deletes lazily, so expiry is checked here too).
    async fn claim(&self, key: &str, until: Instant) -> Claim {
        use aws_sdk_dynamodb::operation::put_item::PutItemError;
        use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
        let claim_for = until.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .item("id", AttributeValue::S(key.to_string()))
            .item("status", AttributeValue::S("in_progress".into()))
            .item("expires_at", AttributeValue::N(epoch_seconds(claim_for).to_string()))
            .condition_expression("attribute_not_exists(id) OR expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(epoch_seconds(Duration::ZERO).to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Claim::Claimed,
            Err(error) => match error.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(existing)) => {
                    let status = existing.item().and_then(|i| i.get("status")).and_then(|s| s.as_s().ok()).map(String::as_str);
                    if status == Some("done") {
                        Claim::Done
                    } else {
                        Claim::InProgress
                    }
                }
                _ => {
                    let error = crate::aws_error(&error);
                    tracing::warn!(message = "Idempotency table unavailable; the record is not sent.", table = %self.name, error = %error);
                    Claim::Unavailable(DeliveryError::Transient { status: None, code: None, detail: format!("the idempotency table is unavailable: {error}") })
                }
            },
        }
    }

    async fn complete(&self, key: &str) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .item("id", AttributeValue::S(key.to_string()))
            .item("status", AttributeValue::S("done".into()))
            .item("expires_at", AttributeValue::N(epoch_seconds(self.expires_after).to_string()))
            .send()
            .await;
        if let Err(error) = result {
            // The claim lapses at its expiry; a redelivery after that could raise the event again.
            tracing::warn!(message = "Could not mark an idempotency key done.", table = %self.name, error = %crate::aws_error(&error));
        }
    }

    async fn release(&self, key: &str) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let result = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key("id", AttributeValue::S(key.to_string()))
            .condition_expression("#s = :in_progress")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":in_progress", AttributeValue::S("in_progress".into()))
            .send()
            .await;
        if let Err(error) = result {
            if !error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) {
                tracing::warn!(message = "Could not release an idempotency key; it lapses at its expiry.", table = %self.name, error = %crate::aws_error(&error));
            }
        }
    }
}

impl Memory {
    fn insert(&mut self, key: &str, state: State, expires: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            *entry = (state, expires);
        } else {
            let key: Arc<str> = Arc::from(key);
            self.entries.insert(key.clone(), (state, expires));
            self.order.push_back(key);
        }
        // Oldest first out; keys already released are skipped.
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        if self.order.len() > self.capacity * 2 {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_is_the_message_id_else_a_stable_hash() {
        assert_eq!(key_for(&json!({"messageId": "m-1", "x": 1})), "msg:m-1");
        assert_eq!(key_for(&json!({"message_id": "m-1"})), "msg:m-1");
        let a = key_for(&json!({"event": "E", "userId": "u", "properties": {"a": 1, "b": 2}}));
        let b = key_for(&json!({"properties": {"b": 2, "a": 1}, "userId": "u", "event": "E"}));
        assert_eq!(a, b, "key order does not matter");
        assert_ne!(a, key_for(&json!({"event": "E", "userId": "v"})));
    }

    #[tokio::test]
    async fn claim_complete_release_and_expiry() {
        let store = Idempotency::with_limits(10, Duration::from_millis(50));
        let until = Instant::now() + Duration::from_secs(5);
        assert_eq!(store.claim("a", until).await, Claim::Claimed);
        assert_eq!(store.claim("a", until).await, Claim::InProgress);
        store.release("a").await;
        assert_eq!(store.claim("a", until).await, Claim::Claimed);
        store.complete("a").await;
        assert_eq!(store.claim("a", until).await, Claim::Done);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.claim("a", until).await, Claim::Claimed, "a done key expires");
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let store = Idempotency::with_limits(3, Duration::from_secs(60));
        for k in ["a", "b", "c", "d"] {
            store.claim(k, Instant::now()).await;
            store.complete(k).await;
        }
        assert_eq!(store.claim("a", Instant::now()).await, Claim::Claimed, "the oldest key was evicted");
        assert_eq!(store.claim("d", Instant::now()).await, Claim::Done);
    }
}
