//! What `dlq summary` and `dlq list` print (SPEC §22.3): counts by outcome,
//! code, status, destination, event and age; one line per message. Reasons
//! are masked ([`Parked::read`]); bodies are never printed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::parked::{brief_age, Parked};

/// The age buckets of a summary: under the first bound, …, at or over the last.
const AGES: &[(&str, Duration)] =
    &[("under 1h", Duration::from_secs(3_600)), ("1h to 1d", Duration::from_secs(86_400)), ("1d to 7d", Duration::from_secs(7 * 86_400))];
const OLDEST: &str = "7d or more";
/// A message without the value counted under this name.
const NONE: &str = "(none)";

/// Counts over the messages matched. A Lambda on-failure record counts once
/// per record of its payload.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub messages: u64,
    pub records: u64,
    pub outcome: BTreeMap<String, u64>,
    pub code: BTreeMap<String, u64>,
    pub status: BTreeMap<String, u64>,
    pub destination: BTreeMap<String, u64>,
    pub event: BTreeMap<String, u64>,
    pub age: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, parked: &Parked, now_ms: i64) {
        let n = parked.records.len().max(1) as u64;
        self.messages += 1;
        self.records += n;
        let count = |map: &mut BTreeMap<String, u64>, value: Option<&str>, by: u64| *map.entry(value.unwrap_or(NONE).to_string()).or_default() += by;
        count(&mut self.outcome, Some(&parked.outcome), n);
        count(&mut self.code, parked.code.as_deref(), n);
        count(&mut self.status, parked.status.as_deref(), n);
        count(&mut self.destination, parked.destination.as_deref(), n);
        if parked.records.is_empty() {
            count(&mut self.event, None, 1);
        }
        for record in &parked.records {
            count(&mut self.event, record.event.as_deref(), 1);
        }
        let bucket = parked.age(now_ms).map(|age| AGES.iter().find(|(_, bound)| age < *bound).map_or(OLDEST, |(name, _)| name));
        count(&mut self.age, bucket, n);
    }

    fn sections(&self) -> [(&'static str, &BTreeMap<String, u64>); 6] {
        [
            ("outcome", &self.outcome),
            ("code", &self.code),
            ("status", &self.status),
            ("destination", &self.destination),
            ("event", &self.event),
            ("age", &self.age),
        ]
    }

    /// One line per count, largest first in each section; a section with no value at all is left out.
    pub fn to_text(&self) -> String {
        let mut text = format!("{} messages, {} records\n", self.messages, self.records);
        for (name, counts) in self.sections() {
            if counts.keys().all(|k| k == NONE) {
                continue;
            }
            text.push_str(&format!("by {name}:\n"));
            for (value, n) in sorted(counts, name == "age") {
                text.push_str(&format!("  {n:>8}  {value}\n"));
            }
        }
        text
    }

    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("messages".into(), json!(self.messages));
        out.insert("records".into(), json!(self.records));
        for (name, counts) in self.sections() {
            out.insert(name.into(), json!(counts));
        }
        Value::Object(out)
    }
}

/// Largest count first (ties by name); ages youngest first.
fn sorted(counts: &BTreeMap<String, u64>, ages: bool) -> Vec<(&str, u64)> {
    let mut items: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    if ages {
        let rank = |name: &str| AGES.iter().position(|(n, _)| *n == name).unwrap_or(AGES.len() + usize::from(name == NONE));
        items.sort_by_key(|(name, _)| rank(name));
    } else {
        items.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    }
    items
}

/// `list`'s line: key, outcome, status, code, destination, event, age, reason (tab-separated; `-` for none).
pub fn list_line(parked: &Parked, now_ms: i64) -> String {
    let or_dash = |v: Option<&str>| v.filter(|v| !v.is_empty()).unwrap_or("-").to_string();
    let events = parked.events().join(",");
    [
        parked.key.clone(),
        parked.outcome.clone(),
        or_dash(parked.status.as_deref()),
        or_dash(parked.code.as_deref()),
        or_dash(parked.destination.as_deref()),
        or_dash(Some(&events)),
        parked.age(now_ms).map_or("-".into(), brief_age),
        or_dash(parked.error.as_deref()).replace(['\t', '\n', '\r'], " "),
    ]
    .join("\t")
}

/// `list --json`'s line.
pub fn list_json(parked: &Parked, now_ms: i64) -> Value {
    json!({
        "messageId": parked.key,
        "sqsMessageId": parked.sqs_id,
        "outcome": parked.outcome,
        "status": parked.status,
        "code": parked.code,
        "destination": parked.destination,
        "event": parked.events(),
        "ageSeconds": parked.age(now_ms).map(|a| a.as_secs()),
        "receiveCount": parked.receive_count,
        "records": parked.records.len(),
        "error": parked.error,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parked::Received;
    use super::*;

    fn parked(outcome: Option<&str>, code: Option<&str>, sent_ms: i64) -> Parked {
        let mut attributes = Vec::new();
        if let Some(o) = outcome {
            attributes.push(("d365-outcome".to_string(), Some(o.to_string())));
        }
        if let Some(c) = code {
            attributes.push(("d365-code".to_string(), Some(c.to_string())));
        }
        Parked::read(&Received {
            sqs_id: "q-1".into(),
            body: r#"{"event":"Order Completed","messageId":"ord-1"}"#.into(),
            system: vec![("SentTimestamp".into(), sent_ms.to_string())],
            attributes,
        })
    }

    #[test]
    fn a_summary_counts_by_outcome_code_and_age() {
        let now = 10 * 86_400_000;
        let mut tally = Tally::default();
        tally.add(&parked(Some("failed"), Some("0x80072321"), now - 60_000), now);
        tally.add(&parked(Some("failed"), Some("0x80072321"), now - 7_200_000), now);
        tally.add(&parked(Some("rejected"), None, now - 9 * 86_400_000), now);
        tally.add(&parked(None, None, now), now);
        assert_eq!(tally.outcome, BTreeMap::from([("failed".into(), 2), ("moved".into(), 1), ("rejected".into(), 1)]));
        assert_eq!(tally.code, BTreeMap::from([("0x80072321".into(), 2), ("(none)".into(), 2)]));
        assert_eq!(tally.age, BTreeMap::from([("under 1h".into(), 2), ("1h to 1d".into(), 1), ("7d or more".into(), 1)]));
        let text = tally.to_text();
        assert!(text.starts_with("4 messages, 4 records\nby outcome:\n         2  failed\n"), "{text}");
        let ages = &text[text.find("by age:").unwrap()..];
        assert!(ages.find("under 1h").unwrap() < ages.find("7d or more").unwrap(), "{ages}");
        assert_eq!(tally.to_json()["event"]["Order Completed"], 4);
        assert!(!text.contains("by destination"), "no destination at all: {text}");
        assert_eq!(tally.to_json()["destination"]["(none)"], 4);
    }

    #[test]
    fn a_list_line_names_the_record_and_its_reason_on_one_line() {
        let mut p = parked(Some("rejected"), Some("0x80040203"), 0);
        p.error = Some("bad\tvalue\nhere".into());
        assert_eq!(list_line(&p, 7_200_000), "ord-1\trejected\t-\t0x80040203\t-\tOrder Completed\t2h\tbad value here");
        assert_eq!(list_json(&p, 7_200_000)["sqsMessageId"], "q-1");
    }
}
