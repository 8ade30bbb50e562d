//! Checking a deployment (SPEC §13): settings → secret → token → the
//! definition of every trigger the mapping can raise, compared with the
//! mapping; with an event, the exact body that would be sent. Nothing is sent.
//! The `check` command prints the report; the direct invocation
//! `{"check": true}` answers it.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use serde_json::{json, Value};

pub(crate) mod rows;
mod sample;

use crate::config::{ConfigError, DefaultAction, Settings};
use crate::dynamics::ceiling::Ceiling;
use crate::mapping::{self, Decision, MapContext};
use crate::outcome::DeliveryError;
use crate::schema::{self, Definition};
use crate::secrets::SecretError;
use crate::stages::triggers::Schemas;
use crate::stages::Destination;
use sample::resolve_sample;
pub use sample::Problem;

/// One step before the triggers: settings, secret, token.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TriggerReport {
    pub trigger: String,
    /// The events that raise it (`*` for unmapped events under `defaults.action: raise`).
    pub events: Vec<String>,
    /// `None`: the definition could not be read.
    pub exists: Option<bool>,
    pub parameters: Vec<Value>,
    pub problems: Vec<Problem>,
    /// Information: nothing to fix.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub steps: Vec<Step>,
    pub triggers: Vec<TriggerReport>,
    /// With an event: what would happen to it, and the body.
    pub event: Option<Value>,
    pub event_problems: Vec<Problem>,
    /// The identity setup (SPEC §14): each entity and attribute the mapping reads or writes.
    pub identity: Vec<Value>,
    pub identity_problems: Vec<Problem>,
    /// Each row of the mapping against its entity's definition (SPEC §19).
    pub rows: Vec<Value>,
    pub rows_problems: Vec<Problem>,
    /// The settings or the secret are wrong (CLI exit status 2).
    pub config_error: bool,
    /// The CI-J trigger ceiling and how it is shared (SPEC §17.1, §17.4).
    pub ceiling: Option<Value>,
    /// The pool of application users and what their budgets add up to (SPEC §17.3, §17.4).
    pub principals: Option<Value>,
}

impl CheckReport {
    pub fn problems(&self) -> usize {
        self.steps.iter().filter(|s| !s.ok).count()
            + self.triggers.iter().map(|t| t.problems.len()).sum::<usize>()
            + self.event_problems.len()
            + self.identity_problems.len()
            + self.rows_problems.len()
    }

    pub fn ok(&self) -> bool {
        self.problems() == 0
    }

    /// 0 when nothing is wrong, 1 otherwise, 2 for a configuration error.
    pub fn exit_code(&self) -> i32 {
        if self.config_error {
            2
        } else if self.ok() {
            0
        } else {
            1
        }
    }

    pub fn to_json(&self) -> Value {
        let problems = |list: &[Problem]| list.iter().map(|p| json!({"problem": p.problem, "fix": p.fix})).collect::<Vec<_>>();
        let mut report = json!({
            "ok": self.ok(),
            "problems": self.problems(),
            "steps": self.steps.iter().map(|s| {
                let mut v = json!({"step": s.name, "ok": s.ok, "detail": s.detail});
                if let Some(fix) = &s.fix { v["fix"] = json!(fix); }
                v
            }).collect::<Vec<_>>(),
            "triggers": self.triggers.iter().map(|t| json!({
                "trigger": t.trigger,
                "events": t.events,
                "exists": t.exists,
                "parameters": t.parameters,
                "problems": problems(&t.problems),
                "notes": t.notes,
            })).collect::<Vec<_>>(),
        });
        if let Some(ceiling) = &self.ceiling {
            report["ceiling"] = ceiling.clone();
        }
        if let Some(principals) = &self.principals {
            report["principals"] = principals.clone();
        }
        if !self.identity.is_empty() {
            report["identity"] = json!({"checks": self.identity, "problems": problems(&self.identity_problems)});
        }
        if !self.rows.is_empty() {
            report["rows"] = json!({"checks": self.rows, "problems": problems(&self.rows_problems)});
        }
        if let Some(event) = &self.event {
            let mut event = event.clone();
            event["problems"] = json!(problems(&self.event_problems));
            report["event"] = event;
        }
        report
    }

    /// The report for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        for step in &self.steps {
            line(format!("{} {:<8} {}", if step.ok { "ok     " } else { "PROBLEM" }, step.name, step.detail));
            if let Some(fix) = &step.fix {
                line(format!("        fix: {fix}"));
            }
        }
        if let Some(detail) = self.ceiling.as_ref().and_then(|c| c["detail"].as_str()) {
            line(format!("note    {:<8} {detail}", "ceiling"));
        }
        if let Some(detail) = self.principals.as_ref().and_then(|c| c["detail"].as_str()) {
            line(format!("note    {:<8} {detail}", "budget"));
        }
        for t in &self.triggers {
            let state = match t.exists {
                Some(true) => format!("exists, {} parameters", t.parameters.len()),
                Some(false) => "does not exist".to_string(),
                None => "definition unreadable".to_string(),
            };
            line(format!("\ntrigger {} ({}) — raised by {}", t.trigger, state, t.events.join(", ")));
            for p in &t.parameters {
                let entity = p.get("entity").and_then(Value::as_str).map(|e| format!(" → {e}")).unwrap_or_default();
                line(format!(
                    "    {:<40} {:<16} {}",
                    p["name"].as_str().unwrap_or(""),
                    format!("{}{entity}", p["type"].as_str().unwrap_or("")),
                    if p["required"] == true { "required" } else { "optional" }
                ));
            }
            for problem in &t.problems {
                line(format!("  PROBLEM {}", problem.problem));
                line(format!("          fix: {}", problem.fix));
            }
            for note in &t.notes {
                line(format!("  note    {note}"));
            }
        }
        if !self.identity.is_empty() {
            line("\nidentity (SPEC §14)".into());
            for check in &self.identity {
                line(format!(
                    "  {} {}.{} ({}): {}",
                    if check["ok"] == true { "ok     " } else { "PROBLEM" },
                    check["entity"].as_str().unwrap_or(""),
                    check["attribute"].as_str().unwrap_or(""),
                    check["use"].as_str().unwrap_or(""),
                    check["detail"].as_str().unwrap_or("")
                ));
            }
            for problem in &self.identity_problems {
                line(format!("  PROBLEM {}", problem.problem));
                line(format!("          fix: {}", problem.fix));
            }
        }
        if !self.rows.is_empty() {
            line("\nrows (SPEC §19)".into());
            for row in &self.rows {
                let key = row.pointer("/key/detail").and_then(Value::as_str).unwrap_or("");
                line(format!(
                    "  {} {} row {} → {} ({}){}",
                    if row["ok"] == true { "ok     " } else { "PROBLEM" },
                    row["event"].as_str().unwrap_or(""),
                    row["row"],
                    row["entity"].as_str().unwrap_or(""),
                    row["mode"].as_str().unwrap_or(""),
                    if key.is_empty() { String::new() } else { format!(", key: {key}") }
                ));
                for column in row["columns"].as_array().into_iter().flatten() {
                    line(format!("      {:<40} {}", column["column"].as_str().unwrap_or(""), column["type"].as_str().unwrap_or("(no such column)")));
                }
                for bind in row["binds"].as_array().into_iter().flatten() {
                    line(format!(
                        "      bind {:<35} → {}",
                        bind["property"].as_str().unwrap_or(""),
                        bind["refers_to"].as_str().unwrap_or("(no such navigation property)")
                    ));
                }
            }
            for problem in &self.rows_problems {
                line(format!("  PROBLEM {}", problem.problem));
                line(format!("          fix: {}", problem.fix));
            }
        }
        if let Some(event) = &self.event {
            if let Some(profile) = event.get("profile").and_then(Value::as_str) {
                line(format!("\nprofile: {profile}"));
            }
            line(format!(
                "\nevent {} → {}: {}",
                event.get("event").and_then(Value::as_str).unwrap_or("(no name)"),
                event.get("trigger").and_then(Value::as_str).unwrap_or("-"),
                event["outcome"].as_str().unwrap_or("")
            ));
            if let Some(reason) = event.get("reason").and_then(Value::as_str) {
                line(format!("  {reason}"));
            }
            for key in ["omitted", "coerced", "warnings"] {
                if let Some(list) = event.get(key).and_then(Value::as_array).filter(|l| !l.is_empty()) {
                    line(format!("  {key}: {}", list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")));
                }
            }
            for request in event.get("requests").and_then(Value::as_array).into_iter().flatten() {
                line(format!("  {} {} (nothing was sent):", request["method"].as_str().unwrap_or(""), request["path"].as_str().unwrap_or("")));
                for l in serde_json::to_string_pretty(&request["body"]).unwrap_or_default().lines() {
                    line(format!("    {l}"));
                }
            }
            if let Some(body) = event.get("body") {
                line("  body that would be sent (nothing was sent):".into());
                for l in serde_json::to_string_pretty(body).unwrap_or_default().lines() {
                    line(format!("    {l}"));
                }
            }
            for problem in &self.event_problems {
                line(format!("  PROBLEM {}", problem.problem));
                line(format!("          fix: {}", problem.fix));
            }
        }
        let n = self.problems();
        line(if n == 0 { "\nNo problems found.".to_string() } else { format!("\n{n} problem{} found.", if n == 1 { "" } else { "s" }) });
        out
    }
}

/// A direct invocation asking for the check: `{"check": true}`, with an optional
/// `"event": {…}` (an object with only these keys). `Some(event)` when it is one.
pub fn direct_request(payload: &Value) -> Option<Option<Value>> {
    let object = payload.as_object()?;
    if object.get("check") != Some(&Value::Bool(true)) || object.keys().any(|k| k != "check" && k != "event") {
        return None;
    }
    match object.get("event") {
        None | Some(Value::Null) => Some(None),
        Some(event @ Value::Object(_)) => Some(Some(event.clone())),
        Some(_) => None,
    }
}

const READ_ACCESS_FIX: &str = "give the application user read access to the customapi and customapirequestparameter tables: a security role with organization-level Read on Custom API and Custom API Request Parameter (System Customizer has it)";

/// Runs the check: nothing is sent to any trigger.
pub async fn run(wiring: Result<(&Settings, &Destination, &Schemas), &ConfigError>, event: Option<&Value>, deadline: Instant) -> CheckReport {
    let mut report = CheckReport::default();
    let (settings, destination, schemas) = match wiring {
        Ok(w) => w,
        Err(error) => {
            report.steps.push(Step {
                name: "settings",
                ok: false,
                detail: error.to_string(),
                fix: Some(format!("set {} correctly (SPEC §2.1, README Configuration)", error.setting)),
            });
            report.config_error = true;
            return report;
        }
    };
    report.steps.push(Step {
        name: "settings",
        ok: true,
        detail: format!(
            "secret {}, mapping of {} event(s), unmapped events {}",
            settings.secret_id,
            settings.mapping.events.len(),
            match settings.mapping.default_action {
                DefaultAction::Drop => "dropped",
                DefaultAction::Raise => "raised",
            }
        ),
        fix: None,
    });
    report.ceiling = Some(Ceiling::describe(settings, None));

    let creds = match destination.credentials().await {
        Ok(c) => c,
        Err(SecretError::Config(error)) => {
            report.steps.push(Step {
                name: "secret",
                ok: false,
                detail: error.to_string(),
                fix: Some(format!("fix {}: the secret's JSON is described in README \"The secret\"", error.setting)),
            });
            report.config_error = true;
            return report;
        }
        Err(error @ SecretError::Unavailable(_)) => {
            report.steps.push(Step {
                name: "secret",
                ok: false,
                detail: error.to_string(),
                fix: Some(
                    "Secrets Manager did not answer: check the function's network path to it (a VPC needs an endpoint or NAT), then run the check again".into(),
                ),
            });
            return report;
        }
    };
    let default_trigger = settings.default_trigger(&creds);
    if let Err(error) = settings.mapping.check_triggers(default_trigger.as_deref()) {
        report.steps.push(Step {
            name: "secret",
            ok: false,
            detail: error.to_string(),
            fix: Some("set trigger_name in the secret (or D365_TRIGGER_NAME), or name a trigger for every event in the mapping".into()),
        });
        report.config_error = true;
        return report;
    }
    let clients = creds.client_ids().collect::<Vec<_>>().join(", ");
    let users = if creds.principals.len() == 1 { "client" } else { "clients" };
    report.steps.push(Step { name: "secret", ok: true, detail: format!("read; org_url_host {}, {users} {clients}", creds.org_url_host), fix: None });
    report.ceiling = Some(Ceiling::describe(settings, Some(&creds.org_url_host)));
    report.principals = Some(budget_arithmetic(settings, creds.principals.len()));

    // A token for each application user of the pool (SPEC §17.4).
    let mut tokens = 0;
    for member in &destination.pool.members() {
        let who = if creds.principals.len() == 1 { String::new() } else { format!(" ({})", member.principal) };
        match destination.check_token(&member.principal, deadline).await {
            Ok(()) => {
                tokens += 1;
                report.steps.push(Step {
                    name: "token",
                    ok: true,
                    detail: format!("Entra issued a token for https://{}/.default{who}", creds.org_url_host),
                    fix: None,
                });
            }
            Err(error) => {
                let fix = match &error {
                    DeliveryError::Credentials { .. } if who.is_empty() => {
                        "check tenant_id, client_id and client_secret in the secret (an expired client secret needs a new one in Entra ID)"
                    }
                    DeliveryError::Credentials { .. } => {
                        "check this application user's client_id and client_secret in the secret's principals (an expired client secret needs a new one in Entra ID); until then it leaves the pool and the others carry the load"
                    }
                    _ => "check that Entra is reachable from here and D365_AUTHORITY_HOST (national clouds)",
                };
                report.steps.push(Step { name: "token", ok: false, detail: format!("{error}{who}"), fix: Some(fix.into()) });
            }
        }
    }
    if tokens == 0 {
        return report;
    }

    // Every trigger the mapping can raise, with the events that raise it.
    let mut raised_by: BTreeMap<String, Vec<Option<&str>>> = BTreeMap::new();
    for (name, entry) in &settings.mapping.events {
        if let Some(trigger) = settings.mapping.trigger_for(Some(entry), default_trigger.as_deref()) {
            raised_by.entry(trigger.to_string()).or_default().push(Some(name));
        }
    }
    if settings.mapping.default_action == DefaultAction::Raise {
        if let Some(trigger) = settings.mapping.trigger_for(None, default_trigger.as_deref()) {
            raised_by.entry(trigger.to_string()).or_default().push(None);
        }
    }
    let mut definitions: BTreeMap<String, Result<Option<Definition>, DeliveryError>> = BTreeMap::new();
    for (trigger, events) in &raised_by {
        let read = schemas.read(destination, trigger, deadline).await;
        report.triggers.push(judge(settings, trigger, events, &read, &creds.org_url_host));
        definitions.insert(trigger.clone(), read);
    }

    check_identity(settings, destination, deadline, &mut report).await;
    (report.rows, report.rows_problems) = rows::check_rows(settings, destination, deadline).await;

    if let Some(event) = event {
        let ctx = MapContext {
            mapping: &settings.mapping,
            default_trigger: default_trigger.as_deref(),
            default_phone_region: settings.default_phone_region,
            now: Utc::now(),
        };
        let name = crate::fields::event_name(event).map(str::to_string);
        let mut view = json!({ "event": name });
        match mapping::map_event(event, &ctx) {
            Decision::Drop { reason } => {
                view["outcome"] = json!("dropped");
                view["reason"] = json!(reason);
            }
            Decision::Invalid { reason } => {
                view["outcome"] = json!("invalid");
                view["reason"] = json!(reason);
                report
                    .event_problems
                    .push(Problem { problem: format!("the event would be invalid: {reason}"), fix: "fix the event (its producer) or the mapping".into() });
            }
            Decision::Write { rows, call, warnings } => {
                let plan = crate::plan::ActionPlan::new(rows, call, crate::fields::user_id(event));
                rows::event_view(settings, destination, schemas, plan, event, warnings, deadline, &mut view, &mut report.event_problems).await;
            }
            Decision::Raise { mut call, warnings } => {
                view["trigger"] = json!(call.trigger);
                // The profile is resolved first, as the function does (SPEC §14): reads only.
                if let Some(spec) = &settings.mapping.identity {
                    let profile = resolve_sample(spec, event, destination, deadline).await;
                    match &profile {
                        Ok(Some(id)) => crate::identity::fill_profile(&mut call.body, id),
                        // A row would be created: the body shows where its id would go.
                        Err((_, false)) => crate::identity::fill_profile(&mut call.body, crate::identity::NEW_ROW),
                        _ => {}
                    }
                    view["profile"] = json!(match &profile {
                        Ok(Some(id)) => format!("resolves to {id}"),
                        Ok(None) => "no lookup needed".to_string(),
                        Err((reason, _)) => reason.clone(),
                    });
                    if let Err((reason, true)) = &profile {
                        report.event_problems.push(Problem {
                            problem: format!("the event's profile: {reason}"),
                            fix: "check the lookup values the event carries and the identity section of the mapping".into(),
                        });
                    }
                }
                view["warnings"] = json!(warnings);
                if !definitions.contains_key(&call.trigger) {
                    let read = schemas.read(destination, &call.trigger, deadline).await;
                    definitions.insert(call.trigger.clone(), read);
                }
                match &definitions[&call.trigger] {
                    Ok(Some(definition)) => match schema::fit(definition, call.body) {
                        Ok(fitted) => {
                            view["outcome"] = json!("would be sent");
                            view["omitted"] = json!(fitted.omitted);
                            view["coerced"] = json!(fitted.coerced);
                            view["body"] = Value::Object(fitted.body);
                        }
                        Err(reason) => {
                            view["outcome"] = json!("invalid");
                            view["reason"] = json!(reason);
                            report.event_problems.push(Problem {
                                problem: format!("the event would be invalid: {reason}"),
                                fix: "send a value of the parameter's type (see the trigger's parameters above), or map another field".into(),
                            });
                        }
                    },
                    Ok(None) => {
                        view["outcome"] = json!("rejected");
                        view["reason"] = json!(format!("no custom API named '{}': nothing would be sent", call.trigger));
                    }
                    Err(error) => {
                        view["outcome"] = json!("would be sent as mapped (definition unreadable)");
                        view["reason"] = json!(error.to_string());
                        view["body"] = Value::Object(call.body);
                    }
                }
            }
        }
        report.event = Some(view);
    }
    report
}

/// Reads each entity and attribute the identity setup uses (`$top=1`, the
/// attribute selected): a 400 about a property names a wrong attribute, a 404
/// a wrong entity set, a 403 a missing privilege. Nothing is written.
async fn check_identity(settings: &Settings, destination: &Destination, deadline: Instant, report: &mut CheckReport) {
    use crate::config::identity::id_column;
    let mapping = &settings.mapping;
    let mut uses: Vec<(String, String, &'static str)> = Vec::new();
    if let Some(spec) = &mapping.identity {
        for lookup in &spec.lookups {
            uses.push((lookup.entity.clone(), lookup.attribute.clone(), "lookup"));
        }
        if let Some(create) = &spec.create {
            uses.extend(create.attributes.iter().map(|(column, _)| (create.entity.clone(), column.clone(), "create")));
        }
    }
    if let Some(identify) = &mapping.identify {
        uses.extend(identify.attributes.iter().map(|(column, _)| (identify.entity.clone(), column.clone(), "identify")));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (entity, attribute, use_) in uses {
        if !seen.insert((entity.clone(), attribute.clone(), use_)) {
            continue;
        }
        let query = format!("{entity}?$select={},{attribute}&$top=1", id_column(&entity));
        let (ok, detail, fix) = match destination.read(&query, deadline).await {
            Ok(_) => (true, "readable".to_string(), None),
            Err(error) => {
                let fix = match error.status() {
                    Some(400) => format!("'{attribute}' is not a column of {entity}: use the column's logical name (lowercase, e.g. emailaddress1, or new_… for a custom column)"),
                    Some(404) => format!("'{entity}' is not an entity set: use the plural entity set name (contacts, leads)"),
                    Some(403) => format!("give the application user Read (and, for create/identify, Create/Write) on {entity}"),
                    _ => "check that Dataverse is reachable and run the check again".to_string(),
                };
                (false, error.to_string(), Some(fix))
            }
        };
        if let Some(fix) = fix {
            report.identity_problems.push(Problem { problem: format!("{use_}: cannot read {entity}.{attribute}: {detail}"), fix });
        }
        report.identity.push(json!({"entity": entity, "attribute": attribute, "use": use_, "ok": ok, "detail": detail}));
    }
}

/// One trigger's definition against the events that raise it.
fn judge(settings: &Settings, trigger: &str, events: &[Option<&str>], read: &Result<Option<Definition>, DeliveryError>, org: &str) -> TriggerReport {
    let mut t = TriggerReport {
        trigger: trigger.to_string(),
        events: events.iter().map(|e| e.map_or("* (unmapped events)".to_string(), |n| n.to_string())).collect(),
        exists: None,
        parameters: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let definition = match read {
        Err(error) => {
            let fix = match error.status() {
                Some(403) => READ_ACCESS_FIX.to_string(),
                Some(401) => "add the app registration as an application user in this environment".to_string(),
                _ => format!("check that {org} is reachable and run the check again"),
            };
            t.problems.push(Problem { problem: format!("cannot read the trigger's definition: {error}"), fix });
            return t;
        }
        Ok(None) => {
            t.exists = Some(false);
            t.problems.push(Problem {
                problem: format!("no custom API named '{trigger}' in {org}: every event raising it would be rejected (404)"),
                fix: "trigger names are case-sensitive unique names (msdynmkt_…): check the mapping's trigger / trigger_name, and that the trigger is published in this environment".into(),
            });
            return t;
        }
        Ok(Some(d)) => d,
    };
    t.exists = Some(true);
    t.parameters = definition.describe();
    let names = || definition.parameters.keys().filter(|n| !schema::is_system_field(n)).cloned().collect::<Vec<_>>().join(", ");
    for field in schema::SYSTEM_FIELDS {
        if !definition.parameters.contains_key(*field) {
            t.notes.push(format!(
                "{field} is not a parameter of this trigger (contact points exist only on triggers bound to a CI-Data profile): the relay leaves it out"
            ));
        }
    }
    for p in definition.parameters.values().filter(|p| !p.kind.coercible()) {
        t.problems.push(Problem {
            problem: format!("{} is a {} parameter: the relay cannot build one from an event", p.name, p.kind.name()),
            fix: "give the trigger attribute a text, number, true/false, date/time or entity reference type".into(),
        });
    }
    for event in events {
        let entry = event.and_then(|name| settings.mapping.events.get(name));
        let at = event.map_or("unmapped events".to_string(), |n| format!("events[\"{n}\"]"));
        let mapped: Vec<&str> = entry.map(|e| e.attributes.iter().map(|(a, _)| a.as_str()).collect()).unwrap_or_default();
        for attribute in &mapped {
            if !definition.parameters.contains_key(*attribute) {
                t.problems.push(Problem {
                    problem: format!("{at} maps {attribute}, which {trigger} does not have (it would be left out)"),
                    fix: format!("rename it to one of the trigger's parameters ({}), or remove it", names()),
                });
            }
        }
        for p in definition.parameters.values().filter(|p| p.required && !schema::is_system_field(&p.name)) {
            if !mapped.contains(&p.name.as_str()) {
                let short = p.name.strip_prefix("msdynmkt_").unwrap_or(&p.name);
                t.problems.push(Problem {
                    problem: format!("{trigger} requires {} ({}), which {at} does not map: every such event would be invalid", p.name, p.kind.name()),
                    fix: format!("add \"{}\": \"properties.{short}\" (the event's field) to {at}.attributes and list it in required", p.name),
                });
            }
        }
    }
    t
}

/// What the pool's request budgets add up to against the CI-J ceiling (SPEC §17.4):
/// each application user may make 6,000 Dataverse requests in 5 minutes, 1,200 a minute.
fn budget_arithmetic(settings: &Settings, principals: usize) -> Value {
    const PER_USER_PER_MINUTE: usize = 1_200;
    let requests = principals * PER_USER_PER_MINUTE;
    let ceiling = settings.max_triggers_per_minute as usize;
    let binds = if ceiling == 0 || requests < ceiling {
        let toward = if ceiling == 0 { String::new() } else { format!(" toward the ceiling of {ceiling}") };
        format!("the request budget binds first: add application users (README \"Running at volume\") to raise it{toward}")
    } else {
        format!("the CI-J ceiling of {ceiling} trigger calls a minute binds first; more application users add no trigger throughput (lookups and rows still spend the budget)")
    };
    json!({
        "count": principals,
        "requests_per_minute_each": PER_USER_PER_MINUTE,
        "requests_per_minute": requests,
        "triggers_per_minute": ceiling,
        "detail": format!("{principals} application user(s) × {PER_USER_PER_MINUTE} Dataverse requests a minute = {requests} a minute; {binds}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_check_object_is_a_check_request() {
        assert_eq!(direct_request(&json!({"check": true})), Some(None));
        assert_eq!(direct_request(&json!({"check": true, "event": {"event": "A"}})), Some(Some(json!({"event": "A"}))));
        assert_eq!(direct_request(&json!({"check": false})), None);
        assert_eq!(direct_request(&json!({"check": true, "event": "Order Completed"})), None, "an event named by a string is an event");
        assert_eq!(direct_request(&json!({"check": true, "type": "track"})), None);
        assert_eq!(direct_request(&json!([{"check": true}])), None);
    }
}
