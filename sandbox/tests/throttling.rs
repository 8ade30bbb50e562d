//! The sandbox throttles, answers conflicts and issues tokens as Dataverse and
//! Entra do (DOMAIN.md, "Wire details worth emulating"): a budget 429's
//! Retry-After that grows while the caller keeps sending, the concurrency 429 at
//! once and the budget 429s late, the `x-ms-ratelimit-*-remaining` headers, 412
//! with an empty code and 404 for conditional writes, token lifetimes of 60–90
//! minutes and the fault for short ones.

use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox, SandboxConfig};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const SCOPE: &str = "https://contoso.api.crm.dynamics.com/.default";

fn config() -> SandboxConfig {
    serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/config.json")).unwrap()).unwrap()
}

async fn sandbox_with(faults: Faults) -> Sandbox {
    let s = Sandbox::start(config(), 0).await.unwrap();
    s.set_faults(faults);
    s
}

async fn token_body(s: &Sandbox) -> Value {
    let form = [("grant_type", "client_credentials"), ("client_id", CLIENT), ("client_secret", "sandbox-client-secret"), ("scope", SCOPE)];
    let r = reqwest::Client::new().post(format!("{}/{TENANT}/oauth2/v2.0/token", s.url())).form(&form).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn token(s: &Sandbox) -> String {
    token_body(s).await["access_token"].as_str().unwrap().to_string()
}

/// An answer: status, error code (or `None`), Retry-After and the two rate-limit headers.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    retry_after: Option<u64>,
    burst_remaining: Option<String>,
    time_remaining: Option<String>,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let r = request.send().await.unwrap();
    let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    let (status, retry_after) = (r.status().as_u16(), header("retry-after").map(|v| v.parse().unwrap()));
    let (burst_remaining, time_remaining) = (header("x-ms-ratelimit-burst-remaining-xrm-requests"), header("x-ms-ratelimit-time-remaining-xrm-requests"));
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().map(str::to_string);
    Answer { status, code, retry_after, burst_remaining, time_remaining }
}

async fn trigger(s: &Sandbox, token: &str) -> Answer {
    let body = json!({"msdynmkt_profileid": "u", "msdynmkt_orderid": "A1"});
    send(
        reqwest::Client::new()
            .post(format!("{}/api/data/v9.2/msdynmkt_OrderCompleted", s.url()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

fn patch(s: &Sandbox, token: &str, path: &str, body: Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .patch(format!("{}/api/data/v9.2/{path}", s.url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
}

#[tokio::test]
async fn a_budget_429s_retry_after_grows_while_the_caller_keeps_sending() {
    let s = sandbox_with(Faults { budget_requests: Some(2), budget_window_secs: Some(2), budget_pause_growth: Some(1.0), ..Faults::default() }).await;
    let t = token(&s).await;
    assert_eq!([trigger(&s, &t).await.status, trigger(&s, &t).await.status], [204, 204]);
    let first = trigger(&s, &t).await;
    assert_eq!((first.status, first.code.as_deref(), first.retry_after), (429, Some("0x80072322"), Some(2)), "{first:?}");
    // Sent again at once, during the pause: 429 again, and the pause is longer each time.
    let mut retry_afters = vec![first.retry_after.unwrap()];
    for _ in 0..3 {
        let again = trigger(&s, &t).await;
        assert_eq!((again.status, again.code.as_deref()), (429, Some("0x80072322")));
        retry_afters.push(again.retry_after.unwrap());
    }
    assert!(retry_afters.windows(2).all(|w| w[1] > w[0]), "the Retry-After grows: {retry_afters:?}");
    assert!(retry_afters[3] >= 12, "about doubling with each call: {retry_afters:?}");
    assert_eq!(s.accepted().len(), 2);
    assert_eq!(s.stats().sent_during_pause, 3, "the calls sent after the first 429");
}

#[tokio::test]
async fn a_caller_that_waits_out_the_retry_after_is_let_in_and_calls_in_flight_do_not_lengthen_it() {
    // 200 ms a call, 1 request per 2 s: the second and third are in flight together.
    let s = sandbox_with(Faults { latency_ms: 200, budget_requests: Some(1), budget_window_secs: Some(2), ..Faults::default() }).await;
    let t = token(&s).await;
    assert_eq!(trigger(&s, &t).await.status, 204);
    let (second, third) = tokio::join!(trigger(&s, &t), trigger(&s, &t));
    assert_eq!((second.status, third.status), (429, 429));
    assert_eq!(second.retry_after, third.retry_after, "a call that arrived before the first 429 was answered does not lengthen the pause");
    assert_eq!(s.stats().sent_during_pause, 0);
    let retry_after = second.retry_after.unwrap();
    assert!((1..=2).contains(&retry_after), "{second:?}");
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(50)).await;
    assert_eq!(trigger(&s, &t).await.status, 204, "after the Retry-After the window has room");
}

#[tokio::test]
async fn the_concurrency_429_comes_at_once_and_the_budget_429_after_the_call_has_run() {
    let s = sandbox_with(Faults { latency_ms: 400, max_concurrency: Some(1), budget_requests: Some(1), ..Faults::default() }).await;
    let t = token(&s).await;
    let held = trigger(&s, &t);
    let over = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        (trigger(&s, &t).await, started.elapsed())
    };
    let (held, (over, waited)) = tokio::join!(held, over);
    assert_eq!(held.status, 204);
    assert_eq!((over.status, over.code.as_deref()), (429, Some("0x80072326")));
    assert!(waited < Duration::from_millis(300), "the concurrency limit answers at admission: {waited:?}");
    let started = Instant::now();
    let spent = trigger(&s, &t).await;
    assert_eq!((spent.status, spent.code.as_deref()), (429, Some("0x80072322")));
    assert!(started.elapsed() >= Duration::from_millis(400), "the request budget answers after the call has run: {:?}", started.elapsed());
}

#[tokio::test]
async fn the_time_budget_is_met_late_with_0x80072321() {
    // 150 ms of execution time per 2 s, at 100 ms a call: the second call passes it and is accepted.
    let s = sandbox_with(Faults { latency_ms: 100, budget_time_ms: Some(150), budget_window_secs: Some(2), ..Faults::default() }).await;
    let t = token(&s).await;
    let first = trigger(&s, &t).await;
    assert_eq!((first.status, first.time_remaining.as_deref()), (204, Some("0.05")), "{first:?}");
    let second = trigger(&s, &t).await;
    assert_eq!((second.status, second.time_remaining.as_deref()), (204, Some("0.00")), "{second:?}");
    let third = trigger(&s, &t).await;
    assert_eq!((third.status, third.code.as_deref(), third.retry_after), (429, Some("0x80072321"), Some(2)), "{third:?}");
    assert_eq!(s.accepted().len(), 2);
}

#[tokio::test]
async fn answers_carry_the_rate_limit_headers() {
    // No budget set: counted against Dataverse's own 6,000 requests and 1,200 s.
    let s = sandbox_with(Faults::default()).await;
    let t = token(&s).await;
    let first = trigger(&s, &t).await;
    assert_eq!((first.burst_remaining.as_deref(), first.time_remaining.as_deref()), (Some("5999"), Some("1,200.00")), "{first:?}");
    let read = send(reqwest::Client::new().get(format!("{}/api/data/v9.2/contacts?$top=1", s.url())).bearer_auth(&t)).await;
    assert_eq!((read.status, read.burst_remaining.as_deref()), (200, Some("5998")), "a row read counts too: {read:?}");

    let s = sandbox_with(Faults { latency_ms: 10, budget_requests: Some(3), budget_time_ms: Some(60_000), ..Faults::default() }).await;
    let t = token(&s).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let a = trigger(&s, &t).await;
        seen.push((a.status, a.burst_remaining.unwrap_or_default(), a.time_remaining.unwrap_or_default()));
    }
    let expected = [(204, "2", "59.99"), (204, "1", "59.98"), (204, "0", "59.97"), (429, "0", "59.97")];
    assert_eq!(seen, expected.map(|(s, b, t)| (s, b.to_string(), t.to_string())));
}

#[tokio::test]
async fn a_create_of_a_row_that_exists_is_412_with_an_empty_code() {
    let s = sandbox_with(Faults::default()).await;
    let t = token(&s).await;
    let create = || patch(&s, &t, "accounts(accountnumber='A-412')", json!({"name": "Contoso"})).header("if-none-match", "*");
    assert_eq!(send(create()).await.status, 204, "created");
    let again = send(create()).await;
    assert_eq!((again.status, again.code.as_deref()), (412, Some("")), "{again:?}");
    assert_eq!(s.rows("accounts").len(), 1);
}

#[tokio::test]
async fn an_update_of_a_missing_row_under_if_match_is_404() {
    let s = sandbox_with(Faults::default()).await;
    let t = token(&s).await;
    let missing = "contacts(5e1c0a7e-0009-4c0e-9a11-000000000009)";
    let update = send(patch(&s, &t, missing, json!({"firstname": "Ada"})).header("if-match", "*")).await;
    assert_eq!((update.status, update.code.as_deref()), (404, Some("0x80040217")), "{update:?}");
    let by_key = send(patch(&s, &t, "accounts(accountnumber='A-404')", json!({"name": "Fabrikam"})).header("if-match", "*")).await;
    assert_eq!(by_key.status, 404, "{by_key:?}");
    assert_eq!((s.rows("contacts").len(), s.rows("accounts").len()), (3, 0), "nothing created");
}

#[tokio::test]
async fn tokens_live_60_to_90_minutes_unless_a_lifetime_is_fixed() {
    let s = Sandbox::start(SandboxConfig { token_lifetime_secs: None, ..config() }, 0).await.unwrap();
    let mut lifetimes = Vec::new();
    for _ in 0..20 {
        let body = token_body(&s).await;
        assert_eq!(body["expires_in"], body["ext_expires_in"]);
        lifetimes.push(body["expires_in"].as_u64().unwrap());
    }
    assert!(lifetimes.iter().all(|l| (3_600..=5_400).contains(l)), "{lifetimes:?}");
    assert!(lifetimes.iter().any(|l| *l != lifetimes[0]), "drawn, not one value: {lifetimes:?}");
    s.set_token_lifetime(Duration::from_secs(3_599));
    assert_eq!(token_body(&s).await["expires_in"], 3_599);
}

#[tokio::test]
async fn the_short_token_fault_issues_tokens_that_live_minutes() {
    let s = Sandbox::start(SandboxConfig { token_lifetime_secs: None, ..config() }, 0).await.unwrap();
    s.set_faults(Faults { short_token_rate: 1.0, short_token_secs: Some(90), ..Faults::default() });
    assert_eq!(token_body(&s).await["expires_in"], 90);
    s.set_faults(Faults { short_token_rate: 0.5, ..Faults::default() });
    let mut lifetimes = Vec::new();
    for _ in 0..30 {
        lifetimes.push(token_body(&s).await["expires_in"].as_u64().unwrap());
    }
    let short = lifetimes.iter().filter(|l| **l == 300).count();
    assert!(short > 0 && short < 30, "some 5-minute tokens (the default short lifetime), some of 60–90 minutes: {lifetimes:?}");
    assert!(lifetimes.iter().all(|l| *l == 300 || (3_600..=5_400).contains(l)), "{lifetimes:?}");
}
