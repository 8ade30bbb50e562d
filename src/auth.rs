//! Sender authentication (SPEC §5, §12, §20): the schemes of `D365_WEBHOOK_AUTH`,
//! tried in the order listed; a request passes if one of them accepts it.
//! Every comparison is constant time, and a scheme whose secret field is
//! absent rejects (fail closed). Error texts say what is wrong, never a value.

use aws_lambda_events::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{SenderSecrets, WebhookAuth};
use crate::webhook;

/// Standard Webhooks' tolerance for `webhook-timestamp` (seconds).
pub const STANDARD_WINDOW_SECS: i64 = 5 * 60;

/// What a request carries that a scheme may read.
pub struct SenderProof<'a> {
    pub headers: &'a HeaderMap,
    /// The `code` query parameter, URL-decoded.
    pub code: Option<&'a str>,
    /// The raw body as sent (after base64 decoding when `isBase64Encoded`):
    /// what signatures are computed over.
    pub body: &'a [u8],
    /// The body with its `Content-Encoding` undone, when it could be (the
    /// `writekey` scheme reads a `writeKey` field from it).
    pub decoded: Option<&'a [u8]>,
}

/// The scheme that accepted a request, and what it vouches for.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub scheme: WebhookAuth,
    /// Standard Webhooks' `webhook-id` (or Svix's `svix-id`): the idempotency key of a single event without `messageId`.
    pub webhook_id: Option<String>,
}

/// Tries each scheme in order; the error is the first listed scheme's reason.
pub fn authenticate(schemes: &[WebhookAuth], senders: &SenderSecrets, proof: &SenderProof<'_>, now_ms: i64) -> Result<Accepted, String> {
    let secret = senders.webhook_secret.as_ref().map(|s| s.expose_secret().as_bytes());
    let key = senders.webhook_key.as_ref().map(|s| s.expose_secret().as_bytes());
    let write_key = senders.write_key.as_ref().map(|s| s.expose_secret().as_bytes());
    let mut first_reason = None;
    for &scheme in schemes {
        let result = match scheme {
            WebhookAuth::Hmac => webhook::verify_signature(secret, proof.headers, proof.body, now_ms).map(|()| None),
            WebhookAuth::Standard => verify_standard(secret, proof.headers, proof.body, now_ms / 1000).map(Some),
            WebhookAuth::Segment => verify_segment(secret, proof.headers, proof.body).map(|()| None),
            WebhookAuth::Key => verify_key(key, proof.headers, proof.code).map(|()| None),
            WebhookAuth::WriteKey => verify_write_key(write_key, proof.headers, proof.decoded).map(|()| None),
            WebhookAuth::None => Ok(None),
        };
        match result {
            Ok(webhook_id) => return Ok(Accepted { scheme, webhook_id }),
            Err(reason) => {
                first_reason.get_or_insert(reason);
            }
        }
    }
    Err(first_reason.unwrap_or_else(|| "no sender authentication scheme is configured".into()))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Standard Webhooks (standardwebhooks.com): `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
/// entries, space-separated; the key is the base64 after `whsec_`, else the secret's bytes.
/// Each header is read under Svix's name (`svix-id`, …) first, then the
/// `webhook-*` one, as Svix's own library does (SPEC §20). Returns the id.
pub fn verify_standard(secret: Option<&[u8]>, headers: &HeaderMap, body: &[u8], now_s: i64) -> Result<String, String> {
    let secret = secret.ok_or("Standard Webhooks signing is not configured: add webhook_secret (whsec_…) to the secret")?;
    let read = |name: &str| header(headers, &format!("svix-{name}")).or_else(|| header(headers, &format!("webhook-{name}")));
    let id = read("id").ok_or("missing webhook-id (or svix-id) header")?;
    let timestamp = read("timestamp").ok_or("missing webhook-timestamp (or svix-timestamp) header")?;
    let signatures = read("signature").ok_or("missing webhook-signature (or svix-signature) header")?;
    let sent: i64 = timestamp.parse().map_err(|_| "webhook-timestamp is not unix epoch seconds")?;
    // abs_diff: any i64 the sender puts in the header, without overflow.
    if now_s.abs_diff(sent) > STANDARD_WINDOW_SECS.unsigned_abs() {
        return Err("webhook-timestamp (svix-timestamp) is more than 5 minutes from now: re-sign the request (and check the sender's clock)".into());
    }
    let key = standard_key(secret)?;
    let expected = standard_mac(&key, id, timestamp, body);
    let matched = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .fold(false, |found, given| found | bool::from(expected.as_slice().ct_eq(&given)));
    if matched {
        Ok(id.to_string())
    } else {
        Err("webhook-signature (svix-signature) has no v1 signature matching the body: sign \"{id}.{timestamp}.{body}\" with the webhook secret".into())
    }
}

fn standard_key(secret: &[u8]) -> Result<Vec<u8>, String> {
    match secret.strip_prefix(b"whsec_") {
        Some(b64) => {
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "webhook_secret starts with whsec_ but the rest is not base64".to_string())
        }
        None => Ok(secret.to_vec()),
    }
}

fn standard_mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// `webhook-signature` for `body` (tests, samples): `v1,<base64>`.
pub fn sign_standard(secret: &[u8], id: &str, timestamp_s: &str, body: &[u8]) -> Result<String, String> {
    let mac = standard_mac(&standard_key(secret)?, id, timestamp_s, body);
    Ok(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac)))
}

/// Segment's webhook destinations: `X-Signature: <hex HMAC-SHA1(secret, body)>`. No timestamp:
/// a replayed request is a duplicate through idempotency, not a second trigger.
pub fn verify_segment(secret: Option<&[u8]>, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let secret = secret.ok_or("Segment signing is not configured: add webhook_secret (the destination's shared secret) to the secret")?;
    let signature = header(headers, "x-signature").ok_or("missing X-Signature header")?;
    let given = hex::decode(signature).map_err(|_| "X-Signature is not a hex HMAC-SHA1")?;
    if bool::from(segment_mac(secret, body).as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err("X-Signature does not match the body: Segment signs the body with HMAC-SHA1 and the shared secret".into())
    }
}

fn segment_mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// `X-Signature` as Segment sends it (tests, samples): lowercase hex.
pub fn sign_segment(secret: &[u8], body: &[u8]) -> String {
    hex::encode(segment_mac(secret, body))
}

/// A shared key, as Dataverse webhook registrations (`WebhookKey` → `?code=`) and
/// Power Automate (a static `X-Api-Key` header) send it. Both sides are hashed
/// first, so the comparison takes the same time whatever the lengths.
pub fn verify_key(key: Option<&[u8]>, headers: &HeaderMap, code: Option<&str>) -> Result<(), String> {
    let key = key.ok_or("the shared key is not configured: add webhook_key to the secret")?;
    let given = [code.filter(|c| !c.is_empty()), header(headers, "x-api-key")];
    if given.iter().all(Option::is_none) {
        return Err("missing key: send ?code=<key> or an X-Api-Key header".into());
    }
    let expected = Sha256::digest(key);
    let matched = given.iter().flatten().fold(false, |found, g| found | bool::from(Sha256::digest(g.as_bytes()).ct_eq(&expected)));
    if matched {
        Ok(())
    } else {
        Err("the key (?code= or X-Api-Key) does not match webhook_key".into())
    }
}

/// An analytics SDK's write key (SPEC §20): the user name of `Authorization:
/// Basic` (the password is ignored: Segment's and RudderStack's SDKs send it
/// empty), or — only without an `Authorization` header — the `writeKey` field of
/// a JSON body, as browser SDKs send it. Both sides are hashed first, so the
/// comparison takes the same time whatever the lengths.
pub fn verify_write_key(write_key: Option<&[u8]>, headers: &HeaderMap, body: Option<&[u8]>) -> Result<(), String> {
    let write_key = write_key.ok_or("the write key is not configured: add write_key to the secret")?;
    let given = match headers.get(aws_lambda_events::http::header::AUTHORIZATION) {
        Some(value) => basic_user(value.to_str().unwrap_or(""))?,
        None => body_write_key(body)?,
    };
    if bool::from(Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(write_key))) {
        Ok(())
    } else {
        Err("the write key does not match write_key: check the key the SDK was given".into())
    }
}

/// The user name of `Basic <base64(user:password)>`.
fn basic_user(authorization: &str) -> Result<String, String> {
    let not_basic = "Authorization is not HTTP Basic: send the write key as the Basic user name (Authorization: Basic base64(\"<writeKey>:\"))";
    let (scheme, credentials) = authorization.trim().split_once(' ').ok_or(not_basic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(not_basic.into());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .map_err(|_| "Authorization: Basic is not valid base64 of \"<writeKey>:\"".to_string())?;
    let decoded = String::from_utf8(decoded).map_err(|_| "Authorization: Basic is not UTF-8 \"<writeKey>:\"".to_string())?;
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(user, _password)| user);
    if user.is_empty() {
        return Err("Authorization: Basic has an empty user name: the write key is the user name, the password is empty".into());
    }
    Ok(user.to_string())
}

/// The `writeKey` field of a JSON object body; other fields are skipped, not built.
fn body_write_key(body: Option<&[u8]>) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Field {
        #[serde(rename = "writeKey")]
        write_key: Option<String>,
    }
    let missing = "missing write key: send it as the HTTP Basic user name (Authorization: Basic base64(\"<writeKey>:\")) or a writeKey field of the JSON body";
    let body = body.ok_or(missing)?;
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // Only an object: serde would also read a struct from a JSON list.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(format!("{missing} (the body is not a JSON object)"));
    }
    let field: Field = serde_json::from_slice(body).map_err(|_| format!("{missing} (the body is not JSON)"))?;
    field.write_key.filter(|k| !k.is_empty()).ok_or_else(|| missing.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(aws_lambda_events::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    // The Standard Webhooks specification's published test vector.
    const VECTOR_SECRET: &[u8] = b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const VECTOR_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const VECTOR_TS: i64 = 1649367553;
    const VECTOR_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const VECTOR_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn standard_webhooks_reference_vector() {
        assert_eq!(sign_standard(VECTOR_SECRET, VECTOR_ID, &VECTOR_TS.to_string(), VECTOR_BODY).unwrap(), VECTOR_SIG);
        let ts = VECTOR_TS.to_string();
        let h = headers(&[("webhook-id", VECTOR_ID), ("webhook-timestamp", &ts), ("webhook-signature", VECTOR_SIG)]);
        assert_eq!(verify_standard(Some(VECTOR_SECRET), &h, VECTOR_BODY, VECTOR_TS + 10), Ok(VECTOR_ID.to_string()));
    }

    #[test]
    fn standard_webhooks_good_wrong_stale_and_missing() {
        let ts = VECTOR_TS.to_string();
        let check = |sig: &str, body: &[u8], now: i64| {
            verify_standard(Some(VECTOR_SECRET), &headers(&[("webhook-id", VECTOR_ID), ("webhook-timestamp", &ts), ("webhook-signature", sig)]), body, now)
        };
        // Several entries: other versions and bad base64 are ignored, one match passes.
        assert!(check(&format!("v2,abc v1,!!notbase64 v1,AAAA {VECTOR_SIG}"), VECTOR_BODY, VECTOR_TS).is_ok());
        assert!(check("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkx=", VECTOR_BODY, VECTOR_TS).is_err(), "wrong signature");
        assert!(check(VECTOR_SIG, b"{\"email\":\"other@example.com\"}", VECTOR_TS).is_err(), "another body");
        assert!(check(&VECTOR_SIG.replace("v1,", "v2,"), VECTOR_BODY, VECTOR_TS).is_err(), "another version only");
        assert!(check(VECTOR_SIG, VECTOR_BODY, VECTOR_TS + 301).unwrap_err().contains("5 minutes"), "stale");
        assert!(check(VECTOR_SIG, VECTOR_BODY, VECTOR_TS - 301).unwrap_err().contains("5 minutes"), "from the future");
        let missing = verify_standard(Some(VECTOR_SECRET), &headers(&[("webhook-id", VECTOR_ID)]), VECTOR_BODY, VECTOR_TS);
        assert!(missing.unwrap_err().contains("webhook-timestamp"));
        assert!(verify_standard(None, &headers(&[]), VECTOR_BODY, VECTOR_TS).unwrap_err().contains("not configured"));
        // A secret without whsec_ is used as it is.
        let sig = sign_standard(b"plain", "id1", &ts, b"{}").unwrap();
        let h = headers(&[("webhook-id", "id1"), ("webhook-timestamp", &ts), ("webhook-signature", &sig)]);
        assert!(verify_standard(Some(b"plain"), &h, b"{}", VECTOR_TS).is_ok());
    }

    #[test]
    fn standard_webhooks_extreme_timestamps_are_refused_without_overflow() {
        // A subtraction overflowed here: a panic in a test build, and in a release build
        // `now - i64::MIN`-like differences wrapped, and one whose absolute value wrapped
        // to a negative number passed the 5-minute window forever.
        let now = 1_780_740_000i64;
        let wraps_to_min = now.wrapping_sub(i64::MIN);
        for (ts, now) in [(i64::MIN, now), (i64::MAX, -1), (i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (wraps_to_min, now)] {
            let ts = ts.to_string();
            let sig = sign_standard(b"plain", "id1", &ts, b"{}").unwrap();
            let h = headers(&[("webhook-id", "id1"), ("webhook-timestamp", &ts), ("webhook-signature", &sig)]);
            assert!(verify_standard(Some(b"plain"), &h, b"{}", now).unwrap_err().contains("5 minutes"), "{ts} at {now}");
        }
    }

    #[test]
    fn segment_signature_is_hex_hmac_sha1_of_the_body() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'secret',b'{}',hashlib.sha1).hexdigest())"
        assert_eq!(sign_segment(b"secret", b"{}"), "5d61605c3feea9799210ddcb71307d4ba264225f");
        let body = br#"{"event":"E"}"#;
        let good = sign_segment(b"seg", body);
        assert_eq!(verify_segment(Some(b"seg"), &headers(&[("x-signature", &good)]), body), Ok(()));
        assert_eq!(verify_segment(Some(b"seg"), &headers(&[("x-signature", &good.to_uppercase())]), body), Ok(()));
        assert!(verify_segment(Some(b"other"), &headers(&[("x-signature", &good)]), body).is_err(), "wrong secret");
        assert!(verify_segment(Some(b"seg"), &headers(&[("x-signature", &good)]), b"{}").is_err(), "another body");
        assert!(verify_segment(Some(b"seg"), &headers(&[("x-signature", "sha256=00")]), body).is_err(), "not hex");
        assert!(verify_segment(Some(b"seg"), &headers(&[]), body).unwrap_err().contains("missing"));
        assert!(verify_segment(None, &headers(&[("x-signature", &good)]), body).unwrap_err().contains("not configured"));
    }

    #[test]
    fn shared_key_by_query_or_header() {
        assert_eq!(verify_key(Some(b"k3y"), &headers(&[]), Some("k3y")), Ok(()));
        assert_eq!(verify_key(Some(b"k3y"), &headers(&[("x-api-key", "k3y")]), None), Ok(()));
        assert_eq!(verify_key(Some(b"k3y"), &headers(&[("X-Api-Key", "k3y")]), Some("wrong")), Ok(()), "either may carry it");
        assert!(verify_key(Some(b"k3y"), &headers(&[("x-api-key", "k3")]), None).is_err());
        assert!(verify_key(Some(b"k3y"), &headers(&[]), Some("k3y ")).is_err());
        assert!(verify_key(Some(b"k3y"), &headers(&[]), None).unwrap_err().contains("missing"));
        assert!(verify_key(None, &headers(&[("x-api-key", "k3y")]), None).unwrap_err().contains("not configured"));
    }

    #[test]
    fn svix_header_names_are_read_and_preferred() {
        let ts = VECTOR_TS.to_string();
        let svix = headers(&[("svix-id", VECTOR_ID), ("svix-timestamp", &ts), ("svix-signature", VECTOR_SIG)]);
        assert_eq!(verify_standard(Some(VECTOR_SECRET), &svix, VECTOR_BODY, VECTOR_TS), Ok(VECTOR_ID.to_string()));
        // Both families: Svix's names win, so a stale webhook-* set does not matter…
        let both = headers(&[
            ("svix-id", VECTOR_ID),
            ("svix-timestamp", &ts),
            ("svix-signature", VECTOR_SIG),
            ("webhook-id", "other-id"),
            ("webhook-timestamp", "1"),
            ("webhook-signature", "v1,AAAA"),
        ]);
        assert_eq!(verify_standard(Some(VECTOR_SECRET), &both, VECTOR_BODY, VECTOR_TS), Ok(VECTOR_ID.to_string()));
        // …and a wrong svix-signature is not rescued by a right webhook-signature.
        let wrong = headers(&[
            ("svix-id", VECTOR_ID),
            ("svix-timestamp", &ts),
            ("svix-signature", "v1,AAAA"),
            ("webhook-id", VECTOR_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", VECTOR_SIG),
        ]);
        assert!(verify_standard(Some(VECTOR_SECRET), &wrong, VECTOR_BODY, VECTOR_TS).is_err());
    }

    fn basic(user_and_password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_and_password))
    }

    #[test]
    fn write_key_as_basic_user_name_or_body_field() {
        let key = Some(&b"wk_live_1"[..]);
        assert_eq!(verify_write_key(key, &headers(&[("authorization", &basic("wk_live_1:"))]), None), Ok(()));
        assert_eq!(verify_write_key(key, &headers(&[("Authorization", &basic("wk_live_1:ignored"))]), None), Ok(()), "the password is ignored");
        assert_eq!(verify_write_key(key, &headers(&[("authorization", &basic("wk_live_1"))]), None), Ok(()), "no colon");
        assert!(verify_write_key(key, &headers(&[("authorization", &basic("wk_live_2:"))]), None).unwrap_err().contains("does not match"));
        assert!(verify_write_key(key, &headers(&[("authorization", &basic(":wk_live_1"))]), None).unwrap_err().contains("empty user name"));
        assert!(verify_write_key(key, &headers(&[("authorization", "Bearer wk_live_1")]), None).unwrap_err().contains("not HTTP Basic"));
        assert!(verify_write_key(key, &headers(&[("authorization", "Basic ***")]), None).unwrap_err().contains("base64"));
        let body = br#"{"batch": [{"event": "E"}], "writeKey": "wk_live_1"}"#;
        assert_eq!(verify_write_key(key, &headers(&[]), Some(body)), Ok(()));
        // With an Authorization header the body is not read.
        assert!(verify_write_key(key, &headers(&[("authorization", &basic("wrong:"))]), Some(body)).is_err());
        assert!(verify_write_key(key, &headers(&[]), Some(br#"{"writeKey": "wk_live_2"}"#)).unwrap_err().contains("does not match"));
        assert!(verify_write_key(key, &headers(&[]), Some(br#"{"event": "E"}"#)).unwrap_err().contains("missing write key"));
        assert!(verify_write_key(key, &headers(&[]), Some(b"not json")).unwrap_err().contains("not a JSON object"));
        assert!(verify_write_key(key, &headers(&[]), Some(br#"["wk_live_1"]"#)).is_err(), "a list is no body with a field");
        assert!(verify_write_key(key, &headers(&[]), None).unwrap_err().contains("missing write key"));
        assert!(verify_write_key(None, &headers(&[("authorization", &basic("wk_live_1:"))]), None).unwrap_err().contains("not configured"));
    }
}
