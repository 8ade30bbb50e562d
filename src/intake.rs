//! Intake: tells SQS batches, API Gateway / function URL requests and direct
//! invocations apart by the payload's shape, turns them into records, and
//! turns outcomes back into each source's answer (SPEC §5, §6, §8).

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::http::HeaderMap;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::Value;

use crate::outcome::RecordResult;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// API Gateway REST API, payload v1.
    Rest,
    /// API Gateway HTTP API, payload v2.
    HttpApi,
    /// Lambda function URL (payload v2).
    FunctionUrl,
}

/// An HTTP request as API Gateway or a function URL delivers it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub flavour: Flavour,
    pub method: String,
    pub headers: HeaderMap,
    pub body: Option<String>,
    pub is_base64_encoded: bool,
}

pub enum Source {
    Sqs { event: SqsEvent, fifo: bool },
    Http(HttpRequest),
    /// Anything else: an event, a list of events or `{"batch": [...]}`.
    Direct(Value),
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

    Ok(Source::Direct(payload))
}

/// The one rule for a list of events (direct payloads, webhook bodies): an
/// event object, an array of events, or `{"batch": [...]}`.
pub fn event_list(payload: Value) -> Result<Vec<Value>, String> {
    match payload {
        Value::Array(items) => Ok(items),
        Value::Object(mut map) if map.contains_key("batch") => match map.remove("batch") {
            Some(Value::Array(items)) => Ok(items),
            _ => Err("\"batch\" must be a list of events".into()),
        },
        event @ Value::Object(_) => Ok(vec![event]),
        _ => Err("the payload must be an event object, a list of events or {\"batch\": [...]}".into()),
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

/// A direct payload's records; a payload that is not a list of events is one invalid record.
pub fn direct_payload_records(payload: Value) -> Vec<Incoming> {
    match event_list(payload) {
        Ok(events) => direct_records(events),
        Err(reason) => vec![Incoming { index: 0, sqs_id: None, group: None, event: Err(reason) }],
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_are_told_apart() {
        let sqs = json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": "{}", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:q.fifo", "attributes": {"MessageGroupId": "g"}}]});
        assert!(matches!(classify(sqs), Ok(Source::Sqs { fifo: true, .. })));
        let v1 = json!({"httpMethod": "POST", "headers": {}, "requestContext": {"httpMethod": "POST"}, "body": "{}"});
        assert!(matches!(classify(v1), Ok(Source::Http(HttpRequest { flavour: Flavour::Rest, .. }))));
        let v2 = json!({"version": "2.0", "routeKey": "POST /events", "rawPath": "/events", "headers": {}, "requestContext": {"http": {"method": "POST"}}, "body": "{}"});
        assert!(matches!(classify(v2), Ok(Source::Http(HttpRequest { flavour: Flavour::HttpApi, .. }))));
        assert!(matches!(classify(json!({"event": "E"})), Ok(Source::Direct(_))));
    }

    #[test]
    fn one_rule_for_lists_of_events() {
        assert_eq!(event_list(json!({"event": "E"})).unwrap().len(), 1);
        assert_eq!(event_list(json!({"batch": [{}, {}]})).unwrap().len(), 2);
        assert_eq!(event_list(json!([1, 2, 3])).unwrap().len(), 3);
        assert!(event_list(json!({"batch": 3})).is_err());
        assert!(event_list(json!("text")).is_err());
        let records = direct_payload_records(json!(42));
        assert_eq!(records.len(), 1);
        assert!(records[0].event.is_err(), "not an event: one invalid record, never a silent success");
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
