//! Every mapping example in the README and the manual is a document the relay
//! accepts, and every recipe's `check` output is what the real binary prints
//! (issue 39, SPEC §21.2). The pages mark what this test reads by the fenced
//! block's info string:
//!
//! - ```` ```json mapping ```` — a whole mapping document: `check --mapping` exits 0;
//! - ```` ```json fragment ```` — one or more `"key": value` members of a
//!   document: top-level keys (`identity`, `identify`, `consent`, …) stay at the
//!   top, anything else is an event entry under `events`; then as above;
//! - ```` ```text check-output ```` — a first line `$ d365-trigger-relay check
//!   --mapping M --event E`, then exactly what it prints; the clock's value
//!   (the signal ingestion time) is shown as `"<now, UTC>"`. On a page with `json mapping`
//!   blocks, `M` must hold one of them, so the output shown belongs to the
//!   mapping shown.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Map, Value};

use crate::helpers::ROOT;

/// The document's top-level keys (SPEC §2.1, §18, §21.2); a fragment's other
/// keys are event names.
const TOP_LEVEL: &[&str] = &["$schema", "trigger", "events", "defaults", "identity", "identify", "consent"];

/// How the clock's value is shown on a page.
const NOW: &str = "\"<now, UTC>\"";

/// A fenced block of a Markdown file: its info string, its text and the line it starts on.
#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    info: String,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// The fenced (```) blocks of one Markdown text, in order.
fn blocks(file: &str, markdown: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block { file: file.to_string(), line: i + 1, info: info.trim().to_string(), text: String::new() });
                }
            }
            Some(mut block) => {
                if trimmed.starts_with("```") {
                    found.push(block);
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                    open = Some(block);
                }
            }
        }
    }
    assert!(open.is_none(), "{file}: a fenced block is never closed");
    found
}

/// README.md and every page under docs/src, relative to the repository's root.
fn pages() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(ROOT).join("docs/src"), &mut files);
    let mut pages: Vec<String> = files.iter().map(|p| p.strip_prefix(ROOT).unwrap().to_str().unwrap().trim_start_matches('/').to_string()).collect();
    pages.sort();
    pages.insert(0, "README.md".into());
    pages
}

fn all_blocks() -> Vec<Block> {
    pages().iter().flat_map(|page| blocks(page, &std::fs::read_to_string(Path::new(ROOT).join(page)).unwrap())).collect()
}

/// The real binary with an empty environment but PATH, run from the repository's root.
fn relay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_d365-trigger-relay"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(ROOT)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A temporary file holding `text`, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("relay-docs-{}-{name}", std::process::id()));
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

/// A fragment made a whole document: top-level members stay, the rest are events.
fn wrap(block: &Block) -> Value {
    let members: Map<String, Value> = serde_json::from_str(&format!("{{{}}}", block.text))
        .unwrap_or_else(|e| panic!("{}: a `json fragment` block must be `\"key\": value` members of a document: {e}", block.at()));
    let mut document = Map::new();
    let mut events = Map::new();
    for (key, value) in members {
        if TOP_LEVEL.contains(&key.as_str()) {
            document.insert(key, value);
        } else {
            events.insert(key, value);
        }
    }
    if !events.is_empty() {
        assert!(!document.contains_key("events"), "{}: a fragment with `events` and event entries beside it", block.at());
        document.insert("events".into(), Value::Object(events));
    }
    Value::Object(document)
}

/// `check --mapping` on `document`: the problems it prints, none when it exits 0.
fn problems(block: &Block, document: &str) -> Option<String> {
    let file = TempFile::new(&format!("{}-{}.json", block.file.replace('/', "_"), block.line), document);
    let out = relay(&["check", "--mapping", file.path()]);
    match out.status.code() {
        Some(0) => None,
        _ => Some(format!("{}: check --mapping exits {:?}:\n{}{}\n---\n{document}", block.at(), out.status.code(), text(&out.stdout), text(&out.stderr))),
    }
}

/// What a page shows of `check`, and what the binary prints, made comparable:
/// the clock's value (the signal ingestion time, and any other attribute that
/// took it, such as the signal time of an event without a timestamp) as the
/// page shows it; no trailing blanks.
fn normalise(output: &str) -> String {
    const INGESTION: &str = "msdynmkt_signalingestiontimestamp = ";
    let now = output.lines().find_map(|line| line.split_once(INGESTION)).map(|(_, value)| value.trim().to_string()).filter(|v| v != NOW);
    let mut lines: Vec<String> = output
        .lines()
        .map(|line| match &now {
            Some(now) => line.trim_end().replace(now.as_str(), NOW),
            None => line.trim_end().to_string(),
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

/// The `--mapping` and `--event` files of a `check-output` block's first line.
fn command(block: &Block) -> (String, String) {
    let first = block.text.lines().next().unwrap_or_default();
    let words: Vec<&str> = first.split_whitespace().collect();
    match words.as_slice() {
        ["$", "d365-trigger-relay", "check", "--mapping", mapping, "--event", event] => (mapping.to_string(), event.to_string()),
        _ => panic!("{}: a check-output block starts `$ d365-trigger-relay check --mapping M --event E`, not {first:?}", block.at()),
    }
}

fn json_file(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_mapping_document_on_a_page_is_accepted() {
    let blocks = all_blocks();
    let documents: Vec<&Block> = blocks.iter().filter(|b| b.info == "json mapping").collect();
    assert!(documents.len() >= 6, "the README and the manual show whole mapping documents: {}", documents.len());
    let failed: Vec<String> = documents.iter().filter_map(|b| problems(b, &b.text)).collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn every_fragment_on_a_page_is_accepted_inside_a_document() {
    let blocks = all_blocks();
    let fragments: Vec<&Block> = blocks.iter().filter(|b| b.info == "json fragment").collect();
    assert!(fragments.len() >= 4, "the manual shows fragments of mapping documents: {}", fragments.len());
    let failed: Vec<String> = fragments.iter().filter_map(|b| problems(b, &serde_json::to_string_pretty(&wrap(b)).unwrap())).collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn a_json_block_that_looks_like_a_mapping_is_marked() {
    // A mapping example left as plain ```json would escape the two tests above.
    let unmarked: Vec<String> = all_blocks()
        .iter()
        .filter(|b| b.info == "json")
        .filter(|b| serde_json::from_str::<Value>(&b.text).ok().and_then(|v| v.get("events").cloned()).is_some_and(|e| e.is_object()))
        .map(Block::at)
        .collect();
    assert!(unmarked.is_empty(), "mapping documents in blocks not tagged `json mapping`: {unmarked:?}");
}

#[test]
fn every_recipe_shows_what_check_prints_for_its_sample_event() {
    let blocks = all_blocks();
    let recipes: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("events/recipes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".mapping.json").map(str::to_string))
        .collect();
    let shown: Vec<&Block> = blocks.iter().filter(|b| b.info == "text check-output").collect();
    let mut failed = Vec::new();
    for recipe in &recipes {
        let (mapping, event) = (format!("events/recipes/{recipe}.mapping.json"), format!("events/recipes/{recipe}.json"));
        let Some(block) = shown.iter().find(|b| command(b) == (mapping.clone(), event.clone())) else {
            failed.push(format!("no page shows `check --mapping {mapping} --event {event}` in a `text check-output` block"));
            continue;
        };
        // The mapping run is the one the page shows.
        let page_mappings: Vec<Value> =
            blocks.iter().filter(|b| b.file == block.file && b.info == "json mapping").filter_map(|b| serde_json::from_str(&b.text).ok()).collect();
        if !page_mappings.is_empty() && !page_mappings.contains(&json_file(&mapping)) {
            failed.push(format!("{}: {mapping} is not the document the page shows in its `json mapping` block", block.at()));
        }
    }
    for block in &shown {
        let (mapping, event) = command(block);
        let out = relay(&["check", "--mapping", &mapping, "--event", &event]);
        let (printed, expected) = (normalise(&text(&out.stdout)), normalise(block.text.split_once('\n').map_or("", |(_, rest)| rest)));
        if out.status.code() != Some(0) || printed != expected {
            failed.push(format!(
                "{}: `check --mapping {mapping} --event {event}` exits {:?} and prints\n{printed}\n{}--- the page shows\n{expected}",
                block.at(),
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn the_extraction_finds_what_it_is_given() {
    let page = "x\n```json mapping\n{\"events\": {}}\n```\n\n  ```json fragment\n  \"consent\": {\"categories\": [\"Marketing\"]},\n  \"Signed Up\": {\"trigger\": \"msdynmkt_SignedUp\"}\n  ```\n";
    let found = blocks("page.md", page);
    assert_eq!(found.iter().map(|b| (b.info.as_str(), b.line)).collect::<Vec<_>>(), [("json mapping", 2), ("json fragment", 6)]);
    assert_eq!(wrap(&found[1]), serde_json::json!({"consent": {"categories": ["Marketing"]}, "events": {"Signed Up": {"trigger": "msdynmkt_SignedUp"}}}));
    assert_eq!(
        normalise("    msdynmkt_signalingestiontimestamp = \"2026-12-08T00:57:57.306Z\"  \n    msdynmkt_signaltimestamp = \"2026-12-08T00:57:57.306Z\"\n\n"),
        "    msdynmkt_signalingestiontimestamp = \"<now, UTC>\"\n    msdynmkt_signaltimestamp = \"<now, UTC>\""
    );
}

#[test]
fn a_broken_example_is_caught() {
    // The check itself must fail on a broken block, not pass on everything.
    let good = Block { file: "page.md".into(), line: 1, info: "json mapping".into(), text: r#"{"events": {"A": {"trigger": "msdynmkt_A"}}}"#.into() };
    assert_eq!(problems(&good, &good.text), None);
    let bad = Block { text: r#"{"events": {"A": {"trigger": "msdynmkt-A", "rows": [{"entity": "accounts", "mode": "upsrt"}]}}}"#.into(), ..good };
    let problems = problems(&bad, &bad.text).expect("a broken document is refused");
    assert!(problems.contains("/events/A/trigger") && problems.contains("/events/A/rows/0/mode"), "{problems}");
}
