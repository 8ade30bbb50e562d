//! Log hygiene: representative success and failure paths, logs captured at
//! DEBUG, and no secret, token, e-mail address or phone number in them; AWS
//! failures in one readable line. These tests install the process-wide
//! subscriber, so they live alone in this binary and share one capture.

#[path = "integration/helpers.rs"]
mod helpers;
#[path = "integration/moto.rs"]
mod moto;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use helpers::*;
use serde_json::json;

/// A writer capturing log output for the hygiene test.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The binary's one capture, installed as the process-wide subscriber on first use.
fn capture() -> &'static Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = lambda_runtime::tracing::subscriber::fmt()
            .json()
            .with_max_level(lambda_runtime::tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        // Process-wide, and alone in its binary: a scoped subscriber set while other
        // tests run on other threads can miss events (tracing caches each call site's
        // interest), and events from blocking threads must be checked too.
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        capture
    })
}

fn captured_lines() -> Vec<String> {
    String::from_utf8(capture().0.lock().unwrap().clone()).unwrap().lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_idempotency_table_is_one_line_with_its_code_and_message_once() {
    capture();
    let client = relay::dynamodb_client_for_endpoint(&moto::moto().url);
    let store = relay::idempotency::Idempotency::in_memory().with_table(client, "no-such-table".into(), Duration::from_secs(3600));
    let claim = store.claim("log-test-key", Instant::now() + Duration::from_secs(5)).await;
    assert!(matches!(claim, relay::idempotency::Claim::Unavailable(_)), "{claim:?}");
    let lines: Vec<String> = captured_lines().into_iter().filter(|l| l.contains("Idempotency table unavailable")).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let error = line["fields"]["error"].as_str().unwrap();
    assert!(error.starts_with("ResourceNotFoundException: "), "{error}");
    assert_eq!(lines[0].matches("ResourceNotFoundException").count(), 1, "{}", lines[0]);
    assert_eq!(line["fields"]["table"], "no-such-table");
    for debug in ["ServiceError", "source:", "raw:", "{ ", "Unhandled"] {
        assert!(!lines[0].contains(debug), "the SDK's Debug output in: {}", lines[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_secrets_tokens_or_contact_points() {
    let capture = capture();

    let h = Harness::new(&[("D365_DEFAULT_PHONE_REGION", "GB")]).await;
    // Success with contact points; bad contact points; a rejected and an invalid record.
    h.invoke(event_file("direct.json")).await;
    let mut bad_contacts = order("x");
    bad_contacts["context"] = json!({"traits": {"email": "not-an-address@nowhere", "phone": "0770090012399999"}});
    let mut rejected = order("y");
    rejected["properties"]["revenue"] = json!("jane@example.com");
    h.invoke(json!([bad_contacts, rejected, {"event": "Order Completed", "context": {"traits": {"email": "jane@example.com"}}}])).await;
    // Webhook with a bad signature; a revoked token (401 path).
    let mut unsigned = signed_http(&json!(order("z")).to_string());
    unsigned["headers"]["x-signature"] = json!("sha256=00");
    h.invoke(unsigned).await;
    h.sandbox.revoke_tokens();
    h.invoke(json!(order("w"))).await;
    // Entra rejecting the client secret.
    let mut stale = sandbox_config().secrets["d365/relay-demo"].clone();
    stale["client_secret"] = json!("stale-client-secret-value");
    h.sandbox.put_secret("d365/relay-demo", &stale);
    h.sandbox.revoke_tokens();
    let h2 = relay_for(&h.sandbox, &[("D365_MAPPING_FILE", &mapping_file())]);
    h2.handle(json!(order("v")), Instant::now() + Duration::from_secs(10)).await.unwrap();

    // An analytics SDK's batch (SPEC §20): the right write key, a wrong one, one in the body.
    let sdk = relay_for(&h.sandbox, &[("D365_MAPPING_FILE", &mapping_file()), ("D365_WEBHOOK_AUTH", "writekey")]);
    h.sandbox.put_secret("d365/relay-demo", &sandbox_config().secrets["d365/relay-demo"]);
    let mut call = order("sdk-1");
    call["context"] = json!({"traits": {"email": "jane@example.com"}});
    let body = json!({"batch": [call], "writeKey": "a-wrong-write-key-value"}).to_string();
    for authorization in [Some("sandbox-write-key:"), Some("another-write-key-value:"), None] {
        let mut request = event_file("function-url.json");
        request["rawPath"] = json!("/v1/batch");
        request["headers"] = json!({"content-type": "application/json"});
        if let Some(user) = authorization {
            use base64::Engine;
            request["headers"]["authorization"] = json!(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user)));
        }
        request["body"] = json!(body);
        sdk.handle(request, Instant::now() + Duration::from_secs(10)).await.unwrap();
    }

    // A pool of application users whose second Entra rejects (SPEC §17.3): it leaves the pool, named by client id only.
    let mut pooled = sandbox_config().secrets["d365/relay-demo"].clone();
    pooled["principals"] = json!([{"client_id": "22222222-2222-2222-2222-222222222222", "client_secret": "rejected-principal-secret-value"}]);
    h.sandbox.put_secret("d365/relay-demo", &pooled);
    h.sandbox.set_apps(vec![d365_sandbox::App {
        tenant_id: "00000000-0000-0000-0000-000000000000".into(),
        client_id: "11111111-1111-1111-1111-111111111111".into(),
        client_secret: "sandbox-client-secret".into(),
        org_url_host: "contoso.api.crm.dynamics.com".into(),
    }]);
    // Calls of 200 ms overlap, so with one slot each the second record must be tried as the second principal
    // (at Dataverse's 0 ms the first principal's slot may already be free again).
    h.sandbox.set_faults(d365_sandbox::Faults { latency_ms: 200, ..Default::default() });
    let pool = relay_for(&h.sandbox, &[("D365_MAPPING_FILE", &mapping_file()), ("D365_MAX_IN_FLIGHT", "1")]);
    let answer = pool.handle(json!([order("p1"), order("p2"), order("p3")]), Instant::now() + Duration::from_secs(10)).await.unwrap();
    assert_eq!(answer["delivered"], 3, "{answer}");

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let left: Vec<&str> = logs.lines().filter(|l| l.contains("An application user left the pool")).collect();
    assert_eq!(left.len(), 1, "one line: {left:?}");
    assert!(left[0].contains("22222222-2222-2222-2222-222222222222") && left[0].contains("Entra rejected its credentials"), "{}", left[0]);
    assert!(logs.contains("Invocation summary."), "logs were captured");
    assert!(logs.contains("AADSTS7000215"), "the Entra code is logged");
    assert!(logs.contains("the write key does not match write_key"), "the refusal is logged, without the key");
    let lower = logs.to_lowercase();
    for forbidden in [
        "sandbox-client-secret",
        "stale-client-secret-value",
        "rejected-principal-secret-value",
        "sandbox-webhook-secret",
        "sandbox-write-key",
        "another-write-key-value",
        "a-wrong-write-key-value",
        "sbx_",
        "jane@example.com",
        "not-an-address@nowhere",
        "+447700900123",
        "7700900123",
        "07700 900123",
        "0770090012399999",
    ] {
        assert!(!lower.contains(forbidden), "'{forbidden}' appeared in the logs");
    }
}
