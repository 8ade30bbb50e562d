//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, never in a
//! release build): each takes the bytes a sender controls and drives the
//! crate-private function that reads them, the way the handler does. A target
//! fails on a panic, a hang or an oversized allocation; the functions here
//! assert only what must hold for any input (a signature made by the relay
//! verifies, a decoded body stays within its limit).
//!
//! Inputs with several parts (headers, path, body, secret) are split on the
//! byte 0xFF, which no UTF-8 text holds: `part0 0xFF part1 0xFF …`.

use std::sync::OnceLock;

use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::auth::{self, SenderProof};
use crate::config::{Credentials, Mapping, SenderSecrets, WebhookAuth};
use crate::intake::{self, Flavour, Source};
use crate::mapping::{self, MapContext};
use crate::rows::EntityDef;
use crate::schema::{self, ParamType, Parameter};
use crate::segment_api;
use crate::webhook;

/// The separator of an input's parts.
pub const SEPARATOR: u8 = 0xFF;

/// The first `n` parts of `bytes` split on [`SEPARATOR`]; missing parts are empty,
/// the last part keeps any further separators.
pub fn parts(bytes: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = bytes.splitn(n, |b| *b == SEPARATOR).collect();
    out.resize(n, &[]);
    out
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A fixed "now" (2026-06-06T10:00:00Z): mapping and signatures are pure in it.
const NOW_MS: i64 = 1_780_740_000_000;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(NOW_MS).expect("a valid instant")
}

/// Headers from `name: value` lines; lines that are not valid HTTP are skipped.
fn header_map(lines: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    headers
}

/// What a cold start does before the first event (the phone library's
/// metadata, the mapping documents), so that no input pays for it.
pub fn init() {
    mapping::warm_phone_metadata();
    let _ = demo_mapping();
    let _ = preset();
}

/// A whole Lambda payload (SPEC §5–§8, §12): read as the runtime reads it
/// ([`intake::Payload`]), classified ([`intake::source_of`]), every record's
/// envelopes unwrapped, and an HTTP request taken through the webhook's checks
/// (size, base64, `Content-Encoding`, Segment's `/v1` paths, the body's events).
pub fn intake(bytes: &[u8]) {
    let Ok(intake::Payload(payload)) = serde_json::from_slice::<intake::Payload>(bytes) else { return };
    // The lean reading keeps what plain JSON keeps, outside `Records`.
    if let Ok(plain) = serde_json::from_slice::<Value>(bytes) {
        if plain.get("Records").is_none() {
            assert_eq!(plain, payload, "the lean payload differs from the JSON outside Records");
        }
    }
    match intake::source_of(payload) {
        Err(error) => {
            let _ = error.to_string();
        }
        Ok(Source::Sqs { records, mut batch, .. }) => {
            batch.keep_bodies(&records);
            resolve_all(records);
        }
        Ok(Source::Async { records, .. }) => resolve_all(records),
        Ok(Source::Direct(payload)) => resolve_all(intake::direct_payload_records(payload)),
        Ok(Source::Http(request)) => {
            let flavour = request.flavour;
            let api = segment_api::api_path(&request.path);
            let answer = match webhook::raw_body(&request) {
                Err(answer) => answer,
                Ok(sent) => match webhook::decode(&sent, &request.headers).and_then(|body| webhook::parse_events(&body, api)) {
                    Err(answer) => answer,
                    Ok(events) => {
                        resolve_all(intake::direct_records(events));
                        webhook::HttpAnswer { status: 200, retry_after: None, body: json!({}) }
                    }
                },
            };
            let _ = answer.for_api(api).into_response(flavour);
        }
    }
}

fn resolve_all(records: Vec<intake::Incoming>) {
    for record in records {
        let _ = record.event.resolve();
    }
}

/// A webhook body's `Content-Encoding` and limits (SPEC §20): `headers 0xFF
/// flags 0xFF body`. Flag bit 0 sends the body base64-encoded, bit 1 gzips it
/// first (so that the decoded bytes reach the body parser), bit 2 deflates it,
/// bit 3 posts it to `/v1/batch`.
pub fn webhook_body(bytes: &[u8]) {
    use base64::Engine;
    use std::io::Write;
    let [headers, flags, body] = parts(bytes, 3)[..] else { unreachable!("three parts") };
    let mut headers = header_map(headers);
    let flags = flags.first().copied().unwrap_or(0);
    let mut body = body.to_vec();
    if flags & 2 != 0 {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&body).expect("writes to a Vec");
        body = encoder.finish().expect("writes to a Vec");
        headers.append("content-encoding", HeaderValue::from_static("gzip"));
    }
    if flags & 4 != 0 {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&body).expect("writes to a Vec");
        body = encoder.finish().expect("writes to a Vec");
        headers.append("content-encoding", HeaderValue::from_static("deflate"));
    }
    let base64 = flags & 1 != 0;
    let text = if base64 { base64::engine::general_purpose::STANDARD.encode(&body) } else { String::from_utf8_lossy(&body).into_owned() };
    let path = if flags & 8 != 0 { "/v1/batch" } else { "/events" };
    let request = intake::HttpRequest {
        flavour: Flavour::HttpApi,
        method: "POST".into(),
        headers,
        body: Some(text),
        is_base64_encoded: base64,
        code: None,
        path: path.into(),
    };
    let Ok(sent) = webhook::raw_body(&request) else { return };
    match webhook::decode(&sent, &request.headers) {
        Ok(decoded) => {
            assert!(decoded.len() <= webhook::MAX_BODY_BYTES, "a decoded body past the limit");
            let _ = webhook::parse_events(&decoded, segment_api::api_path(path));
        }
        Err(answer) => assert!(matches!(answer.status, 400 | 413 | 415), "decoding answered {}", answer.status),
    }
}

/// Every sender scheme (SPEC §5, §12, §20) over `headers 0xFF code 0xFF
/// secret 0xFF body`; the same secret serves as signing secret, shared key and
/// write key. Then each signer's output must pass its own check.
pub fn sender_schemes(bytes: &[u8]) {
    let [headers, code, secret, body] = parts(bytes, 4)[..] else { unreachable!("four parts") };
    let headers = header_map(headers);
    let code = text(code);
    let secret = text(secret);
    let given = |s: &str| (!s.is_empty()).then(|| SecretString::from(s.to_string()));
    let senders = SenderSecrets { webhook_secret: given(&secret), webhook_key: given(&secret), write_key: given(&secret) };
    let proof = SenderProof { headers: &headers, code: Some(&code), body, decoded: Some(body) };
    for scheme in WebhookAuth::ALL {
        let _ = auth::authenticate(&[scheme], &senders, &proof, NOW_MS);
    }
    let _ = auth::authenticate(&WebhookAuth::ALL, &senders, &proof, NOW_MS);
    let _ = webhook::verify_signature(Some(secret.as_bytes()), &headers, body, NOW_MS);
    let _ = auth::verify_standard(Some(secret.as_bytes()), &headers, body, NOW_MS / 1000);
    let _ = auth::verify_segment(Some(secret.as_bytes()), &headers, body);
    let _ = auth::verify_key(Some(secret.as_bytes()), &headers, Some(&code));
    let _ = auth::verify_write_key(Some(secret.as_bytes()), &headers, Some(body));

    // What the relay signs, it accepts.
    let secret = secret.as_bytes();
    let timestamp = NOW_MS.to_string();
    let mut signed = HeaderMap::new();
    signed.insert("x-timestamp", HeaderValue::from_str(&timestamp).expect("digits"));
    signed.insert("x-signature", HeaderValue::from_str(&webhook::sign(secret, &timestamp, body)).expect("hex"));
    assert_eq!(webhook::verify_signature(Some(secret), &signed, body, NOW_MS), Ok(()), "hmac refuses its own signature");
    let mut segment = HeaderMap::new();
    segment.insert("x-signature", HeaderValue::from_str(&auth::sign_segment(secret, body)).expect("hex"));
    assert_eq!(auth::verify_segment(Some(secret), &segment, body), Ok(()), "segment refuses its own signature");
    // An id as a header carries it: visible ASCII (HeaderValue::to_str refuses other bytes).
    let id = code.trim();
    if !id.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return;
    }
    if let (Ok(id_value), Ok(signature)) = (HeaderValue::from_str(id), auth::sign_standard(secret, id, &(NOW_MS / 1000).to_string(), body)) {
        if !id.is_empty() {
            let mut standard = HeaderMap::new();
            standard.insert("webhook-id", id_value);
            standard.insert("webhook-timestamp", HeaderValue::from_str(&(NOW_MS / 1000).to_string()).expect("digits"));
            standard.insert("webhook-signature", HeaderValue::from_str(&signature).expect("base64"));
            assert_eq!(auth::verify_standard(Some(secret), &standard, body, NOW_MS / 1000), Ok(id.to_string()), "standard refuses its own signature");
        }
    }
}

/// Segment's HTTP API (SPEC §20): `path 0xFF body`, the path told apart
/// ([`segment_api::api_path`]) and the body's calls taken with the batch's
/// `context` and `integrations` merged in ([`segment_api::calls`]), within the limits.
pub fn segment_batch(bytes: &[u8]) {
    let [path, body] = parts(bytes, 2)[..] else { unreachable!("two parts") };
    let path = text(path);
    let api = segment_api::api_path(&path);
    let _ = webhook::parse_events(body, Some(api.unwrap_or(segment_api::ApiPath::Batch)));
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        for api in [segment_api::ApiPath::Batch, segment_api::ApiPath::Call("track")] {
            if let Ok(calls) = segment_api::calls(value.clone(), api) {
                for call in calls {
                    let _ = crate::envelope::unwrap(call);
                }
            }
        }
        let mut target = value.get("batch").and_then(|b| b.get(0)).cloned().unwrap_or(Value::Null);
        segment_api::merge_defaults(&mut target, &value);
    }
}

/// The envelopes (SPEC §12): SNS, EventBridge and Dataverse's
/// `RemoteExecutionContext`, unwrapped recursively; and an SNS message as text.
pub fn envelope(bytes: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        let _ = crate::envelope::dataverse::decode(&value);
        let _ = crate::envelope::unwrap(value);
    }
    let text = text(bytes);
    let _ = crate::envelope::sns_message(&text, Some("fuzz"), 0);
    let _ = crate::envelope::dataverse::wcf_date(&text);
    let _ = crate::envelope::dataverse::normalise_message(&text);
}

/// The demo mapping (`events/mapping.json`): events, attributes, rows, identity and consent.
fn demo_mapping() -> &'static Mapping {
    static MAPPING: OnceLock<Mapping> = OnceLock::new();
    MAPPING.get_or_init(|| Mapping::parse(include_str!("../events/mapping.json")).expect("the demo mapping parses"))
}

/// The built-in Default preset.
fn preset() -> &'static Mapping {
    static PRESET: OnceLock<Mapping> = OnceLock::new();
    PRESET.get_or_init(Mapping::default_preset)
}

/// The mapping of an event (SPEC §3–4, §14, §19) under the demo mapping and
/// the built-in preset, with and without a default phone region.
pub fn map_event(bytes: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(bytes) else { return };
    for (mapping, region) in [(demo_mapping(), None), (demo_mapping(), crate::config::parse_region("GB")), (preset(), crate::config::parse_region("US"))] {
        let ctx = MapContext { mapping, default_trigger: Some("msdynmkt_fuzz"), default_phone_region: region, now: now() };
        let _ = mapping::map_event(&event, &ctx);
    }
}

/// Phone (E.164) and e-mail normalisation: `region 0xFF text`.
pub fn normalise(bytes: &[u8]) {
    let [region, raw] = parts(bytes, 2)[..] else { unreachable!("two parts") };
    let raw = text(raw);
    let region = crate::config::parse_region(&text(region));
    let _ = mapping::normalize_email(&raw);
    let _ = mapping::normalize_phone(&raw, region);
    let _ = mapping::normalize_phone(&raw, None);
}

/// Schema coercion (SPEC §13, §19): a JSON value coerced to every parameter
/// type and every column type.
pub fn schema_coerce(bytes: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else { return };
    for code in 0..=13 {
        for entity in [None, Some("contact".to_string())] {
            let parameter = Parameter { name: "p".into(), kind: ParamType::from_code(code), required: true, entity };
            let _ = schema::coerce(&parameter, &value);
        }
    }
    const COLUMN_TYPES: &[&str] = &[
        "String",
        "Memo",
        "Integer",
        "Picklist",
        "State",
        "Status",
        "Decimal",
        "Money",
        "Double",
        "Boolean",
        "DateTime",
        "Uniqueidentifier",
        "BigInt",
        "Lookup",
    ];
    for kind in COLUMN_TYPES {
        let _ = crate::rows::coerce_column(kind, &value);
    }
    if let Value::String(s) = &value {
        let _ = schema::guid(s);
    }
}

/// An account's definition with a column of each type a key may have.
fn account() -> &'static EntityDef {
    static ACCOUNT: OnceLock<EntityDef> = OnceLock::new();
    ACCOUNT.get_or_init(|| {
        let columns: Vec<Value> = [
            ("accountid", "Uniqueidentifier"),
            ("name", "String"),
            ("numberofemployees", "Integer"),
            ("revenue", "Money"),
            ("exchangerate", "Decimal"),
            ("ratio", "Double"),
            ("big", "BigInt"),
            ("donotemail", "Boolean"),
            ("primarycontactid", "Lookup"),
            ("ownerid", "Owner"),
            ("new_region", "Picklist"),
            ("statecode", "State"),
            ("createdon", "DateTime"),
            ("new_guid", "Uniqueidentifier"),
        ]
        .into_iter()
        .map(|(name, kind)| json!({"LogicalName": name, "AttributeType": kind}))
        .collect();
        let answer = json!({"value": [{"LogicalName": "account", "EntitySetName": "accounts", "PrimaryIdAttribute": "accountid", "Attributes": columns}]});
        EntityDef::from_answer(&answer).expect("the definition reads").expect("one entity")
    })
}

/// A row's key path (SPEC §19): the values of a JSON object or list (what an
/// event's key paths yield) under the definition's columns in turn, formatted
/// by column type and percent-encoded, with and without the definition. The
/// columns come from the mapping document, which [`Mapping::parse`] checks;
/// the values come from the event.
pub fn row_key(bytes: &[u8]) {
    let _ = crate::rows::encode(&text(bytes));
    let values: Vec<Value> = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => map.into_iter().map(|(_, v)| v).collect(),
        Ok(Value::Array(items)) => items,
        Ok(other) => vec![other],
        Err(_) => return,
    };
    let columns = &account().columns;
    for offset in 0..columns.len() {
        let key: Vec<(String, Value)> = values.iter().zip(columns.keys().cycle().skip(offset)).map(|(v, c)| (c.clone(), v.clone())).collect();
        for definition in [None, Some(account())] {
            if let Ok(path) = crate::rows::key_path("accounts", &key, definition) {
                assert!(path.is_ascii() && !path.contains([' ', '/', '?', '#']), "a key path that is not a URL path segment: {path}");
            }
        }
    }
}

/// The mapping document parser (SPEC §3, §19, §21): what the relay loads at cold start.
pub fn mapping_document(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(mapping) = Mapping::parse(text) {
        let _ = mapping.check_triggers(Some("msdynmkt_fuzz"));
        let _ = crate::lint::preset_notice(&mapping);
    }
}

/// The secret's JSON (SPEC §2.2, §17.3).
pub fn secret(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let _ = Credentials::parse(text, "v1");
}

/// `check --mapping` (SPEC §21.2): `document 0xFF event`, every problem of the
/// document, then what the event becomes under it. Whatever the walk passes,
/// the parser must load (the lint never passes what the relay refuses).
pub fn lint(bytes: &[u8]) {
    let [document, event] = parts(bytes, 2)[..] else { unreachable!("two parts") };
    let Ok(document) = std::str::from_utf8(document) else { return };
    let problems = crate::lint::problems(document);
    let parsed = Mapping::parse(document);
    if problems.is_empty() {
        assert!(parsed.is_ok(), "check --mapping passes a document the relay refuses: {:?}", parsed.err());
    }
    if let (Ok(mapping), Ok(event)) = (parsed, serde_json::from_slice::<Value>(event)) {
        let _ = crate::lint::explain(&mapping, &event);
    }
}
