//! Webhooks (SPEC §5, §12): method, size, signature and body checks, in that order,
//! and the HTTP answer for API Gateway REST (v1), HTTP API (v2), function URLs
//! and Application Load Balancers. The sender schemes are in [`crate::auth`].

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

/// At most this many bytes of (decoded) body per request.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// At most this many events per request.
pub const MAX_EVENTS: usize = 500;
/// A signature's timestamp must be within this of now.
pub const SIGNATURE_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Retry-After for a 503 when Dynamics gave none.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 30;

/// An HTTP answer before it is shaped for its flavour.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAnswer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl HttpAnswer {
    pub fn error(status: u16, message: impl Into<String>) -> HttpAnswer {
        HttpAnswer { status, retry_after: None, body: json!({ "error": message.into() }) }
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> HttpAnswer {
        HttpAnswer { status: 503, retry_after: Some(retry_after), body: json!({ "error": message.into() }) }
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

/// Method and size (405, 413), then the raw body bytes (base64 decoded).
pub fn raw_body(request: &HttpRequest) -> Result<Vec<u8>, HttpAnswer> {
    if !request.method.eq_ignore_ascii_case("POST") {
        return Err(HttpAnswer::error(405, format!("method {} is not allowed; send events with POST", request.method)));
    }
    let text = request.body.as_deref().unwrap_or("");
    let too_large = || HttpAnswer::error(413, format!("the body is larger than {MAX_BODY_BYTES} bytes; split it into several requests"));
    if request.is_base64_encoded {
        // Decoding is only attempted when the decoded size can fit.
        if text.len() / 4 * 3 > MAX_BODY_BYTES + 3 {
            return Err(too_large());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| HttpAnswer::error(400, "isBase64Encoded is set but the body is not valid base64"))?;
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

/// The events of a body by the rule of [`intake::event_list`], within this
/// endpoint's limits (400 or 413 otherwise).
pub fn parse_events(body: &[u8]) -> Result<Vec<Value>, HttpAnswer> {
    // .NET senders (Dataverse, Power Automate) may lead with a UTF-8 byte order mark.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = serde_json::from_slice(body).map_err(|e| HttpAnswer::error(400, format!("the body is not JSON: {e}")))?;
    let events = intake::event_list(value).map_err(|problem| HttpAnswer::error(400, problem))?;
    if events.is_empty() {
        return Err(HttpAnswer::error(400, "the body holds no events"));
    }
    if let Some(i) = events.iter().position(|e| !e.is_object()) {
        return Err(HttpAnswer::error(400, format!("item {i} is not an event object")));
    }
    if events.len() > MAX_EVENTS {
        return Err(HttpAnswer::error(413, format!("{} events in one request; at most {MAX_EVENTS}", events.len())));
    }
    Ok(events)
}

/// 200 when all were delivered, dropped or duplicate; 503 with Retry-After when
/// any may pass on retry; else 422 when some were invalid or rejected.
pub fn answer(results: &[RecordResult], tally: &Tally) -> HttpAnswer {
    let body = outcome::summary(results, tally);
    if tally.failed > 0 {
        return HttpAnswer { status: 503, retry_after: Some(tally.retry_after.unwrap_or(DEFAULT_RETRY_AFTER_SECS)), body };
    }
    let status = if tally.not_done() == 0 { 200 } else { 422 };
    HttpAnswer { status, retry_after: None, body }
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
        assert_eq!(parse_events(br#"{"event":"E"}"#).unwrap().len(), 1);
        assert_eq!(parse_events(br#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
        assert_eq!(parse_events(br#"{"batch":[{"a":1}]}"#).unwrap().len(), 1);
        assert_eq!(parse_events(b"nope").unwrap_err().status, 400);
        assert_eq!(parse_events(b"[1]").unwrap_err().status, 400);
        assert_eq!(parse_events(b"[]").unwrap_err().status, 400);
        assert_eq!(parse_events(br#"{"batch":3}"#).unwrap_err().status, 400);
        let many = format!("[{}]", vec!["{}"; 501].join(","));
        assert_eq!(parse_events(many.as_bytes()).unwrap_err().status, 413);
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
        let multi = HttpAnswer::error(200, "x").into_response(Flavour::Alb { multi_value: true });
        assert_eq!(multi["statusDescription"], "200 OK");
        assert_eq!(multi["multiValueHeaders"]["content-type"], json!(["application/json"]));
        assert!(multi.get("headers").is_none());
        assert_eq!(serde_json::from_str::<Value>(multi["body"].as_str().unwrap()).unwrap(), json!({"error": "x"}));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_json() {
        assert_eq!(parse_events(b"\xEF\xBB\xBF{\"event\":\"E\"}").unwrap().len(), 1);
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
        };
        assert_eq!(raw_body(&req("GET", "{}".into(), false)).unwrap_err().status, 405);
        assert_eq!(raw_body(&req("POST", "x".repeat(MAX_BODY_BYTES + 1), false)).unwrap_err().status, 413);
        assert_eq!(raw_body(&req("POST", "e30=".into(), true)).unwrap(), b"{}");
        assert_eq!(raw_body(&req("POST", "***".into(), true)).unwrap_err().status, 400);
        let big = base64::engine::general_purpose::STANDARD.encode(vec![b' '; MAX_BODY_BYTES + 10]);
        assert_eq!(raw_body(&req("POST", big, true)).unwrap_err().status, 413);
    }
}
