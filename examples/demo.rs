//! The demo: starts the sandbox, runs the relay's real handler on every sample
//! event in `events/`, and shows what Dynamics received — like an event
//! debugger; then one webhook in enqueue mode (SPEC §15) end to end, with the
//! sandbox's SQS emulation standing in for Amazon SQS, a backfill, a throttled
//! SQS batch, a burst drained at Dataverse's request budget (scaled), and one
//! record raised in two Dynamics environments (production and UAT, SPEC §23)
//! that the sandbox serves through a path prefix.
//! Exits non-zero if anything did not arrive as expected.
//!
//! `cargo run --example demo` (or `make demo`).

use std::time::{Duration, Instant};

use d365_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

/// Sample file, what it is, and the Dataverse calls it should produce.
const SAMPLES: &[(&str, &str, usize)] = &[
    ("sqs-standard.json", "SQS standard queue, 5 records (one unmapped)", 4),
    ("sqs-fifo.json", "SQS FIFO queue, 3 records in 2 message groups", 3),
    ("direct.json", "direct invocation, the SPEC's Order Completed event", 1),
    ("direct-batch.json", "direct invocation, {\"batch\": [...]} of 5 (one unmapped)", 4),
    ("apigw-rest.json", "API Gateway REST API (payload v1), signed webhook", 2),
    ("apigw-http.json", "API Gateway HTTP API (payload v2), signed webhook", 2),
    ("function-url.json", "Lambda function URL, signed webhook", 2),
    ("sns.json", "SNS subscription invoking the function (a Product Added event in Sns.Message)", 1),
    ("sqs-sns.json", "SNS topic -> SQS queue (raw delivery off): SNS notifications in SQS bodies", 2),
    ("eventbridge.json", "EventBridge rule -> function: a custom shop event, detail-type as the event name", 1),
    ("sqs-eventbridge.json", "EventBridge rule -> SQS queue: a Segment event as detail, and a custom one", 2),
    ("alb.json", "Application Load Balancer (Lambda target), signed webhook", 2),
    ("dataverse-webhook.json", "Dataverse webhook (RemoteExecutionContext, WebhookKey ?code=) to a function URL: contact Update", 1),
    ("power-automate.json", "Power Automate HTTP action (X-Api-Key): the plain change-event form, contact Modified", 1),
    ("segment-batch.json", "an analytics SDK (segment-analytics-python) posting /v1/batch to a function URL, write key as HTTP Basic; a page dropped", 2),
    ("direct-schema.json", "direct invocation, values coerced to each trigger's types; contact points left out of a contact-bound trigger", 2),
    ("direct-identity.json", "direct invocation, an order identified by e-mail only (contact looked up) and an identify event (contact updated)", 1),
    ("direct-rows.json", "direct invocation, an order that upserts its account, an opportunity bound to it and to the contact, then raises its trigger", 1),
];

/// The demo accepts the signed samples (hmac), the keyed ones (Dataverse, Power
/// Automate) and the analytics SDK's write key (writekey).
const WEBHOOK_AUTH: &str = "hmac,key,writekey";

/// ANSI styles: on a terminal only, and never when `NO_COLOR` is set (no-color.org).
struct Style {
    bold: &'static str,
    dim: &'static str,
    green: &'static str,
    red: &'static str,
    reset: &'static str,
}

impl Style {
    fn for_stdout() -> Style {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if std::io::stdout().is_terminal() && !no_color {
            Style { bold: "\x1b[1m", dim: "\x1b[2m", green: "\x1b[32m", red: "\x1b[31m", reset: "\x1b[0m" }
        } else {
            Style { bold: "", dim: "", green: "", red: "", reset: "" }
        }
    }
}

#[tokio::main]
async fn main() {
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    let Style { bold, dim, green, red, reset } = Style::for_stdout();
    let root = env!("CARGO_MANIFEST_DIR");
    let mut config: SandboxConfig =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/sandbox/config.json")).expect("sandbox/config.json")).expect("a sandbox config");
    // The two-environment scene's secret: production at the top level, a UAT environment with its own app (SPEC §23.1).
    let mut two = config.secrets["d365/relay-demo"].clone();
    two["destinations"] = serde_json::json!({"uat": {"tenant_id": two["tenant_id"], "client_id": UAT_CLIENT, "client_secret": "sandbox-uat-client-secret",
                                                     "org_url_host": UAT_HOST}});
    config.secrets.insert(TWO_ENVIRONMENTS_SECRET.into(), two);
    let webhook_secret = config.secrets["d365/relay-demo"]["webhook_secret"].as_str().unwrap_or_default().to_string();
    let sandbox = Sandbox::start(config, 0).await.expect("the sandbox starts on loopback");
    println!("{bold}d365-sandbox{reset} on {} (Secrets Manager, Entra token endpoint, Dataverse)", sandbox.url());

    let mapping = format!("{root}/events/mapping.json");
    let settings = relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", &mapping), ("D365_WEBHOOK_AUTH", WEBHOOK_AUTH)]);
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), options());

    let mut problems = Vec::new();
    for (file, what, expected_calls) in SAMPLES {
        let text = std::fs::read_to_string(format!("{root}/events/{file}")).expect("sample event");
        let mut payload: Value = serde_json::from_str(&text).expect("sample is JSON");
        // Webhook samples are signed now: signatures are only valid for 5 minutes.
        relay::webhook::resign_event(&mut payload, webhook_secret.as_bytes(), chrono::Utc::now().timestamp_millis());
        println!("\n{bold}── events/{file}{reset}  {dim}{what}{reset}");
        let before = sandbox.signals().len();
        let rows_seen = sandbox.row_requests().len();
        let started = Instant::now();
        let result = relay.handle(payload, Instant::now() + Duration::from_secs(30)).await;
        let elapsed = started.elapsed();
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{file}: invocation error: {e}"));
                continue;
            }
        };
        match (response.get("statusCode"), response.get("body").and_then(Value::as_str)) {
            (Some(status), Some(body)) => {
                let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                println!("   handler answered in {} ms: HTTP {status}", elapsed.as_millis());
                println!("{}", indent(&serde_json::to_string_pretty(&body).unwrap(), 6));
            }
            _ => {
                println!("   handler answered in {} ms:", elapsed.as_millis());
                println!("{}", indent(&serde_json::to_string_pretty(&response).unwrap(), 6));
            }
        }
        let received: Vec<_> = sandbox.signals().into_iter().skip(before).collect();
        println!("   Dynamics received {} call(s):", received.len());
        for signal in &received {
            let colour = if signal.status == 204 { green } else { red };
            println!("   {colour}{}{reset} POST /api/data/v9.2/{bold}{}{reset}  {dim}at {}{reset}", signal.status, signal.trigger, signal.received_at);
            println!("{}", indent(&serde_json::to_string_pretty(&signal.body).unwrap(), 8));
        }
        let rows: Vec<_> = sandbox.row_requests().into_iter().skip(rows_seen).collect();
        if !rows.is_empty() {
            println!("   Identity resolution and rows made {} table request(s):", rows.len());
            for r in &rows {
                let filter = r.query.get("$filter").map(|f| format!("?$filter={f}")).unwrap_or_default();
                let if_match = r.headers.get("if-match").map(|m| format!("  If-Match: {m}")).unwrap_or_default()
                    + &r.headers.get("if-none-match").map(|m| format!("  If-None-Match: {m}")).unwrap_or_default();
                println!("   {dim}{} {} /api/data/v9.2/{}{filter}{if_match}{reset}", r.status, r.method, r.path);
                if r.method != "GET" {
                    println!("{}", indent(&serde_json::to_string_pretty(&r.body).unwrap(), 8));
                }
            }
        }
        if *file == "direct-identity.json" {
            identity_notes(&received, &rows, &mut problems, (green, bold, reset));
        }
        if *file == "direct-rows.json" {
            rows_notes(&sandbox, &received, &rows, &mut problems, (green, bold, reset));
        }
        if *file == "direct-schema.json" {
            schema_notes(&received, &mut problems, (green, bold, reset));
        }
        let accepted = received.iter().filter(|s| s.status == 204).count();
        if accepted != *expected_calls || received.len() != *expected_calls {
            problems.push(format!("{file}: expected {expected_calls} accepted call(s), Dynamics received {} ({} accepted)", received.len(), accepted));
        }
        let ok = match response.get("batchItemFailures") {
            Some(failures) => failures.as_array().is_some_and(Vec::is_empty),
            None => match response.get("statusCode") {
                Some(status) => status == 200,
                None => response["failed"].as_array().is_some_and(Vec::is_empty),
            },
        };
        if !ok {
            problems.push(format!("{file}: the answer reports failures"));
        }
    }

    if let Err(problem) = enqueue_mode(&sandbox, root, webhook_secret.as_bytes()).await {
        problems.push(problem);
    }
    if let Err(problem) = backfill(&sandbox, root).await {
        problems.push(problem);
    }
    if let Err(problem) = backlog(&sandbox, root).await {
        problems.push(problem);
    }
    if let Err(problem) = dlq_mending(&sandbox).await {
        problems.push(problem);
    }
    if let Err(problem) = budget_burst(&sandbox, root).await {
        problems.push(problem);
    }
    if let Err(problem) = two_environments(&sandbox).await {
        problems.push(problem);
    }

    record_lines_shown(&mut problems, (bold, dim, reset));

    let stats = sandbox.stats();
    println!(
        "\n{bold}Sandbox totals{reset}: {} Dataverse call(s) {:?}, {} trigger definition read(s), {} entity definition read(s), {} table request(s) for identity and rows, {} token request(s), {} secret fetch(es)",
        stats.calls(),
        stats.calls_by_status,
        stats.metadata_requests,
        stats.entity_requests,
        stats.row_requests,
        stats.token_requests,
        stats.secret_requests
    );
    println!("{bold}Trigger calls per UTC minute{reset} (CI-J ceiling D365_MAX_TRIGGERS_PER_MINUTE, 2,500 by default): {:?}", stats.trigger_calls_per_minute);
    if problems.is_empty() {
        println!("{green}{bold}Every sample event arrived as expected.{reset}");
    } else {
        for p in &problems {
            println!("{red}✗ {p}{reset}");
        }
        std::process::exit(1);
    }
}

/// The two-environment scene's secret, its UAT environment and application user.
const TWO_ENVIRONMENTS_SECRET: &str = "d365/relay-demo-environments";
const UAT_HOST: &str = "uat.api.crm.dynamics.com";
const UAT_CLIENT: &str = "22222222-2222-2222-2222-222222222222";

/// SPEC §23: one record raised in production and in its UAT copy. The secret
/// holds both; the mapping's `destinations` routes the order to both; the
/// sandbox serves each environment under its host
/// (`D365_DATAVERSE_BASE_URL=http://…/{org_url_host}`). The redelivery raises
/// in neither.
async fn two_environments(sandbox: &Sandbox) -> Result<(), String> {
    let Style { bold, dim, green, red, reset } = Style::for_stdout();
    println!(
        "\n{bold}── one record, two Dynamics environments{reset}  {dim}production (the secret's top level) and destinations.uat; D365_DATAVERSE_BASE_URL={}/{{org_url_host}}{reset}",
        sandbox.url()
    );
    let mapping = serde_json::json!({
        "events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id", "msdynmkt_ordertotal": "properties.revenue"}}},
        "destinations": {"default": {}, "uat": {"best_effort": true}}
    })
    .to_string();
    let base = format!("{}/{{org_url_host}}", sandbox.url());
    let settings = relay::sandbox_settings(
        &sandbox.url(),
        &[("D365_SECRET_ID", TWO_ENVIRONMENTS_SECRET), ("D365_MAPPING", mapping.as_str()), ("D365_DATAVERSE_BASE_URL", base.as_str())],
    );
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), options());
    println!("   {dim}mapping: \"destinations\": {{\"default\": {{}}, \"uat\": {{\"best_effort\": true}}}}{reset}");
    let order = serde_json::json!({"type": "track", "event": "Order Completed", "messageId": "two-environments-1",
        "userId": "5e1c0a7e-0003-4c0e-9a11-000000000003", "properties": {"order_id": "ORD-ENV-1", "revenue": 42.0}});
    let before = sandbox.signals().len();
    let answer = relay.handle(order.clone(), Instant::now() + Duration::from_secs(10)).await.map_err(|e| format!("two environments: invocation error: {e}"))?;
    println!("   1. the handler answered: {answer}");
    let received: Vec<_> = sandbox.signals().into_iter().skip(before).collect();
    for signal in &received {
        let colour = if signal.status == 204 { green } else { red };
        let environment = if signal.environment.is_empty() { "(no prefix)" } else { signal.environment.as_str() };
        println!("   {colour}{}{reset} POST /{bold}{environment}{reset}{}  {dim}as {}{reset}", signal.status, signal.path, signal.client_id);
        println!("{}", indent(&serde_json::to_string_pretty(&signal.body).unwrap(), 8));
    }
    let again = relay.handle(order, Instant::now() + Duration::from_secs(10)).await.map_err(|e| format!("two environments: invocation error: {e}"))?;
    let repeated = sandbox.signals().len() - before - received.len();
    println!("   2. delivered again: {again} {dim}— {repeated} new call(s): done in both, it raises in neither{reset}");
    let in_env = |host: &str| received.iter().filter(|s| s.environment == host && s.status == 204).count();
    let prod_host = "contoso.api.crm.dynamics.com";
    if in_env(prod_host) != 1 || in_env(UAT_HOST) != 1 || received.len() != 2 || repeated != 0 || answer["delivered"] != 1 || again["duplicates"] != 1 {
        return Err(format!(
            "two environments: expected one accepted call in {prod_host} and one in {UAT_HOST}, none on redelivery; got {received:?}, {repeated} repeated, answers {answer} then {again}"
        ));
    }
    Ok(())
}

/// Every relay of the demo writes its record lines (SPEC §22.1) here, not among the demo's own lines.
fn record_lines() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LINES: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LINES.get_or_init(Default::default)
}

fn options() -> relay::startup::Options {
    relay::startup::Options { record_lines: relay::startup::RecordLines::Buffer(record_lines().clone()), ..Default::default() }
}

/// A few of the record lines the relays wrote: what an operator finds in the
/// function's log group for one event (SPEC §22.1, the first saved query).
fn record_lines_shown(problems: &mut Vec<String>, (bold, dim, reset): (&str, &str, &str)) {
    let text = String::from_utf8(record_lines().lock().unwrap().clone()).unwrap_or_default();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    println!("\n{bold}Record lines{reset} (one JSON line per record in the function's log; {} written here):", lines.len());
    let mut shown = 0;
    for outcome in ["delivered", "rejected", "invalid", "failed", "dropped"] {
        if let Some(line) = lines.iter().find(|l| l["outcome"] == outcome && l["actions"].as_array().is_some_and(|a| !a.is_empty() || outcome == "dropped")) {
            println!("  {dim}{line}{reset}");
            shown += 1;
        }
    }
    if lines.iter().any(|l| l.to_string().contains("@example.com") && !l.to_string().contains("***@")) {
        problems.push("a record line holds an e-mail address in clear".into());
    }
    if shown == 0 {
        problems.push("no record line was written".into());
    }
}

/// The identity sample: the e-mail-only order reached Priya's contact id, and
/// the identify event updated Sam's contact with If-Match (SPEC §14).
fn identity_notes(received: &[d365_sandbox::Signal], rows: &[d365_sandbox::RowRequest], problems: &mut Vec<String>, (green, bold, reset): (&str, &str, &str)) {
    let priya = "5e1c0a7e-0003-4c0e-9a11-000000000003";
    let sam = "5e1c0a7e-0002-4c0e-9a11-000000000002";
    let order_ok = received.iter().any(|s| s.body["msdynmkt_profileid"] == priya && s.body["msdynmkt_signaluserauthid"] == priya);
    let patch_ok = rows
        .iter()
        .any(|r| r.method == "PATCH" && r.path == format!("contacts({sam})") && r.headers.get("if-match").map(String::as_str) == Some("*") && r.status == 204);
    if order_ok && patch_ok {
        println!("   {green}✓{reset} {bold}identity{reset}: priya@… → contact {priya}; identify cust-2 → PATCH contacts({sam})");
    } else {
        problems.push(format!("direct-identity.json: order resolved to the contact: {order_ok}; identify PATCHed the contact: {patch_ok}"));
    }
}

/// The rows sample (SPEC §19): the account upserted by its account number, the
/// opportunity by its order id, bound to the account and to Alex's contact
/// (found by e-mail), then the order's trigger.
fn rows_notes(
    sandbox: &Sandbox,
    received: &[d365_sandbox::Signal],
    rows: &[d365_sandbox::RowRequest],
    problems: &mut Vec<String>,
    (green, bold, reset): (&str, &str, &str),
) {
    let alex = "5e1c0a7e-0001-4c0e-9a11-000000000001";
    let writes: Vec<String> = rows.iter().filter(|r| r.method != "GET").map(|r| format!("{} {} {}", r.status, r.method, r.path)).collect();
    let expected = ["204 PATCH accounts(accountnumber='ACC-1001')", "204 PATCH opportunities(new_orderid='ORD-60001')"];
    let account = sandbox.rows("accounts").into_iter().find(|a| a["accountnumber"] == "ACC-1001");
    let opportunity = sandbox.rows("opportunities").into_iter().find(|o| o["new_orderid"] == "ORD-60001");
    let bound = match (&account, &opportunity) {
        (Some(a), Some(o)) => o["_parentaccountid_value"] == a["accountid"] && o["_parentcontactid_value"] == alex,
        _ => false,
    };
    let trigger_last = match (received.first(), rows.last()) {
        (Some(signal), Some(row)) => signal.received_at >= row.received_at,
        _ => false,
    };
    if writes == expected && bound && trigger_last {
        println!("   {green}✓{reset} {bold}rows{reset}: account ACC-1001 upserted; opportunity ORD-60001 bound to it and to contact {alex}; then the trigger");
    } else {
        problems.push(format!(
            "direct-rows.json: writes {writes:?}, opportunity bound to the account and the contact: {bound}, trigger after the rows: {trigger_last}"
        ));
    }
}

/// One webhook in enqueue mode (SPEC §15), end to end, with the sandbox's SQS
/// standing in for Amazon SQS: the sender gets 202 at once, the events wait on
/// the queue, and the queue path (the same function, invoked by Lambda's SQS
/// event source) raises the triggers.
async fn enqueue_mode(sandbox: &Sandbox, root: &str, webhook_secret: &[u8]) -> Result<(), String> {
    let Style { bold, dim, green, red, reset } = Style::for_stdout();
    let file = "apigw-http.json";
    println!("\n{bold}── enqueue mode: events/{file}{reset}  {dim}D365_WEBHOOK_MODE=enqueue; the sandbox's SQS (SendMessageBatch, ReceiveMessage) stands in for Amazon SQS{reset}");
    let queue_url = sandbox.queue_url("relay-events");
    let mapping = format!("{root}/events/mapping.json");
    let settings =
        relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", &mapping), ("D365_WEBHOOK_MODE", "enqueue"), ("D365_QUEUE_URL", &queue_url)]);
    let sqs = relay::enqueue::sqs_client_for_endpoint(&sandbox.url());
    // Another deployment of the function: its own execution environment and idempotency memory.
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()).with_sqs(sqs.clone()), options());

    let mut payload: Value = serde_json::from_str(&std::fs::read_to_string(format!("{root}/events/{file}")).expect("sample event")).expect("sample is JSON");
    relay::webhook::resign_event(&mut payload, webhook_secret, chrono::Utc::now().timestamp_millis());
    let before = sandbox.signals().len();
    let started = Instant::now();
    let response = relay.handle(payload, Instant::now() + Duration::from_secs(30)).await.map_err(|e| format!("enqueue mode: invocation error: {e}"))?;
    let elapsed = started.elapsed();
    let status = response["statusCode"].clone();
    let body: Value = response["body"].as_str().and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    println!(
        "   1. the webhook answered in {} ms: HTTP {status}  {dim}(its first secret fetch included; nothing sent to Dynamics yet){reset}",
        elapsed.as_millis()
    );
    println!("{}", indent(&serde_json::to_string_pretty(&body).unwrap(), 6));
    let inline = sandbox.signals().len() - before;
    if status != 202 || inline != 0 {
        return Err(format!("enqueue mode: expected 202 and no Dataverse call, got {status} and {inline} call(s)"));
    }

    let mut records = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|e| format!("enqueue mode: ReceiveMessage failed: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            records.push(serde_json::json!({
                "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body, "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:relay-events", "awsRegion": "us-east-1",
            }));
        }
    }
    println!("   2. the queue held {} message(s):", records.len());
    for r in &records {
        println!("      {dim}{}{reset}", r["body"].as_str().unwrap_or(""));
    }

    let response = relay
        .handle(serde_json::json!({ "Records": records }), Instant::now() + Duration::from_secs(30))
        .await
        .map_err(|e| format!("enqueue mode: SQS invocation error: {e}"))?;
    println!("   3. Lambda's SQS event source invoked the function with them: {response}");
    let received: Vec<_> = sandbox.signals().into_iter().skip(before).collect();
    println!("   Dynamics received {} call(s):", received.len());
    for signal in &received {
        let colour = if signal.status == 204 { green } else { red };
        println!("   {colour}{}{reset} POST /api/data/v9.2/{bold}{}{reset}  {dim}at {}{reset}", signal.status, signal.trigger, signal.received_at);
    }
    let failures = response["batchItemFailures"].as_array().map_or(usize::MAX, Vec::len);
    if records.len() != 2 || received.len() != 2 || received.iter().any(|s| s.status != 204) || failures != 0 {
        return Err(format!(
            "enqueue mode: expected 2 messages and 2 accepted calls, got {} message(s), {} call(s), {failures} batch item failure(s)",
            records.len(),
            received.len()
        ));
    }
    Ok(())
}

/// SPEC §18: a throttled batch waits in the queue (its records made visible
/// when the 429's pause ends), an invalid event is parked in the DLQ at once
/// with its reasons, and the next receive drains the rest.
async fn backlog(sandbox: &Sandbox, root: &str) -> Result<(), String> {
    let Style { bold, dim, green, red, reset } = Style::for_stdout();
    println!("\n{bold}── a throttled SQS batch and an invalid event{reset}  {dim}backoff by visibility and the DLQ with reasons; the sandbox's SQS stands in for Amazon SQS{reset}");
    let dlq = sandbox.queue_url("relay-events-dlq");
    let mapping = format!("{root}/events/mapping.json");
    let settings =
        relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", &mapping), ("D365_DEAD_LETTER_QUEUE_URL", &dlq), ("D365_MAX_IN_FLIGHT", "1")]);
    let relay = relay::startup::relay(
        settings,
        relay::startup::Clients::for_endpoint(&sandbox.url()).with_sqs(relay::enqueue::sqs_client_for_endpoint(&sandbox.url())),
        options(),
    );
    let order = |id: &str| {
        serde_json::json!({"type": "track", "event": "Order Completed", "messageId": id, "userId": "5e1c0a7e-0003-4c0e-9a11-000000000003",
            "properties": {"order_id": id, "revenue": 42.0, "currency": "EUR"}})
    };
    let invalid = serde_json::json!({"type": "track", "event": "Order Completed", "messageId": "backlog-no-user", "properties": {"order_id": "X"}});
    let record = |i: usize, body: &Value, receives: u32| {
        serde_json::json!({
            "messageId": format!("backlog-{i}"), "receiptHandle": format!("rh-backlog-{i}-{receives}"), "body": body.to_string(),
            "attributes": {"ApproximateReceiveCount": receives.to_string(), "ApproximateFirstReceiveTimestamp": chrono::Utc::now().timestamp_millis().to_string()},
            "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:relay-events", "awsRegion": "us-east-1",
        })
    };
    let bodies = [order("backlog-order-1"), order("backlog-order-2"), invalid];
    let before = sandbox.signals().len();
    // Dataverse throttles the first call with Retry-After 2 s, longer than this invocation has left.
    sandbox.set_faults(d365_sandbox::Faults { script: vec![429], retry_after_secs: Some(2), ..Default::default() });
    let batch = serde_json::json!({"Records": bodies.iter().enumerate().map(|(i, b)| record(i, b, 1)).collect::<Vec<_>>()});
    let answer = relay.handle(batch, Instant::now() + Duration::from_millis(1_500)).await.map_err(|e| format!("backlog: invocation error: {e}"))?;
    sandbox.set_faults(d365_sandbox::Faults::default());
    println!("   1. the handler answered: {answer}");
    for change in sandbox.visibility_changes() {
        println!(
            "      {dim}ChangeMessageVisibility {} → visible again in {} s (the 429's Retry-After, + up to 20 %){reset}",
            change.receipt_handle, change.visibility_timeout
        );
    }
    let parked = sandbox.queued("relay-events-dlq");
    for message in &parked {
        println!("   2. parked in the DLQ at once, body unchanged: {dim}{}{reset}", message.body);
        for (name, value) in &message.attributes {
            println!("      {dim}{name}{reset} = {value}");
        }
    }
    let failed: Vec<String> =
        answer["batchItemFailures"].as_array().into_iter().flatten().filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string)).collect();
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let again = serde_json::json!({"Records": [record(0, &bodies[0], 2), record(1, &bodies[1], 2)]});
    let answer = relay.handle(again, Instant::now() + Duration::from_secs(10)).await.map_err(|e| format!("backlog: invocation error: {e}"))?;
    println!("   3. received again once the pause ended: {answer}");
    let received: Vec<_> = sandbox.signals().into_iter().skip(before).collect();
    for signal in &received {
        let colour = if signal.status == 204 { green } else { red };
        println!("   {colour}{}{reset} POST /api/data/v9.2/{bold}{}{reset}", signal.status, signal.trigger);
    }
    let accepted = received.iter().filter(|s| s.status == 204).count();
    let changes = sandbox.visibility_changes();
    let outcome = parked.first().and_then(|m| m.attributes.get("d365-outcome")).map(String::as_str);
    let drained = answer["batchItemFailures"].as_array().is_some_and(Vec::is_empty);
    if failed != ["backlog-0", "backlog-1"]
        || changes.len() != 2
        || changes.iter().any(|c| !(2..=3).contains(&c.visibility_timeout))
        || parked.len() != 1
        || outcome != Some("invalid")
        || accepted != 2
        || !drained
    {
        return Err(format!(
            "backlog: expected 2 records backed off 2–3 s, 1 parked as invalid, then 2 delivered; got failures {failed:?}, changes {changes:?}, {} parked ({outcome:?}), {accepted} accepted",
            parked.len()
        ));
    }
    Ok(())
}

/// SPEC §22.3: the DLQ mended by reason. Beside the invalid record the
/// backlog scene parked, an order SQS moved there during an outage (no `d365-`
/// attribute: outcome `moved`); `dlq summary` counts both, `dlq replay` sends
/// the order back to the events queue and leaves the invalid one.
async fn dlq_mending(sandbox: &Sandbox) -> Result<(), String> {
    use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
    let Style { bold, dim, reset, .. } = Style::for_stdout();
    println!("\n{bold}── mending the DLQ{reset}  {dim}d365-trigger-relay dlq summary, then dlq replay: the good events back, the bad ones left{reset}");
    let client = relay::enqueue::sqs_client_for_endpoint(&sandbox.url());
    let mut urls = Vec::new();
    for name in ["mend-dlq", "mend-events"] {
        let created = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, "60")
            .send()
            .await
            .map_err(|e| format!("dlq: the sandbox's SQS: {e}"))?;
        urls.push(created.queue_url().unwrap_or_default().to_string());
    }
    let (dlq, events) = (urls[0].clone(), urls[1].clone());
    // The record the backlog scene parked (with its d365- reasons), and an order SQS moved there during an outage.
    let mut entries = Vec::new();
    for (i, parked) in sandbox.queued("relay-events-dlq").into_iter().enumerate() {
        let mut entry = SendMessageBatchRequestEntry::builder().id(format!("p{i}")).message_body(parked.body);
        for (name, value) in parked.attributes {
            entry =
                entry.message_attributes(name, MessageAttributeValue::builder().data_type("String").string_value(value).build().map_err(|e| e.to_string())?);
        }
        entries.push(entry.build().map_err(|e| e.to_string())?);
    }
    let moved = serde_json::json!({"type": "track", "event": "Order Completed", "messageId": "dlq-order-1", "userId": "5e1c0a7e-0003-4c0e-9a11-000000000003",
        "properties": {"order_id": "ORD-10231", "revenue": 42.0, "currency": "EUR"}});
    entries.push(SendMessageBatchRequestEntry::builder().id("moved").message_body(moved.to_string()).build().map_err(|e| e.to_string())?);
    client.send_message_batch().queue_url(&dlq).set_entries(Some(entries)).send().await.map_err(|e| format!("dlq: the sandbox's SQS: {e}"))?;
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (client, dlq, events) = (client.clone(), dlq.clone(), events.clone());
        async move {
            let options = relay::dlq::parse(&args).map_err(|e| format!("dlq: {e}"))?;
            let target = options.to.as_ref().map(|_| relay::dlq::queue::Target::new(client.clone(), events.clone()));
            let interrupt = tokio::sync::watch::channel(false).1;
            let shown = args.join(" ").replace(&events, "…/mend-events");
            println!("   {dim}$ d365-trigger-relay dlq {shown} --queue …/mend-dlq{reset}");
            Ok::<i32, String>(relay::dlq::run(&options, relay::dlq::queue::DeadLetterQueue::new(client, dlq), target.as_ref(), None, interrupt).await)
        }
    };
    let summary = run(&["summary"]).await?;
    let replay = run(&["replay", "--to", &events]).await?;
    let received = |url: String| {
        let client = client.clone();
        async move {
            let answer = client.receive_message().queue_url(url).max_number_of_messages(10).message_attribute_names("All").send().await;
            answer.map(|a| a.messages().to_vec()).unwrap_or_default()
        }
    };
    let sent = received(events).await;
    let left = received(dlq).await;
    let left_outcomes: Vec<String> =
        left.iter().filter_map(|m| m.message_attributes().and_then(|a| a.get("d365-outcome")).and_then(|v| v.string_value()).map(str::to_string)).collect();
    if summary != 0 || replay != 0 || sent.len() != 1 || !sent[0].body().unwrap_or_default().contains("dlq-order-1") || left_outcomes != ["invalid"] {
        return Err(format!(
            "dlq: expected the moved order replayed and the invalid record left; exit {summary}/{replay}, sent {}, left {left_outcomes:?}",
            sent.len()
        ));
    }
    println!("   the order is back in the events queue, body unchanged; the invalid record waits in the DLQ for a mapping fix");
    Ok(())
}

/// SPEC §17.2: a burst of 60 orders against a request budget of 20 per 2 s
/// window for the application user (Dataverse's 6,000 per 5 minutes, scaled):
/// a budget 429 pauses the calls until the window has room (several in a row
/// would also teach a pace), records that cannot start in time are held back
/// (here sent again at once, as the queue would after their backoff), and the
/// burst drains at the budget's rate.
async fn budget_burst(sandbox: &Sandbox, root: &str) -> Result<(), String> {
    let Style { bold, dim, green, red, reset } = Style::for_stdout();
    const EVENTS: usize = 60;
    const BUDGET: usize = 20;
    const WINDOW_SECS: u64 = 2;
    let budget_rate = BUDGET as f64 / WINDOW_SECS as f64;
    println!(
        "\n{bold}── a burst of {EVENTS} orders against a budget of {BUDGET} requests per {WINDOW_SECS} s{reset}  {dim}429 0x80072322 pauses the application user until the window has room; a spent window that answers several calls 429 in a row also teaches a pace{reset}"
    );
    let mapping = format!("{root}/events/mapping.json");
    let window = WINDOW_SECS.to_string();
    let settings = relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", &mapping), ("D365_BUDGET_WINDOW_SECONDS", &window)]);
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), options());
    let before = sandbox.signals().len();
    sandbox.set_faults(d365_sandbox::Faults { latency_ms: 20, budget_requests: Some(BUDGET), budget_window_secs: Some(WINDOW_SECS), ..Default::default() });
    let mut pending: Vec<Value> = (0..EVENTS)
        .map(|i| {
            serde_json::json!({"type": "track", "event": "Order Completed", "messageId": format!("burst-{i}"), "userId": format!("00000000-0000-4000-8000-{i:012}"),
                "properties": {"order_id": format!("BURST-{i}"), "revenue": 10.5, "currency": "GBP"}})
        })
        .collect();
    let started = Instant::now();
    let (mut invocations, mut held_back) = (0, 0);
    while !pending.is_empty() && started.elapsed() < Duration::from_secs(60) {
        let batch: Vec<Value> = pending.drain(..pending.len().min(10)).collect();
        let answer = relay
            .handle(serde_json::json!({ "batch": batch.clone() }), Instant::now() + Duration::from_secs(3))
            .await
            .map_err(|e| format!("budget burst: invocation error: {e}"))?;
        invocations += 1;
        let failed: Vec<usize> = answer["failed"].as_array().into_iter().flatten().filter_map(|f| f["index"].as_u64()).map(|i| i as usize).collect();
        held_back += failed.len();
        pending.extend(failed.into_iter().map(|i| batch[i].clone()));
        if !pending.is_empty() && answer["delivered"] == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let elapsed = started.elapsed();
    sandbox.set_faults(d365_sandbox::Faults::default());
    let received: Vec<_> = sandbox.signals().into_iter().skip(before).collect();
    let mut seconds: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for signal in &received {
        let second = seconds.entry(signal.received_at.get(..19).unwrap_or_default().to_string()).or_default();
        if signal.status == 204 {
            second.0 += 1;
        } else {
            second.1 += 1;
        }
    }
    for (second, (accepted, throttled)) in &seconds {
        println!("   {dim}{second}{reset}  {green}{accepted:>3} × 204{reset}  {red}{throttled:>3} × 429{reset}");
    }
    let accepted = received.iter().filter(|s| s.status == 204).count();
    let throttled = received.iter().filter(|s| s.status == 429).count();
    let mut delivered: Vec<&str> = received.iter().filter(|s| s.status == 204).filter_map(|s| s.body["msdynmkt_orderid"].as_str()).collect();
    delivered.sort_unstable();
    delivered.dedup();
    let ratio = accepted as f64 / elapsed.as_secs_f64() / budget_rate;
    let pace = match relay.pacer().learned_rate() {
        Some(rate) => format!("paced at {rate:.1} calls a second"),
        None => "no pace learned: one 429 at a time, the pause was the remedy".to_string(),
    };
    println!(
        "   {accepted} accepted in {:.1} s over {invocations} invocations ({held_back} records held back and sent again): {bold}{ratio:.2}{reset} × the budget's {budget_rate:.0} a second; {throttled} 429s ({:.1} % of the answers); {pace}",
        elapsed.as_secs_f64(),
        100.0 * throttled as f64 / received.len().max(1) as f64,
    );
    if accepted != EVENTS || delivered.len() != EVENTS || ratio < 0.75 {
        return Err(format!(
            "budget burst: expected {EVENTS} orders delivered once each at ≥ 0.75 × the budget's rate; got {accepted} accepted, {} distinct, {ratio:.2}",
            delivered.len()
        ));
    }
    Ok(())
}

/// `d365-trigger-relay send events/backfill.ndjson --report …` (SPEC §16), in
/// process: the relay's own send code, with a fresh relay as a shell would have.
async fn backfill(sandbox: &Sandbox, root: &str) -> Result<(), String> {
    let Style { bold, dim, green, red, reset } = Style::for_stdout();
    let file = "backfill.ndjson";
    println!("\n{bold}── send events/{file}{reset}  {dim}the backfill command: a file of events (an SNS and an EventBridge envelope, a blank line, a line cut short, an unmapped page, a duplicate, a record missing a required attribute){reset}");
    let mapping = format!("{root}/events/mapping.json");
    let settings = relay::sandbox_settings(&sandbox.url(), &[("D365_MAPPING_FILE", &mapping)]);
    let relay = std::sync::Arc::new(relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), options()));
    let input = std::fs::File::open(format!("{root}/events/{file}")).map_err(|e| format!("send: {e}"))?;
    let report_path = format!("{}/backfill-report.ndjson", std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target")));
    let report = std::fs::File::create(&report_path).map_err(|e| format!("send: {report_path}: {e}"))?;
    let before = sandbox.signals().len();
    let (_never, interrupt) = tokio::sync::watch::channel(false);
    let items = relay::send::input::spawn_reader(Box::new(input), 64);
    let summary = relay::send::run(relay, items, None, &Default::default(), Box::new(report), interrupt).await;
    let code = summary.finish(&report_path);
    for line in std::fs::read_to_string(&report_path).unwrap_or_default().lines() {
        let colour = if line.contains("\"outcome\":\"delivered\"") { green } else { red };
        println!("   {colour}{line}{reset}");
    }
    let accepted = sandbox.signals().into_iter().skip(before).filter(|s| s.status == 204).count();
    let counts = &summary.progress.counts;
    println!("   Dynamics accepted {accepted} call(s); exit status {code} (1: two lines are invalid, and say so with their numbers)");
    if (counts.delivered, counts.duplicate, counts.dropped, counts.invalid, accepted, code) != (7, 1, 1, 2, 7, 1) {
        return Err(format!(
            "send {file}: expected 7 delivered, 1 duplicate, 1 dropped, 2 invalid and exit 1; got {counts:?}, {accepted} accepted, exit {code}"
        ));
    }
    Ok(())
}

/// What the trigger schema (SPEC §13) changed in the schema sample: one coerced
/// value and one omitted parameter, shown and checked.
fn schema_notes(received: &[d365_sandbox::Signal], problems: &mut Vec<String>, (green, bold, reset): (&str, &str, &str)) {
    let cart = received.iter().find(|s| s.trigger == "msdynmkt_CartAbandoned").map(|s| &s.body);
    match cart {
        Some(body) if body["msdynmkt_carttotal"] == serde_json::json!(129.0) && body.get("contactpoint_email").is_none() => {
            println!("   {green}coerced{reset}: msdynmkt_carttotal \"129.00\" (a string) → {bold}129.0{reset} (the trigger's Decimal)");
            println!(
                "   {green}omitted{reset}: {bold}contactpoint_email{reset} (msdynmkt_CartAbandoned is bound to contacts: it has no contact-point parameters)"
            );
        }
        _ => problems.push("direct-schema.json: msdynmkt_CartAbandoned did not receive a coerced total without contactpoint_email".into()),
    }
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}
