//! A pool of application users (SPEC §17.3) against the sandbox: each with its
//! own token and budget; a 429 pauses only its principal; a principal that
//! alone is answered 403 leaves the pool and the record is retried as another.

use std::time::{Duration, Instant};

use d365_sandbox::{App, Faults, Signal};
use serde_json::{json, Value};

use crate::helpers::*;

const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const HOST: &str = "contoso.api.crm.dynamics.com";
const FIRST: &str = "11111111-1111-1111-1111-111111111111";
const SECOND: &str = "22222222-2222-2222-2222-222222222222";

/// The demo secret with a second application user in `principals`.
fn pooled_secret(second_secret: &str) -> Value {
    let mut secret = sandbox_config().secrets["d365/relay-demo"].clone();
    secret["principals"] = json!([{"client_id": SECOND, "client_secret": second_secret}]);
    secret
}

fn app(client_id: &str, secret: &str) -> App {
    App { tenant_id: TENANT.into(), client_id: client_id.into(), client_secret: secret.into(), org_url_host: HOST.into() }
}

/// A harness whose secret names both application users, both known to Entra.
async fn pooled(overrides: &[(&str, &str)]) -> Harness {
    let h = Harness::new(overrides).await;
    h.sandbox.put_secret("d365/relay-demo", &pooled_secret("second-secret"));
    h.sandbox.set_apps(vec![app(FIRST, "sandbox-client-secret"), app(SECOND, "second-secret")]);
    h
}

fn by(signals: &[Signal], client_id: &str, status: u16) -> usize {
    signals.iter().filter(|s| s.client_id == client_id && s.status == status).count()
}

fn batch(prefix: &str, n: usize) -> Value {
    json!((0..n).map(|i| order(&format!("{prefix}-{i}"))).collect::<Vec<_>>())
}

#[tokio::test]
async fn calls_are_shared_by_the_principals_each_with_its_own_token() {
    let h = pooled(&[("D365_MAX_IN_FLIGHT", "2")]).await;
    h.sandbox.set_faults(Faults { latency_ms: 20, ..Faults::default() });
    let answer = h.invoke(batch("shared", 20)).await;
    assert_eq!(answer["delivered"], 20, "{answer}");
    let signals = h.sandbox.signals();
    let (first, second) = (by(&signals, FIRST, 204), by(&signals, SECOND, 204));
    assert_eq!(first + second, 20);
    assert!(first >= 8 && second >= 8, "each principal carries its share: {first} / {second}");
    let mut clients: Vec<String> = h.sandbox.token_requests().into_iter().filter(|t| t.status == 200).map(|t| t.client_id).collect();
    clients.sort();
    assert_eq!(clients, [FIRST, SECOND], "one token each");
    // Twice the concurrency of one principal.
    assert!(h.sandbox.stats().max_concurrency_seen > 2, "{:?}", h.sandbox.stats());
}

#[tokio::test]
async fn a_budget_429_pauses_only_its_principal_and_the_other_carries_on() {
    // 4 requests per minute per application user (the trigger's definition and 3
    // calls): the first user's budget is spent beforehand.
    let h = pooled(&[("D365_MAX_IN_FLIGHT", "1")]).await;
    h.sandbox.set_faults(Faults { budget_requests: Some(4), budget_window_secs: Some(60), ..Faults::default() });
    let alone = relay_for(&h.sandbox, &[("D365_MAPPING_FILE", &mapping_file()), ("D365_MAX_IN_FLIGHT", "1")]);
    h.sandbox.put_secret("d365/relay-demo", &sandbox_config().secrets["d365/relay-demo"]);
    let spent = alone.handle(batch("spend", 3), Instant::now() + Duration::from_secs(10)).await.unwrap();
    assert_eq!(spent["delivered"], 3, "{spent}");
    h.sandbox.put_secret("d365/relay-demo", &pooled_secret("second-secret"));

    let started = Instant::now();
    let answer = h.invoke_within(batch("pooled", 3), 10.0).await.unwrap();
    assert_eq!(answer["delivered"], 3, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "not held back by the first user's Retry-After: {:?}", started.elapsed());
    let signals = h.sandbox.signals();
    // Met once, by the definition read or by a trigger call, then paused.
    assert!(by(&signals, FIRST, 429) <= 1, "the first user's spent budget is met once, then it is paused");
    assert_eq!(by(&signals, FIRST, 204), 3, "only the calls that spent it");
    assert_eq!(by(&signals, SECOND, 204), 3, "the second user carries every record");
    // Both spent now: the records are held back for the sooner Retry-After, without a call.
    let calls = h.sandbox.signals().len();
    let answer = h.invoke_within(batch("spent", 2), 3.0).await.unwrap();
    assert_eq!(answer["failed"].as_array().unwrap().len(), 2, "{answer}");
    assert!(h.sandbox.signals().len() <= calls + 1, "at most one call meets the second user's spent budget");
}

#[tokio::test]
async fn a_principal_answered_403_while_another_succeeds_leaves_the_pool_and_the_record_is_delivered() {
    let h = pooled(&[("D365_MAX_IN_FLIGHT", "1")]).await;
    h.sandbox.set_faults(Faults { forbidden_clients: vec![FIRST.into()], ..Faults::default() });
    let answer = h.invoke(batch("forbidden", 4)).await;
    assert_eq!(answer["delivered"], 4, "retried as the other principal, not rejected: {answer}");
    let signals = h.sandbox.signals();
    let forbidden = by(&signals, FIRST, 403);
    assert_eq!(forbidden, 1, "no new call while its 403 is judged, out of the pool once the other succeeded");
    assert_eq!(by(&signals, SECOND, 204), 4);
    // Still out in the next invocation (for the secret's TTL).
    let answer = h.invoke(batch("forbidden-next", 2)).await;
    assert_eq!(answer["delivered"], 2);
    assert_eq!(by(&h.sandbox.signals(), FIRST, 403), forbidden);
}

#[tokio::test]
async fn a_403_from_every_principal_is_rejected_with_dataverses_code() {
    let h = pooled(&[("D365_MAX_IN_FLIGHT", "1")]).await;
    h.sandbox.set_faults(Faults { forbidden_clients: vec![FIRST.into(), SECOND.into()], ..Faults::default() });
    let answer = h.invoke(batch("all-forbidden", 1)).await;
    let failed = &answer["failed"][0];
    assert_eq!(failed["outcome"], "rejected", "{answer}");
    assert_eq!(failed["status"], 403);
    assert_eq!(failed["code"], "0x80040220");
    let signals = h.sandbox.signals();
    assert_eq!((by(&signals, FIRST, 403), by(&signals, SECOND, 403)), (1, 1), "tried once as each");
}

#[tokio::test]
async fn a_403_that_every_principal_gets_takes_none_out_of_the_pool_though_others_succeeded_before() {
    let h = pooled(&[("D365_MAX_IN_FLIGHT", "1")]).await;
    // Both principals succeed first (another trigger or table may be allowed where this one is not).
    assert_eq!(h.invoke(batch("allowed", 4)).await["delivered"], 4);
    h.sandbox.set_faults(Faults { forbidden_clients: vec![FIRST.into(), SECOND.into()], ..Faults::default() });
    let answer = h.invoke(batch("refused", 1)).await;
    assert_eq!(answer["failed"][0]["outcome"], "rejected", "{answer}");
    h.sandbox.set_faults(Faults::default());
    h.sandbox.reset();
    assert_eq!(h.invoke(batch("after", 8)).await["delivered"], 8);
    let signals = h.sandbox.signals();
    assert!(
        by(&signals, FIRST, 204) >= 2 && by(&signals, SECOND, 204) >= 2,
        "both still in the pool: {} / {}",
        by(&signals, FIRST, 204),
        by(&signals, SECOND, 204)
    );
}

#[tokio::test]
async fn a_principal_entra_rejects_leaves_the_pool_and_the_others_deliver() {
    let h = pooled(&[("D365_MAX_IN_FLIGHT", "1")]).await;
    // The secret holds a wrong secret for the second user.
    h.sandbox.put_secret("d365/relay-demo", &pooled_secret("a-wrong-client-secret"));
    let answer = h.invoke(batch("rejected", 6)).await;
    assert_eq!(answer["delivered"], 6, "{answer}");
    let signals = h.sandbox.signals();
    assert_eq!(by(&signals, FIRST, 204), 6);
    assert_eq!(signals.iter().filter(|s| s.client_id != FIRST).count(), 0);
    let refused = h.sandbox.token_requests().into_iter().filter(|t| t.client_id == SECOND).count();
    // The first refusal is retried once after the secret is read again; then it is out of the pool.
    assert!((1..=2).contains(&refused), "{refused} token requests for the rejected user");
    let answer = h.invoke(batch("rejected-next", 2)).await;
    assert_eq!(answer["delivered"], 2);
    assert_eq!(h.sandbox.token_requests().into_iter().filter(|t| t.client_id == SECOND).count(), refused, "no new attempt while it is out");
}

#[tokio::test]
async fn check_gets_a_token_for_each_principal_and_shows_the_arithmetic() {
    let h = pooled(&[]).await;
    let report = h.invoke(json!({"check": true})).await;
    let tokens: Vec<&Value> = report["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "token").collect();
    assert_eq!(tokens.len(), 2, "{report}");
    assert!(tokens.iter().all(|t| t["ok"] == true), "{report}");
    assert!(tokens[1]["detail"].as_str().unwrap().contains(SECOND));
    assert_eq!(report["principals"]["count"], 2);
    assert_eq!(report["principals"]["requests_per_minute"], 2400);
    assert!(report["principals"]["detail"].as_str().unwrap().contains("2 application user(s) × 1200"), "{report}");
    // A rejected principal is a problem named with its client id (a new environment reads the secret anew).
    h.sandbox.put_secret("d365/relay-demo", &pooled_secret("a-wrong-client-secret"));
    let fresh = relay_for(&h.sandbox, &[("D365_MAPPING_FILE", &mapping_file())]);
    let report = fresh.handle(json!({"check": true}), Instant::now() + Duration::from_secs(20)).await.unwrap();
    let bad: Vec<&Value> = report["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "token" && s["ok"] == false).collect();
    assert_eq!(bad.len(), 1, "{report}");
    assert!(bad[0]["detail"].as_str().unwrap().contains(SECOND) && bad[0]["fix"].as_str().unwrap().contains("principals"), "{report}");
    assert!(!report.to_string().contains("a-wrong-client-secret"));
}
