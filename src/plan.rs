//! A record's plan of actions (SPEC §4, §11, §14, §19): the trigger call, an
//! `identify` event's profile update and the rows, each one Web API request
//! with its own idempotency key. Model: what the domain plans and the engine
//! delivers; no I/O.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::config::rows::RowMode;
use crate::outcome::DeliveryError;

/// One Dataverse custom-trigger call.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerCall {
    pub trigger: String,
    pub body: Map<String, Value>,
}

/// What one record asks of Dynamics, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionPlan {
    /// An `identify` event's update of its profile row (SPEC §14), under `{event key}#identify`.
    pub update: Option<ProfileUpdate>,
    /// The entry's rows with the event's values (SPEC §19) …
    pub planned: Vec<PlannedRow>,
    /// … and their requests, each under its own key, filled by [`crate::rows::fit`].
    pub writes: Vec<RowWrite>,
    /// The trigger, under the event's key (SPEC §11: keys already stored still match).
    pub trigger: Option<TriggerCall>,
    /// The profile id a `"profile"` bind points at: the `userId`, or what identity resolved.
    pub profile: Option<String>,
    /// The entity set that resolved the profile, when identity knows it.
    pub profile_set: Option<String>,
}

impl ActionPlan {
    /// Raise one trigger.
    pub fn raise(call: TriggerCall) -> ActionPlan {
        ActionPlan { trigger: Some(call), ..ActionPlan::default() }
    }

    /// Update one profile row (an `identify` event).
    pub fn update(update: ProfileUpdate) -> ActionPlan {
        ActionPlan { update: Some(update), ..ActionPlan::default() }
    }
}

/// A row with the event's values, before the entity's definition is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRow {
    pub entity: String,
    pub mode: RowMode,
    /// Key column → the event's value (empty: a `POST`).
    pub key: Vec<(String, Value)>,
    /// Column → the event's value (mapped, non-null).
    pub attributes: Map<String, Value>,
    pub binds: Vec<(String, PlannedBind)>,
    /// An unkeyed row's place among its entity's unkeyed rows (1, 2, …): its idempotency key.
    pub unkeyed: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlannedBind {
    Profile { set: Option<String> },
    Row { entity: String, key: Vec<(String, Value)> },
}

/// The rows' part of a record's plan of actions (SPEC §19); the plan itself is
/// [`ActionPlan`], whose rows are planned here and fitted by [`fit`].
impl ActionPlan {
    /// An entry's rows, then its trigger (when it names one). The `profile` a
    /// `"profile"` bind points at is the `userId` until identity resolves one.
    pub fn new(planned: Vec<PlannedRow>, trigger: Option<TriggerCall>, profile: Option<String>) -> ActionPlan {
        ActionPlan { planned, trigger, profile, ..ActionPlan::default() }
    }

    /// Whether a row binds the profile (identity must resolve it).
    pub fn binds_profile(&self) -> bool {
        self.planned.iter().any(|r| r.binds.iter().any(|(_, b)| matches!(b, PlannedBind::Profile { .. })))
    }

    /// Every entity set whose definition the rows need: each row's and each bound row's.
    pub fn entities(&self) -> BTreeSet<String> {
        let mut sets = BTreeSet::new();
        for row in &self.planned {
            sets.insert(row.entity.clone());
            for (_, bind) in &row.binds {
                if let PlannedBind::Row { entity, .. } = bind {
                    sets.insert(entity.clone());
                }
            }
        }
        sets
    }

    /// What `send --dry-run` and `check --event` show: every request, in order.
    pub fn requests(&self) -> Vec<Value> {
        let mut requests: Vec<Value> = self
            .writes
            .iter()
            .map(|w| {
                let mut r = json!({"method": w.method.as_str(), "path": format!("/api/data/v9.2/{}", w.path), "body": w.body});
                if !w.headers.is_empty() {
                    r["headers"] = w.headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>().into();
                }
                r
            })
            .collect();
        if let Some(call) = &self.trigger {
            requests.push(json!({"method": "POST", "path": format!("/api/data/v9.2/{}", call.trigger), "body": call.body}));
        }
        requests
    }
}

/// An `identify` event's update of its profile row: an action of its own,
/// delivered in the record's turn (FIFO order, idempotency, the deadline).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileUpdate {
    /// The entity set (`contacts`, `leads`).
    pub entity: String,
    /// The row's id.
    pub id: String,
    /// The columns to write.
    pub body: Map<String, Value>,
}

/// One row an event writes (SPEC §19): an action of its own, with its own
/// idempotency key, delivered in order before the record's trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite {
    /// `PATCH` (by key) or `POST` (a create without a key).
    pub method: reqwest::Method,
    /// After `/api/data/v9.2/`: `accounts(accountnumber='A-1')`, `accounts({id})` or `accounts`.
    pub path: String,
    /// The mode's condition: `If-Match: *` (update), `If-None-Match: *` (create by key).
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Map<String, Value>,
    /// `{event key}#{path}`, or `{event key}#{entity}#{n}` for an unkeyed create.
    pub key: String,
    /// How reasons name the row: its path (entity and key).
    pub label: String,
    /// A create by key: 412 (the row exists) is a success.
    pub exists_is_success: bool,
}

/// What is known of a definition a plan is fitted to (a trigger's, an
/// entity's), read from Dataverse by the stages.
#[derive(Debug, Clone)]
pub enum Known<D> {
    Found(Arc<D>),
    /// Nothing has that name: a request to it would be answered 404.
    Missing,
    /// The definition could not be read (403, 5xx, no answer in time).
    Unreadable(DeliveryError),
}
