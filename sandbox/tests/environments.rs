//! Several Dataverse environments on one port (SPEC §23.4): a path prefix
//! `/{org_url_host}` names the environment; each keeps its own signals, rows,
//! counts and — once given them — faults; requests without a prefix are the
//! default environment's, as before.

use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox, SandboxConfig};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const PROD: &str = "contoso.api.crm.dynamics.com";
const UAT: &str = "uat.api.crm.dynamics.com";
const PROD_CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const UAT_CLIENT: &str = "22222222-2222-2222-2222-222222222222";

/// The demo config, its secret holding a `uat` destination with its own app.
async fn sandbox() -> Sandbox {
    let mut config: SandboxConfig = serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/config.json")).unwrap()).unwrap();
    let secret = config.secrets.get_mut("d365/relay-demo").unwrap();
    secret["destinations"] = json!({"uat": {"tenant_id": TENANT, "client_id": UAT_CLIENT, "client_secret": "uat-client-secret", "org_url_host": UAT}});
    Sandbox::start(config, 0).await.unwrap()
}

async fn token(s: &Sandbox, client_id: &str, secret: &str, host: &str) -> String {
    let form = [("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret), ("scope", &format!("https://{host}/.default"))];
    let r = reqwest::Client::new().post(format!("{}/{TENANT}/oauth2/v2.0/token", s.url())).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.text().await.unwrap().parse::<Value>().unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn prod_token(s: &Sandbox) -> String {
    token(s, PROD_CLIENT, "sandbox-client-secret", PROD).await
}

async fn uat_token(s: &Sandbox) -> String {
    token(s, UAT_CLIENT, "uat-client-secret", UAT).await
}

/// `POST {url}{prefix}/api/data/v9.2/{trigger}`: its status and Retry-After.
async fn call(s: &Sandbox, prefix: &str, trigger: &str, token: &str) -> (u16, Option<String>) {
    let body = json!({"msdynmkt_profileid": "u", "msdynmkt_signaltimestamp": "2026-06-06T14:30:00Z", "msdynmkt_orderid": "A1", "msdynmkt_ordertotal": 10.5});
    let r = reqwest::Client::new()
        .post(format!("{}{prefix}/api/data/v9.2/{trigger}", s.url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()))
}

#[tokio::test]
async fn a_path_prefix_names_the_environment_and_requests_without_one_are_the_default_ones() {
    let s = sandbox().await;
    let (prod, uat) = (prod_token(&s).await, uat_token(&s).await);
    assert_eq!(call(&s, "", "msdynmkt_OrderCompleted", &prod).await.0, 204, "no prefix: the default environment, as before");
    assert_eq!(call(&s, &format!("/{PROD}"), "msdynmkt_OrderCompleted", &prod).await.0, 204);
    assert_eq!(call(&s, &format!("/{UAT}"), "msdynmkt_OrderCompleted", &uat).await.0, 204);
    assert_eq!(call(&s, &format!("/{UAT}"), "msdynmkt_OrderCompleted", &uat).await.0, 204);

    let environments: Vec<String> = s.signals().iter().map(|x| x.environment.clone()).collect();
    assert_eq!(environments, ["", PROD, UAT, UAT], "one log, each call naming its environment");
    assert!(s.signals().iter().all(|x| x.path == "/api/data/v9.2/msdynmkt_OrderCompleted"), "the path within the environment");
    assert_eq!(s.environment_accepted(UAT).len(), 2);
    assert_eq!(s.environment_accepted(PROD).len(), 1);
    assert_eq!(s.environment_accepted("").len(), 1);
    assert_eq!(s.environments(), [PROD, UAT]);
    assert_eq!(s.environment_stats(UAT).calls_with(204), 2);
    assert_eq!(s.stats().calls_with(204), 4, "the sandbox's counts are over every environment");

    // Dataverse checks the token's audience: UAT's token is no good in production, nor production's in UAT.
    assert_eq!(call(&s, &format!("/{PROD}"), "msdynmkt_OrderCompleted", &uat).await.0, 401);
    assert_eq!(call(&s, &format!("/{UAT}"), "msdynmkt_OrderCompleted", &prod).await.0, 401);
    // An unknown trigger is a 404 in an environment as in the default one.
    assert_eq!(call(&s, &format!("/{UAT}"), "msdynmkt_Nope", &uat).await.0, 404);

    // The admin endpoints see one environment.
    let signals: Value =
        reqwest::get(format!("{}/_sandbox/environments/{UAT}/signals", s.url())).await.unwrap().text().await.unwrap().parse::<Value>().unwrap();
    assert_eq!(signals.as_array().unwrap().len(), 4, "two accepted, the 401 and the 404");
    let listed: Value = reqwest::get(format!("{}/_sandbox/environments", s.url())).await.unwrap().text().await.unwrap().parse::<Value>().unwrap();
    assert_eq!(listed, json!([PROD, UAT]));
}

#[tokio::test]
async fn each_environment_keeps_its_own_rows_and_trigger_definitions() {
    let s = sandbox().await;
    let uat = uat_token(&s).await;
    let default_contacts = s.rows("contacts");
    s.set_environment_rows(UAT, "contacts", vec![json!({"contactid": "c-uat", "emailaddress1": "ada@example.com"})]);
    let lookup = |prefix: String, token: String| {
        let url = format!("{}{prefix}/api/data/v9.2/contacts?$select=contactid&$filter=emailaddress1 eq 'ada@example.com'", s.url());
        async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().text().await.unwrap().parse::<Value>().unwrap() }
    };
    assert_eq!(lookup(format!("/{UAT}"), uat.clone()).await["value"], json!([{"contactid": "c-uat"}]));
    assert_eq!(lookup(String::new(), prod_token(&s).await).await["value"], json!([]), "the default environment's contacts are its own");
    let created = reqwest::Client::new()
        .post(format!("{}/{UAT}/api/data/v9.2/contacts", s.url()))
        .bearer_auth(&uat)
        .header("prefer", "return=representation")
        .header("content-type", "application/json")
        .body(json!({"emailaddress1": "grace@example.com"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(s.environment_rows(UAT, "contacts").len(), 2);
    assert_eq!(s.rows("contacts"), default_contacts, "nothing written to the default environment");
    let environments: Vec<String> = s.row_requests().into_iter().map(|r| r.environment).collect();
    assert_eq!(environments, [UAT, "", UAT], "each row request names its environment");

    // A trigger published in one environment only.
    s.set_environment_triggers(
        UAT,
        vec![d365_sandbox::TriggerDef { name: "msdynmkt_UatOnly".into(), parameters: Default::default(), binding: "contact".into() }],
    );
    let body =
        |t: &str| format!("{}/{UAT}/api/data/v9.2/customapis?$filter=uniquename eq '{t}'&$expand=CustomAPIRequestParameters($select=uniquename)", s.url());
    let answer: Value =
        reqwest::Client::new().get(body("msdynmkt_UatOnly")).bearer_auth(&uat).send().await.unwrap().text().await.unwrap().parse::<Value>().unwrap();
    assert_eq!(answer["value"][0]["uniquename"], "msdynmkt_UatOnly");
    let answer: Value =
        reqwest::Client::new().get(body("msdynmkt_OrderCompleted")).bearer_auth(&uat).send().await.unwrap().text().await.unwrap().parse::<Value>().unwrap();
    assert_eq!(answer["value"], json!([]), "replaced in UAT");
    assert_eq!(call(&s, "", "msdynmkt_OrderCompleted", &prod_token(&s).await).await.0, 204, "still published in the default environment");
}

#[tokio::test]
async fn an_environment_s_own_faults_apply_to_its_prefix_only() {
    let s = sandbox().await;
    let (prod, uat) = (prod_token(&s).await, uat_token(&s).await);
    let (prod_prefix, uat_prefix) = (format!("/{PROD}"), format!("/{UAT}"));

    // Production throttled for good, Retry-After: 60.
    s.set_environment_faults(PROD, Faults { throttle_rate: 1.0, retry_after_secs: Some(60), ..Faults::default() });
    assert_eq!(call(&s, &prod_prefix, "msdynmkt_OrderCompleted", &prod).await, (429, Some("60".into())));
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await.0, 204, "UAT does not share production's faults");
    assert_eq!(call(&s, "", "msdynmkt_OrderCompleted", &prod).await.0, 204, "nor does the default environment");

    // A script and the unavailable rate, per environment.
    s.set_environment_faults(UAT, Faults { script: vec![500, 429], ..Faults::default() });
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await.0, 500);
    assert_eq!(call(&s, "", "msdynmkt_OrderCompleted", &prod).await.0, 204, "UAT's script is not consumed elsewhere");
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await, (429, Some("1".into())));
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await.0, 204);
    s.set_environment_faults(UAT, Faults { unavailable_rate: 1.0, ..Faults::default() });
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await.0, 503);
    s.set_environment_faults(UAT, Faults { error_rate: 1.0, ..Faults::default() });
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await.0, 500);

    // Latency, in one environment only.
    s.set_environment_faults(UAT, Faults { latency_ms: 300, ..Faults::default() });
    let started = Instant::now();
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await.0, 204);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(call(&s, "", "msdynmkt_OrderCompleted", &prod).await.0, 204);
    assert!(started.elapsed() < Duration::from_millis(250), "the default environment answers at once");

    let prod_stats = s.environment_stats(PROD);
    assert_eq!((prod_stats.calls_with(429), prod_stats.calls_with(204)), (1, 0));
    let uat_stats = s.environment_stats(UAT);
    assert_eq!((uat_stats.calls_with(500), uat_stats.calls_with(429), uat_stats.calls_with(503), uat_stats.calls_with(204)), (2, 1, 1, 3));

    // Without faults of its own, an environment answers under the default's (set_faults).
    s.clear_environment_faults(PROD);
    s.set_faults(Faults { unavailable_rate: 1.0, ..Faults::default() });
    assert_eq!(call(&s, &prod_prefix, "msdynmkt_OrderCompleted", &prod).await.0, 503);
    assert_eq!(call(&s, "", "msdynmkt_OrderCompleted", &prod).await.0, 503);
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await.0, 204, "UAT keeps its own");

    // The admin endpoint sets and shows an environment's faults.
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/_sandbox/environments/{UAT}/faults", s.url()))
        .body(json!({"throttle_rate": 1.0, "retry_after_secs": 7}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    assert_eq!(call(&s, &uat_prefix, "msdynmkt_OrderCompleted", &uat).await, (429, Some("7".into())));
    let shown: Value =
        http.get(format!("{}/_sandbox/environments/{UAT}/faults", s.url())).send().await.unwrap().text().await.unwrap().parse::<Value>().unwrap();
    assert_eq!((shown["own"].clone(), shown["faults"]["retry_after_secs"].clone()), (json!(true), json!(7)));
}

#[tokio::test]
async fn budgets_are_counted_per_environment() {
    let s = sandbox().await;
    let (prod, uat) = (prod_token(&s).await, uat_token(&s).await);
    // The same budget in both, one request each per window.
    s.set_faults(Faults { budget_requests: Some(1), budget_window_secs: Some(60), ..Faults::default() });
    assert_eq!(call(&s, &format!("/{PROD}"), "msdynmkt_OrderCompleted", &prod).await.0, 204);
    assert_eq!(call(&s, &format!("/{PROD}"), "msdynmkt_OrderCompleted", &prod).await.0, 429);
    assert_eq!(call(&s, &format!("/{UAT}"), "msdynmkt_OrderCompleted", &uat).await.0, 204, "UAT's budget is its own");
    s.reset();
    assert!(s.signals().is_empty());
    assert_eq!(s.environment_stats(PROD).calls(), 0);
    assert_eq!(call(&s, &format!("/{PROD}"), "msdynmkt_OrderCompleted", &prod).await.0, 204, "reset clears every environment's budget");
}
