//! The CI-J ceiling (SPEC §17.1): at most `D365_MAX_TRIGGERS_PER_MINUTE`
//! trigger calls started per UTC calendar minute by the whole deployment.
//! Customer Insights – Journeys processes about 2,500 trigger activations a
//! minute per CI-J environment and answers 204 above that too, so only the
//! sender can keep under it. It belongs to the destination: the
//! [`Dynamics`] adapter holds one, and delivery asks it for a permit before
//! each trigger call ([`DynamicsPort::permit`](crate::delivery::DynamicsPort::permit)).
//!
//! With the idempotency table (`D365_IDEMPOTENCY_TABLE`) the ceiling is shared
//! through it: one item per CI-J host and minute, from which each execution
//! environment takes a few permits at a time by a conditional `UpdateItem`
//! that never lets the minute's total pass the ceiling. Without a table each
//! environment keeps ceiling ÷ `D365_ENVIRONMENTS` a minute in memory.
//! Permits are good for their minute only; unused ones lapse with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::config::Settings;
use crate::outcome::DeliveryError;

/// Where the time comes from (UTC): the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A take from the table is a hundredth of the ceiling (at least one), or what
/// is left of the minute when that is less.
pub const TAKES_PER_MINUTE: u32 = 100;

/// A wake-up this long after the minute turns, so the clock has turned too.
const PAST_THE_MINUTE: Duration = Duration::from_millis(2);

/// The table item of a minute lives on this long after it, for DynamoDB's TTL to delete.
const ITEM_LIFETIME_AFTER_MINUTE: i64 = 3600;

/// The minute `now` is in: whole minutes since the Unix epoch (UTC).
pub fn minute_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(60)
}

/// How long until the minute after `now` begins.
pub fn until_next_minute(now: DateTime<Utc>) -> Duration {
    let next_ms = (minute_of(now) + 1) * 60_000;
    Duration::from_millis(next_ms.saturating_sub(now.timestamp_millis()).max(0) as u64)
}

/// The minute as the table's item names it: `YYYY-MM-DDThh:mm` (UTC).
pub fn minute_label(minute: i64) -> String {
    DateTime::from_timestamp(minute * 60, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M").to_string()
}

/// The table item of `minute` for the CI-J environment at `host`.
pub fn item_id(host: &str, minute: i64) -> String {
    format!("ceiling#{host}#{}", minute_label(minute))
}

/// One take from the table: ⌈ceiling ÷ 100⌉, or `left` when less.
pub fn take_size(ceiling: u32, left: u32) -> u32 {
    ceiling.div_ceil(TAKES_PER_MINUTE).max(1).min(left)
}

/// This execution environment's share without a table: ceiling ÷ environments,
/// at least one.
pub fn share_of(ceiling: u32, environments: u32) -> u32 {
    (ceiling / environments.max(1)).max(1)
}

/// How the ceiling is shared among execution environments.
enum Sharing {
    /// This environment's share, in memory.
    Memory { share: u32 },
    /// Through the DynamoDB table.
    Table(Table),
}

/// The permits this environment holds for one minute.
#[derive(Debug, Default)]
struct Hand {
    minute: i64,
    /// Taken and not yet used.
    permits: u32,
    /// Taken by this environment this minute.
    taken: u32,
    /// Nothing more to take this minute.
    spent: bool,
}

pub struct Ceiling {
    /// Trigger calls a minute for the whole deployment; 0: no ceiling.
    per_minute: u32,
    environments: u32,
    sharing: Sharing,
    clock: Clock,
    hand: tokio::sync::Mutex<Hand>,
}

impl Ceiling {
    /// `ceiling` a minute for the deployment, shared by `environments` in memory (SPEC §17.1).
    pub fn in_memory(ceiling: u32, environments: u32) -> Ceiling {
        Ceiling {
            per_minute: ceiling,
            environments: environments.max(1),
            sharing: Sharing::Memory { share: share_of(ceiling, environments) },
            clock: Arc::new(Utc::now),
            hand: tokio::sync::Mutex::new(Hand::default()),
        }
    }

    /// The ceiling of `D365_MAX_TRIGGERS_PER_MINUTE` and `D365_ENVIRONMENTS`, in memory.
    pub fn for_settings(settings: &Settings) -> Ceiling {
        Ceiling::in_memory(settings.max_triggers_per_minute, settings.environments)
    }

    /// Shares the ceiling through the DynamoDB table `name` (the idempotency table).
    pub fn with_table(mut self, client: aws_sdk_dynamodb::Client, name: String) -> Ceiling {
        self.sharing = Sharing::Table(Table { client, name });
        self
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Ceiling {
        self.clock = clock;
        self
    }

    /// Trigger calls a minute for the whole deployment (0: no ceiling).
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// A permit to start one trigger call now, for the CI-J environment at
    /// `host`. Waits for the next minute's permits while they come before
    /// `until`; else [`DeliveryError::Ceiling`] with the time until they come.
    pub async fn take(&self, host: &str, until: Instant) -> Result<(), DeliveryError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        loop {
            let now = (self.clock)();
            let minute = minute_of(now);
            {
                let mut hand = self.hand.lock().await;
                if hand.minute != minute {
                    *hand = Hand { minute, ..Hand::default() };
                }
                if hand.permits == 0 && !hand.spent {
                    let got = match &self.sharing {
                        Sharing::Memory { share } => {
                            hand.spent = true;
                            *share
                        }
                        Sharing::Table(table) => table.take(host, minute, self.per_minute, until).await?,
                    };
                    hand.spent |= got == 0;
                    hand.taken += got;
                    hand.permits += got;
                }
                // A permit is good in its own minute only (a take may end after the minute turned).
                if hand.permits > 0 && minute_of((self.clock)()) == minute {
                    hand.permits -= 1;
                    return Ok(());
                }
            }
            let now = (self.clock)();
            let wait = until_next_minute(now) + PAST_THE_MINUTE;
            if minute_of(now) == minute {
                if Instant::now() + wait >= until {
                    return Err(DeliveryError::Ceiling { retry_after: wait });
                }
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Why no trigger call can start before `until` (SPEC §18.2): this minute's
    /// permits are known to be gone and the next minute comes after `until`.
    /// `None` when a permit may still come (or the state is busy: the calls find out).
    pub fn spent_until(&self, until: Instant) -> Option<DeliveryError> {
        if self.per_minute == 0 {
            return None;
        }
        let hand = self.hand.try_lock().ok()?;
        let now = (self.clock)();
        let wait = until_next_minute(now) + PAST_THE_MINUTE;
        let spent = hand.minute == minute_of(now) && hand.permits == 0 && hand.spent;
        (spent && Instant::now() + wait >= until).then_some(DeliveryError::Ceiling { retry_after: wait })
    }

    /// What `check` reports (SPEC §17.4): the ceiling and how it is shared.
    pub fn describe(settings: &Settings, host: Option<&str>) -> Value {
        let ceiling = settings.max_triggers_per_minute;
        if ceiling == 0 {
            return json!({"per_minute": 0, "shared": "none", "detail": "no ceiling (D365_MAX_TRIGGERS_PER_MINUTE=0): nothing keeps trigger calls under CI-J's 2,500 a minute"});
        }
        match &settings.idempotency_table {
            Some(table) => {
                let item = format!("ceiling#{}#YYYY-MM-DDThh:mm", host.unwrap_or("{org_url_host}"));
                json!({
                    "per_minute": ceiling,
                    "shared": "table",
                    "table": table,
                    "item": item,
                    "take": take_size(ceiling, ceiling),
                    "detail": format!("{ceiling} trigger calls a minute for the whole deployment (SQS, webhooks, direct invocations, send), shared through the DynamoDB table {table}"),
                })
            }
            None => {
                let share = share_of(ceiling, settings.environments);
                json!({
                    "per_minute": ceiling,
                    "shared": "environments",
                    "environments": settings.environments,
                    "per_environment": share,
                    "detail": format!(
                        "{ceiling} trigger calls a minute ÷ D365_ENVIRONMENTS {} = {share} per execution environment, in memory: this bounds the SQS path only (webhooks, direct invocations and send each take {share} on top); set D365_IDEMPOTENCY_TABLE, or use enqueue mode, at volume",
                        settings.environments
                    ),
                })
            }
        }
    }

    /// How the ceiling is shared, for the log line at start.
    pub fn sharing(&self) -> String {
        match &self.sharing {
            _ if self.per_minute == 0 => "none".into(),
            Sharing::Memory { share } => format!("{share} a minute in this execution environment (÷ {} environments)", self.environments),
            Sharing::Table(table) => format!("through the DynamoDB table {}", table.name),
        }
    }
}

/// The DynamoDB adapter of the shared ceiling, on the idempotency table's
/// schema (partition key `id` of type string, TTL attribute `expires_at` in
/// epoch seconds; see [`crate::idempotency::DynamoTable`]): item
/// `ceiling#{org_url_host}#{YYYY-MM-DDThh:mm}` with the number `taken`.
struct Table {
    client: aws_sdk_dynamodb::Client,
    name: String,
}

impl Table {
    /// Takes up to [`take_size`] permits of `minute`: the number taken, 0 when
    /// the minute's are all gone. Each take adds to `taken` only if the sum
    /// stays within the ceiling; a failed condition is retried with what is left.
    async fn take(&self, host: &str, minute: i64, ceiling: u32, until: Instant) -> Result<u32, DeliveryError> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
        let id = item_id(host, minute);
        let expires_at = (minute + 1) * 60 + ITEM_LIFETIME_AFTER_MINUTE;
        let mut want = take_size(ceiling, ceiling);
        loop {
            let update = self
                .client
                .update_item()
                .table_name(&self.name)
                .key("id", AttributeValue::S(id.clone()))
                .update_expression("ADD taken :n SET expires_at = :expires_at")
                .condition_expression("attribute_not_exists(taken) OR taken <= :most")
                .expression_attribute_values(":n", AttributeValue::N(want.to_string()))
                .expression_attribute_values(":most", AttributeValue::N((ceiling - want).to_string()))
                .expression_attribute_values(":expires_at", AttributeValue::N(expires_at.to_string()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send();
            let error = match tokio::time::timeout_at(until.into(), update).await {
                Ok(Ok(_)) => return Ok(want),
                Ok(Err(error)) => error.into_service_error(),
                Err(_) => return Err(unavailable("did not answer in time".into())),
            };
            match error {
                UpdateItemError::ConditionalCheckFailedException(existing) => {
                    // Another environment took first: take what is left, if anything.
                    let taken = existing.item().and_then(|i| i.get("taken")).and_then(|n| n.as_n().ok()).and_then(|n| n.parse::<u32>().ok());
                    let left = ceiling.saturating_sub(taken.unwrap_or(ceiling));
                    if left == 0 {
                        return Ok(0);
                    }
                    want = want.min(left);
                }
                other => {
                    tracing::warn!(message = "The trigger ceiling's table is unavailable; the call waits.", error = %aws_sdk_dynamodb::error::DisplayErrorContext(&other));
                    return Err(unavailable(other.to_string()));
                }
            }
        }
    }
}

fn unavailable(detail: String) -> DeliveryError {
    DeliveryError::Transient { status: None, code: None, detail: format!("the trigger ceiling's table is unavailable: {detail}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    /// A clock the test sets.
    fn set_clock(start: &str) -> (Clock, Arc<Mutex<DateTime<Utc>>>) {
        let now = Arc::new(Mutex::new(at(start)));
        let read = now.clone();
        (Arc::new(move || *read.lock().unwrap()), now)
    }

    #[test]
    fn the_item_names_the_host_and_the_utc_minute() {
        let minute = minute_of(at("2026-06-06T14:30:59.999Z"));
        assert_eq!(item_id("contoso.crm.dynamics.com", minute), "ceiling#contoso.crm.dynamics.com#2026-06-06T14:30");
        assert_eq!(minute_label(minute + 1), "2026-06-06T14:31");
        assert_eq!(minute_of(at("2026-06-06T14:31:00Z")), minute + 1);
        assert_eq!(minute_label(minute_of(at("2026-06-06T23:59:30+00:00")) + 1), "2026-06-07T00:00");
        assert_eq!(until_next_minute(at("2026-06-06T14:30:45.250Z")), Duration::from_millis(14_750));
        assert_eq!(until_next_minute(at("2026-06-06T14:30:00Z")), Duration::from_secs(60));
    }

    #[test]
    fn a_take_is_a_hundredth_of_the_ceiling_or_what_is_left() {
        assert_eq!(take_size(2500, 2500), 25);
        assert_eq!(take_size(240, 240), 3);
        assert_eq!(take_size(240, 2), 2);
        assert_eq!(take_size(50, 50), 1);
        assert_eq!(take_size(240, 0), 0);
        assert_eq!(share_of(2500, 1), 2500);
        assert_eq!(share_of(240, 3), 80);
        assert_eq!(share_of(2500, 3), 833, "rounded down: the shares never add up past the ceiling");
        assert_eq!(share_of(2, 3), 1);
    }

    #[tokio::test]
    async fn an_environment_takes_its_share_a_minute_and_no_more() {
        let (clock, now) = set_clock("2026-06-06T14:30:30Z");
        let ceiling = Ceiling::in_memory(240, 3).with_clock(clock);
        let soon = Instant::now() + Duration::from_secs(5);
        for _ in 0..80 {
            ceiling.take("h", soon).await.unwrap();
        }
        // The next permits come in 30 s, past `soon`: no wait, the time until them.
        let started = Instant::now();
        match ceiling.take("h", soon).await {
            Err(DeliveryError::Ceiling { retry_after }) => assert!(retry_after >= Duration::from_secs(30) && retry_after < Duration::from_millis(30_100)),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(100), "did not wait for permits that cannot come in time");
        // The next minute brings the share again, and only the share.
        *now.lock().unwrap() = at("2026-06-06T14:31:00.001Z");
        for _ in 0..80 {
            ceiling.take("h", soon).await.unwrap();
        }
        assert!(matches!(ceiling.take("h", soon).await, Err(DeliveryError::Ceiling { .. })));
    }

    #[tokio::test]
    async fn a_call_waits_for_the_next_minute_when_it_comes_in_time() {
        // A clock 200 ms before a minute turns, running at the real pace.
        let base = at("2026-06-06T14:30:59.800Z");
        let started = Instant::now();
        let clock: Clock = Arc::new(move || base + chrono::Duration::from_std(started.elapsed()).unwrap());
        let ceiling = Ceiling::in_memory(2, 1).with_clock(clock.clone());
        let until = Instant::now() + Duration::from_secs(5);
        ceiling.take("h", until).await.unwrap();
        ceiling.take("h", until).await.unwrap();
        ceiling.take("h", until).await.unwrap();
        assert_eq!(minute_label(minute_of(clock())), "2026-06-06T14:31", "the third permit is the next minute's");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test]
    async fn no_ceiling_takes_nothing() {
        let (clock, _) = set_clock("2026-06-06T14:30:30Z");
        let ceiling = Ceiling::in_memory(0, 1).with_clock(clock);
        for _ in 0..10_000 {
            ceiling.take("h", Instant::now()).await.unwrap();
        }
    }
}
