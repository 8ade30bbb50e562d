//! The sandbox's own behaviour: each endpoint, each error, each fault, the admin
//! endpoints — over plain HTTP — and real SDK clients (Rust, boto3) reading a secret.

use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox, SandboxConfig};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn sandbox_config() -> SandboxConfig {
    serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/config.json")).unwrap()).unwrap()
}

/// A Secrets Manager client of the AWS SDK for Rust, pointed at the sandbox.
fn secrets_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("sandbox", "sandbox", None, None, "sandbox"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

async fn sandbox() -> Sandbox {
    Sandbox::start(sandbox_config(), 0).await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn token_answer(s: &Sandbox, tenant: &str, client_id: &str, secret: &str, scope: &str) -> (u16, Value) {
    let form = [("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret), ("scope", scope)];
    let r = http().post(format!("{}/{tenant}/oauth2/v2.0/token", s.url())).form(&form).send().await.unwrap();
    (r.status().as_u16(), serde_json::from_slice(&r.bytes().await.unwrap()).unwrap())
}

const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const SCOPE: &str = "https://contoso.api.crm.dynamics.com/.default";

async fn token(s: &Sandbox) -> String {
    let (status, body) = token_answer(s, TENANT, CLIENT, "sandbox-client-secret", SCOPE).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn call(s: &Sandbox, trigger: &str, token: Option<&str>, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = http().post(format!("{}/api/data/v9.2/{trigger}", s.url())).header("content-type", "application/json").body(body.to_string());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
}

fn order_body() -> Value {
    json!({"msdynmkt_profileid": "u", "msdynmkt_signaltimestamp": "2026-06-06T14:30:00Z", "msdynmkt_orderid": "A1", "msdynmkt_ordertotal": 10.5})
}

#[tokio::test]
async fn entra_issues_tokens_and_entra_errors() {
    let s = sandbox().await;
    let (status, body) = token_answer(&s, TENANT, CLIENT, "sandbox-client-secret", SCOPE).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    let cases = [
        (TENANT, CLIENT, "wrong", SCOPE, 401, "invalid_client", 7000215),
        (TENANT, "22222222-0000-0000-0000-000000000000", "x", SCOPE, 400, "unauthorized_client", 700016),
        ("99999999-0000-0000-0000-000000000000", CLIENT, "x", SCOPE, 400, "invalid_request", 90002),
        (TENANT, CLIENT, "sandbox-client-secret", "https://other.crm.dynamics.com/.default", 400, "invalid_scope", 1002012),
    ];
    for (tenant, client, secret, scope, want_status, want_error, want_code) in cases {
        let (status, body) = token_answer(&s, tenant, client, secret, scope).await;
        assert_eq!((status, body["error"].as_str().unwrap()), (want_status, want_error));
        assert_eq!(body["error_codes"], json!([want_code]));
        assert!(body["error_description"].as_str().unwrap().starts_with(&format!("AADSTS{want_code}")));
    }
    s.set_faults(Faults { token_status: Some(503), ..Faults::default() });
    assert_eq!(token_answer(&s, TENANT, CLIENT, "sandbox-client-secret", SCOPE).await.0, 503);
}

#[tokio::test]
async fn dataverse_checks_tokens_triggers_and_parameters() {
    let s = sandbox().await;
    let t = token(&s).await;
    let (status, _, headers) = call(&s, "msdynmkt_OrderCompleted", None, &order_body()).await;
    assert_eq!(status, 401);
    assert!(headers.get("www-authenticate").is_some());
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some("forged"), &order_body()).await.0, 401);
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some(&t), &order_body()).await.0, 204);

    let (status, body, _) = call(&s, "msdynmkt_Nope", Some(&t), &order_body()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("0x8006088a")));

    let mut unknown = order_body();
    unknown["msdynmkt_colour"] = json!("red");
    let (status, body, _) = call(&s, "msdynmkt_OrderCompleted", Some(&t), &unknown).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("'msdynmkt_colour'"));

    let mut missing = order_body();
    missing.as_object_mut().unwrap().remove("msdynmkt_orderid");
    let (status, body, _) = call(&s, "msdynmkt_OrderCompleted", Some(&t), &missing).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("0x80040203")));

    let mut null = order_body();
    null["msdynmkt_currency"] = Value::Null;
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some(&t), &null).await.0, 400);

    let mut wrong_type = order_body();
    wrong_type["msdynmkt_ordertotal"] = json!("ten");
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some(&t), &wrong_type).await.0, 400);
    let mut bad_time = order_body();
    bad_time["msdynmkt_signaltimestamp"] = json!("yesterday");
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some(&t), &bad_time).await.0, 400);

    // Tokens expire.
    s.set_token_lifetime(Duration::from_secs(1));
    let short = token(&s).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some(&short), &order_body()).await.0, 401);
}

#[tokio::test]
async fn faults_are_injected_and_seeded() {
    let s = sandbox().await;
    let t = token(&s).await;
    s.set_faults(Faults { throttle_rate: 1.0, retry_after_secs: Some(7), ..Faults::default() });
    let (status, body, headers) = call(&s, "msdynmkt_OrderCompleted", Some(&t), &order_body()).await;
    assert_eq!((status, headers["retry-after"].to_str().unwrap()), (429, "7"));
    assert_eq!(body["error"]["code"], "0x80072322");
    s.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some(&t), &order_body()).await.0, 500);
    s.set_faults(Faults { unavailable_rate: 1.0, ..Faults::default() });
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some(&t), &order_body()).await.0, 503);
    s.set_faults(Faults { drop_rate: 1.0, ..Faults::default() });
    let dropped = http().post(format!("{}/api/data/v9.2/msdynmkt_OrderCompleted", s.url())).bearer_auth(&t).body(order_body().to_string()).send().await;
    assert!(dropped.is_err(), "the connection is dropped without an answer");
    s.set_faults(Faults { latency_ms: 200, dop_hint: Some(6), ..Faults::default() });
    let started = Instant::now();
    let (status, _, headers) = call(&s, "msdynmkt_OrderCompleted", Some(&t), &order_body()).await;
    assert_eq!((status, headers["x-ms-dop-hint"].to_str().unwrap()), (204, "6"));
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A concurrency cap of 2: of 6 simultaneous calls, 4 are refused 0x80072326.
    s.set_faults(Faults { latency_ms: 300, max_concurrency: Some(2), ..Faults::default() });
    let url = s.url();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (url, t) = (url.clone(), t.clone());
            tokio::spawn(async move {
                let r = http().post(format!("{url}/api/data/v9.2/msdynmkt_OrderCompleted")).bearer_auth(t).body(order_body().to_string()).send().await.unwrap();
                let status = r.status().as_u16();
                (status, serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut codes = Vec::new();
    for h in handles {
        let (status, body) = h.await.unwrap();
        statuses.push(status);
        if status == 429 {
            codes.push(body["error"]["code"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 204).count(), 2, "{statuses:?}");
    assert!(codes.iter().all(|c| c == "0x80072326") && codes.len() == 4);
    assert!(s.stats().max_concurrency_seen >= 3, "a refusal means more than the cap were in flight");

    // The same seed gives the same dice.
    let rolls = |seed: u64| async move {
        let mut config = sandbox_config();
        config.seed = seed;
        config.faults = Faults { error_rate: 0.5, ..Faults::default() };
        let s = Sandbox::start(config, 0).await.unwrap();
        let t = token(&s).await;
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(call(&s, "msdynmkt_OrderCompleted", Some(&t), &order_body()).await.0);
        }
        out
    };
    assert_eq!(rolls(42).await, rolls(42).await);
}

#[tokio::test]
async fn admin_endpoints_list_count_reset_and_configure() {
    let s = sandbox().await;
    let t = token(&s).await;
    call(&s, "msdynmkt_OrderCompleted", Some(&t), &order_body()).await;
    let signals: Value =
        http().get(format!("{}/_sandbox/signals", s.url())).send().await.unwrap().bytes().await.map(|b| serde_json::from_slice(&b).unwrap()).unwrap();
    assert_eq!(signals[0]["trigger"], "msdynmkt_OrderCompleted");
    assert_eq!(signals[0]["status"], 204);
    assert_eq!(signals[0]["body"]["msdynmkt_orderid"], "A1");
    assert!(signals[0]["received_at"].as_str().unwrap().ends_with('Z'));
    let stats: Value =
        http().get(format!("{}/_sandbox/stats", s.url())).send().await.unwrap().bytes().await.map(|b| serde_json::from_slice(&b).unwrap()).unwrap();
    assert_eq!(stats["token_requests"], 1);
    assert_eq!(stats["calls_by_status"]["204"], 1);

    let put = http().put(format!("{}/_sandbox/faults", s.url())).body(json!({"error_rate": 1.0}).to_string()).send().await.unwrap();
    assert_eq!(put.status(), 204);
    assert_eq!(call(&s, "msdynmkt_OrderCompleted", Some(&t), &order_body()).await.0, 500);
    let bad = http().put(format!("{}/_sandbox/faults", s.url())).body(json!({"eror_rate": 1.0}).to_string()).send().await.unwrap();
    assert_eq!(bad.status(), 400, "unknown fault names are refused, not ignored");
    http().put(format!("{}/_sandbox/faults", s.url())).body(json!({}).to_string()).send().await.unwrap();

    let put = http()
        .put(format!("{}/_sandbox/triggers", s.url()))
        .body(json!([{"name": "msdynmkt_New", "parameters": {"x": {"type": "Integer", "required": true}}}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    assert_eq!(call(&s, "msdynmkt_New", Some(&t), &json!({"msdynmkt_profileid": "u", "x": 3})).await.0, 204);
    assert_eq!(call(&s, "msdynmkt_New", Some(&t), &json!({"msdynmkt_profileid": "u", "x": 3.5})).await.0, 400);

    let reset = http().post(format!("{}/_sandbox/reset", s.url())).send().await.unwrap();
    assert_eq!(reset.status(), 204);
    assert!(s.signals().is_empty());
    assert_eq!(s.stats().token_requests, 0);
}

#[tokio::test]
async fn the_rust_sdk_reads_and_misses_secrets() {
    let s = sandbox().await;
    let client = secrets_client(&s.url());
    let out = client.get_secret_value().secret_id("d365/relay-demo").send().await.unwrap();
    let secret: Value = serde_json::from_str(out.secret_string().unwrap()).unwrap();
    assert_eq!(secret["org_url_host"], "contoso.api.crm.dynamics.com");
    assert_eq!(out.name(), Some("d365/relay-demo"));
    assert!(out.version_id().is_some());
    assert_eq!(out.version_stages(), ["AWSCURRENT"]);
    // By ARN too.
    let arn = out.arn().unwrap().to_string();
    assert!(client.get_secret_value().secret_id(&arn).send().await.is_ok());
    // Rotation gives a new version.
    s.put_secret("d365/relay-demo", &secret);
    let rotated = client.get_secret_value().secret_id("d365/relay-demo").send().await.unwrap();
    assert_ne!(rotated.version_id(), out.version_id());
    let missing = client.get_secret_value().secret_id("nope").send().await.unwrap_err();
    assert!(missing.into_service_error().is_resource_not_found_exception());
}

#[tokio::test]
async fn boto3_reads_a_secret_from_the_sandbox() {
    let s = sandbox().await;
    let script = format!(
        "import boto3, json\n\
         c = boto3.client('secretsmanager', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x')\n\
         v = c.get_secret_value(SecretId='d365/relay-demo')\n\
         print(json.loads(v['SecretString'])['org_url_host'], v['VersionStages'][0])\n\
         try:\n    c.get_secret_value(SecretId='nope')\nexcept c.exceptions.ResourceNotFoundException:\n    print('not found')\n",
        s.url()
    );
    let output = tokio::task::spawn_blocking(move || std::process::Command::new("python3").args(["-c", &script]).output())
        .await
        .unwrap()
        .expect("python3 (boto3 comes with moto[server], which make test installs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout, "contoso.api.crm.dynamics.com AWSCURRENT\nnot found\n");
}

#[tokio::test]
async fn the_sandbox_binary_serves_its_config_file() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_d365-sandbox"))
        .args(["--config", &format!("{ROOT}/config.json"), "--port", &port.to_string(), "--latency-ms", "5"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let faults = loop {
        if let Ok(r) = http().get(format!("{url}/_sandbox/faults")).send().await {
            break serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(faults["latency_ms"], 5, "flags override the config file");
}

async fn custom_apis(s: &Sandbox, name: &str, token: Option<&str>) -> (u16, Value) {
    let url = format!(
        "{}/api/data/v9.2/customapis?$filter=uniquename eq '{name}'&$select=uniquename&$expand=CustomAPIRequestParameters($select=uniquename,type,isoptional,logicalentityname)",
        s.url()
    );
    let mut request = http().get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null))
}

#[tokio::test]
async fn dataverse_answers_the_customapis_query_with_type_codes_and_contact_points_per_binding() {
    let s = sandbox().await;
    let t = token(&s).await;
    assert_eq!(custom_apis(&s, "msdynmkt_CartAbandoned", None).await.0, 401);
    let (status, answer) = custom_apis(&s, "msdynmkt_CartAbandoned", Some(&t)).await;
    assert_eq!(status, 200);
    let row = &answer["value"][0];
    assert_eq!(row["uniquename"], "msdynmkt_CartAbandoned");
    let parameters = row["CustomAPIRequestParameters"].as_array().unwrap();
    let names: Vec<&str> = parameters.iter().map(|p| p["uniquename"].as_str().unwrap()).collect();
    assert!(!names.contains(&"contactpoint_email") && !names.contains(&"contactpoint_phone"), "bound to contacts: {names:?}");
    assert!(parameters.contains(&json!({"uniquename": "msdynmkt_cartid", "type": 10, "isoptional": false, "logicalentityname": null})));
    assert!(parameters.contains(&json!({"uniquename": "msdynmkt_carttotal", "type": 2, "isoptional": true, "logicalentityname": null})));
    assert!(parameters.contains(&json!({"uniquename": "msdynmkt_profileid", "type": 10, "isoptional": false, "logicalentityname": null})));

    let (_, answer) = custom_apis(&s, "msdynmkt_SubscriptionRenewed", Some(&t)).await;
    let parameters = answer["value"][0]["CustomAPIRequestParameters"].as_array().unwrap().clone();
    let code = |name: &str| parameters.iter().find(|p| p["uniquename"] == name).map(|p| p["type"].clone()).unwrap();
    for (name, expected) in [
        ("msdynmkt_autorenew", 0),
        ("msdynmkt_renewsat", 1),
        ("msdynmkt_discount", 2),
        ("msdynmkt_account", 5),
        ("msdynmkt_score", 6),
        ("msdynmkt_seats", 7),
        ("msdynmkt_amount", 8),
        ("msdynmkt_tier", 9),
        ("msdynmkt_plan", 10),
        ("msdynmkt_features", 11),
        ("msdynmkt_subscriptionid", 12),
        ("contactpoint_email", 10),
    ] {
        assert_eq!(code(name), json!(expected), "{name}");
    }
    assert!(parameters.iter().any(|p| p["uniquename"] == "msdynmkt_account" && p["logicalentityname"] == "account"));

    assert_eq!(
        custom_apis(&s, "msdynmkt_Nope", Some(&t)).await,
        (
            200,
            json!({"@odata.context": "$metadata#customapis(uniquename,CustomAPIRequestParameters(uniquename,type,isoptional,logicalentityname))", "value": []})
        )
    );

    // A contact-bound trigger refuses contact points, as Dataverse does.
    let body = json!({"msdynmkt_profileid": "u", "msdynmkt_cartid": "C1", "contactpoint_email": "a@example.com"});
    let (status, answer, _) = call(&s, "msdynmkt_CartAbandoned", Some(&t), &body).await;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"].as_str().unwrap().contains("'contactpoint_email' in the request payload is not a valid parameter"));

    s.set_faults(Faults { metadata_status: Some(403), ..Faults::default() });
    let (status, answer) = custom_apis(&s, "msdynmkt_CartAbandoned", Some(&t)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("0x80040220")));
    assert_eq!(s.stats().metadata_requests, 5);
    assert_eq!(s.stats().calls(), 1, "metadata reads are not trigger calls");
}
