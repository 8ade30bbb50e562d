//! `d365-trigger-relay check --mapping FILE [--event FILE]` (SPEC §21.2): the
//! real binary, with no setting in its environment (no secret, no network):
//! every problem as `JSON-pointer: what is wrong`, exit 0 / 1 / 2.

use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::ROOT;

/// The binary with an empty environment but PATH: nothing but the arguments.
fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_d365-trigger-relay"))
        .arg("check")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(ROOT)
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary file holding `text`, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("relay-check-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_shipped_mappings_have_no_mistake() {
    // A mistake in config/mapping.json (what `sam deploy` ships) fails `make test` here, by its pointer.
    for file in ["config/mapping.json", "events/mapping.json"] {
        let out = check(&["--mapping", file]);
        assert_eq!(out.status.code(), Some(0), "{file}:\n{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(stdout(&out).starts_with(&format!("{file}: a valid mapping document (")), "{}", stdout(&out));
    }
}

#[test]
fn a_mistake_is_one_line_naming_its_json_pointer_and_exits_1() {
    let doc = json!({"events": {"Order Completed": {"rows": [
        {"entity": "accounts", "key": {"accountnumber": "properties.account_id"}},
        {"entity": "opportunities", "key": {"new_orderid": "properties.order_id"}, "mode": "upsrt"}
    ]}}});
    let file = TempFile::new("upsrt.json", &doc.to_string());
    let out = check(&["--mapping", file.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "/events/Order Completed/rows/1/mode: unknown mode \"upsrt\" (upsert, update, create)\n");
}

#[test]
fn every_problem_is_listed() {
    let doc = r#"{"trigger": "msdynmkt-x", "events": {"A": {"attributes": {"x": "a..b"}, "required": ["y"]}}, "identity": {}}"#;
    let file = TempFile::new("several.json", doc);
    let out = check(&["--mapping", file.path()]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let pointers: Vec<&str> = lines.iter().map(|l| l.split(": ").next().unwrap()).collect();
    assert_eq!(pointers, ["/trigger", "/events/A/attributes/x", "/events/A/required/0", "/identity"], "{lines:#?}");
}

#[test]
fn not_json_is_a_mistake_with_its_line_and_column() {
    let file = TempFile::new("broken.json", "{\n  \"events\": {\n    \"A\": {,}\n  }\n}\n");
    let out = check(&["--mapping", file.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with(": not JSON: ") && stdout(&out).contains("line 3 column"), "{}", stdout(&out));
}

#[test]
fn an_unreadable_file_or_a_misuse_exits_2() {
    for args in [
        vec!["--mapping", "/nonexistent/mapping.json"],
        vec!["--mapping"],
        vec!["--mapping", "config/mapping.json", "--json"],
        vec!["--mapping", "config/mapping.json", "--event", "/nonexistent/event.json"],
        vec!["--mapping", "config/mapping.json", "--event", "events/backfill.ndjson"],
    ] {
        let out = check(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: nothing on standard output");
    }
}

#[test]
fn with_an_event_it_shows_what_the_event_becomes_without_reading_dataverse() {
    let out = check(&["--mapping", "config/mapping.json", "--event", "events/direct.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    for wanted in [
        "event \"Order Completed\":",
        "  raises msdynmkt_OrderCompleted",
        "    msdynmkt_orderid = \"ORD-10231\"",
        "    contactpoint_email = \"jane@example.com\"",
    ] {
        assert!(text.contains(wanted), "{wanted} in:\n{text}");
    }

    let rows = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(format!("{ROOT}/events/direct-rows.json")).unwrap()).unwrap();
    let event = TempFile::new("order-placed.json", &rows["batch"][0].to_string());
    let out = check(&["--mapping", "config/mapping.json", "--event", event.path()]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("  row 1: upsert accounts(accountnumber=\"ACC-1001\")"), "{text}");
    assert!(text.contains("raises msdynmkt_OrderCompleted"), "{text}");

    let unmapped = TempFile::new("unmapped.json", r#"{"event": "Page Viewed", "userId": "u1"}"#);
    let out = check(&["--mapping", "config/mapping.json", "--event", unmapped.path()]);
    assert_eq!(out.status.code(), Some(0), "the document is clean; the event's fate is information");
    assert!(stdout(&out).contains("  dropped: event 'Page Viewed' is not in the mapping"), "{}", stdout(&out));
}

#[test]
fn the_default_preset_is_named_with_the_events_that_share_one_trigger() {
    let file = TempFile::new("preset.json", relay::config::DEFAULT_PRESET);
    let out = check(&["--mapping", file.path()]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("notice: this is the built-in Default preset"), "{text}");
    for event in ["Signed Up", "Lead Generated", "Product Added", "Order Completed"] {
        assert!(text.contains(&format!("\"{event}\"")), "{text}");
    }
}

#[test]
fn what_the_relay_rejects_check_rejects_by_a_pointer() {
    for (kind, document) in crate::mapping_schema::mistakes() {
        let text = document.to_string();
        let problems = relay::lint::problems(&text);
        assert!(!problems.is_empty(), "{kind}: check passes {text}");
        assert!(problems.iter().all(|p| p.pointer.is_empty() || p.pointer.starts_with('/')), "{kind}: {problems:?}");
        assert!(problems.iter().any(|p| !p.pointer.is_empty()), "{kind}: only the parser found it: {problems:?}");
    }
}
