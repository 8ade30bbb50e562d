//! The `send` report (SPEC §16): one JSON line per input record, in input
//! order, and what `--resume` reads back from it.

use std::io::{BufRead, BufReader, Read};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::outcome::{DeliveryError, Outcome, RecordResult};

/// One report line: `{"line", "messageId", "event", "trigger", "outcome", "status", "error"}`
/// (and `"body"` in a dry run); fields with nothing to say are left out.
#[derive(Serialize)]
pub struct Line<'a> {
    pub line: u64,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<&'a str>,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a Map<String, Value>>,
}

impl<'a> Line<'a> {
    /// The line of one record; `RecordResult::index` is its input line. The
    /// error is scrubbed of contact points, as the logs are.
    pub fn of(result: &'a RecordResult) -> Line<'a> {
        Line {
            line: result.index as u64,
            message_id: result.message_id.as_deref(),
            event: result.event_name.as_deref(),
            trigger: result.trigger.as_deref(),
            outcome: result.outcome.name(),
            status: result.outcome.error().and_then(DeliveryError::status),
            error: result.outcome.detail().map(|d| crate::redact::scrub(&d)),
            body: match &result.outcome {
                Outcome::DryRun { body } => Some(body),
                _ => None,
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report line serialises")
    }
}

/// The lines a previous report lists as `delivered` or `duplicate`: one bit per line.
#[derive(Debug, Default)]
pub struct Done {
    bits: Vec<u64>,
    count: u64,
}

impl Done {
    /// Reads a report; lines that are not a report line (a line cut short by a
    /// crash) are skipped. Also answers whether the file ends with a newline.
    pub fn read(report: impl Read) -> std::io::Result<(Done, bool)> {
        let mut done = Done::default();
        let mut reader = BufReader::new(report);
        let mut buffer = Vec::new();
        let mut ends_with_newline = true;
        loop {
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer)? == 0 {
                return Ok((done, ends_with_newline));
            }
            ends_with_newline = buffer.ends_with(b"\n");
            #[derive(serde::Deserialize)]
            struct Entry {
                line: u64,
                outcome: String,
            }
            if let Ok(entry) = serde_json::from_slice::<Entry>(&buffer) {
                if matches!(entry.outcome.as_str(), "delivered" | "duplicate") {
                    done.insert(entry.line);
                }
            }
        }
    }

    pub fn insert(&mut self, line: u64) {
        let (word, bit) = ((line / 64) as usize, line % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.count += 1;
        }
    }

    pub fn contains(&self, line: u64) -> bool {
        self.bits.get((line / 64) as usize).is_some_and(|w| w & (1 << (line % 64)) != 0)
    }

    /// Lines listed as done.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(index: usize, outcome: Outcome) -> RecordResult {
        RecordResult {
            index,
            sqs_id: None,
            message_id: Some("m-1".into()),
            event_name: Some("Order Completed".into()),
            trigger: Some("msdynmkt_order".into()),
            outcome,
            attempts: 1,
            throttled: 0,
            latency: None,
            trace: None,
        }
    }

    #[test]
    fn a_line_names_the_record_and_leaves_out_what_is_unknown() {
        let rejected = DeliveryError::Rejected { status: 400, code: Some("0x80040265".into()), message: "bad value for jane@example.com".into() };
        let line = Line::of(&result(7, Outcome::Rejected(rejected))).to_json();
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["line"], 7);
        assert_eq!(value["messageId"], "m-1");
        assert_eq!(value["event"], "Order Completed");
        assert_eq!(value["trigger"], "msdynmkt_order");
        assert_eq!(value["outcome"], "rejected");
        assert_eq!(value["status"], 400);
        assert!(!line.contains("jane@example.com"), "{line}");
        assert!(line.starts_with("{\"line\":7,\"messageId\""), "in the order of SPEC §16: {line}");
        let delivered = Line::of(&result(8, Outcome::Delivered)).to_json();
        assert!(!delivered.contains("status") && !delivered.contains("error") && !delivered.contains("body"), "{delivered}");
        let mut body = Map::new();
        body.insert("msdynmkt_profileid".into(), "u-1".into());
        let dry: Value = serde_json::from_str(&Line::of(&result(9, Outcome::DryRun { body })).to_json()).unwrap();
        assert_eq!((dry["outcome"].as_str(), dry["body"]["msdynmkt_profileid"].as_str()), (Some("dry-run"), Some("u-1")));
    }

    #[test]
    fn resume_reads_delivered_and_duplicate_lines_only() {
        let report = "{\"line\":1,\"outcome\":\"delivered\"}\n{\"line\":2,\"outcome\":\"failed\"}\n{\"line\":3,\"outcome\":\"duplicate\"}\n\
{\"line\":200,\"outcome\":\"delivered\"}\n{\"line\":2,\"outcome\":\"delivered\"}\n{\"line\":5,\"outcome\":\"dry-run\"}\n{\"line\":4,\"outc";
        let (done, newline) = Done::read(report.as_bytes()).unwrap();
        assert!(done.contains(1) && done.contains(2) && done.contains(3) && done.contains(200));
        assert!(!done.contains(4) && !done.contains(5) && !done.contains(199) && !done.contains(100_000));
        assert_eq!(done.len(), 4);
        assert!(!newline, "a line cut short");
    }
}
