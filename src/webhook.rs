//! Webhooks (SPEC §5, §12, §20): method, size, signature, decoding and body
//! checks, in that order, and the HTTP answer for API Gateway REST (v1), HTTP
//! API (v2), function URLs and Application Load Balancers. The sender schemes
//! are in [`crate::auth`], Segment's HTTP API paths in [`crate::segment_api`].

use std::borrow::Cow;
use std::io::Read;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::intake::{self, Flavour, HttpRequest};
use crate::outcome::{self, RecordResult, Tally};
use crate::segment_api::{self, ApiPath};

/// At most this many bytes of (decoded) body per request.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// At most this many events per request (on Segment's `/v1` paths, [`segment_api::MAX_CALLS`]).
pub const MAX_EVENTS: usize = 500;
/// A signature's timestamp must be within this of now.
pub const SIGNATURE_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Retry-After for a 503 when Dynamics gave none.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 30;

/// The `code` of an error answer (SPEC §20): a short word that SDKs read
/// (RudderStack's retries an answer without one as if the network had failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the body is not JSON.
    InvalidJson,
    /// 400: the body is JSON but not events, not valid base64, or a corrupt compressed stream.
    InvalidBody,
    /// 401: no sender scheme accepted the request.
    Unauthorized,
    /// 405: not a POST.
    MethodNotAllowed,
    /// 413: too many bytes (as sent or decoded) or too many events.
    TooLarge,
    /// 415: a Content-Encoding other than gzip, deflate or identity.
    UnsupportedEncoding,
    /// 422: some events invalid or rejected for good.
    Unprocessable,
    /// 503: something may pass on retry (Retry-After says when).
    Unavailable,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidBody => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedEncoding => 415,
            ErrorCode::Unprocessable => 422,
            ErrorCode::Unavailable => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedEncoding => "unsupported_encoding",
            ErrorCode::Unprocessable => "unprocessable",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// An HTTP answer before it is shaped for its flavour.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAnswer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl HttpAnswer {
    /// `{"error": …, "code": …, "message": …}` with the code's status.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> HttpAnswer {
        let message = message.into();
        HttpAnswer { status: code.status(), retry_after: None, body: json!({ "error": message, "code": code.as_str(), "message": message }) }
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> HttpAnswer {
        HttpAnswer { retry_after: Some(retry_after), ..HttpAnswer::error(ErrorCode::Unavailable, message) }
    }

    /// Adds `code` and `message` to a summary body (422, 503) that lists what failed.
    pub fn with_code(mut self, code: ErrorCode, message: impl Into<String>) -> HttpAnswer {
        if let Value::Object(body) = &mut self.body {
            body.insert("code".into(), json!(code.as_str()));
            body.insert("message".into(), json!(message.into()));
        }
        self
    }

    /// On Segment's `/v1` paths a success is 200 `{"success": true}`, in
    /// deliver and enqueue modes alike (SPEC §20); errors are left as they are.
    pub fn for_api(self, api: Option<ApiPath>) -> HttpAnswer {
        match api {
            Some(_) if matches!(self.status, 200 | 202) => HttpAnswer { status: 200, retry_after: None, body: json!({ "success": true }) },
            _ => self,
        }
    }

    /// The Lambda response for the request's flavour.
    pub fn into_response(self, flavour: Flavour) -> Value {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if self.status == 405 {
            headers.insert("allow", HeaderValue::from_static("POST"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert("retry-after", HeaderValue::from(seconds));
        }
        if let Flavour::Alb { multi_value } = flavour {
            return alb_response(self.status, &headers, self.body.to_string(), multi_value);
        }
        let body = Some(Body::Text(self.body.to_string()));
        match flavour {
            Flavour::Rest => {
                let mut r = ApiGatewayProxyResponse::default();
                r.status_code = self.status.into();
                r.headers = headers;
                r.body = body;
                serde_json::to_value(r)
            }
            Flavour::HttpApi | Flavour::FunctionUrl | Flavour::Alb { .. } => {
                let mut r = ApiGatewayV2httpResponse::default();
                r.status_code = self.status.into();
                r.headers = headers;
                r.body = body;
                serde_json::to_value(r)
            }
        }
        .expect("the HTTP response serialises")
    }
}

/// An ALB target's answer: `statusDescription` is required, and the headers go in
/// `multiValueHeaders` when the target group sends multi-value headers.
fn alb_response(status: u16, headers: &HeaderMap, body: String, multi_value: bool) -> Value {
    let reason = aws_lambda_events::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let pairs = headers.iter().filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())));
    let mut response = json!({
        "statusCode": status,
        "statusDescription": format!("{status} {reason}").trim_end(),
        "body": body,
        "isBase64Encoded": false,
    });
    if multi_value {
        response["multiValueHeaders"] = Value::Object(pairs.map(|(k, v)| (k, json!([v]))).collect());
    } else {
        response["headers"] = Value::Object(pairs.map(|(k, v)| (k, json!(v))).collect());
    }
    response
}

/// Method and size as sent (405, 413), then the body bytes as sent (base64 decoded).
pub fn raw_body(request: &HttpRequest) -> Result<Vec<u8>, HttpAnswer> {
    if !request.method.eq_ignore_ascii_case("POST") {
        return Err(HttpAnswer::error(ErrorCode::MethodNotAllowed, format!("method {} is not allowed; send events with POST", request.method)));
    }
    let text = request.body.as_deref().unwrap_or("");
    let too_large = || HttpAnswer::error(ErrorCode::TooLarge, format!("the body is larger than {MAX_BODY_BYTES} bytes; split it into several requests"));
    if request.is_base64_encoded {
        // Decoding is only attempted when the decoded size can fit.
        if text.len() / 4 * 3 > MAX_BODY_BYTES + 3 {
            return Err(too_large());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| HttpAnswer::error(ErrorCode::InvalidBody, "isBase64Encoded is set but the body is not valid base64"))?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        Ok(bytes)
    } else {
        if text.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        Ok(text.as_bytes().to_vec())
    }
}

/// A content coding of `Content-Encoding` that the relay decodes (SPEC §20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    /// The zlib format, as HTTP means `deflate`.
    Deflate,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// The codings of every `Content-Encoding` header, in the order they were
/// applied; `identity` is no coding. Anything else is 415.
fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, HttpAnswer> {
    let mut codings = Vec::new();
    for value in headers.get_all("content-encoding") {
        let text = value.to_str().unwrap_or("?");
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => codings.push(Coding::Gzip),
                "deflate" => codings.push(Coding::Deflate),
                "identity" => {}
                _ => {
                    return Err(HttpAnswer::error(
                        ErrorCode::UnsupportedEncoding,
                        format!("Content-Encoding '{name}' is not supported: send the body uncompressed, or with Content-Encoding gzip or deflate"),
                    ))
                }
            }
        }
    }
    Ok(codings)
}

/// The body as the relay reads it: `Content-Encoding` undone (gzip, deflate),
/// at most [`MAX_BODY_BYTES`] of it. Decoding stops at the limit, so a small
/// compressed bomb never becomes a large buffer (413); a corrupt stream is 400.
pub fn decode<'a>(sent: &'a [u8], headers: &HeaderMap) -> Result<Cow<'a, [u8]>, HttpAnswer> {
    let mut body = Cow::Borrowed(sent);
    for coding in codings(headers)?.into_iter().rev() {
        body = Cow::Owned(inflate(coding, &body, MAX_BODY_BYTES)?);
    }
    Ok(body)
}

fn inflate(coding: Coding, input: &[u8], limit: usize) -> Result<Vec<u8>, HttpAnswer> {
    let reader: Box<dyn Read + '_> = match coding {
        // Several gzip members in a row are one body (RFC 1952).
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(input)),
    };
    // One byte past the limit tells a body of exactly the limit from a larger one.
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit + 1));
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| {
        HttpAnswer::error(ErrorCode::InvalidBody, format!("the body is not a valid {} stream (Content-Encoding: {}): {e}", coding.name(), coding.name()))
    })?;
    if out.len() > limit {
        return Err(HttpAnswer::error(
            ErrorCode::TooLarge,
            format!("the body decodes to more than {limit} bytes (Content-Encoding: {}); split it into several requests", coding.name()),
        ));
    }
    Ok(out)
}

/// `sha256=` + lowercase hex HMAC-SHA256(secret, "{timestamp}.{body}").
pub fn sign(secret: &[u8], timestamp_ms: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, timestamp_ms, body)))
}

/// Re-signs an API Gateway / function URL event in place (its `X-Timestamp` and
/// `X-Signature` headers, single- and multi-value), over the raw body it carries
/// (base64-decoded when `isBase64Encoded`). For the demo, samples and tests:
/// signatures are valid for 5 minutes only.
pub fn resign_event(event: &mut Value, secret: &[u8], now_ms: i64) {
    let Some(body) = event.get("body").and_then(Value::as_str) else { return };
    let raw = if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        base64::engine::general_purpose::STANDARD.decode(body.trim()).unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    let timestamp = now_ms.to_string();
    let signature = sign(secret, &timestamp, &raw);
    for (field, multi) in [("headers", false), ("multiValueHeaders", true)] {
        let Some(headers) = event.get_mut(field).and_then(Value::as_object_mut) else { continue };
        for (name, value) in headers.iter_mut() {
            let new = match name.to_ascii_lowercase().as_str() {
                "x-timestamp" => &timestamp,
                "x-signature" => &signature,
                _ => continue,
            };
            *value = if multi { json!([new]) } else { json!(new) };
        }
    }
}

fn mac(secret: &[u8], timestamp_ms: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp_ms.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Checks `X-Timestamp` and `X-Signature`; the error says what is wrong (never the expected value).
pub fn verify_signature(secret: Option<&[u8]>, headers: &HeaderMap, body: &[u8], now_ms: i64) -> Result<(), String> {
    let Some(secret) = secret else {
        return Err("webhook signing is not configured: add webhook_secret to the secret (or set D365_WEBHOOK_AUTH=none behind an authorizer)".into());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let timestamp = header("x-timestamp").ok_or("missing X-Timestamp header")?;
    let signature = header("x-signature").ok_or("missing X-Signature header")?;
    let sent_ms: i64 = timestamp.parse().map_err(|_| "X-Timestamp is not unix epoch milliseconds")?;
    // abs_diff: any i64 the sender puts in the header, without overflow.
    if now_ms.abs_diff(sent_ms) > SIGNATURE_WINDOW_MS.unsigned_abs() {
        return Err("X-Timestamp is more than 5 minutes from now: re-sign the request (and check the sender's clock)".into());
    }
    let given = signature.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()).ok_or("X-Signature is not sha256=<hex>")?;
    let expected = mac(secret, timestamp, body);
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err("X-Signature does not match the body: sign \"{X-Timestamp}.{raw body}\" with the webhook secret".into())
    }
}

/// The events of a body by the rule of [`intake::event_list`] — on Segment's
/// `/v1` paths by [`segment_api::calls`] — within this endpoint's limits (400 or 413 otherwise).
pub fn parse_events(body: &[u8], api: Option<ApiPath>) -> Result<Vec<Value>, HttpAnswer> {
    // .NET senders (Dataverse, Power Automate) may lead with a UTF-8 byte order mark.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = serde_json::from_slice(body).map_err(|e| HttpAnswer::error(ErrorCode::InvalidJson, format!("the body is not JSON: {e}")))?;
    let (events, max) = match api {
        Some(api) => (segment_api::calls(value, api), segment_api::MAX_CALLS),
        None => (intake::event_list(value), MAX_EVENTS),
    };
    let events = events.map_err(|problem| HttpAnswer::error(ErrorCode::InvalidBody, problem))?;
    if events.is_empty() {
        return Err(HttpAnswer::error(ErrorCode::InvalidBody, "the body holds no events"));
    }
    if let Some(i) = events.iter().position(|e| !e.is_object()) {
        return Err(HttpAnswer::error(ErrorCode::InvalidBody, format!("item {i} is not an event object")));
    }
    if events.len() > max {
        return Err(HttpAnswer::error(ErrorCode::TooLarge, format!("{} events in one request; at most {max}: split them into several requests", events.len())));
    }
    Ok(events)
}

/// 200 when all were delivered, dropped or duplicate; 503 with Retry-After when
/// any may pass on retry; else 422 when some were invalid or rejected.
pub fn answer(results: &[RecordResult], tally: &Tally) -> HttpAnswer {
    let body = outcome::summary(results, tally);
    if tally.failed > 0 {
        let retry_after = tally.retry_after.unwrap_or(DEFAULT_RETRY_AFTER_SECS);
        let message = format!("{} of {} event(s) may pass on retry (see failed): send them again after {retry_after} s", tally.failed, tally.records);
        return HttpAnswer { status: 503, retry_after: Some(retry_after), body }.with_code(ErrorCode::Unavailable, message);
    }
    let not_done = tally.not_done();
    if not_done == 0 {
        return HttpAnswer { status: 200, retry_after: None, body };
    }
    let message = format!("{not_done} of {} event(s) were invalid or rejected by Dynamics (see failed): fix them, a retry will not pass", tally.records);
    HttpAnswer { status: 422, retry_after: None, body }.with_code(ErrorCode::Unprocessable, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("X-Timestamp", ts.parse().unwrap());
        h.insert("x-SIGNATURE", sig.parse().unwrap());
        h
    }

    #[test]
    fn signatures_are_checked() {
        let now = 1_780_000_000_000i64;
        let body = br#"{"event":"E"}"#;
        let ts = now.to_string();
        let good = sign(b"whsec", &ts, body);
        assert_eq!(verify_signature(Some(b"whsec"), &headers(&ts, &good), body, now), Ok(()));
        assert!(verify_signature(Some(b"other"), &headers(&ts, &good), body, now).is_err());
        assert!(verify_signature(Some(b"whsec"), &headers(&ts, &good), b"{\"event\":\"F\"}", now).is_err());
        assert!(verify_signature(Some(b"whsec"), &headers(&ts, &good), body, now + 10 * 60 * 1000).unwrap_err().contains("5 minutes"));
        assert!(verify_signature(Some(b"whsec"), &headers(&ts, &good[7..]), body, now).is_err());
        assert!(verify_signature(Some(b"whsec"), &HeaderMap::new(), body, now).unwrap_err().contains("X-Timestamp"));
        assert!(verify_signature(None, &headers(&ts, &good), body, now).unwrap_err().contains("not configured"));
    }

    #[test]
    fn extreme_timestamps_are_refused_without_overflow() {
        let body = b"{}";
        for (ts, now) in [(i64::MIN, 1_780_000_000_000i64), (i64::MAX, -1), (i64::MIN, i64::MAX), (i64::MAX, i64::MIN)] {
            let ts = ts.to_string();
            let sig = sign(b"whsec", &ts, body);
            assert!(verify_signature(Some(b"whsec"), &headers(&ts, &sig), body, now).unwrap_err().contains("5 minutes"), "{ts} at {now}");
        }
    }

    #[test]
    fn the_signature_matches_an_independent_computation() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'secret',b'1700000000000.{}',hashlib.sha256).hexdigest())"
        assert_eq!(sign(b"secret", "1700000000000", b"{}"), "sha256=8399216d111287e3bb28e25c0f4f31dffdf831c68c9ee2b96c2f67c9b81d341b");
    }

    #[test]
    fn bodies_are_events() {
        assert_eq!(parse_events(br#"{"event":"E"}"#, None).unwrap().len(), 1);
        assert_eq!(parse_events(br#"[{"a":1},{"b":2}]"#, None).unwrap().len(), 2);
        assert_eq!(parse_events(br#"{"batch":[{"a":1}]}"#, None).unwrap().len(), 1);
        assert_eq!(parse_events(b"nope", None).unwrap_err().status, 400);
        assert_eq!(parse_events(b"[1]", None).unwrap_err().status, 400);
        assert_eq!(parse_events(b"[]", None).unwrap_err().status, 400);
        assert_eq!(parse_events(br#"{"batch":3}"#, None).unwrap_err().status, 400);
        let many = format!("[{}]", vec!["{}"; 501].join(","));
        assert_eq!(parse_events(many.as_bytes(), None).unwrap_err().status, 413);
    }

    #[test]
    fn alb_answers_carry_a_status_description_and_the_request_s_header_form() {
        let answer = HttpAnswer::unavailable("busy", 7);
        let single = answer.clone().into_response(Flavour::Alb { multi_value: false });
        assert_eq!(single["statusCode"], 503);
        assert_eq!(single["statusDescription"], "503 Service Unavailable");
        assert_eq!(single["headers"]["retry-after"], "7");
        assert_eq!(single["isBase64Encoded"], false);
        assert!(single.get("multiValueHeaders").is_none());
        let multi = HttpAnswer { status: 200, retry_after: None, body: json!({"error": "x"}) }.into_response(Flavour::Alb { multi_value: true });
        assert_eq!(multi["statusDescription"], "200 OK");
        assert_eq!(multi["multiValueHeaders"]["content-type"], json!(["application/json"]));
        assert!(multi.get("headers").is_none());
        assert_eq!(serde_json::from_str::<Value>(multi["body"].as_str().unwrap()).unwrap(), json!({"error": "x"}));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_json() {
        assert_eq!(parse_events(b"\xEF\xBB\xBF{\"event\":\"E\"}", None).unwrap().len(), 1);
    }

    #[test]
    fn method_and_size_come_first() {
        let req = |method: &str, body: String, b64: bool| HttpRequest {
            flavour: Flavour::Rest,
            method: method.into(),
            headers: HeaderMap::new(),
            body: Some(body),
            is_base64_encoded: b64,
            code: None,
            path: "/".into(),
        };
        assert_eq!(raw_body(&req("GET", "{}".into(), false)).unwrap_err().status, 405);
        assert_eq!(raw_body(&req("POST", "x".repeat(MAX_BODY_BYTES + 1), false)).unwrap_err().status, 413);
        assert_eq!(raw_body(&req("POST", "e30=".into(), true)).unwrap(), b"{}");
        assert_eq!(raw_body(&req("POST", "***".into(), true)).unwrap_err().status, 400);
        let big = base64::engine::general_purpose::STANDARD.encode(vec![b' '; MAX_BODY_BYTES + 10]);
        assert_eq!(raw_body(&req("POST", big, true)).unwrap_err().status, 413);
    }

    fn encoded(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-encoding", value.parse().unwrap());
        h
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_and_deflate_are_decoded_and_others_are_415() {
        let body = br#"{"event":"E"}"#;
        assert!(matches!(decode(body, &HeaderMap::new()).unwrap(), Cow::Borrowed(_)), "no coding, no copy");
        assert_eq!(&*decode(&gzip(body), &encoded("gzip")).unwrap(), body);
        assert_eq!(&*decode(&gzip(body), &encoded("GZIP")).unwrap(), body);
        assert_eq!(&*decode(&zlib(body), &encoded("deflate")).unwrap(), body);
        assert_eq!(&*decode(body, &encoded("identity")).unwrap(), body);
        // Codings are undone last first.
        assert_eq!(&*decode(&gzip(&zlib(body)), &encoded("deflate, gzip")).unwrap(), body);
        let two_members = [gzip(b"{\"event\":"), gzip(b"\"E\"}")].concat();
        assert_eq!(&*decode(&two_members, &encoded("gzip")).unwrap(), body);
        for other in ["br", "zstd", "compress"] {
            let refused = decode(body, &encoded(other)).unwrap_err();
            assert_eq!((refused.status, refused.body["code"].as_str()), (415, Some("unsupported_encoding")), "{other}");
            assert!(refused.body["message"].as_str().unwrap().contains(other));
        }
    }

    #[test]
    fn a_corrupt_stream_is_400_and_a_bomb_stops_at_the_limit() {
        let corrupt = decode(b"definitely not gzip", &encoded("gzip")).unwrap_err();
        assert_eq!((corrupt.status, corrupt.body["code"].as_str()), (400, Some("invalid_body")));
        let mut truncated = gzip(&[b' '; 10_000]);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(decode(&truncated, &encoded("gzip")).unwrap_err().status, 400);
        assert_eq!(decode(&gzip(b"{}"), &encoded("deflate")).unwrap_err().status, 400, "gzip sent as deflate");
        let exactly = vec![b' '; MAX_BODY_BYTES];
        assert_eq!(decode(&gzip(&exactly), &encoded("gzip")).unwrap().len(), MAX_BODY_BYTES);
        let bomb = gzip(&vec![b' '; 64 * MAX_BODY_BYTES]);
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let refused = decode(&bomb, &encoded("gzip")).unwrap_err();
        assert_eq!((refused.status, refused.body["code"].as_str()), (413, Some("too_large")));
    }

    #[test]
    fn every_error_answer_carries_code_and_message() {
        let answer = HttpAnswer::error(ErrorCode::Unauthorized, "missing X-Signature header");
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body, json!({"error": "missing X-Signature header", "code": "unauthorized", "message": "missing X-Signature header"}));
        let busy = HttpAnswer::unavailable("busy", 60);
        assert_eq!((busy.status, busy.retry_after, busy.body["code"].as_str()), (503, Some(60), Some("unavailable")));
        assert_eq!(parse_events(b"nope", None).unwrap_err().body["code"], "invalid_json");
        assert_eq!(parse_events(b"[1]", None).unwrap_err().body["code"], "invalid_body");
        let many = format!("[{}]", vec!["{}"; 501].join(","));
        assert_eq!(parse_events(many.as_bytes(), None).unwrap_err().body["code"], "too_large");
        let on_v1 = format!("{{\"batch\": [{}]}}", vec!["{}"; 2500].join(","));
        assert_eq!(parse_events(on_v1.as_bytes(), Some(ApiPath::Batch)).unwrap().len(), 2500, "Segment's limit on /v1");
        let over = format!("{{\"batch\": [{}]}}", vec!["{}"; 2501].join(","));
        assert_eq!(parse_events(over.as_bytes(), Some(ApiPath::Batch)).unwrap_err().status, 413);
    }

    #[test]
    fn a_success_on_a_v1_path_is_success_true() {
        let delivered = HttpAnswer { status: 200, retry_after: None, body: json!({"delivered": 1}) };
        assert_eq!(delivered.clone().for_api(Some(ApiPath::Batch)).body, json!({"success": true}));
        let queued = HttpAnswer { status: 202, retry_after: None, body: json!({"accepted": 1}) }.for_api(Some(ApiPath::Call("track")));
        assert_eq!((queued.status, queued.body), (200, json!({"success": true})));
        assert_eq!(delivered.clone().for_api(None), delivered);
        let refused = HttpAnswer::error(ErrorCode::TooLarge, "x");
        assert_eq!(refused.clone().for_api(Some(ApiPath::Batch)), refused);
    }
}
