//! The handler: one entry point for SQS, SNS, EventBridge, webhook (API Gateway,
//! function URL, ALB) and direct invocations, wired once per execution environment.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use crate::auth::{self, SenderProof};
use crate::backlog::Backlog;
use crate::config::{ConfigError, Credentials, RecordLog, Settings, WebhookAuth, WebhookMode};
use crate::deadline::Cutoffs;
use crate::delivery::{self, Job, Order, Pool, Work};
use crate::dynamics::Dynamics;
use crate::enqueue::Queue;
use crate::idempotency::{self, Idempotency};
use crate::identity::{Identities, Prep};
use crate::intake::{self, HttpRequest, Incoming, IntakeError, Pending, Source};
use crate::mapping::{self, Decision, MapContext};
use crate::metrics::InvocationMetrics;
use crate::outcome::{self, ActionTrace, DeliveryError, Outcome, RecordResult, RecordTrace, Tally};
use crate::plan::ActionPlan;
use crate::secrets::SecretError;
use crate::segment_api;
use crate::stages::entities::Entities;
use crate::stages::triggers::Schemas;
use crate::stages::Destination;
use crate::webhook::{self, ErrorCode, HttpAnswer};

/// API Gateway gives up after 29 s; webhook work is budgeted inside that.
pub const WEBHOOK_BUDGET: Duration = Duration::from_secs(25);

/// Built by [`crate::startup::relay`], the one place that wires it.
pub struct Relay {
    /// The settings and the Dynamics adapter, or why the function is misconfigured.
    pub(crate) wiring: Result<Wiring, ConfigError>,
    /// The application users and their pacers (SPEC §17.3): the destination's
    /// pool, or a pool of one that never sends when the settings are bad.
    pub(crate) pool: Arc<Pool>,
    pub(crate) idempotency: Arc<Idempotency>,
    /// EMF lines on stdout (on in Lambda; off in tests and the demo).
    pub(crate) emit_metrics: bool,
    /// The queue of `D365_WEBHOOK_MODE=enqueue` (SPEC §15).
    pub(crate) queue: Option<Queue>,
    /// Backoff by visibility and the DLQ with reasons (SPEC §18), given an SQS client.
    pub(crate) backlog: Option<Backlog>,
    /// `send --dry-run` (SPEC §16): records are mapped and coerced, nothing is sent or claimed.
    pub(crate) dry_run: bool,
    /// Where record lines go (SPEC §22.1): standard output, or a buffer (tests).
    pub(crate) record_lines: crate::record_log::RecordLines,
}

/// What a well-configured execution environment holds.
pub(crate) struct Wiring {
    pub(crate) settings: Settings,
    /// The Dynamics environment: its adapter and the pool of its application users.
    pub(crate) destination: Destination,
    /// Trigger definitions read from Dataverse (SPEC §13).
    pub(crate) schemas: Arc<Schemas>,
    /// Resolved profile ids (SPEC §14).
    pub(crate) identities: Arc<Identities>,
    /// Entity definitions read from Dataverse (SPEC §19).
    pub(crate) entities: Arc<Entities>,
    /// The mapping's destinations (SPEC §23), each with its own adapter, pool
    /// and caches; empty without a `destinations` section (the fields above
    /// are then the one destination; with lanes, the first lane's).
    pub(crate) lanes: Vec<Lane>,
}

/// One Dynamics environment of the mapping's `destinations` (SPEC §23).
pub(crate) struct Lane {
    pub(crate) route: crate::config::routes::Route,
    pub(crate) destination: Destination,
    pub(crate) schemas: Arc<Schemas>,
    pub(crate) identities: Arc<Identities>,
    pub(crate) entities: Arc<Entities>,
}

/// What one invocation works with, read once by [`Relay::prepare`].
struct Prepared<'a> {
    settings: &'a Settings,
    destination: &'a Destination,
    schemas: &'a Schemas,
    identities: &'a Identities,
    entities: &'a Entities,
    credentials: Arc<Credentials>,
    default_trigger: Option<String>,
    /// The ending of its actions' keys: `@NAME` in a destination other than `default` (SPEC §23.2).
    key_suffix: Arc<str>,
}

impl Relay {
    pub fn dynamics(&self) -> Option<&Arc<Dynamics>> {
        self.wiring.as_ref().ok().map(|w| &w.destination.dynamics)
    }

    /// Settings, credentials and the default trigger for one invocation, or
    /// the configuration error every record of it fails with (SPEC §2.1).
    /// The secret is read within the invocation's budget: a stalled Secrets
    /// Manager fails the records in time rather than outliving the invocation.
    async fn prepare(&self, budget: &Cutoffs) -> Result<Prepared<'_>, SecretError> {
        let Wiring { settings, destination, schemas, identities, entities, .. } = self.wiring.as_ref().map_err(|e| SecretError::Config(e.clone()))?;
        let credentials = destination.credentials_until(budget.hard_cutoff).await?;
        let default_trigger = settings.default_trigger(&credentials);
        settings.mapping.check_triggers(default_trigger.as_deref())?;
        Ok(Prepared { settings, destination, schemas, identities, entities, credentials, default_trigger, key_suffix: Arc::from("") })
    }

    /// The profile ids this execution environment has resolved (SPEC §14).
    pub fn identities(&self) -> Option<&Arc<Identities>> {
        self.wiring.as_ref().ok().map(|w| &w.identities)
    }

    /// Whether the relay can work (settings, secret, default trigger), as an
    /// invocation would find out (`send` checks it before the first record).
    pub async fn ready(&self, budget: &Cutoffs) -> Result<(), SecretError> {
        self.prepare(budget).await.map(|_| ())
    }

    /// Maps and delivers records as one invocation would (`send`, SPEC §16):
    /// one result per record, in order.
    pub async fn process_events(&self, records: Vec<Incoming>, budget: Cutoffs) -> Vec<RecordResult> {
        self.prepare_and_process(records, Order::Any, budget, false).await
    }

    /// The trigger definitions this execution environment has read (SPEC §13).
    pub fn schemas(&self) -> Option<&Arc<Schemas>> {
        self.wiring.as_ref().ok().map(|w| &w.schemas)
    }

    /// The entity definitions this execution environment has read (SPEC §19).
    pub fn entities(&self) -> Option<&Arc<Entities>> {
        self.wiring.as_ref().ok().map(|w| &w.entities)
    }

    /// The deployment check (SPEC §13) as a direct invocation answers it.
    pub async fn check(&self, event: Option<Value>, deadline: Instant) -> Value {
        let wiring = self.wiring.as_ref().map(|w| (&w.settings, &w.destination, &*w.schemas));
        crate::check::run(wiring, event.as_ref(), deadline).await.to_json()
    }

    /// The first application user's pacer (a pool of one: its limit, learned caps, pace).
    pub fn pacer(&self) -> Arc<delivery::Pacer> {
        self.pool.first()
    }

    /// The application users' pool: its pacers, pauses and who is in it.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Handles one invocation. An `Err` makes Lambda retry the whole payload:
    /// it is only returned for a batch that cannot be answered safely, and for
    /// an asynchronous invocation (SNS, EventBridge) with records not done.
    pub async fn handle(&self, payload: Value, deadline: Instant) -> Result<Value, IntakeError> {
        let started = Instant::now();
        let tokens_before = self.token_requests();
        // Failures remembered for the previous invocation (secret, token) are retried now.
        if let Some(dynamics) = self.dynamics() {
            dynamics.begin_invocation();
        }
        if let Some(event) = crate::check::direct_request(&payload) {
            return Ok(self.check(event, deadline).await);
        }
        match intake::source_of(payload) {
            Err(error) => {
                tracing::error!(message = "Invocation rejected.", error = %error);
                Err(error)
            }
            Ok(Source::Sqs { records, fifo, mut batch }) => {
                let backlog = match (&self.backlog, &self.wiring) {
                    (Some(backlog), Ok(wiring)) => Some((backlog, &wiring.settings.backlog)),
                    _ => None,
                };
                let parks = backlog.is_some_and(|(_, settings)| settings.dead_letter_queue.is_some());
                if parks {
                    batch.keep_bodies(&records);
                }
                let order = if fifo { Order::Fifo { parks } } else { Order::Any };
                let reserve = backlog.map_or(Duration::ZERO, |_| crate::backlog::reserve(deadline));
                let results = self.prepare_and_process(records, order, Cutoffs::until(deadline - reserve), true).await;
                let parked = match backlog {
                    Some((backlog, settings)) => backlog.settle(settings, &batch, &results, deadline).await,
                    None => HashSet::new(),
                };
                self.log_summary(if fifo { "sqs-fifo" } else { "sqs" }, &results, started, tokens_before);
                Ok(intake::sqs_response(&results, &parked))
            }
            Ok(Source::Async { source, records }) => {
                let results = self.prepare_and_process(records, Order::Any, Cutoffs::until(deadline), true).await;
                let tally = self.log_summary(source.name(), &results, started, tokens_before);
                if tally.not_done() > 0 {
                    let error = intake::not_delivered(source, &results, &tally);
                    tracing::error!(message = "Invocation failed: Lambda retries it.", error = %error);
                    return Err(error);
                }
                Ok(outcome::summary(&results, &tally))
            }
            Ok(Source::Direct(payload)) => {
                let results = self.prepare_and_process(intake::direct_payload_records(payload), Order::Any, Cutoffs::until(deadline), true).await;
                let tally = self.log_summary("direct", &results, started, tokens_before);
                Ok(outcome::summary(&results, &tally))
            }
            Ok(Source::Http(request)) => {
                let flavour = request.flavour;
                let deadline = deadline.min(started + WEBHOOK_BUDGET);
                let answer = self.handle_http(request, deadline, started, tokens_before).await;
                Ok(answer.into_response(flavour))
            }
        }
    }

    async fn handle_http(&self, request: HttpRequest, deadline: Instant, started: Instant, tokens_before: u64) -> HttpAnswer {
        let api = segment_api::api_path(&request.path);
        let reject = |answer: HttpAnswer| {
            tracing::warn!(message = "Webhook request refused.", status = answer.status, code = answer.body["code"].as_str().unwrap_or(""), error = %answer.body["error"].as_str().unwrap_or(""));
            answer
        };
        // Method and size as sent (405, 413).
        let sent = match webhook::raw_body(&request) {
            Ok(body) => body,
            Err(answer) => return reject(answer),
        };
        let budget = Cutoffs::until(deadline);
        let prepared = match self.prepare(&budget).await {
            Ok(prepared) => prepared,
            Err(SecretError::Config(error)) => {
                tracing::error!(message = "Configuration error.", error = %error);
                return HttpAnswer::unavailable(format!("the relay is misconfigured ({}): the operator must fix it; retry later", error.setting), 60);
            }
            Err(error @ SecretError::Unavailable(_)) => {
                tracing::warn!(message = "Secrets Manager unavailable: the request is refused for a retry.", error = %error);
                return HttpAnswer::unavailable("Secrets Manager is unavailable; retry later", 5);
            }
        };
        // The signature is over the body as sent (401); decoding comes after it,
        // except that a `writeKey` in the body is read from the decoded body.
        let schemes = &prepared.settings.webhook_auth;
        let reads_body = schemes.contains(&WebhookAuth::WriteKey) && !request.headers.contains_key(aws_lambda_events::http::header::AUTHORIZATION);
        let mut decoded = reads_body.then(|| webhook::decode(&sent, &request.headers));
        let proof =
            SenderProof { headers: &request.headers, code: request.code.as_deref(), body: &sent, decoded: decoded.as_ref().and_then(|d| d.as_deref().ok()) };
        let accepted = match auth::authenticate(schemes, &prepared.credentials.senders, &proof, Utc::now().timestamp_millis()) {
            Ok(accepted) => accepted,
            Err(problem) => return reject(HttpAnswer::error(ErrorCode::Unauthorized, problem)),
        };
        // Decoding (415, 400 for a corrupt stream, 413 past the limit), then the body (400, 413).
        let body = match decoded.take().unwrap_or_else(|| webhook::decode(&sent, &request.headers)) {
            Ok(body) => body,
            Err(answer) => return reject(answer),
        };
        let events = match webhook::parse_events(&body, api) {
            Ok(events) => events,
            Err(answer) => return reject(answer),
        };
        drop(body);
        drop(sent);
        // Enqueue mode queues the unwrapped events; an item that is no event is
        // queued as received, so the queue path reports it invalid (and the DLQ keeps it).
        let originals = matches!(prepared.settings.webhook_mode, WebhookMode::Enqueue(_)).then(|| events.clone());
        let mut records = intake::direct_records(events);
        if let ([Incoming { event: Pending::Ready(Ok(event)), .. }], Some(id)) = (records.as_mut_slice(), accepted.webhook_id.as_deref()) {
            crate::envelope::fill_message_id(event, Some(id));
        }
        if let Some(originals) = originals {
            let events: Vec<serde_json::Value> = records.into_iter().zip(originals).map(|(r, original)| r.event.resolve().unwrap_or(original)).collect();
            let answer = match &self.queue {
                Some(queue) => queue.accept(&events, &[], deadline).await,
                None => HttpAnswer::unavailable("the relay is misconfigured (D365_WEBHOOK_MODE=enqueue without an SQS client)", 60),
            };
            return answer.for_api(api);
        }
        let results = match self.wiring.as_ref().ok().filter(|w| !w.lanes.is_empty()) {
            Some(wiring) => self.process_routed(wiring, records, Order::Any, budget, true).await,
            None => self.process(&prepared, records, Order::Any, budget, true).await,
        };
        let tally = self.log_summary("webhook", &results, started, tokens_before);
        webhook::answer(&results, &tally).for_api(api)
    }

    /// Prepares the invocation, then maps and delivers its records; with a
    /// configuration error every record fails (never silently dropped).
    /// `lines`: each record's line is written (SPEC §22.1; not for `send`, whose report is its own).
    async fn prepare_and_process(&self, records: Vec<Incoming>, order: Order, budget: Cutoffs, lines: bool) -> Vec<RecordResult> {
        if let Some(wiring) = self.wiring.as_ref().ok().filter(|w| !w.lanes.is_empty()) {
            return self.process_routed(wiring, records, order, budget, lines).await;
        }
        match self.prepare(&budget).await {
            Ok(prepared) => self.process(&prepared, records, order, budget, lines).await,
            Err(error) => {
                match &error {
                    SecretError::Config(_) => tracing::error!(message = "Configuration error: records failed.", error = %error, records = records.len()),
                    SecretError::Unavailable(_) => {
                        tracing::warn!(message = "Secrets Manager unavailable: records failed, to be retried.", error = %error, records = records.len())
                    }
                }
                let outcome = Outcome::Failed(error.into());
                let mode = self.record_mode(lines);
                records
                    .into_iter()
                    .map(|r| {
                        let mut result = result_of(Seen::of(r, mode != RecordLog::None).0, None, outcome.clone(), 0);
                        crate::record_log::write(mode, &mut result, &self.record_lines);
                        result
                    })
                    .collect()
            }
        }
    }

    /// Maps and delivers records; one result per record, in order. Each record
    /// is one [`Record`] through the stages: parse → unwrap → map → consent →
    /// identity → schema → rows → deliver → answer.
    async fn process(&self, prepared: &Prepared<'_>, incoming: Vec<Incoming>, order: Order, budget: Cutoffs, lines: bool) -> Vec<RecordResult> {
        let settings = prepared.settings;
        let ctx = MapContext {
            mapping: &settings.mapping,
            default_trigger: prepared.default_trigger.as_deref(),
            default_phone_region: settings.default_phone_region,
            now: Utc::now(),
        };
        // One record at a time: its body is parsed, mapped and dropped before the
        // next is read; what its result needs is kept apart (SPEC §9).
        let traced = settings.record_log != RecordLog::None;
        let records: Vec<Record> = incoming.into_iter().map(|incoming| Record::mapped(incoming, &ctx, traced)).collect();
        let mode = self.record_mode(lines);
        let mut results = self.run_lane(prepared, records, order, budget).await;
        for result in &mut results {
            crate::record_log::write(mode, result, &self.record_lines);
        }
        results
    }

    /// Which record lines an invocation writes: none for `send`, else `D365_RECORD_LOG`'s.
    fn record_mode(&self, lines: bool) -> RecordLog {
        match &self.wiring {
            Ok(wiring) if lines => wiring.settings.record_log,
            Err(_) if lines => RecordLog::All,
            _ => RecordLog::None,
        }
    }

    /// Several Dynamics environments (SPEC §23.2): each record is mapped once to
    /// know whether it is dropped or invalid, routed to the destinations that
    /// match it, mapped again for each (its trigger chain and renames, its
    /// rows and identify flags, its keys), and the destinations run side by
    /// side, each through its own stages; a record's outcome is then read over
    /// its destinations, a `best_effort` one never deciding it.
    async fn process_routed(&self, wiring: &Wiring, incoming: Vec<Incoming>, order: Order, budget: Cutoffs, lines: bool) -> Vec<RecordResult> {
        let settings = &wiring.settings;
        let lanes = &wiring.lanes;
        let prepared: Vec<Result<Prepared<'_>, SecretError>> = futures_util::future::join_all(lanes.iter().map(|lane| async move {
            let credentials = lane.destination.credentials_until(budget.hard_cutoff).await?;
            let default_trigger = settings.trigger_name.clone().or_else(|| credentials.trigger_name.clone());
            Ok(Prepared {
                settings,
                destination: &lane.destination,
                schemas: &lane.schemas,
                identities: &lane.identities,
                entities: &lane.entities,
                credentials,
                default_trigger,
                key_suffix: Arc::from(if lanes.len() > 1 && lane.route.name != crate::config::secret::DEFAULT_DESTINATION {
                    format!("@{}", lane.route.name)
                } else {
                    String::new()
                }),
            })
        }))
        .await;
        for (lane, prepared) in lanes.iter().zip(&prepared) {
            if let Err(error) = prepared {
                tracing::error!(message = "Destination unusable: its actions fail; the others go on.", destination = %lane.route.name, error = %error);
            }
        }
        let now = Utc::now();
        let traced = settings.record_log != RecordLog::None;
        let mut per_lane: Vec<Vec<Record>> = lanes.iter().map(|_| Vec::new()).collect();
        // Per record: its result when no destination runs it, else the lanes it went to.
        let mut decided: Vec<Option<RecordResult>> = Vec::with_capacity(incoming.len());
        let mut failed_lane: Vec<Vec<(usize, RecordResult)>> = Vec::new();
        let mut positions = std::collections::HashMap::new();
        for incoming in incoming {
            let (seen, group, event) = Seen::of(incoming, traced);
            positions.insert(seen.index, decided.len());
            // Whether the mapping drops it or finds it invalid does not depend on the
            // destination: a stand-in trigger answers for the trigger chain here.
            let top =
                MapContext { mapping: &settings.mapping, default_trigger: Some("routing_probe"), default_phone_region: settings.default_phone_region, now };
            let probe = Record::of_event(seen.clone(), group.clone(), &event, &top, traced);
            let routes = match (&probe.job.work, &event) {
                (Work::Done(Outcome::Dropped { .. } | Outcome::Invalid { .. }), _) | (_, Err(_)) => Vec::new(),
                (_, Ok(event)) => crate::config::routes::route(&settings.mapping.destinations, event, seen.event_name.as_deref()),
            };
            if routes.is_empty() {
                let outcome = match probe.job.work {
                    Work::Done(outcome @ (Outcome::Dropped { .. } | Outcome::Invalid { .. })) => outcome,
                    _ => Outcome::Dropped { reason: "no destination of the mapping takes it".into() },
                };
                decided.push(Some(result_of(probe.seen, probe.trigger, outcome, 0)));
                failed_lane.push(Vec::new());
                continue;
            }
            decided.push(None);
            let mut failures = Vec::new();
            for route in routes {
                let at = lanes.iter().position(|l| l.route.name == route.name).expect("a lane per route");
                match &prepared[at] {
                    Err(error) => {
                        let error: DeliveryError = error.clone().into();
                        let mut result = result_of(seen.clone(), probe.trigger.clone(), Outcome::Failed(error.clone()), 0);
                        result.trace_mut().actions.push(ActionTrace {
                            destination: String::new(),
                            kind: "trigger",
                            target: probe.trigger.clone().unwrap_or_default(),
                            status: error.status(),
                            code: error.code().map(str::to_string),
                            attempts: 0,
                            ms: 0,
                            outcome: "failed",
                        });
                        failures.push((at, result));
                    }
                    Ok(p) => {
                        let ctx = MapContext {
                            mapping: &settings.mapping,
                            default_trigger: p.default_trigger.as_deref(),
                            default_phone_region: settings.default_phone_region,
                            now,
                        };
                        let mut record = Record::of_event(seen.clone(), group.clone(), &event, &ctx, traced);
                        record.route(route);
                        per_lane[at].push(record);
                    }
                }
            }
            failed_lane.push(failures);
        }
        let ran = futures_util::future::join_all(per_lane.into_iter().zip(&prepared).enumerate().map(|(at, (records, prepared))| async move {
            match prepared {
                Ok(prepared) if !records.is_empty() => (at, self.run_lane(prepared, records, order, budget).await),
                _ => (at, Vec::new()),
            }
        }))
        .await;
        let mut by_record: Vec<Vec<(usize, RecordResult)>> = failed_lane;
        for (at, results) in ran {
            for result in results {
                by_record[positions[&result.index]].push((at, result));
            }
        }
        let mode = self.record_mode(lines);
        decided
            .into_iter()
            .zip(by_record)
            .map(|(decided, lanes_of)| {
                let mut result = decided.unwrap_or_else(|| merged(lanes, lanes_of));
                crate::record_log::write(mode, &mut result, &self.record_lines);
                result
            })
            .collect()
    }

    /// One destination's stages for its records: pauses and the ceiling, identity,
    /// the trigger's definition, rows, delivery; one result per record, in order.
    async fn run_lane(&self, prepared: &Prepared<'_>, mut records: Vec<Record>, order: Order, budget: Cutoffs) -> Vec<RecordResult> {
        let settings = prepared.settings;

        // A paused application user does not spin (SPEC §18.2): when no call can
        // start before the cut-off, nothing is looked up, read or sent, and every
        // record waits out the pause (in the queue, for SQS).
        if let Some(held_back) = prepared.destination.pool.held_back(budget.start_cutoff).filter(|_| !self.dry_run) {
            for record in &mut records {
                if record.resolves() || matches!(record.job.work, Work::Actions(_)) {
                    record.fail(held_back.clone());
                }
            }
        }
        // Nor does a spent trigger ceiling (SPEC §17.1, §18.2): trigger calls wait
        // for the next minute in the queue, and their lookups are not made.
        if let Some(spent) = prepared.destination.ceiling().spent_until(budget.start_cutoff).filter(|_| !self.dry_run) {
            for record in &mut records {
                if trigger_call(&record.job.work).is_some() {
                    record.fail(spent.clone());
                }
            }
        }

        // ── Identity and consent (SPEC §14) ── the profile id of each call that needs one
        // (lookups, create) fills both profile fields; identify events update the profile.
        let resolver = crate::identity::Resolver {
            identities: prepared.identities,
            destination: prepared.destination,
            mapping: &settings.mapping,
            budget,
            dry_run: self.dry_run,
        };
        resolver.stage(records.iter_mut().map(|r| (std::mem::replace(&mut r.prep, Prep::None), &mut r.job)).collect()).await;

        // Each trigger's definition, once per invocation: omit, coerce, check (SPEC §13).
        let wanted = records.iter().filter_map(|r| trigger_call(&r.job.work).map(|call| call.trigger.clone())).collect();
        let definitions = prepared.schemas.lookup_all(prepared.destination, wanted, budget.start_cutoff).await;
        for record in &mut records {
            if let Some(call) = trigger_call_mut(&mut record.job.work) {
                if let Err(outcome) = prepared.schemas.apply(definitions.get(&call.trigger), call) {
                    record.job.work = Work::Done(outcome);
                }
            }
        }
        // Each row's entity definition, once per TTL: the exact requests (SPEC §19).
        crate::stages::rows::stage(prepared.entities, prepared.destination, records.iter_mut().map(|r| &mut r.job).collect(), budget.start_cutoff).await;

        let (jobs, answers): (Vec<Job>, Vec<(Seen, Option<String>)>) = records.into_iter().map(|r| (r.job, (r.seen, r.trigger))).unzip();
        let tagging = delivery::Tagging { traced: settings.record_log != RecordLog::None, key_suffix: prepared.key_suffix.clone() };
        let reports = if self.dry_run {
            jobs.into_iter().map(dry_run_report).collect()
        } else {
            delivery::deliver(prepared.destination.dynamics.clone(), prepared.destination.pool.clone(), self.idempotency.clone(), jobs, order, budget, tagging)
                .await
        };
        answers
            .into_iter()
            .zip(reports)
            .map(|((seen, trigger), report)| {
                if let (Outcome::Rejected(error), Some(trigger)) = (&report.outcome, &trigger) {
                    prepared.schemas.note_rejection(trigger, error);
                }
                let mut result = result_of(seen, trigger, report.outcome, report.attempts);
                if !report.actions.is_empty() {
                    result.trace_mut().actions = report.actions.into_vec();
                }
                // Decided before delivery (a trigger that does not exist, a value its
                // definition refuses, a held-back call): the trigger not sent is its action.
                let no_action = result.trace.as_ref().is_none_or(|t| t.actions.is_empty());
                let outcome_name = result.outcome.name();
                if let (true, Some(trigger), Some(error)) = (no_action, result.trigger.clone(), result.outcome.error().cloned()) {
                    result.trace_mut().actions.push(ActionTrace {
                        destination: String::new(),
                        kind: "trigger",
                        target: trigger.clone(),
                        status: error.status(),
                        code: error.code().map(str::to_string),
                        attempts: 0,
                        ms: 0,
                        outcome: outcome_name,
                    });
                }
                result.throttled = report.throttled;
                result.latency = report.latency;
                log_record(&result);
                result
            })
            .collect()
    }

    fn token_requests(&self) -> u64 {
        self.dynamics().map_or(0, |d| d.counters.token_requests.load(Ordering::Relaxed))
    }

    /// The summary log line and the invocation's EMF metrics (SPEC §9), from one tally.
    fn log_summary(&self, source: &'static str, results: &[RecordResult], started: Instant, tokens_before: u64) -> Tally {
        let metrics = InvocationMetrics {
            source,
            tally: Tally::of(results),
            token_refreshes: self.token_requests().saturating_sub(tokens_before),
            omitted_attributes: self.schemas().map_or(0, |s| s.omitted.swap(0, Ordering::Relaxed)),
            throttled_by_code: self.pool.take_throttled_by_code(),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        let t = &metrics.tally;
        tracing::info!(
            message = "Invocation summary.",
            source,
            records = t.records,
            delivered = t.delivered,
            dropped = t.dropped,
            duplicates = t.duplicates,
            invalid = t.invalid,
            rejected = t.rejected,
            failed = t.failed,
            retries = t.retries,
            throttled = t.throttled + t.held_back,
            held_back = t.held_back,
            token_refreshes = metrics.token_refreshes,
            omitted_attributes = metrics.omitted_attributes,
            concurrency_limit = self.pool.limit(),
            duration_ms = metrics.duration_ms as u64,
        );
        if self.emit_metrics {
            let namespace = self.wiring.as_ref().map_or("D365TriggerRelay", |w| w.settings.metrics_namespace.as_str());
            for line in metrics.to_emf_lines(namespace, Utc::now().timestamp_millis()) {
                println!("{line}");
            }
        }
        metrics.tally
    }
}

/// A record's result over its destinations (SPEC §23.2): `failed` if an
/// action failed, else `rejected` or `invalid` if one was, else `delivered`;
/// `duplicate` only when every action was done before; a `best_effort`
/// destination never decides it (unless it is the only one it reached).
fn merged(lanes: &[Lane], results: Vec<(usize, RecordResult)>) -> RecordResult {
    let deciding: Vec<&RecordResult> = results.iter().filter(|(at, _)| !lanes[*at].route.best_effort).map(|(_, r)| r).collect();
    let deciding = if deciding.is_empty() { results.iter().map(|(_, r)| r).collect() } else { deciding };
    let rank = |outcome: &Outcome| match outcome {
        Outcome::Failed(_) => 0,
        Outcome::Rejected(_) => 1,
        Outcome::Invalid { .. } => 2,
        Outcome::Delivered | Outcome::DryRun { .. } => 3,
        Outcome::Duplicate => 4,
        Outcome::Dropped { .. } => 5,
    };
    let decider = deciding.iter().min_by_key(|r| rank(&r.outcome)).copied().expect("a record that reached a destination has a result there");
    let mut outcome = decider.outcome.clone();
    // Delivered in one destination and done before or dropped in the others: delivered.
    if matches!(outcome, Outcome::Duplicate | Outcome::Dropped { .. }) && deciding.iter().any(|r| r.outcome == Outcome::Delivered) {
        outcome = Outcome::Delivered;
    }
    for (at, result) in &results {
        if lanes[*at].route.best_effort && !result.outcome.is_success() && !matches!(result.outcome, Outcome::Dropped { .. }) {
            tracing::warn!(message = "A best-effort destination did not take the record.", destination = %lanes[*at].route.name, outcome = result.outcome.name(), error = %crate::redact::scrub(&result.outcome.detail().unwrap_or_default()));
        }
    }
    let mut merged = RecordResult { outcome, ..decider.clone() };
    merged.attempts = results.iter().map(|(_, r)| r.attempts).sum();
    merged.throttled = results.iter().map(|(_, r)| r.throttled).sum();
    merged.latency = results.iter().filter_map(|(_, r)| r.latency).max();
    let trace = merged.trace_mut();
    trace.actions.clear();
    trace.unfinished.clear();
    for (at, result) in results {
        let name = &lanes[at].route.name;
        if !result.outcome.is_success() && !matches!(result.outcome, Outcome::Dropped { .. }) {
            merged.trace_mut().unfinished.push(name.clone());
        }
        let actions = result.trace.map(|t| t.actions).unwrap_or_default();
        merged.trace_mut().actions.extend(actions.into_iter().map(|mut a| {
            a.destination = name.clone();
            a
        }));
    }
    merged
}

/// What `send --dry-run` reports for a job: its body where it would be sent,
/// or every request when it writes rows.
fn dry_run_report(job: Job) -> delivery::DeliveryReport {
    let outcome = match job.work {
        Work::Actions(plan) if !plan.planned.is_empty() => {
            Outcome::DryRun { body: [("requests".to_string(), Value::Array(plan.requests()))].into_iter().collect() }
        }
        Work::Actions(plan) => match (plan.trigger, plan.update) {
            (Some(call), _) => Outcome::DryRun { body: call.body },
            (None, Some(update)) => Outcome::DryRun { body: update.body },
            (None, None) => Outcome::DryRun { body: serde_json::Map::new() },
        },
        Work::Done(outcome) => outcome,
    };
    delivery::DeliveryReport::done(outcome)
}

/// The trigger call a job will make, if any.
fn trigger_call(work: &Work) -> Option<&crate::plan::TriggerCall> {
    match work {
        Work::Actions(plan) => plan.trigger.as_ref(),
        Work::Done(_) => None,
    }
}

fn trigger_call_mut(work: &mut Work) -> Option<&mut crate::plan::TriggerCall> {
    match work {
        Work::Actions(plan) => plan.trigger.as_mut(),
        Work::Done(_) => None,
    }
}

/// One record through the stages of [`Relay::process`]: what its answer
/// needs, the trigger it raises, its identity work and its job for delivery.
struct Record {
    seen: Seen,
    /// The trigger it raises, for its result and a rejection's note.
    trigger: Option<String>,
    /// What identity resolution will do for it (SPEC §14).
    prep: Prep,
    job: Job,
}

impl Record {
    /// Parses and maps one record (SPEC §3, §5, §19); the event is dropped here.
    fn mapped(incoming: Incoming, ctx: &MapContext<'_>, traced: bool) -> Record {
        let (seen, group, event) = Seen::of(incoming, traced);
        Record::of_event(seen, group, &event, ctx, traced)
    }

    /// Maps one parsed record.
    fn of_event(mut seen: Seen, group: Option<String>, event: &Result<Value, String>, ctx: &MapContext<'_>, traced: bool) -> Record {
        let (work, trigger, key) = match event {
            Err(reason) => (Work::Done(Outcome::Invalid { reason: reason.clone() }), None, None),
            Ok(event) => match mapping::map_event(event, ctx) {
                Decision::Drop { reason } => (Work::Done(Outcome::Dropped { reason }), None, None),
                Decision::Invalid { reason } => (Work::Done(Outcome::Invalid { reason }), None, None),
                Decision::Raise { call, warnings } => {
                    warn_omitted(event, warnings);
                    let trigger = call.trigger.clone();
                    (Work::Actions(Box::new(ActionPlan::raise(call))), Some(trigger), Some(idempotency::key_for(event)))
                }
                // Rows, then the entry's own trigger: actions of their own (SPEC §19).
                Decision::Write { rows, call, warnings } => {
                    warn_omitted(event, warnings);
                    let trigger = call.as_ref().map(|c| c.trigger.clone());
                    let plan = ActionPlan::new(rows, call, crate::fields::user_id(event));
                    (Work::Actions(Box::new(plan)), trigger, Some(idempotency::key_for(event)))
                }
            },
        };
        if let (true, Ok(event)) = (traced, event) {
            let required = seen.event_name.as_deref().and_then(|name| ctx.mapping.events.get(name)).map_or(&[][..], |e| e.required.as_slice());
            let body = match &work {
                Work::Actions(plan) => plan.trigger.as_ref().map(|call| &call.body),
                Work::Done(_) => None,
            };
            seen.extra.get_or_insert_with(Box::default).0 = crate::record_log::ids(event, required, body);
        }
        let prep = match event {
            Ok(event) => crate::identity::prep(ctx.mapping, event, &work),
            Err(_) => Prep::None,
        };
        // An identify event's update takes the event's key too: its action's own
        // key (`{event key}#identify`, SPEC §11) derives from it.
        let key = match (&prep, event) {
            (Prep::Resolve { update: Some(_), .. }, Ok(event)) => Some(idempotency::key_for(event)),
            _ => key,
        };
        // The line's key: the event's messageId, else this (its hash).
        if let Some(hash) = key.as_deref().filter(|_| seen.message_id.is_none()) {
            seen.extra.get_or_insert_with(Box::default).1 = Some(Box::from(hash));
        }
        Record { job: Job { index: seen.index, group, key, work }, seen, trigger, prep }
    }

    fn resolves(&self) -> bool {
        matches!(self.prep, Prep::Resolve { .. })
    }

    /// The record as destination `route` takes it (SPEC §23.2): its trigger
    /// renamed there, its rows or identify update left out where the entry
    /// says so (its keys end in `@NAME` through its lane's [`delivery::Tagging`]).
    fn route(&mut self, route: &crate::config::routes::Route) {
        if let Work::Actions(plan) = &mut self.job.work {
            if let Some(call) = &mut plan.trigger {
                call.trigger = route.trigger(&call.trigger).to_string();
                self.trigger = Some(call.trigger.clone());
            }
            if !route.rows {
                plan.planned.clear();
            }
            if !route.identify {
                if let Prep::Resolve { update: Some(_), .. } = &self.prep {
                    self.prep = Prep::None;
                }
            }
            if plan.trigger.is_none() && plan.planned.is_empty() && plan.update.is_none() && !matches!(self.prep, Prep::Resolve { update: Some(_), .. }) {
                self.job.work = Work::Done(Outcome::Dropped { reason: format!("nothing to do in destination {}", route.name) });
            }
        }
    }

    /// Fails the record before anything of it is looked up or sent.
    fn fail(&mut self, error: DeliveryError) {
        self.prep = Prep::None;
        self.job.work = Work::Done(Outcome::Failed(error));
    }
}

fn warn_omitted(event: &Value, warnings: Vec<String>) {
    for warning in warnings {
        tracing::warn!(message = "Field omitted.", message_id = crate::fields::message_id(event).as_deref().unwrap_or(""), warning = %warning);
    }
}

/// What only a record's line needs: the event's ids (a JSON object) and its key when it has no `messageId`.
type LineExtra = (Option<Box<str>>, Option<Box<str>>);

/// What a record's result needs of it once its event is mapped and dropped.
#[derive(Clone)]
struct Seen {
    index: usize,
    sqs_id: Option<String>,
    message_id: Option<String>,
    event_name: Option<String>,
    /// The event's own non-personal ids, for its record line (SPEC §22.1).
    /// For its record line (SPEC §22.1), boxed and only when there is any: the
    /// event's own non-personal ids, and its key when the event has no `messageId`.
    extra: Option<Box<LineExtra>>,
    receive_count: Option<u32>,
}

impl Seen {
    /// Resolves the record's event (an SQS body is parsed here) and notes its ids;
    /// the FIFO group and the event go on to mapping.
    /// `traced`: what only its record line needs is kept too.
    fn of(record: Incoming, traced: bool) -> (Seen, Option<String>, Result<Value, String>) {
        let event = record.event.resolve();
        let ok = event.as_ref().ok();
        let seen = Seen {
            index: record.index,
            sqs_id: record.sqs_id,
            message_id: ok.and_then(crate::fields::message_id),
            event_name: ok.and_then(|e| crate::fields::event_name(e)).map(str::to_string),
            extra: None,
            receive_count: record.receive_count.filter(|_| traced),
        };
        (seen, record.group, event)
    }
}

fn result_of(seen: Seen, trigger: Option<String>, outcome: Outcome, attempts: u32) -> RecordResult {
    RecordResult {
        index: seen.index,
        sqs_id: seen.sqs_id,
        message_id: seen.message_id,
        event_name: seen.event_name,
        trigger,
        outcome,
        attempts,
        throttled: 0,
        latency: None,
        trace: (seen.extra.is_some() || seen.receive_count.is_some()).then(|| {
            let (ids, key) = seen.extra.map(|e| *e).unwrap_or_default();
            Box::new(RecordTrace { key, ids, receive_count: seen.receive_count, actions: Vec::new(), unfinished: Vec::new() })
        }),
    }
}

/// One line per record not delivered (SPEC §9). Contact points never appear here.
fn log_record(result: &RecordResult) {
    let message_id = result.message_id.as_deref().or(result.sqs_id.as_deref()).unwrap_or("");
    let event = result.event_name.as_deref().unwrap_or("");
    let trigger = result.trigger.as_deref().unwrap_or("");
    let outcome = result.outcome.name();
    let status = result.outcome.error().and_then(DeliveryError::status);
    let code = result.outcome.error().and_then(DeliveryError::code).unwrap_or("");
    let error = crate::redact::scrub(&result.outcome.detail().unwrap_or_default());
    match &result.outcome {
        Outcome::Delivered | Outcome::DryRun { .. } => {}
        Outcome::Dropped { .. } | Outcome::Duplicate => {
            tracing::info!(message = "Record not sent.", message_id, event, outcome, error = %error)
        }
        Outcome::Invalid { .. } | Outcome::Rejected(_) => {
            tracing::error!(message = "Record not delivered.", message_id, event, trigger, outcome, status, code, attempts = result.attempts, error = %error)
        }
        Outcome::Failed(_) => {
            tracing::warn!(message = "Record not delivered; it will be retried.", message_id, event, trigger, outcome, status, code, attempts = result.attempts, error = %error)
        }
    }
}
