//! The relay end to end against the sandbox: SQS and direct invocations, the
//! exact bodies Dynamics receives, and each fault's outcome.

use std::time::{Duration, Instant};

use crate::helpers::*;
use d365_sandbox::{App, Faults};
use serde_json::{json, Value};

fn without_ingestion(mut body: Value) -> Value {
    let ingested = body.as_object_mut().unwrap().remove("msdynmkt_signalingestiontimestamp").expect("ingestion timestamp present");
    let ingested = chrono::DateTime::parse_from_rfc3339(ingested.as_str().unwrap()).unwrap();
    let age = chrono::Utc::now().signed_duration_since(ingested);
    assert!(age.num_seconds().abs() < 60, "ingestion time is now: {ingested}");
    assert!(!ingested.to_rfc3339().is_empty());
    body
}

#[tokio::test]
async fn the_spec_event_reaches_dynamics_as_the_spec_body() {
    // The Default preset (no mapping document), as a new user has it.
    let h = Harness::new(&[("D365_MAPPING_FILE", "")]).await;
    let response = h.invoke(event_file("direct.json")).await;
    assert_eq!(response, json!({"delivered": 1, "dropped": 0, "duplicates": 0, "failed": []}));
    let signals = h.sandbox.accepted();
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].trigger, "msdynmkt_OrderCompleted");
    assert_eq!(
        without_ingestion(signals[0].body.clone()),
        json!({
          "msdynmkt_profileid": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33",
          "msdynmkt_signaluserauthid": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33",
          "msdynmkt_signaltimestamp": "2026-06-06T14:30:00Z",
          "contactpoint_email": "jane@example.com",
          "contactpoint_phone": "+447700900123",
          "msdynmkt_orderid": "ORD-10231",
          "msdynmkt_ordertotal": 129.0,
          "msdynmkt_currency": "GBP"
        })
    );
}

#[tokio::test]
async fn the_spec_event_in_an_sqs_batch_is_exactly_the_spec_request() {
    let h = Harness::new(&[("D365_MAPPING_FILE", "")]).await;
    let response = h.invoke(sqs_batch(&[event_file("direct.json").to_string()], None)).await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    let signals = h.sandbox.signals();
    assert_eq!(signals.len(), 1);
    let signal = &signals[0];
    assert_eq!(signal.path, "/api/data/v9.2/msdynmkt_OrderCompleted");
    let header = |name: &str| signal.headers.get(name).map(String::as_str);
    assert_eq!(header("authorization"), Some("Bearer <token>"));
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("accept"), Some("application/json"));
    assert_eq!(header("odata-maxversion"), Some("4.0"));
    assert_eq!(header("odata-version"), Some("4.0"));
    assert!(header("cookie").is_none(), "no affinity cookie is stored or sent");
    assert_eq!(signal.body["msdynmkt_signaltimestamp"], "2026-06-06T14:30:00Z");
    assert_eq!(signal.body["contactpoint_phone"], "+447700900123");
    assert_eq!(signal.body.as_object().unwrap().len(), 9);
    // The token request: the SPEC form fields, and the scope from org_url_host
    // although Dataverse is reached on loopback.
    let tokens = h.sandbox.token_requests();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].tenant, "00000000-0000-0000-0000-000000000000");
    assert_eq!(tokens[0].grant_type, "client_credentials");
    assert_eq!(tokens[0].client_id, "11111111-1111-1111-1111-111111111111");
    assert!(tokens[0].client_secret_sent);
    assert_eq!(tokens[0].scope, "https://contoso.api.crm.dynamics.com/.default");
}

#[tokio::test]
async fn every_sample_event_goes_through_the_real_handler() {
    let h = Harness::new(&[]).await;
    for (file, calls) in [("sqs-standard.json", 4), ("sqs-fifo.json", 3), ("direct.json", 1), ("direct-batch.json", 4)] {
        let before = h.sandbox.accepted().len();
        let response = h.invoke(event_file(file)).await;
        let ok = response.get("batchItemFailures").map_or_else(|| response["failed"] == json!([]), |f| f == &json!([]));
        assert!(ok, "{file}: {response}");
        assert_eq!(h.sandbox.accepted().len() - before, calls, "{file}");
    }
    // The webhook samples are invoked (re-signed) in tests/webhooks.rs.
}

#[tokio::test]
async fn server_errors_twice_then_success_is_delivered() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { script: vec![500, 500], ..Faults::default() });
    let response = h.invoke(sqs_batch(&[order("a").to_string()], None)).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(h.sandbox.stats().calls_by_status, [(204, 1), (500, 2)].into_iter().collect());
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { script: vec![400], ..Faults::default() });
    let response = h.invoke(sqs_batch(&[order("a").to_string()], None)).await;
    assert_eq!(failures(&response), ["sqs-0"]);
    assert_eq!(h.sandbox.stats().calls(), 1);
}

#[tokio::test]
async fn an_sqs_batch_raises_one_trigger_per_mapped_event() {
    let h = Harness::new(&[]).await;
    let response = h.invoke(event_file("sqs-standard.json")).await;
    assert_eq!(response, json!({"batchItemFailures": []}), "Page Viewed is dropped, not failed");
    let mut triggers: Vec<String> = h.sandbox.accepted().iter().map(|s| s.trigger.clone()).collect();
    triggers.sort();
    assert_eq!(triggers, ["msdynmkt_LeadGenerated", "msdynmkt_OrderCompleted", "msdynmkt_ProductAdded", "msdynmkt_SignedUp"]);
    let lead = h.sandbox.accepted().into_iter().find(|s| s.trigger == "msdynmkt_LeadGenerated").unwrap();
    assert_eq!(
        without_ingestion(lead.body),
        json!({
            "msdynmkt_profileid": "c0ffee00-0000-4000-8000-000000000003",
            "msdynmkt_signaluserauthid": "c0ffee00-0000-4000-8000-000000000003",
            "msdynmkt_signaltimestamp": "2026-06-06T09:05:00.250Z",
            "contactpoint_phone": "+14155552671",
            "msdynmkt_leadsource": "webinar",
            "msdynmkt_leadcampaign": "spring-launch"
        })
    );
    assert_eq!(h.sandbox.stats().calls(), 4);
}

#[tokio::test]
async fn batch_item_failures_list_exactly_the_records_not_delivered() {
    let h = Harness::new(&[]).await;
    let mut no_user = order("b");
    no_user.as_object_mut().unwrap().remove("userId");
    let mut no_order_id = order("c");
    no_order_id["properties"].as_object_mut().unwrap().remove("order_id");
    let mut wrong_type = order("d");
    wrong_type["properties"]["revenue"] = json!("lots");
    let bodies = vec![
        order("a").to_string(),
        no_user.to_string(),
        no_order_id.to_string(),
        wrong_type.to_string(),
        "{not json".to_string(),
        json!({"event": "Page Viewed"}).to_string(),
        order("g").to_string(),
    ];
    let response = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&response), ["sqs-1", "sqs-2", "sqs-3", "sqs-4"]);
    assert_eq!(h.sandbox.accepted().len(), 2);
    assert_eq!(response_reason(&h, &bodies[3]).await, "parameter msdynmkt_ordertotal (Decimal): a string that is not a number");
    assert_eq!(h.sandbox.stats().calls_with(400), 0, "the wrong type is invalid before it is sent (SPEC §13)");
}

/// The reason a direct invocation gives for one event.
async fn response_reason(h: &Harness, body: &str) -> String {
    let answer = h.invoke(serde_json::from_str(body).unwrap()).await;
    answer["failed"][0]["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn unknown_trigger_is_rejected_with_the_dataverse_code() {
    let h = Harness::new(&[("D365_MAPPING", r#"{"events":{"Order Completed":{"trigger":"msdynmkt_Misspelt"}}}"#)]).await;
    let response = h.invoke(json!([order("a")])).await;
    assert_eq!(response["failed"][0]["outcome"], "rejected");
    assert_eq!(response["failed"][0]["status"], 404);
    assert_eq!(response["failed"][0]["code"], "0x8006088a");
    assert_eq!(h.sandbox.stats().calls_with(404), 0, "the trigger's definition says it does not exist: no POST (SPEC §13)");
    // With the definition unreadable the call is made, and Dataverse's own 404 is not retried.
    let h = Harness::new(&[("D365_MAPPING", r#"{"events":{"Order Completed":{"trigger":"msdynmkt_Misspelt"}}}"#)]).await;
    h.sandbox.set_faults(Faults { metadata_status: Some(403), ..Faults::default() });
    let response = h.invoke(json!([order("a")])).await;
    assert_eq!(response["failed"][0]["outcome"], "rejected");
    assert_eq!(response["failed"][0]["code"], "0x8006088a");
    assert_eq!(h.sandbox.stats().calls_with(404), 1, "not retried");
}

#[tokio::test]
async fn throttling_is_waited_out_when_retry_after_fits() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { throttle_rate: 1.0, retry_after_secs: Some(1), ..Faults::default() });
    let started = Instant::now();
    let invocation = h.invoke(json!([order("a"), order("b")]));
    let clear = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.sandbox.set_faults(Faults::default());
    };
    let (response, ()) = tokio::join!(invocation, clear);
    assert_eq!(response["delivered"], 2, "{response}");
    assert!(started.elapsed() >= Duration::from_secs(1), "waited the Retry-After");
    assert_eq!(h.sandbox.stats().calls_with(204), 2);
    assert!(h.sandbox.stats().calls_with(429) >= 1);
}

#[tokio::test]
async fn throttling_past_the_deadline_is_reported_failed_at_once() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { throttle_rate: 1.0, retry_after_secs: Some(120), ..Faults::default() });
    let started = Instant::now();
    let response = h.invoke_within(sqs_batch(&[order("a").to_string()], None), 10.0).await.unwrap();
    assert_eq!(failures(&response), ["sqs-0"]);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn server_errors_are_retried_four_times_then_failed() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let response = h.invoke(sqs_batch(&[order("a").to_string()], None)).await;
    assert_eq!(failures(&response), ["sqs-0"]);
    assert_eq!(h.sandbox.stats().calls_with(500), 4);
}

#[tokio::test]
async fn dropped_connections_are_retried_then_failed() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { drop_rate: 1.0, ..Faults::default() });
    let response = h.invoke(json!(order("a"))).await;
    assert_eq!(response["failed"][0]["outcome"], "failed");
    assert!(response["failed"][0]["error"].as_str().unwrap().contains("connection"), "{response}");
    assert_eq!(h.sandbox.stats().calls_with(0), 4);
}

#[tokio::test]
async fn slow_dynamics_is_cut_off_before_the_deadline() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { latency_ms: 5_000, ..Faults::default() });
    let started = Instant::now();
    let response = h.invoke_within(sqs_batch(&[order("a").to_string(), order("b").to_string()], None), 3.0).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "answered before the deadline: {:?}", started.elapsed());
    assert_eq!(failures(&response), ["sqs-0", "sqs-1"]);
}

#[tokio::test]
async fn five_warm_invocations_of_ten_records_make_one_token_request() {
    let h = Harness::new(&[]).await;
    for invocation in 0..5 {
        let bodies: Vec<String> = (0..10).map(|i| order(&format!("{invocation}-{i}")).to_string()).collect();
        assert_eq!(failures(&h.invoke(sqs_batch(&bodies, None)).await), Vec::<String>::new());
    }
    assert_eq!(h.sandbox.stats().token_requests, 1);
    assert_eq!(h.sandbox.stats().secret_requests, 1);
    assert_eq!(h.sandbox.accepted().len(), 50);
}

#[tokio::test]
async fn concurrent_records_share_one_token_refresh() {
    let h = Harness::new(&[("D365_MAX_IN_FLIGHT", "16")]).await;
    let events: Vec<Value> = (0..40).map(|i| order(&format!("{i}"))).collect();
    let response = h.invoke(Value::Array(events)).await;
    assert_eq!(response["delivered"], 40);
    assert_eq!(h.sandbox.stats().token_requests, 1);
}

#[tokio::test]
async fn a_401_refreshes_the_token_and_retries_once() {
    let h = Harness::new(&[]).await;
    h.invoke(json!(order("a"))).await;
    h.sandbox.revoke_tokens();
    let response = h.invoke(json!(order("b"))).await;
    assert_eq!(response["delivered"], 1, "{response}");
    assert_eq!(h.sandbox.stats().token_requests, 2);
    assert_eq!(h.sandbox.stats().calls_with(401), 1);
}

#[tokio::test]
async fn token_endpoint_down_fails_the_batch_without_a_tight_loop() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { token_status: Some(503), ..Faults::default() });
    let bodies: Vec<String> = (0..20).map(|i| order(&format!("{i}")).to_string()).collect();
    let response = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&response).len(), 20);
    assert_eq!(h.sandbox.stats().token_requests, 3, "one shared fetch with its own retries");
    assert_eq!(h.sandbox.stats().calls(), 0);
    // The next invocation tries again, and recovers.
    h.sandbox.set_faults(Faults::default());
    let response = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&response).len(), 0);
}

fn demo_secret() -> Value {
    crate::helpers::sandbox_config().secrets["d365/relay-demo"].clone()
}

#[tokio::test]
async fn rejected_credentials_fail_fast_and_a_rotated_secret_is_picked_up() {
    let h = Harness::new(&[]).await;
    let mut stale = demo_secret();
    stale["client_secret"] = json!("expired-secret");
    h.sandbox.put_secret("d365/relay-demo", &stale);
    let bodies: Vec<String> = (0..5).map(|i| order(&format!("{i}")).to_string()).collect();
    let response = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&response).len(), 5);
    assert_eq!(h.sandbox.stats().token_requests, 1, "invalid_client is not retried");
    assert_eq!(h.sandbox.stats().secret_requests, 2, "the secret was fetched again once");
    assert_eq!(h.sandbox.stats().calls(), 0, "no Dataverse call at all");

    // Rotation: the new secret is in Secrets Manager; the cached copy is still the stale one.
    h.sandbox.put_secret("d365/relay-demo", &demo_secret());
    let response = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&response).len(), 0, "{response}");
    assert_eq!(h.sandbox.accepted().len(), 5);
}

#[tokio::test]
async fn a_401_after_rotation_picks_up_the_new_credentials() {
    let h = Harness::new(&[]).await;
    h.invoke(json!(order("a"))).await;
    // The app's secret is rotated: old tokens die, the old client secret stops working.
    let mut rotated = demo_secret();
    rotated["client_secret"] = json!("rotated-secret");
    h.sandbox.set_apps(vec![serde_json::from_value::<App>(rotated.clone()).unwrap()]);
    h.sandbox.put_secret("d365/relay-demo", &rotated);
    h.sandbox.revoke_tokens();
    let response = h.invoke(json!(order("b"))).await;
    assert_eq!(response["delivered"], 1, "{response}");
}

#[tokio::test]
async fn secrets_manager_down_at_cold_start_fails_records_and_recovers() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { secrets_status: Some(500), ..Faults::default() });
    let bodies = vec![order("a").to_string(), order("b").to_string()];
    let response = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&response), ["sqs-0", "sqs-1"]);
    h.sandbox.set_faults(Faults::default());
    let response = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&response), Vec::<String>::new());
}

#[tokio::test]
async fn malformed_secret_fails_every_record_naming_the_field() {
    let h = Harness::new(&[]).await;
    let mut bad = demo_secret();
    bad["org_url_host"] = json!("https://contoso.crm.dynamics.com/");
    h.sandbox.put_secret("d365/relay-demo", &bad);
    let response = h.invoke(json!([order("a")])).await;
    assert_eq!(response["failed"][0]["outcome"], "failed");
    assert!(response["failed"][0]["error"].as_str().unwrap().contains("secret.org_url_host"), "{response}");
    assert_eq!(h.sandbox.stats().token_requests, 0, "no token is requested for a bad host");
}

#[tokio::test]
async fn missing_configuration_fails_every_record() {
    let h = Harness::new(&[("D365_SECRET_ID", "")]).await;
    let response = h.invoke(sqs_batch(&[order("a").to_string()], None)).await;
    assert_eq!(failures(&response), ["sqs-0"]);
    let response = h.invoke(json!(order("a"))).await;
    assert!(response["failed"][0]["error"].as_str().unwrap().contains("D365_SECRET_ID"));
}

#[tokio::test]
async fn an_sqs_record_without_message_id_fails_the_invocation() {
    let h = Harness::new(&[]).await;
    let mut batch = sqs_batch(&[order("a").to_string(), order("b").to_string()], None);
    batch["Records"][1].as_object_mut().unwrap().remove("messageId");
    assert!(h.invoke_within(batch, 10.0).await.is_err());
    assert_eq!(h.sandbox.stats().calls(), 0, "nothing delivered, so the retried batch does not duplicate");
}

#[tokio::test]
async fn fifo_keeps_order_and_skips_the_rest_of_a_failed_group() {
    let h = Harness::new(&[]).await;
    let mut bad = order("a2");
    bad.as_object_mut().unwrap().remove("userId");
    let bodies = vec![order("a1").to_string(), bad.to_string(), order("a3").to_string(), order("b1").to_string(), order("b2").to_string()];
    let response = h.invoke(sqs_batch(&bodies, Some(&["a", "a", "a", "b", "b"]))).await;
    assert_eq!(failures(&response), ["sqs-1", "sqs-2"]);
    let delivered: Vec<String> = h.sandbox.accepted().iter().map(|s| s.body["msdynmkt_orderid"].as_str().unwrap().to_string()).collect();
    let b: Vec<&String> = delivered.iter().filter(|o| o.starts_with("ORD-b")).collect();
    assert_eq!(b, ["ORD-b1", "ORD-b2"], "order kept within a group");
    assert!(!delivered.contains(&"ORD-a3".to_string()));
}

#[tokio::test]
async fn the_fifo_sample_is_delivered_in_group_order() {
    let h = Harness::new(&[]).await;
    let response = h.invoke(event_file("sqs-fifo.json")).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    let triggers: Vec<String> = h.sandbox.accepted().iter().filter(|s| s.body["msdynmkt_profileid"] == "cust-1").map(|s| s.trigger.clone()).collect();
    assert_eq!(triggers, ["msdynmkt_ProductAdded", "msdynmkt_OrderCompleted"]);
}

#[tokio::test]
async fn a_redelivered_batch_raises_each_trigger_once() {
    let h = Harness::new(&[]).await;
    let bodies: Vec<String> = (0..10).map(|i| order(&format!("{i}")).to_string()).collect();
    let first = h.invoke(sqs_batch(&bodies, None)).await;
    let replay = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&first), Vec::<String>::new());
    assert_eq!(failures(&replay), Vec::<String>::new(), "duplicates are successes");
    assert_eq!(h.sandbox.accepted().len(), 10);
    let direct = h.invoke(json!([order("0"), order("new")])).await;
    assert_eq!(direct, json!({"delivered": 1, "dropped": 0, "duplicates": 1, "failed": []}));
}

#[tokio::test]
async fn a_token_shorter_than_a_minute_is_refreshed_at_half_its_lifetime() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_token_lifetime(Duration::from_secs(2));
    assert_eq!(h.invoke(json!(order("a"))).await["delivered"], 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(h.invoke(json!(order("b"))).await["delivered"], 1);
    assert_eq!(h.sandbox.stats().token_requests, 2, "a 2 s token is refreshed after 1 s, never stretched to a minute");
    assert_eq!(h.sandbox.stats().calls_with(401), 0, "never used past its expiry");
}

#[tokio::test]
async fn a_secrets_manager_outage_fails_the_records_as_unavailable_not_as_a_configuration_error() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { secrets_status: Some(503), ..Faults::default() });
    let response = h.invoke(json!([order("a"), order("b")])).await;
    let failed = response["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{response}");
    for record in failed {
        assert_eq!(record["outcome"], "failed");
        let error = record["error"].as_str().unwrap();
        assert!(error.starts_with("Secrets Manager is unavailable: secret 'd365/relay-demo' not read"), "{error}");
        assert!(!error.contains("configuration error") && !error.contains("D365_SECRET_ID"), "{error}");
    }
    // A webhook is answered 503 with a short Retry-After, not "misconfigured".
    let answer = h.invoke(signed_http(&json!(order("c")).to_string())).await;
    assert_eq!(answer["statusCode"], 503, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"], "Secrets Manager is unavailable; retry later");

    // A missing secret is still a configuration error, naming the setting.
    h.sandbox.set_faults(Faults::default());
    let missing = relay_for(&h.sandbox, &[("D365_MAPPING_FILE", &mapping_file()), ("D365_SECRET_ID", "d365/no-such-secret")]);
    let response = missing.handle(json!(order("d")), Instant::now() + Duration::from_secs(10)).await.unwrap();
    let error = response["failed"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("configuration error: D365_SECRET_ID: cannot read secret 'd365/no-such-secret': ResourceNotFoundException"), "{error}");
    assert_eq!(h.sandbox.accepted().len(), 0);
}

#[tokio::test]
async fn records_held_back_by_a_throttle_pause_name_the_429_not_the_deadline() {
    let h = Harness::new(&[("D365_MAX_IN_FLIGHT", "1")]).await;
    h.sandbox.set_faults(Faults { script: vec![429], retry_after_secs: Some(120), ..Faults::default() });
    let started = Instant::now();
    let response = h.invoke_within(json!([order("a"), order("b"), order("c")]), 10.0).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "not waited for");
    let failed = response["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{response}");
    assert_eq!(h.sandbox.stats().calls_with(429), 1, "one call was made");
    assert_eq!(h.sandbox.stats().calls(), 1, "the others were held back without a call");
    for record in failed {
        assert_eq!(
            (record["outcome"].as_str(), record["status"].as_u64(), record["code"].as_str()),
            (Some("failed"), Some(429), Some("0x80072322")),
            "{record}"
        );
        let error = record["error"].as_str().unwrap();
        assert!(!error.contains("deadline"), "{error}");
        assert!(error.contains("Retry-After"), "{error}");
    }
    let held: Vec<&str> = failed[1..].iter().map(|r| r["error"].as_str().unwrap()).collect();
    assert!(held.iter().all(|e| e.starts_with("not attempted: Dataverse throttled the application user (429 0x80072322), Retry-After 1")), "{held:?}");
}

#[tokio::test]
async fn a_throttled_definition_read_waits_out_the_pause_and_is_read_again() {
    let h = Harness::new(&[]).await;
    // The customapis query answers 429 (no Retry-After: a 1 s pause) until it is cleared.
    h.sandbox.set_faults(Faults { metadata_status: Some(429), ..Faults::default() });
    let invocation = h.invoke(json!([order("a")]));
    let clear = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.sandbox.set_faults(Faults::default());
    };
    let (response, ()) = tokio::join!(invocation, clear);
    assert_eq!(response["delivered"], 1, "{response}");
    assert_eq!(h.sandbox.stats().metadata_requests, 2, "the read was retried after the pause, as any call is");
    assert_eq!(h.sandbox.accepted().len(), 1);
}
