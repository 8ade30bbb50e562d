//! Intake: tells SQS batches, API Gateway / function URL requests and direct
//! invocations apart by the payload's shape, turns them into records, and
//! turns outcomes back into each source's answer (SPEC §5, §6, §8).

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::{json, Value};

use crate::outcome::Outcome;
use crate::webhook::{Flavour, HttpRequest};

/// A payload this function must not answer as if it were handled.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IntakeError {
    #[error("SQS batch is malformed: {0}")]
    MalformedSqs(String),
    #[error("SQS record {index} has no messageId: the whole batch is returned for redelivery rather than guessing")]
    MissingMessageId { index: usize },
    #[error("HTTP event is malformed: {0}")]
    MalformedHttp(String),
}

pub enum Source {
    Sqs { event: SqsEvent, fifo: bool },
    Http(HttpRequest),
    Direct(Vec<Value>),
}

/// One record as it came in.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub index: usize,
    /// SQS's `messageId` (the batch item identifier).
    pub sqs_id: Option<String>,
    /// FIFO `MessageGroupId`.
    pub group: Option<String>,
    /// The event, or why it is not one.
    pub event: Result<Value, String>,
}

/// The fate of one record, for responses and logs.
#[derive(Debug, Clone)]
pub struct RecordResult {
    pub index: usize,
    pub sqs_id: Option<String>,
    /// The event's own `messageId`.
    pub message_id: Option<String>,
    pub event_name: Option<String>,
    pub trigger: Option<String>,
    pub outcome: Outcome,
    pub attempts: u32,
    /// Attempts answered 429.
    pub throttled: u32,
    /// First attempt to 2xx, for delivered records.
    pub latency: Option<std::time::Duration>,
}

pub fn classify(payload: Value) -> Result<Source, IntakeError> {
    let is_object = payload.is_object();
    let has = |key: &str| is_object && payload.get(key).is_some();

    if has("Records") {
        let records = payload["Records"].as_array().ok_or_else(|| IntakeError::MalformedSqs("Records is not a list".into()))?;
        for (i, r) in records.iter().enumerate() {
            let source = r.get("eventSource").and_then(Value::as_str);
            if source != Some("aws:sqs") {
                return Err(IntakeError::MalformedSqs(format!("record {i} has eventSource {source:?}, expected \"aws:sqs\"")));
            }
        }
        let event: SqsEvent = serde_json::from_value(payload).map_err(|e| IntakeError::MalformedSqs(e.to_string()))?;
        for (index, record) in event.records.iter().enumerate() {
            if record.message_id.as_deref().is_none_or(|id| id.is_empty()) {
                return Err(IntakeError::MissingMessageId { index });
            }
        }
        let fifo = event.records.iter().any(|r| r.event_source_arn.as_deref().is_some_and(|arn| arn.ends_with(".fifo")));
        return Ok(Source::Sqs { event, fifo });
    }

    if has("requestContext") || has("httpMethod") || has("routeKey") || has("rawPath") {
        let v2 = payload.get("version").and_then(Value::as_str) == Some("2.0") || payload.pointer("/requestContext/http").is_some();
        let request = if v2 {
            let r: ApiGatewayV2httpRequest = serde_json::from_value(payload).map_err(|e| IntakeError::MalformedHttp(e.to_string()))?;
            let flavour = if r.request_context.domain_name.as_deref().is_some_and(|d| d.contains(".lambda-url.")) { Flavour::FunctionUrl } else { Flavour::HttpApi };
            HttpRequest { flavour, method: r.request_context.http.method.to_string(), headers: r.headers, body: r.body, is_base64_encoded: r.is_base64_encoded }
        } else if has("httpMethod") {
            let r: ApiGatewayProxyRequest = serde_json::from_value(payload).map_err(|e| IntakeError::MalformedHttp(e.to_string()))?;
            HttpRequest { flavour: Flavour::Rest, method: r.http_method.to_string(), headers: r.headers, body: r.body, is_base64_encoded: r.is_base64_encoded }
        } else {
            return Err(IntakeError::MalformedHttp("neither a REST (v1) nor an HTTP API (v2) payload".into()));
        };
        return Ok(Source::Http(request));
    }

    Ok(Source::Direct(events_of(payload)))
}

/// A direct payload: an event, an array of events, or `{"batch": [...]}`.
pub fn events_of(payload: Value) -> Vec<Value> {
    match payload {
        Value::Array(items) => items,
        Value::Object(mut map) if map.get("batch").is_some_and(Value::is_array) => match map.remove("batch") {
            Some(Value::Array(items)) => items,
            _ => unreachable!("checked to be an array"),
        },
        other => vec![other],
    }
}

pub fn sqs_records(event: SqsEvent) -> Vec<Incoming> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| Incoming {
            index,
            group: record.attributes.get("MessageGroupId").cloned(),
            event: match record.body.as_deref() {
                None => Err("the SQS message has no body".into()),
                Some(body) => serde_json::from_str(body).map_err(|e| format!("the body is not JSON: {e}")),
            },
            sqs_id: record.message_id,
        })
        .collect()
}

pub fn direct_records(events: Vec<Value>) -> Vec<Incoming> {
    events.into_iter().enumerate().map(|(index, event)| Incoming { index, sqs_id: None, group: None, event: Ok(event) }).collect()
}

/// `{"batchItemFailures": [...]}`: exactly the records neither delivered nor deliberately skipped.
pub fn sqs_response(results: &[RecordResult]) -> Value {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = results
        .iter()
        .filter(|r| !r.outcome.is_success())
        .map(|r| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = r.sqs_id.clone().expect("SQS records carry their messageId");
            failure
        })
        .collect();
    serde_json::to_value(response).expect("the batch response serialises")
}

/// The summary of a webhook or direct invocation.
pub fn summary(results: &[RecordResult]) -> Value {
    let count = |name: &str| results.iter().filter(|r| r.outcome.name() == name).count();
    let failed: Vec<Value> = results
        .iter()
        .filter(|r| !r.outcome.is_success())
        .map(|r| {
            let mut entry = json!({ "index": r.index, "outcome": r.outcome.name() });
            if let Some(id) = &r.message_id {
                entry["messageId"] = json!(id);
            }
            if let Some(detail) = r.outcome.detail() {
                entry["error"] = json!(detail);
            }
            if let Some(error) = r.outcome.error() {
                if let Some(status) = error.status() {
                    entry["status"] = json!(status);
                }
                if let Some(code) = error.code() {
                    entry["code"] = json!(code);
                }
            }
            entry
        })
        .collect();
    json!({
        "delivered": count("delivered"),
        "dropped": count("dropped"),
        "duplicates": count("duplicate"),
        "failed": failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_told_apart() {
        let sqs = json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": "{}", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:q.fifo", "attributes": {"MessageGroupId": "g"}}]});
        assert!(matches!(classify(sqs), Ok(Source::Sqs { fifo: true, .. })));
        let v1 = json!({"httpMethod": "POST", "headers": {}, "requestContext": {"httpMethod": "POST"}, "body": "{}"});
        assert!(matches!(classify(v1), Ok(Source::Http(HttpRequest { flavour: Flavour::Rest, .. }))));
        let v2 = json!({"version": "2.0", "routeKey": "POST /events", "rawPath": "/events", "headers": {}, "requestContext": {"http": {"method": "POST"}}, "body": "{}"});
        assert!(matches!(classify(v2), Ok(Source::Http(HttpRequest { flavour: Flavour::HttpApi, .. }))));
        assert!(matches!(classify(json!({"event": "E"})), Ok(Source::Direct(v)) if v.len() == 1));
        assert!(matches!(classify(json!({"batch": [{}, {}]})), Ok(Source::Direct(v)) if v.len() == 2));
        assert!(matches!(classify(json!([1, 2, 3])), Ok(Source::Direct(v)) if v.len() == 3));
    }

    #[test]
    fn malformed_batches_are_errors_not_successes() {
        assert!(matches!(classify(json!({"Records": "x"})), Err(IntakeError::MalformedSqs(_))));
        assert!(matches!(classify(json!({"Records": [{"eventSource": "aws:s3"}]})), Err(IntakeError::MalformedSqs(_))));
        assert_eq!(
            classify(json!({"Records": [{"messageId": "a", "eventSource": "aws:sqs"}, {"eventSource": "aws:sqs", "body": "{}"}]})).err(),
            Some(IntakeError::MissingMessageId { index: 1 })
        );
        assert!(classify(json!({"Records": [{"messageId": "", "eventSource": "aws:sqs"}]})).is_err());
        assert!(matches!(classify(json!({"requestContext": {}})), Err(IntakeError::MalformedHttp(_))));
    }
}
