//! Trigger schema (SPEC §13): definitions read from the sandbox's `customapis`,
//! bodies omitted/coerced/checked before sending, unreadable metadata never
//! blocking delivery, and the `check` / `schema` commands of the real binary.

use std::process::Output;

use d365_sandbox::{Faults, Parameter, Sandbox, TriggerDef};
use serde_json::{json, Value};

use crate::helpers::*;

fn body_without_ingestion(mut body: Value) -> Value {
    body.as_object_mut().unwrap().remove("msdynmkt_signalingestiontimestamp");
    body
}

fn subscription(properties: Value) -> Value {
    json!({"type": "track", "event": "Subscription Renewed", "messageId": format!("sub-{}", fastrand::u64(..)),
           "userId": "c0ffee00-0000-4000-8000-000000000007", "timestamp": "2026-06-06T09:00:00Z", "properties": properties})
}

#[tokio::test]
async fn values_are_coerced_to_each_parameter_type_and_contact_points_left_out_of_a_contact_bound_trigger() {
    let h = Harness::new(&[]).await;
    let answer = h.invoke(event_file("direct-schema.json")).await;
    assert_eq!(answer["delivered"], 2, "{answer}");
    let accepted = h.sandbox.accepted();
    let body = |trigger: &str| body_without_ingestion(accepted.iter().find(|s| s.trigger == trigger).unwrap().body.clone());
    assert_eq!(
        body("msdynmkt_CartAbandoned"),
        json!({
            "msdynmkt_profileid": "c0ffee00-0000-4000-8000-000000000006",
            "msdynmkt_signaluserauthid": "c0ffee00-0000-4000-8000-000000000006",
            "msdynmkt_signaltimestamp": "2026-06-06T16:45:00Z",
            "msdynmkt_cartid": "CART-981",
            "msdynmkt_carttotal": 129.0,
            "msdynmkt_itemcount": 3
        }),
        "no contactpoint_email on a trigger bound to contacts; \"129.00\" → 129.0, \"3\" → 3"
    );
    assert_eq!(
        body("msdynmkt_SubscriptionRenewed"),
        json!({
            "msdynmkt_profileid": "c0ffee00-0000-4000-8000-000000000007",
            "msdynmkt_signaluserauthid": "c0ffee00-0000-4000-8000-000000000007",
            "msdynmkt_signaltimestamp": "2026-06-06T09:00:00Z",
            "msdynmkt_subscriptionid": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c",
            "msdynmkt_plan": "2026",
            "msdynmkt_seats": 25,
            "msdynmkt_amount": 1499.0,
            "msdynmkt_discount": 12.5,
            "msdynmkt_score": 0.87,
            "msdynmkt_autorenew": true,
            "msdynmkt_renewsat": "2027-06-06T14:00:00Z",
            "msdynmkt_features": ["sso", "audit"],
            "msdynmkt_tier": 3,
            "msdynmkt_account": {"@odata.type": "Microsoft.Dynamics.CRM.account", "accountid": "8e1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"}
        })
    );
    assert_eq!(h.sandbox.stats().metadata_requests, 2, "one read per trigger");
}

#[tokio::test]
async fn profile_bound_triggers_keep_their_contact_points() {
    let h = Harness::new(&[]).await;
    h.invoke(event_file("direct.json")).await;
    let body = &h.sandbox.accepted()[0].body;
    assert_eq!(body["contactpoint_email"], "jane@example.com");
    assert_eq!(body["contactpoint_phone"], "+447700900123");
}

#[tokio::test]
async fn a_value_that_cannot_be_coerced_makes_the_record_invalid_naming_parameter_and_type() {
    let h = Harness::new(&[]).await;
    let cases = [
        (
            json!({"subscription_id": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c", "seats": "many"}),
            "parameter msdynmkt_seats (Integer): a string that is not a number",
        ),
        (
            json!({"subscription_id": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c", "seats": 3_000_000_000u64}),
            "parameter msdynmkt_seats (Integer): a number outside 32 bits",
        ),
        (
            json!({"subscription_id": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c", "amount": "£12"}),
            "parameter msdynmkt_amount (Money): a string that is not a number",
        ),
        (
            json!({"subscription_id": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c", "auto_renew": "yes"}),
            "parameter msdynmkt_autorenew (Boolean): a string other than true or false",
        ),
        (
            json!({"subscription_id": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c", "renews_at": "2027-06-06T09:00:00"}),
            "parameter msdynmkt_renewsat (DateTime): a time without a UTC offset (its zone is unknown)",
        ),
        (json!({"subscription_id": "SUB-1"}), "parameter msdynmkt_subscriptionid (Guid): a string that is not a GUID"),
        (
            json!({"subscription_id": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c", "features": [["nested"]]}),
            "parameter msdynmkt_features (StringArray): a list holding a list",
        ),
        (
            json!({"subscription_id": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c", "account_id": "ACME"}),
            "parameter msdynmkt_account (EntityReference): a string that is not a GUID",
        ),
        (
            json!({"subscription_id": "5a0b6c1e-7f3d-4e2a-9b8c-0d1e2f3a4b5c", "plan": {"name": "gold"}}),
            "parameter msdynmkt_plan (String): an object cannot be a String",
        ),
    ];
    for (properties, reason) in cases {
        let answer = h.invoke(subscription(properties)).await;
        assert_eq!(answer["failed"][0]["outcome"], "invalid", "{answer}");
        assert_eq!(answer["failed"][0]["error"], reason);
    }
    assert!(h.sandbox.signals().is_empty(), "nothing invalid is sent");
}

#[tokio::test]
async fn a_required_parameter_still_absent_makes_the_record_invalid_before_sending() {
    let mut config = sandbox_config();
    let cart = config.triggers.iter_mut().find(|t| t.name == "msdynmkt_CartAbandoned").unwrap();
    cart.parameters.insert("msdynmkt_storeid".into(), Parameter { kind: "String".into(), required: true, entity: None });
    let h = Harness::with_config(config, &[]).await;
    let answer = h.invoke(json!({"type": "track", "event": "Cart Abandoned", "messageId": "c1", "userId": "u1", "properties": {"cart_id": "C1"}})).await;
    assert_eq!(answer["failed"][0]["outcome"], "invalid");
    assert_eq!(answer["failed"][0]["error"], "missing required parameter msdynmkt_storeid (String) of trigger msdynmkt_CartAbandoned");
    assert!(h.sandbox.signals().is_empty());
}

#[tokio::test]
async fn a_record_invalid_for_its_own_reasons_does_not_read_the_definition() {
    let h = Harness::new(&[]).await;
    let answer = h.invoke(json!({"type": "track", "event": "Cart Abandoned", "messageId": "c1", "properties": {"cart_id": "C1"}})).await;
    assert_eq!(answer["failed"][0]["error"], "missing userId", "{answer}");
    assert_eq!(h.sandbox.stats().metadata_requests, 0);
}

#[tokio::test]
async fn a_trigger_that_does_not_exist_is_rejected_without_a_post() {
    let mapping = json!({"events": {"Order Completed": {"trigger": "msdynmkt_OrderCompletd"}}}).to_string();
    let h = Harness::new(&[("D365_MAPPING", &mapping)]).await;
    let answer = h.invoke(order("o1")).await;
    let failed = &answer["failed"][0];
    assert_eq!(failed["outcome"], "rejected", "{answer}");
    assert_eq!(failed["status"], 404);
    assert_eq!(failed["code"], "0x8006088a");
    assert!(h.sandbox.signals().is_empty(), "no POST for a trigger Dataverse does not have");
}

#[tokio::test]
async fn concurrent_records_and_invocations_share_one_metadata_read() {
    let h = Harness::new(&[("D365_MAX_IN_FLIGHT", "32")]).await;
    let bodies: Vec<String> = (0..100).map(|i| order(&format!("a{i}")).to_string()).collect();
    let more: Vec<String> = (0..100).map(|i| order(&format!("b{i}")).to_string()).collect();
    let (first, second) = tokio::join!(h.invoke(sqs_batch(&bodies, None)), h.invoke(sqs_batch(&more, None)));
    assert!(failures(&first).is_empty() && failures(&second).is_empty());
    let stats = h.sandbox.stats();
    assert_eq!(stats.metadata_requests, 1, "200 records in two concurrent invocations, one read");
    assert_eq!(stats.calls(), 200, "exactly one trigger call per event");
    h.invoke(sqs_batch(&[order("c1").to_string()], None)).await;
    assert_eq!(h.sandbox.stats().metadata_requests, 1, "reused within D365_SCHEMA_TTL_SECONDS");
}

#[tokio::test]
async fn with_a_zero_ttl_every_invocation_reads_the_definition_again() {
    let h = Harness::new(&[("D365_SCHEMA_TTL_SECONDS", "0")]).await;
    h.invoke(order("t1")).await;
    h.invoke(order("t2")).await;
    assert_eq!(h.sandbox.stats().metadata_requests, 2);
}

#[tokio::test]
async fn unreadable_metadata_never_blocks_delivery_and_is_not_read_again_within_60_seconds() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(Faults { metadata_status: Some(403), ..Faults::default() });
    let answer = h.invoke(order("m1")).await;
    assert_eq!(answer["delivered"], 1, "sent as mapped: {answer}");
    h.sandbox.set_faults(Faults::default());
    let answer = h.invoke(order("m2")).await;
    assert_eq!(answer["delivered"], 1);
    assert_eq!(h.sandbox.stats().metadata_requests, 1, "the read waits 60 s after a failure");
    assert_eq!(h.sandbox.accepted().len(), 2);
    // Unreadable means as mapped: a contact-bound trigger then gets Dataverse's own 400.
    let answer = h.invoke(event_file("direct-schema.json")).await;
    assert_eq!(answer["delivered"], 2, "a new trigger is read: {answer}");
}

#[tokio::test]
async fn a_400_about_a_parameter_makes_the_next_invocation_read_the_definition_again() {
    let h = Harness::new(&[]).await;
    assert_eq!(h.invoke(order("r1")).await["delivered"], 1);
    // The trigger is republished with a new required attribute.
    let mut triggers = sandbox_config().triggers;
    let order_trigger: &mut TriggerDef = triggers.iter_mut().find(|t| t.name == "msdynmkt_OrderCompleted").unwrap();
    order_trigger.parameters.insert("msdynmkt_channel".into(), Parameter { kind: "String".into(), required: true, entity: None });
    h.sandbox.set_triggers(triggers);
    let answer = h.invoke(order("r2")).await;
    assert_eq!(answer["failed"][0]["status"], 400, "the cached definition did not know: {answer}");
    let answer = h.invoke(order("r3")).await;
    assert_eq!(answer["failed"][0]["outcome"], "invalid", "{answer}");
    assert_eq!(answer["failed"][0]["error"], "missing required parameter msdynmkt_channel (String) of trigger msdynmkt_OrderCompleted");
    assert_eq!(h.sandbox.stats().metadata_requests, 2);
    assert_eq!(h.sandbox.signals().len(), 2, "the invalid record was not sent");
}

#[tokio::test]
async fn a_direct_check_invocation_answers_the_report_and_sends_nothing() {
    let h = Harness::new(&[]).await;
    let answer = h.invoke(json!({"check": true, "event": event_file("direct.json")})).await;
    assert_eq!(answer["ok"], true, "{answer:#}");
    assert_eq!(answer["triggers"].as_array().unwrap().len(), 7, "every trigger events/mapping.json can raise");
    assert_eq!(answer["event"]["outcome"], "would be sent");
    assert_eq!(answer["event"]["body"]["msdynmkt_ordertotal"], 129.0);
    assert!(h.sandbox.signals().is_empty(), "a check raises nothing");

    let broken =
        json!({"events": {"Order Completed": {"trigger": "msdynmkt_OrderCompleted", "attributes": {"msdynmkt_ordertotl": "properties.revenue"}}}}).to_string();
    let h = Harness::new(&[("D365_MAPPING", &broken)]).await;
    let answer = h.invoke(json!({"check": true})).await;
    assert_eq!(answer["ok"], false);
    let problems: Vec<&str> = answer["triggers"][0]["problems"].as_array().unwrap().iter().map(|p| p["problem"].as_str().unwrap()).collect();
    assert_eq!(
        problems,
        [
            "events[\"Order Completed\"] maps msdynmkt_ordertotl, which msdynmkt_OrderCompleted does not have (it would be left out)",
            "msdynmkt_OrderCompleted requires msdynmkt_orderid (String), which events[\"Order Completed\"] does not map: every such event would be invalid",
        ]
    );
}

// ---- the real binary from a shell ----

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("stdout is only the JSON report ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test]
async fn check_from_a_shell_passes_a_good_deployment() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let out = run(relay_command(&sandbox, &[]), &["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report = stdout_json(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect::<Vec<_>>(), ["settings", "secret", "token"]);
    let cart = report["triggers"].as_array().unwrap().iter().find(|t| t["trigger"] == "msdynmkt_CartAbandoned").unwrap();
    assert_eq!(cart["exists"], true);
    assert!(cart["notes"][0].as_str().unwrap().starts_with("contactpoint_email is not a parameter of this trigger"), "{cart}");
    assert!(sandbox.signals().is_empty(), "check sends nothing");

    // The text report, and the exact body for an event.
    let event = format!("{ROOT}/events/direct.json");
    let out = run(relay_command(&sandbox, &[]), &["check", "--event", &event]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("event Order Completed → msdynmkt_OrderCompleted: would be sent"), "{text}");
    assert!(text.contains("\"msdynmkt_signaltimestamp\": \"2026-06-06T14:30:00Z\""), "{text}");
    assert!(text.ends_with("No problems found.\n"), "{text}");
    assert!(sandbox.signals().is_empty());
}

#[tokio::test]
async fn check_from_a_shell_reports_each_problem_with_its_fix() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let dir = std::env::temp_dir().join(format!("relay-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mapping = dir.join("broken.json");
    std::fs::write(
        &mapping,
        json!({"events": {
            "Order Completed": {"trigger": "msdynmkt_OrderCompleted", "attributes": {"msdynmkt_orderid": "properties.order_id", "msdynmkt_total": "properties.revenue"}},
            "Cart Abandoned": {"trigger": "msdynmkt_CartAbandonned"}
        }})
        .to_string(),
    )
    .unwrap();
    let event = dir.join("event.json");
    std::fs::write(&event, json!({"type": "track", "event": "Order Completed", "userId": "u1", "properties": {"order_id": {"id": 1}}}).to_string()).unwrap();
    let out = run(relay_command(&sandbox, &[("D365_MAPPING_FILE", mapping.to_str().unwrap())]), &["check", "--json", "--event", event.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report = stdout_json(&out);
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"], 3);
    let missing = &report["triggers"][0];
    assert_eq!(missing["trigger"], "msdynmkt_CartAbandonned");
    assert_eq!(missing["exists"], false);
    assert!(missing["problems"][0]["fix"].as_str().unwrap().contains("case-sensitive"));
    let order = &report["triggers"][1];
    assert_eq!(
        order["problems"][0]["problem"],
        "events[\"Order Completed\"] maps msdynmkt_total, which msdynmkt_OrderCompleted does not have (it would be left out)"
    );
    assert_eq!(
        order["problems"][0]["fix"],
        "rename it to one of the trigger's parameters (msdynmkt_currency, msdynmkt_orderid, msdynmkt_ordertotal), or remove it"
    );
    assert_eq!(report["event"]["outcome"], "invalid");
    assert_eq!(report["event"]["reason"], "parameter msdynmkt_orderid (String): an object cannot be a String");

    // 403 on the metadata: the fix names the privileges.
    sandbox.set_faults(Faults { metadata_status: Some(403), ..Faults::default() });
    let out = run(relay_command(&sandbox, &[]), &["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let report = stdout_json(&out);
    assert!(report["triggers"][0]["problems"][0]["fix"].as_str().unwrap().contains("Read on Custom API and Custom API Request Parameter"), "{report:#}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn check_exits_2_for_a_configuration_or_usage_error() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let out = run(relay_command(&sandbox, &[("D365_SECRET_ID", "")]), &["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout_json(&out)["steps"][0]["detail"].as_str().unwrap().split(':').next(), Some("D365_SECRET_ID"));
    let out = run(relay_command(&sandbox, &[("D365_SECRET_ID", "d365/nope")]), &["check"]).await;
    assert_eq!(out.status.code(), Some(2), "an unreadable secret is a configuration error");
    let out = run(relay_command(&sandbox, &[]), &["check", "--evnt", "x"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty() && String::from_utf8_lossy(&out.stderr).contains("unknown option --evnt"));
    let out = run(relay_command(&sandbox, &[]), &["frobnicate"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn check_reads_the_secret_from_a_file_when_asked() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let path = std::env::temp_dir().join(format!("relay-secret-{}.json", std::process::id()));
    std::fs::write(&path, sandbox_config().secrets["d365/relay-demo"].to_string()).unwrap();
    let out = run(relay_command(&sandbox, &[("D365_SECRET_ID", ""), ("D365_SECRET_FILE", path.to_str().unwrap())]), &["check", "--json"]).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sandbox.stats().secret_requests, 0, "Secrets Manager is not asked");
}

#[tokio::test]
async fn schema_prints_a_starter_mapping_entry_and_help_explains_the_commands() {
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let out = run(relay_command(&sandbox, &[]), &["schema", "msdynmkt_CartAbandoned", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report = stdout_json(&out);
    assert_eq!(
        report["events"],
        json!({"Cart Abandoned": {"trigger": "msdynmkt_CartAbandoned",
            "attributes": {"msdynmkt_cartid": "properties.cartid", "msdynmkt_carttotal": "properties.carttotal", "msdynmkt_itemcount": "properties.itemcount"},
            "required": ["msdynmkt_cartid"]}})
    );
    assert!(report["parameters"].as_array().unwrap().contains(&json!({"name": "msdynmkt_carttotal", "type": "Decimal", "required": false})));
    let out = run(relay_command(&sandbox, &[]), &["schema", "msdynmkt_Nope"]).await;
    assert_eq!(out.status.code(), Some(1));

    let out = run(relay_command(&sandbox, &[]), &["--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("d365-trigger-relay check [--event FILE] [--json]") && help.contains("d365-trigger-relay schema TRIGGER"), "{help}");
}

#[tokio::test]
async fn empty_aws_endpoint_variables_mean_unset() {
    // What SAM's local runtime passes for a declared but unset variable.
    let sandbox = Sandbox::start(sandbox_config(), 0).await.unwrap();
    let mut command = relay_command(&sandbox, &[]);
    command
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", "")
        .env("AWS_ENDPOINT_URL_SQS", "")
        .env("AWS_ENDPOINT_URL_DYNAMODB", " ")
        .env("AWS_ENDPOINT_URL", sandbox.url());
    let out = run(command, &["check", "--json"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout_json(&out)["ok"], true);
    assert_eq!(sandbox.stats().secret_requests, 1, "the secret came through AWS_ENDPOINT_URL");
}
