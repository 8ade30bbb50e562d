//! CloudWatch Embedded Metric Format: one JSON line per invocation on stdout,
//! which CloudWatch Logs turns into metrics without any API call.
//! Written by hand: it is one small JSON object, and the maintained EMF crates
//! bring their own logging stacks.

use serde_json::{json, Map, Value};

use crate::outcome::Tally;

/// EMF allows at most 100 values per metric in one line.
const MAX_VALUES: usize = 100;

/// Every metric name the relay emits (the template's dashboard names only these
/// and AWS's own).
pub const METRIC_NAMES: &[&str] = &[
    "Records",
    "TriggerCalls",
    "Delivered",
    "Dropped",
    "Duplicates",
    "Invalid",
    "Rejected",
    "Failed",
    "Retries",
    "ThrottledResponses",
    "TokenRefreshes",
    "BatchItemFailures",
    "OmittedAttributes",
    "NoConsent",
    "CeilingDeferred",
    "DeliveryLatency",
    "InvocationDuration",
];

/// One invocation's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvocationMetrics {
    pub source: &'static str,
    pub tally: Tally,
    pub token_refreshes: u64,
    /// Parameters left out because their trigger lacks them (SPEC §13).
    pub omitted_attributes: u64,
    /// 429 answers by Dataverse's code (SPEC §17.4).
    pub throttled_by_code: [(&'static str, u64); 4],
    pub duration_ms: f64,
}

impl InvocationMetrics {
    /// The EMF document, dimensioned by source (sqs, sqs-fifo, webhook, direct).
    /// The invocation's EMF lines: [`InvocationMetrics::to_emf`], then one
    /// `ThrottledResponses` document per code that was answered (dimension `Code`).
    pub fn to_emf_lines(&self, namespace: &str, timestamp_ms: i64) -> Vec<Value> {
        let mut lines = vec![self.to_emf(namespace, timestamp_ms)];
        for (code, count) in self.throttled_by_code.iter().filter(|(_, n)| *n > 0) {
            lines.push(json!({
                "Code": code,
                "ThrottledResponses": count,
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{ "Namespace": namespace, "Dimensions": [["Code"]], "Metrics": [{"Name": "ThrottledResponses", "Unit": "Count"}] }]
                }
            }));
        }
        lines
    }

    pub fn to_emf(&self, namespace: &str, timestamp_ms: i64) -> Value {
        let t = &self.tally;
        let counts: [(&str, u64); 15] = [
            ("Records", t.records),
            ("TriggerCalls", t.calls),
            ("Delivered", t.delivered),
            ("Dropped", t.dropped),
            ("Duplicates", t.duplicates),
            ("Invalid", t.invalid),
            ("Rejected", t.rejected),
            ("Failed", t.failed),
            ("Retries", t.retries),
            ("ThrottledResponses", t.throttled),
            ("TokenRefreshes", self.token_refreshes),
            ("BatchItemFailures", t.not_done()),
            ("OmittedAttributes", self.omitted_attributes),
            ("NoConsent", t.no_consent),
            ("CeilingDeferred", t.ceiling_deferred),
        ];
        let mut root = Map::new();
        let mut definitions = Vec::new();
        for (name, value) in counts {
            root.insert(name.into(), json!(value));
            definitions.push(json!({"Name": name, "Unit": "Count"}));
        }
        if !t.delivery_latency_ms.is_empty() {
            let values: Vec<f64> = t.delivery_latency_ms.iter().take(MAX_VALUES).copied().collect();
            root.insert("DeliveryLatency".into(), json!(values));
            definitions.push(json!({"Name": "DeliveryLatency", "Unit": "Milliseconds"}));
        }
        root.insert("InvocationDuration".into(), json!(self.duration_ms));
        definitions.push(json!({"Name": "InvocationDuration", "Unit": "Milliseconds"}));
        root.insert("Source".into(), json!(self.source));
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{ "Namespace": namespace, "Dimensions": [["Source"]], "Metrics": definitions }]
            }),
        );
        Value::Object(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a document against the EMF specification's rules.
    fn assert_valid_emf(doc: &Value) {
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].is_i64(), "Timestamp is epoch milliseconds");
        let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics is an array");
        assert!(!directives.is_empty());
        for d in directives {
            let ns = d["Namespace"].as_str().expect("Namespace is a string");
            assert!(!ns.is_empty() && ns.len() <= 1024);
            for set in d["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30);
                for key in set {
                    assert!(doc[key.as_str().unwrap()].is_string(), "dimension {key} is a string member of the root");
                }
            }
            let metrics = d["Metrics"].as_array().unwrap();
            assert!(metrics.len() <= 100);
            for m in metrics {
                let name = m["Name"].as_str().unwrap();
                let unit = m["Unit"].as_str().unwrap();
                assert!(["Count", "Milliseconds", "Seconds", "None"].contains(&unit));
                match &doc[name] {
                    Value::Number(_) => {}
                    Value::Array(values) => {
                        assert!(values.len() <= MAX_VALUES && values.iter().all(Value::is_number), "{name}")
                    }
                    other => panic!("metric {name} is {other}"),
                }
            }
        }
    }

    #[test]
    fn the_document_follows_the_emf_specification() {
        let tally = Tally {
            records: 3,
            delivered: 2,
            failed: 1,
            retries: 4,
            throttled: 1,
            delivery_latency_ms: (0..150).map(f64::from).collect(),
            ..Default::default()
        };
        let metrics = InvocationMetrics { source: "sqs", tally, token_refreshes: 1, omitted_attributes: 2, duration_ms: 12.5, ..Default::default() };
        let doc = metrics.to_emf("D365TriggerRelay", 1_780_000_000_000);
        assert_valid_emf(&doc);
        assert_eq!(doc["Delivered"], 2);
        assert_eq!(doc["BatchItemFailures"], 1);
        assert_eq!(doc["OmittedAttributes"], 2);
        assert_eq!(doc["DeliveryLatency"].as_array().unwrap().len(), 100);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "D365TriggerRelay");
        assert!(!doc.to_string().contains('\n'), "one line");
    }

    #[test]
    fn records_failed_for_want_of_a_permit_are_counted_as_ceiling_deferred() {
        use crate::outcome::{DeliveryError, Outcome, RecordResult};
        use std::time::Duration;
        let result = |outcome| RecordResult {
            index: 0,
            sqs_id: None,
            message_id: None,
            event_name: None,
            trigger: None,
            outcome,
            attempts: 0,
            throttled: 0,
            latency: None,
            trace: None,
        };
        let deferred = || Outcome::Failed(DeliveryError::Ceiling { retry_after: Duration::from_secs(12) });
        let tally = Tally::of(&[result(deferred()), result(Outcome::Delivered), result(deferred()), result(Outcome::Failed(DeliveryError::Deadline))]);
        assert_eq!((tally.failed, tally.ceiling_deferred), (3, 2));
        let doc = InvocationMetrics { source: "sqs", tally, ..Default::default() }.to_emf("N", 1);
        assert_valid_emf(&doc);
        assert_eq!(doc["CeilingDeferred"], 2);
        assert_eq!(doc["Failed"], 3);
    }

    #[test]
    fn metric_names_lists_exactly_what_is_emitted() {
        let tally = Tally { records: 1, delivered: 1, delivery_latency_ms: vec![5.0], ..Default::default() };
        let doc = InvocationMetrics { source: "sqs", tally, ..Default::default() }.to_emf("N", 1);
        let emitted: Vec<&str> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        let mut listed = METRIC_NAMES.to_vec();
        let mut sorted = emitted.clone();
        listed.sort_unstable();
        sorted.sort_unstable();
        assert_eq!(sorted, listed);
    }

    #[test]
    fn throttled_responses_have_a_line_per_code_answered() {
        let metrics = InvocationMetrics {
            source: "sqs",
            throttled_by_code: [("0x80072322", 3), ("0x80072321", 0), ("0x80072326", 1), ("other", 0)],
            ..Default::default()
        };
        let lines = metrics.to_emf_lines("N", 1);
        assert_eq!(lines.len(), 3, "the invocation's line and two codes");
        for line in &lines {
            assert_valid_emf(line);
        }
        assert_eq!((lines[1]["Code"].as_str(), lines[1]["ThrottledResponses"].as_u64()), (Some("0x80072322"), Some(3)));
        assert_eq!(lines[2]["Code"], "0x80072326");
        assert_eq!(lines[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Code"]]));
        assert_eq!(InvocationMetrics::default().to_emf_lines("N", 1).len(), 1);
    }

    #[test]
    fn no_latency_metric_without_deliveries() {
        let doc = InvocationMetrics { source: "webhook", tally: Tally { records: 1, failed: 1, ..Default::default() }, ..Default::default() }.to_emf("N", 1);
        assert_valid_emf(&doc);
        assert!(doc.get("DeliveryLatency").is_none());
    }
}
