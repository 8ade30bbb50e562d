//! Intake (SPEC §5, §6, §8, §12): tells the payload shapes apart — SQS batches,
//! SNS subscriptions, EventBridge rules, API Gateway v1/v2, function URLs, ALB
//! and direct invocations — turns them into records (each record's envelopes
//! unwrapped, see [`crate::envelope`]), and turns outcomes back into each
//! source's answer. Only the fields named here are read, from the JSON as it
//! came: an odd field the relay does not use never fails a record or a batch.

use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use serde_json::{Map, Value};

use crate::envelope;
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
    /// An asynchronous invocation (SNS, EventBridge) with records neither
    /// delivered, dropped nor duplicate: the error makes Lambda retry it and
    /// finally hand it to the on-failure destination (delivered records come
    /// back as duplicates).
    #[error("{source_name}: {not_done} of {records} record(s) not delivered ({outcomes}); returned as an error so that Lambda's asynchronous retry and on-failure destination keep the event")]
    NotDelivered { source_name: &'static str, not_done: u64, records: u64, outcomes: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// API Gateway REST API, payload v1.
    Rest,
    /// API Gateway HTTP API, payload v2.
    HttpApi,
    /// Lambda function URL (payload v2).
    FunctionUrl,
    /// Application Load Balancer; `multi_value` when the target group sends multi-value headers.
    Alb { multi_value: bool },
}

/// An HTTP request as API Gateway, a function URL or an ALB delivers it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub flavour: Flavour,
    pub method: String,
    pub headers: HeaderMap,
    pub body: Option<String>,
    pub is_base64_encoded: bool,
    /// The `code` query parameter, URL-decoded (the `key` sender scheme).
    pub code: Option<String>,
    /// The request's path as the sender sent it (v2 `rawPath`, v1 and ALB `path`):
    /// Segment's API paths are told apart by it (SPEC §20).
    pub path: String,
}

/// An asynchronous invoker: its errors are retried by Lambda, not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncSource {
    Sns,
    EventBridge,
}

impl AsyncSource {
    pub fn name(self) -> &'static str {
        match self {
            AsyncSource::Sns => "sns",
            AsyncSource::EventBridge => "eventbridge",
        }
    }
}

pub enum Source {
    /// SQS records keep their bodies as text until each is mapped ([`Pending::Text`]).
    Sqs {
        records: Vec<Incoming>,
        fifo: bool,
        /// What the queue side needs of each record (SPEC §18), in record order.
        batch: SqsBatch,
    },
    /// An SNS subscription or an EventBridge rule invoking the function.
    Async {
        source: AsyncSource,
        records: Vec<Incoming>,
    },
    Http(HttpRequest),
    /// Anything else: an event, a list of events or `{"batch": [...]}`.
    Direct(Value),
}

/// The queue side of an SQS batch: where it came from and, per record, what
/// backoff by visibility and parking in the DLQ need (SPEC §18).
#[derive(Debug, Clone, Default)]
pub struct SqsBatch {
    /// `eventSourceARN` of the batch's records.
    pub queue_arn: Option<String>,
    /// One per record, in record order.
    pub messages: Vec<SqsMessage>,
}

/// One SQS message's receipt and attributes.
#[derive(Debug, Clone, Default)]
pub struct SqsMessage {
    pub receipt_handle: Option<String>,
    /// `attributes.ApproximateReceiveCount` (1 on the first receive).
    pub receive_count: u32,
    /// `attributes.ApproximateFirstReceiveTimestamp`, epoch milliseconds.
    pub first_received_ms: Option<i64>,
    /// `attributes.MessageGroupId` (FIFO).
    pub group: Option<String>,
    /// `messageAttributes`, as Lambda gives them.
    pub attributes: Option<Value>,
    /// The body as received, kept only when the relay may park the record ([`SqsBatch::keep_bodies`]).
    pub body: Option<String>,
}

impl SqsBatch {
    /// Keeps a copy of each body, so that a record can be parked in the DLQ as received.
    pub fn keep_bodies(&mut self, records: &[Incoming]) {
        for (message, record) in self.messages.iter_mut().zip(records) {
            if let Pending::Text(body) = &record.event {
                message.body = Some(body.clone());
            }
        }
    }
}

/// One record as it came in.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub index: usize,
    /// SQS's `messageId` (the batch item identifier).
    pub sqs_id: Option<String>,
    /// FIFO `MessageGroupId`.
    pub group: Option<String>,
    /// SQS's `ApproximateReceiveCount`, for the record line (SPEC §22.1).
    pub receive_count: Option<u32>,
    /// The event (envelopes unwrapped), or why it is not one.
    pub event: Pending,
}

/// A record's event. An SQS body stays the text it came as until its record is
/// mapped ([`Pending::resolve`]), so a batch never holds every event's tree at
/// once: memory follows the record being mapped, not the payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// An SQS message body, not parsed yet.
    Text(String),
    /// The event (envelopes unwrapped), or why it is not one.
    Ready(Result<Value, String>),
}

impl Pending {
    /// The event (envelopes unwrapped), or why it is not one; a body is parsed here, once.
    pub fn resolve(self) -> Result<Value, String> {
        match self {
            Pending::Text(body) => serde_json::from_str(&body).map_err(|e| format!("the body is not JSON: {e}")).and_then(envelope::unwrap),
            Pending::Ready(event) => event,
        }
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

pub fn source_of(mut payload: Value) -> Result<Source, IntakeError> {
    let Value::Object(map) = &payload else { return Ok(Source::Direct(payload)) };

    if let Some(records) = map.get("Records") {
        let records = records.as_array().ok_or_else(|| IntakeError::MalformedSqs("Records is not a list".into()))?;
        let is_sns = |r: &Value| r.get("EventSource").and_then(Value::as_str) == Some("aws:sns");
        let is_sqs = |r: &Value| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs");
        if !records.is_empty() && records.iter().all(is_sns) {
            return Ok(Source::Async { source: AsyncSource::Sns, records: sns_records(records) });
        }
        if let Some(i) = records.iter().position(|r| !is_sqs(r)) {
            let source = records[i].get("eventSource").or_else(|| records[i].get("EventSource")).and_then(Value::as_str);
            return Err(IntakeError::MalformedSqs(format!(
                "record {i} has event source {source:?}: expected every record to be \"aws:sqs\" (eventSource) or every record \"aws:sns\" (EventSource)"
            )));
        }
        for (index, record) in records.iter().enumerate() {
            if record.get("messageId").and_then(Value::as_str).is_none_or(|id| id.is_empty()) {
                return Err(IntakeError::MissingMessageId { index });
            }
        }
        let fifo = records.iter().any(|r| r.get("eventSourceARN").and_then(Value::as_str).is_some_and(|arn| arn.ends_with(".fifo")));
        // The records are taken out of the payload, not copied; the rest of it is dropped here.
        let Value::Array(records) = payload["Records"].take() else { unreachable!("Records is a list") };
        let queue_arn = records.first().and_then(|r| str_at(r, "/eventSourceARN")).map(str::to_string);
        let (records, messages) = sqs_records(records);
        return Ok(Source::Sqs { records, fifo, batch: SqsBatch { queue_arn, messages } });
    }

    if map.get("detail-type").is_some_and(Value::is_string) && map.contains_key("source") && map.contains_key("detail") {
        let event = envelope::unwrap(payload);
        return Ok(Source::Async {
            source: AsyncSource::EventBridge,
            records: vec![Incoming { index: 0, sqs_id: None, group: None, receive_count: None, event: Pending::Ready(event) }],
        });
    }

    if payload.pointer("/requestContext/elb").is_some() {
        let multi_value = map.get("multiValueHeaders").is_some_and(Value::is_object);
        let code = query_param(map, "code").map(|raw| form_decode(&raw));
        return Ok(Source::Http(http_request(&payload, Flavour::Alb { multi_value }, str_at(&payload, "/httpMethod"), code)));
    }

    let has = |key: &str| map.contains_key(key);
    if has("requestContext") || has("httpMethod") || has("routeKey") || has("rawPath") {
        let v2 = str_at(&payload, "/version") == Some("2.0") || payload.pointer("/requestContext/http").is_some();
        let request = if v2 {
            let function_url = str_at(&payload, "/requestContext/domainName").is_some_and(|d| d.contains(".lambda-url."));
            let flavour = if function_url { Flavour::FunctionUrl } else { Flavour::HttpApi };
            let code = match str_at(&payload, "/rawQueryString") {
                Some(raw) => form_urlencoded::parse(raw.as_bytes()).find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()),
                None => query_param(map, "code"),
            };
            http_request(&payload, flavour, str_at(&payload, "/requestContext/http/method"), code)
        } else if has("httpMethod") {
            http_request(&payload, Flavour::Rest, str_at(&payload, "/httpMethod"), query_param(map, "code"))
        } else {
            return Err(IntakeError::MalformedHttp("neither a REST (v1) nor an HTTP API (v2) payload".into()));
        };
        return Ok(Source::Http(request));
    }

    Ok(Source::Direct(payload))
}

fn http_request(payload: &Value, flavour: Flavour, method: Option<&str>, code: Option<String>) -> HttpRequest {
    HttpRequest {
        flavour,
        method: method.unwrap_or_default().to_string(),
        headers: headers_of(payload),
        body: payload.get("body").and_then(Value::as_str).map(str::to_string),
        is_base64_encoded: payload.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false),
        code,
        path: str_at(payload, "/rawPath").or_else(|| str_at(payload, "/path")).unwrap_or("/").to_string(),
    }
}

/// `headers`, then `multiValueHeaders` for names not already present; names or
/// values that are not valid HTTP are skipped.
fn headers_of(payload: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &str, value: &Value| {
        if let (Ok(name), Some(Ok(value))) = (HeaderName::from_bytes(name.as_bytes()), value.as_str().map(HeaderValue::from_str)) {
            headers.append(name, value);
        }
    };
    if let Some(single) = payload.get("headers").and_then(Value::as_object) {
        for (name, value) in single {
            put(name, value);
        }
    }
    let present: Vec<String> =
        payload.get("headers").and_then(Value::as_object).map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect()).unwrap_or_default();
    if let Some(multi) = payload.get("multiValueHeaders").and_then(Value::as_object) {
        for (name, values) in multi.iter().filter(|(n, _)| !present.contains(&n.to_ascii_lowercase())) {
            for value in values.as_array().into_iter().flatten() {
                put(name, value);
            }
        }
    }
    headers
}

/// A query parameter from `queryStringParameters`, else the first of `multiValueQueryStringParameters`.
fn query_param(map: &Map<String, Value>, name: &str) -> Option<String> {
    let single = map.get("queryStringParameters").and_then(|q| q.get(name)).and_then(Value::as_str);
    let multi = || map.get("multiValueQueryStringParameters").and_then(|q| q.get(name)).and_then(|v| v.get(0)).and_then(Value::as_str);
    single.or_else(multi).map(str::to_string)
}

/// ALB passes query values as sent (still URL-encoded); API Gateway decodes them.
fn form_decode(raw: &str) -> String {
    form_urlencoded::parse(format!("v={raw}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
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

/// The invocation's payload, read by the runtime straight from its bytes: the
/// same `Value` as `serde_json` builds, except that each element of a top-level
/// `Records` list keeps only the fields intake reads (SQS: `messageId`, `body`,
/// `eventSource`, `eventSourceARN`, `attributes.MessageGroupId`; SNS:
/// `EventSource`, `Sns.Message`, `Sns.MessageId`). A 6 MiB batch then never
/// exists as a tree of every record's attributes and receipt handle: each
/// record's tree is cut down as soon as it is read.
pub struct Payload(pub Value);

impl<'de> serde::Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        deserializer.deserialize_any(Lean::Top).map(Payload)
    }
}

/// Where [`Payload`] is reading: the top level (a map whose `Records` is lean),
/// a top-level `Records` value (whose elements are pruned), or anywhere else (as is).
#[derive(Clone, Copy)]
enum Lean {
    Top,
    Records,
}

impl<'de> serde::de::DeserializeSeed<'de> for Lean {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Lean {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        match self {
            Lean::Top => serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)),
            Lean::Records => {
                let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(record) = seq.next_element::<Value>()? {
                    records.push(lean_record(record));
                }
                Ok(Value::Array(records))
            }
        }
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        match self {
            Lean::Records => serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map)),
            Lean::Top => {
                let mut object = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = if key == "Records" { map.next_value_seed(Lean::Records)? } else { map.next_value::<Value>()? };
                    object.insert(key, value);
                }
                Ok(Value::Object(object))
            }
        }
    }
}

/// A record cut down to the fields [`source_of`], [`sqs_records`] and [`sns_records`] read.
fn lean_record(record: Value) -> Value {
    let Value::Object(mut full) = record else { return record };
    let mut kept = Map::new();
    for key in ["messageId", "body", "eventSource", "eventSourceARN", "EventSource", "receiptHandle", "messageAttributes"] {
        if let Some(value) = full.remove(key) {
            kept.insert(key.into(), value);
        }
    }
    let attributes = &["MessageGroupId", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp"][..];
    for (outer, inner) in [("attributes", attributes), ("Sns", &["Message", "MessageId"][..])] {
        if let Some(Value::Object(mut fields)) = full.remove(outer) {
            let fields: Map<String, Value> = inner.iter().filter_map(|k| fields.remove(*k).map(|v| (k.to_string(), v))).collect();
            kept.insert(outer.into(), Value::Object(fields));
        }
    }
    Value::Object(kept)
}

/// SQS records: `messageId`, `body`, `attributes.MessageGroupId` are all that is
/// read. The strings are moved out of the records, and each record's other
/// fields are dropped as soon as it is read.
fn sqs_records(records: Vec<Value>) -> (Vec<Incoming>, Vec<SqsMessage>) {
    let take = |record: &mut Value, key: &str| match record.get_mut(key).map(Value::take) {
        Some(Value::String(text)) => Some(text),
        _ => None,
    };
    // Lambda sends the attributes as strings; a number is read too.
    let number = |record: &Value, pointer: &str| match record.pointer(pointer) {
        Some(Value::String(text)) => text.trim().parse::<i64>().ok(),
        Some(value) => value.as_i64(),
        None => None,
    };
    records
        .into_iter()
        .enumerate()
        .map(|(index, mut record)| {
            let group = str_at(&record, "/attributes/MessageGroupId").map(str::to_string);
            let message = SqsMessage {
                receipt_handle: take(&mut record, "receiptHandle"),
                receive_count: number(&record, "/attributes/ApproximateReceiveCount").and_then(|n| u32::try_from(n).ok()).unwrap_or(1).max(1),
                first_received_ms: number(&record, "/attributes/ApproximateFirstReceiveTimestamp"),
                group: group.clone(),
                attributes: record.get_mut("messageAttributes").map(Value::take).filter(|a| a.as_object().is_some_and(|o| !o.is_empty())),
                body: None,
            };
            let incoming = Incoming {
                index,
                sqs_id: take(&mut record, "messageId"),
                group,
                receive_count: Some(message.receive_count),
                event: match take(&mut record, "body") {
                    None => Pending::Ready(Err("the SQS message has no body".into())),
                    Some(body) => Pending::Text(body),
                },
            };
            (incoming, message)
        })
        .unzip()
}

/// SNS records (a subscription invoking the function): `Sns.Message` and `Sns.MessageId`.
fn sns_records(records: &[Value]) -> Vec<Incoming> {
    records
        .iter()
        .enumerate()
        .map(|(index, record)| Incoming {
            index,
            sqs_id: None,
            group: None,
            receive_count: None,
            event: Pending::Ready(match str_at(record, "/Sns/Message") {
                None => Err("the SNS record has no Message".into()),
                Some(message) => envelope::sns_message(message, str_at(record, "/Sns/MessageId").filter(|id| !id.is_empty()), 0),
            }),
        })
        .collect()
}

/// Records of a list of events (direct payloads, webhook bodies), each unwrapped.
pub fn direct_records(events: Vec<Value>) -> Vec<Incoming> {
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| Incoming { index, sqs_id: None, group: None, receive_count: None, event: Pending::Ready(envelope::unwrap(event)) })
        .collect()
}

/// A direct payload's records; a payload that is not a list of events is one invalid record.
pub fn direct_payload_records(payload: Value) -> Vec<Incoming> {
    match event_list(payload) {
        Ok(events) => direct_records(events),
        Err(reason) => vec![Incoming { index: 0, sqs_id: None, group: None, receive_count: None, event: Pending::Ready(Err(reason)) }],
    }
}

/// The error of an asynchronous invocation whose records are not all done.
pub fn not_delivered(source: AsyncSource, results: &[RecordResult], tally: &crate::outcome::Tally) -> IntakeError {
    let outcomes: Vec<String> = results
        .iter()
        .filter(|r| !r.outcome.is_success())
        .take(5)
        .map(|r| format!("record {} {}: {}", r.index, r.outcome.name(), crate::redact::scrub(&r.outcome.detail().unwrap_or_default())))
        .collect();
    IntakeError::NotDelivered { source_name: source.name(), not_done: tally.not_done(), records: tally.records, outcomes: outcomes.join("; ") }
}

/// `{"batchItemFailures": [...]}`: exactly the records neither delivered nor
/// deliberately skipped, but for those the relay has parked in the DLQ
/// (`parked`, by record index; SPEC §18.3).
pub fn sqs_response(results: &[RecordResult], parked: &std::collections::HashSet<usize>) -> Value {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = results
        .iter()
        .filter(|r| !r.outcome.is_success() && !parked.contains(&r.index))
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
        assert!(matches!(source_of(sqs), Ok(Source::Sqs { fifo: true, .. })));
        let v1 = json!({"httpMethod": "POST", "headers": {}, "requestContext": {"httpMethod": "POST"}, "body": "{}"});
        assert!(matches!(source_of(v1), Ok(Source::Http(HttpRequest { flavour: Flavour::Rest, .. }))));
        let v2 = json!({"version": "2.0", "routeKey": "POST /events", "rawPath": "/events", "headers": {}, "requestContext": {"http": {"method": "POST"}}, "body": "{}"});
        assert!(matches!(source_of(v2), Ok(Source::Http(HttpRequest { flavour: Flavour::HttpApi, .. }))));
        assert!(matches!(source_of(json!({"event": "E"})), Ok(Source::Direct(_))));
    }

    #[test]
    fn sns_eventbridge_and_alb_are_told_apart() {
        let sns = json!({"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "m", "Message": "{\"event\":\"E\"}"}}]});
        match source_of(sns) {
            Ok(Source::Async { source: AsyncSource::Sns, records }) => {
                assert_eq!(records[0].event, Pending::Ready(Ok(json!({"event": "E", "messageId": "m"}))))
            }
            _ => panic!("an SNS subscription"),
        }
        let eb = json!({"detail-type": "D", "source": "s", "detail": {}, "id": "i"});
        assert!(matches!(source_of(eb), Ok(Source::Async { source: AsyncSource::EventBridge, .. })));
        let alb = json!({"requestContext": {"elb": {"targetGroupArn": "arn"}}, "httpMethod": "POST", "multiValueHeaders": {"x-api-key": ["k"]},
                         "multiValueQueryStringParameters": {"code": ["a%20b"]}, "body": "{}"});
        match source_of(alb) {
            Ok(Source::Http(r)) => {
                assert_eq!(r.flavour, Flavour::Alb { multi_value: true });
                assert_eq!(r.headers.get("x-api-key").unwrap(), "k");
                assert_eq!(r.code.as_deref(), Some("a b"), "ALB query values arrive URL-encoded");
            }
            _ => panic!("an ALB request"),
        }
        let v2 = json!({"version": "2.0", "rawQueryString": "x=1&code=k%2By", "queryStringParameters": {"code": "ignored"}, "requestContext": {"http": {"method": "POST"}}, "headers": {"bad header": "x", "ok": 5}});
        match source_of(v2) {
            Ok(Source::Http(r)) => {
                assert_eq!(r.code.as_deref(), Some("k+y"));
                assert!(r.headers.is_empty(), "invalid names and non-string values are skipped");
            }
            _ => panic!("an HTTP API request"),
        }
        assert!(matches!(
            source_of(json!({"Records": [{"EventSource": "aws:sns"}, {"eventSource": "aws:sqs", "messageId": "m"}]})),
            Err(IntakeError::MalformedSqs(_))
        ));
    }

    #[test]
    fn sqs_records_read_only_what_is_used() {
        let sqs = json!({"Records": [
            {"messageId": "a", "eventSource": "aws:sqs", "body": "{\"event\":\"E\"}", "attributes": null, "messageAttributes": {"x": {"binaryValue": "%%%"}}},
            {"messageId": "b", "eventSource": "aws:sqs", "attributes": {"MessageGroupId": 5}},
            {"messageId": "c", "eventSource": "aws:sqs", "body": "{\"message\":\"foo\"}", "attributes": {"MessageGroupId": "g"}}]});
        let Ok(Source::Sqs { records, fifo: false, .. }) = source_of(sqs) else { panic!("an SQS batch") };
        assert_eq!(records[0].sqs_id.as_deref(), Some("a"));
        assert_eq!(records[0].event, Pending::Text("{\"event\":\"E\"}".into()), "a body is parsed when its record is mapped");
        let events: Vec<Result<Value, String>> = records.iter().map(|r| r.event.clone().resolve()).collect();
        assert_eq!(events[0], Ok(json!({"event": "E"})));
        assert_eq!(events[1], Err("the SQS message has no body".to_string()));
        assert_eq!(records[1].group, None);
        assert_eq!(events[2], Err(envelope::NOT_AN_EVENT.to_string()));
        assert_eq!(records[2].group.as_deref(), Some("g"));
    }

    #[test]
    fn the_payload_keeps_of_each_record_only_what_is_read() {
        let text = r#"{"Records": [
            {"messageId": "a", "receiptHandle": "h", "body": "{\"event\":\"E\"}", "md5OfBody": "x", "eventSource": "aws:sqs", "eventSourceARN": "arn:q.fifo",
             "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "g"}, "messageAttributes": {"k": {"stringValue": "v"}}},
            {"EventSource": "aws:sns", "EventSubscriptionArn": "s", "Sns": {"MessageId": "m", "Message": "{}", "Signature": "sig", "TopicArn": "t"}},
            {"attributes": "odd"}, 7],
            "other": {"kept": [1, 2.5, true, null, "as is"]}}"#;
        let Payload(lean) = serde_json::from_str(text).unwrap();
        assert_eq!(
            lean,
            json!({"Records": [
                {"messageId": "a", "receiptHandle": "h", "body": "{\"event\":\"E\"}", "eventSource": "aws:sqs", "eventSourceARN": "arn:q.fifo",
                 "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "g"}, "messageAttributes": {"k": {"stringValue": "v"}}},
                {"EventSource": "aws:sns", "Sns": {"MessageId": "m", "Message": "{}"}},
                {}, 7],
                "other": {"kept": [1, 2.5, true, null, "as is"]}})
        );
        // Any other payload reads exactly as a `Value`.
        for text in [r#"{"batch": [{"event": "E", "Records": [{"x": 1}]}]}"#, r#"[{"event": "E"}]"#, "42", r#""text""#, "null", r#"{"Records": "x"}"#] {
            let Payload(lean) = serde_json::from_str(text).unwrap();
            assert_eq!(lean, serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
        assert!(serde_json::from_str::<Payload>(r#"{"Records": [{"body": }]}"#).is_err());
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
        assert!(matches!(records[0].event, Pending::Ready(Err(_))), "not an event: one invalid record, never a silent success");
    }

    #[test]
    fn malformed_batches_are_errors_not_successes() {
        assert!(matches!(source_of(json!({"Records": "x"})), Err(IntakeError::MalformedSqs(_))));
        assert!(matches!(source_of(json!({"Records": [{"eventSource": "aws:s3"}]})), Err(IntakeError::MalformedSqs(_))));
        assert_eq!(
            source_of(json!({"Records": [{"messageId": "a", "eventSource": "aws:sqs"}, {"eventSource": "aws:sqs", "body": "{}"}]})).err(),
            Some(IntakeError::MissingMessageId { index: 1 })
        );
        assert!(source_of(json!({"Records": [{"messageId": "", "eventSource": "aws:sqs"}]})).is_err());
        assert!(matches!(source_of(json!({"requestContext": {}})), Err(IntakeError::MalformedHttp(_))));
    }
}
