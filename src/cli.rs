//! The same binary's shell commands (SPEC §13, §16): run outside Lambda (no
//! `AWS_LAMBDA_RUNTIME_API`) with the function's settings. Logs go to standard
//! error; standard output carries only the report. Exit status 0 (nothing
//! wrong), 1 (problems found), 2 (usage or configuration error).
//!
//! A command is one entry of [`COMMANDS`] and one arm of [`run`].

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::command_line::{settings_with, usage_error};
use crate::config::{ConfigError, Settings};
use crate::schema;
use crate::stages::triggers::Schemas;
use crate::stages::Destination;

pub struct Command {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
}

pub const COMMANDS: &[Command] = &[
    Command {
        name: "check",
        usage: "check [--event FILE] [--json] | check --mapping FILE [--event FILE]",
        summary: "read the settings and the secret, get a token, read every trigger the mapping can raise and report what to fix; \
with --event, the exact body that event would raise (nothing is sent); \
with --mapping, the document alone, offline: every problem as `JSON-pointer: what is wrong` (exit 0 clean, 1 mistakes, 2 unreadable)",
    },
    Command {
        name: "schema",
        usage: "schema TRIGGER [--json] | schema --entity SET [--json]",
        summary: "print TRIGGER's parameters (type, required) and a starter mapping-document entry for it; \
with --entity, a table's columns, keys and navigation properties and a starter rows entry (SPEC §19)",
    },
    Command {
        name: "send",
        usage: "send [FILE|-] [--report FILE] [--resume FILE] [--dry-run] [--rate N] [--max-in-flight N]",
        summary: "send a file of events (NDJSON, or one JSON array; - or none: standard input) through the function's mapping, schema, \
idempotency and delivery, without a deadline; one report line per record to --report FILE (else standard output); \
--resume FILE skips the lines a previous report lists as delivered or duplicate and appends to it; \
--dry-run sends nothing and reports each body; --rate N caps starts per second",
    },
    Command {
        name: "dlq",
        usage: "dlq summary|list|replay|export [--queue URL] [FILTERS] [--json] [--to URL] [--dry-run] [--rate N] [--out FILE]",
        summary: "a queue of parked records (--queue, else D365_DEAD_LETTER_QUEUE_URL), through SQS alone: summary counts by outcome, code, \
destination, event and age; list prints one line per message (--json: one object); replay --to URL sends each to the events queue and \
deletes it once SQS confirms (every outcome but invalid unless --outcome says; --dry-run, --rate N messages a second); export --out FILE \
writes NDJSON for send and leaves them. FILTERS: --outcome failed|expired|rejected|invalid|moved, --code, --status, --destination, \
--event, --message-id, --older-than 1h, --newer-than 30m, --limit N (values of one filter: alternatives; filters: all apply)",
    },
];

/// How long a command may take in all.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// Whether the process was started as a shell command rather than by Lambda:
/// `--help` anywhere, or arguments without `AWS_LAMBDA_RUNTIME_API`.
pub fn wanted(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h") || (!args.is_empty() && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none())
}

pub fn help() -> String {
    let mut text = String::from(
        "d365-trigger-relay — raises Dynamics 365 Customer Insights – Journeys custom triggers.\n\n\
Inside AWS Lambda (AWS_LAMBDA_RUNTIME_API set) it serves invocations. From a shell, with the function's\n\
settings in the environment (D365_SECRET_ID or D365_SECRET_FILE, D365_MAPPING or D365_MAPPING_FILE, …):\n\n",
    );
    for c in COMMANDS {
        text.push_str(&format!("  d365-trigger-relay {}\n      {}\n", c.usage, c.summary));
    }
    text.push_str(
        "\nD365_SECRET_FILE=path reads the secret's JSON from a file instead of Secrets Manager.\n\
Logs go to standard error, the report to standard output. Exit status: 0 nothing wrong, 1 problems found,\n\
2 usage or configuration error, 130 send interrupted (Ctrl-C).\n",
    );
    text
}

/// Runs one command; returns the exit status.
pub async fn run(args: Vec<String>) -> i32 {
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::stderr);
    let Some((command, rest)) = args.split_first() else {
        print!("{}", help());
        return 0;
    };
    if matches!(command.as_str(), "help" | "--help" | "-h") {
        print!("{}", help());
        return 0;
    }
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        return match COMMANDS.iter().find(|c| c.name == command) {
            Some(c) => {
                println!("usage: d365-trigger-relay {}\n\n{}", c.usage, c.summary);
                0
            }
            None => usage_error(&format!("unknown command '{command}'")),
        };
    }
    match command.as_str() {
        "check" => check(rest).await,
        "schema" => schema_command(rest).await,
        "send" => crate::send::command(rest).await,
        "dlq" => crate::dlq::command(rest).await,
        other => usage_error(&format!("unknown command '{other}'")),
    }
}

/// Flags of the form `--name` and `--name VALUE`, and positional arguments.
struct Parsed {
    json: bool,
    event: Option<String>,
    positional: Vec<String>,
}

fn parse(args: &[String], allowed: &[&str]) -> Result<Parsed, String> {
    let mut parsed = Parsed { json: false, event: None, positional: Vec::new() };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "--json" if allowed.contains(&arg) => parsed.json = true,
            "--event" if allowed.contains(&arg) => {
                i += 1;
                parsed.event = Some(args.get(i).ok_or("--event needs a FILE")?.clone());
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            value => parsed.positional.push(value.to_string()),
        }
        i += 1;
    }
    Ok(parsed)
}

/// Settings from the environment; `D365_SECRET_FILE` stands in for `D365_SECRET_ID`.
fn settings() -> (Result<Settings, ConfigError>, Option<String>) {
    settings_with(&[])
}

/// The Dynamics adapter as the function builds it (or reading the secret from a file).
/// The settings and the Dynamics adapter a `schema` command reads with, or its exit status.
async fn reader() -> Result<(Settings, Destination), i32> {
    let (settings, secret_file) = settings();
    let settings = settings.map_err(|e| usage_error(&format!("configuration error: {e}")))?;
    let destination = destination(&settings, secret_file).await;
    Ok((settings, destination))
}

async fn destination(settings: &Settings, secret_file: Option<String>) -> Destination {
    let aws = crate::aws_config_from_env().await;
    let destination =
        crate::startup::destination(settings, aws_sdk_secretsmanager::Client::new(&aws), crate::dynamics::http_client(), secret_file.map(Into::into));
    destination.begin_invocation();
    destination
}

async fn check(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "--mapping") {
        return crate::lint::command(args);
    }
    let parsed = match parse(args, &["--json", "--event"]) {
        Ok(p) if p.positional.is_empty() => p,
        Ok(p) => return usage_error(&format!("check takes no argument '{}'", p.positional[0])),
        Err(e) => return usage_error(&e),
    };
    let event: Option<Value> = match &parsed.event {
        None => None,
        Some(path) => match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(event @ Value::Object(_)) => Some(event),
            Ok(_) => return usage_error(&format!("--event {path}: not one event (a JSON object)")),
            Err(e) => return usage_error(&format!("--event {path}: {e}")),
        },
    };
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let (settings, secret_file) = settings();
    let report = match &settings {
        Err(error) => crate::check::run(Err(error), event.as_ref(), deadline).await,
        Ok(settings) => {
            let destination = destination(settings, secret_file).await;
            let schemas = Schemas::new(settings.schema_ttl);
            crate::check::run(Ok((settings, &destination, &schemas)), event.as_ref(), deadline).await
        }
    };
    if parsed.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json()).expect("a report serialises"));
    } else {
        print!("{}", report.to_text());
        if let Some(notice) = settings.as_ref().ok().and_then(|s| crate::lint::preset_notice(&s.mapping)) {
            print!("{notice}");
        }
    }
    report.exit_code()
}

async fn schema_command(args: &[String]) -> i32 {
    if let Some(at) = args.iter().position(|a| a == "--entity") {
        return schema_entity_command(args, at).await;
    }
    let parsed = match parse(args, &["--json"]) {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let [trigger] = parsed.positional.as_slice() else {
        return usage_error("usage: d365-trigger-relay schema TRIGGER [--json]");
    };
    if let Err(e) = crate::config::check_name(trigger) {
        return usage_error(&format!("TRIGGER: {e}"));
    }
    let (settings, destination) = match reader().await {
        Ok(wired) => wired,
        Err(status) => return status,
    };
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let definition = match Schemas::new(settings.schema_ttl).read(&destination, trigger, deadline).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            eprintln!("d365-trigger-relay: no custom API named '{trigger}' in this environment (names are case-sensitive; is the trigger published?)");
            return 1;
        }
        Err(crate::outcome::DeliveryError::Config(e)) => return usage_error(&format!("configuration error: {e}")),
        Err(e) => {
            eprintln!("d365-trigger-relay: cannot read {trigger}'s definition: {e}");
            return 1;
        }
    };
    let (event, entry) = schema::starter_entry(&definition);
    if parsed.json {
        let report = json!({ "trigger": trigger, "parameters": definition.describe(), "events": { event: entry } });
        println!("{}", serde_json::to_string_pretty(&report).expect("JSON serialises"));
        return 0;
    }
    println!("{trigger}: {} parameters", definition.parameters.len());
    for p in definition.parameters.values() {
        let kind = match &p.entity {
            Some(entity) => format!("{} → {entity}", p.kind.name()),
            None => p.kind.name(),
        };
        let filled = if schema::is_system_field(&p.name) { "  (filled by the relay)" } else { "" };
        println!("  {:<40} {:<24} {}{filled}", p.name, kind, if p.required { "required" } else { "optional" });
    }
    println!("\nA mapping-document entry (put it under \"events\"; name the event as your producer does and check each path):");
    println!("{}", serde_json::to_string_pretty(&json!({ event: entry })).expect("JSON serialises"));
    0
}

/// `schema --entity SET [--json]` (SPEC §19): the table's definition and a starter `rows` entry.
async fn schema_entity_command(args: &[String], at: usize) -> i32 {
    let Some(entity) = args.get(at + 1).filter(|e| !e.starts_with("--")) else {
        return usage_error("usage: d365-trigger-relay schema --entity SET [--json]");
    };
    let rest: Vec<String> = args.iter().enumerate().filter(|(i, _)| *i != at && *i != at + 1).map(|(_, a)| a.clone()).collect();
    let parsed = match parse(&rest, &["--json"]) {
        Ok(p) if p.positional.is_empty() => p,
        Ok(_) => return usage_error("usage: d365-trigger-relay schema --entity SET [--json]"),
        Err(e) => return usage_error(&e),
    };
    let (settings, destination) = match reader().await {
        Ok(wired) => wired,
        Err(status) => return status,
    };
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let definition = match crate::stages::entities::Entities::new(settings.schema_ttl).read(&destination, entity, deadline).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            eprintln!("d365-trigger-relay: no entity set named '{entity}' in this environment (use the plural set name: accounts, opportunities)");
            return 1;
        }
        Err(crate::outcome::DeliveryError::Config(e)) => return usage_error(&format!("configuration error: {e}")),
        Err(e) => {
            eprintln!("d365-trigger-relay: cannot read {entity}'s definition: {e}");
            return 1;
        }
    };
    let entry = crate::check::rows::starter_row(&definition);
    if parsed.json {
        let keys: Vec<Value> = definition.keys.iter().map(|k| json!({"columns": k.columns, "status": k.status})).collect();
        let report = json!({"entity": entity, "logical_name": definition.logical_name, "id": definition.primary_id, "columns": definition.columns,
            "keys": keys, "navigation": definition.navigation, "rows": [entry]});
        println!("{}", serde_json::to_string_pretty(&report).expect("JSON serialises"));
        return 0;
    }
    println!("{entity} ({}): {} columns, id {}", definition.logical_name, definition.columns.len(), definition.primary_id);
    for (column, kind) in &definition.columns {
        println!("  {column:<40} {kind}");
    }
    for key in &definition.keys {
        println!("  alternate key {} ({})", key.columns.join(", "), key.status);
    }
    if definition.keys.is_empty() {
        println!("  no alternate key: key rows by the id, or define one (README \"Writing rows\")");
    }
    for (property, target) in &definition.navigation {
        println!("  bind {property:<35} → {target}");
    }
    println!("\nA starter rows entry (put it under an event's \"rows\"; check each path, drop what you do not write):");
    println!("{}", serde_json::to_string_pretty(&json!({ "rows": [entry] })).expect("JSON serialises"));
    0
}
