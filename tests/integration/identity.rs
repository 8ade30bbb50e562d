//! Identity and consent (SPEC §14): profile ids resolved from an e-mail address
//! or a customer number, cached, created, updated by identify events; consent.

use std::time::{Duration, Instant};

use d365_sandbox::Faults;
use serde_json::{json, Value};

use crate::helpers::{sandbox_config, sqs_batch, Harness};

const ALEX: &str = "5e1c0a7e-0001-4c0e-9a11-000000000001";
const PRIYA: &str = "5e1c0a7e-0003-4c0e-9a11-000000000003";

fn document(extra: Value) -> String {
    let mut doc = json!({
        "events": {
            "Order Completed": {
                "trigger": "msdynmkt_OrderCompleted",
                "attributes": { "msdynmkt_orderid": "properties.order_id" },
                "required": ["msdynmkt_orderid"]
            }
        },
        "identity": {
            "lookup": [
                { "entity": "contacts", "attribute": "emailaddress1", "from": "context.traits.email" },
                { "entity": "contacts", "attribute": "new_customernumber", "from": "userId" }
            ]
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc.to_string()
}

async fn harness(extra: Value, rows: Value) -> Harness {
    let mut config = sandbox_config();
    if let Some(rows) = rows.as_object() {
        for (set, list) in rows {
            config.rows.insert(set.clone(), list.as_array().unwrap().clone());
        }
    }
    Harness::with_config(config, &[("D365_MAPPING", &document(extra))]).await
}

fn order(id: &str, user: Option<&str>, email: Option<&str>) -> Value {
    let mut e = json!({"type": "track", "event": "Order Completed", "messageId": id, "properties": {"order_id": format!("ORD-{id}")}});
    if let Some(user) = user {
        e["userId"] = json!(user);
    }
    if let Some(email) = email {
        e["context"] = json!({"traits": {"email": email}});
    }
    e
}

async fn direct(h: &Harness, events: Vec<Value>) -> Value {
    h.invoke(json!({ "batch": events })).await
}

#[tokio::test]
async fn an_email_resolves_to_the_contact_and_fills_both_profile_fields() {
    let h = harness(json!({}), json!({})).await;
    let answer = direct(&h, vec![order("e1", None, Some(" Alex@Example.NET "))]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let rows = h.sandbox.row_requests();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].method, "GET");
    assert_eq!(rows[0].path, "contacts");
    assert_eq!(rows[0].query["$filter"], "emailaddress1 eq 'alex@example.net'", "trimmed and lowercased");
    assert_eq!(rows[0].query["$select"], "contactid");
    assert_eq!(rows[0].query["$top"], "2");
    let body = &h.sandbox.accepted()[0].body;
    assert_eq!(body["msdynmkt_profileid"], ALEX);
    assert_eq!(body["msdynmkt_signaluserauthid"], ALEX);
}

#[tokio::test]
async fn a_customer_number_is_the_next_lookup_and_a_guid_passes_through() {
    let h = harness(json!({}), json!({})).await;
    let guid = "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33";
    let answer = direct(&h, vec![order("c1", Some("C-1003"), Some("nobody@example.com")), order("g1", Some(guid), Some("alex@example.net"))]).await;
    assert_eq!(answer["delivered"], 2, "{answer}");
    let filters: Vec<String> = h.sandbox.row_requests().iter().map(|r| r.query["$filter"].clone()).collect();
    assert_eq!(filters, ["emailaddress1 eq 'nobody@example.com'", "new_customernumber eq 'C-1003'"], "the GUID made no lookup");
    let ids: Vec<Value> = h.sandbox.accepted().iter().map(|s| s.body["msdynmkt_profileid"].clone()).collect();
    assert!(ids.contains(&json!(PRIYA)) && ids.contains(&json!(guid)), "{ids:?}");
}

#[tokio::test]
async fn two_matches_are_ambiguous_and_none_is_no_match_both_invalid() {
    let twins = json!({"contacts": [
        {"contactid": "aaaaaaaa-0000-4000-8000-000000000001", "emailaddress1": "dup@example.com", "new_customernumber": "C-1"},
        {"contactid": "aaaaaaaa-0000-4000-8000-000000000002", "emailaddress1": "dup@example.com"}
    ]});
    let h = harness(json!({}), twins).await;
    let answer = direct(&h, vec![order("a1", None, Some("dup@example.com")), order("n1", Some("C-404"), None), order("x1", None, None)]).await;
    let failed = answer["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{answer}");
    assert!(failed.iter().all(|f| f["outcome"] == "invalid"), "{answer}");
    assert_eq!(
        failed[0]["error"],
        "ambiguous: 2 contacts have emailaddress1 = d***@example.com (make the value unique in Dataverse, or look up by another attribute first)"
    );
    assert_eq!(failed[1]["error"], "no contact matches new_customernumber = C-404 (add identity.create to create one)");
    assert!(failed[2]["error"].as_str().unwrap().starts_with("no profile id: userId is not a Dataverse id"), "{}", failed[2]);
    assert!(h.sandbox.signals().is_empty(), "nothing was sent");
    assert_eq!(h.sandbox.stats().row_requests, 2, "an event without lookup values makes no request");
    // A lookup attribute the table lacks: Dataverse's 400 rejects the record, naming the property.
    let h = harness(json!({}), json!({"contacts": []})).await;
    let answer = direct(&h, vec![order("w1", Some("C-1"), None)]).await;
    assert_eq!(answer["failed"][0]["outcome"], "rejected", "{answer}");
    assert!(answer["failed"][0]["error"].as_str().unwrap().contains("Could not find a property named 'new_customernumber'"));
}

#[tokio::test]
async fn a_quote_in_an_address_is_escaped_as_an_odata_literal() {
    let rows = json!({"contacts": [{"contactid": "0b41e000-0000-4000-8000-000000000001", "emailaddress1": "o'brien@example.com"}]});
    let h = harness(json!({}), rows).await;
    let answer = direct(&h, vec![order("q1", None, Some("O'Brien@example.com"))]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert_eq!(h.sandbox.row_requests()[0].query["$filter"], "emailaddress1 eq 'o''brien@example.com'");
    assert_eq!(h.sandbox.accepted()[0].body["msdynmkt_profileid"], "0b41e000-0000-4000-8000-000000000001");
}

#[tokio::test]
async fn a_batch_from_fifty_customers_makes_fifty_lookups_and_a_warm_environment_none() {
    let customers: Vec<Value> =
        (0..50).map(|c| json!({"contactid": format!("c0000000-0000-4000-8000-{c:012}"), "emailaddress1": format!("customer{c}@example.com")})).collect();
    let h = harness(json!({}), json!({ "contacts": customers })).await;
    let bodies: Vec<String> = (0..1000).map(|i| order(&format!("m{i}"), None, Some(&format!("Customer{}@example.com", i % 50))).to_string()).collect();
    let answer = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(answer["batchItemFailures"], json!([]));
    assert_eq!(h.sandbox.stats().row_requests, 50, "one lookup per customer, however many records share it");
    assert_eq!(h.relay.identities().unwrap().requests(), 50);
    let accepted = h.sandbox.accepted();
    assert_eq!(accepted.len(), 1000);
    assert!(accepted.iter().all(|s| s.body["msdynmkt_profileid"].as_str().unwrap().starts_with("c0000000-")));
    let again: Vec<String> = (0..1000).map(|i| order(&format!("w{i}"), None, Some(&format!("customer{}@example.com", i % 50))).to_string()).collect();
    h.sandbox.reset();
    let answer = h.invoke(sqs_batch(&again, None)).await;
    assert_eq!(answer["batchItemFailures"], json!([]));
    assert_eq!(h.sandbox.stats().row_requests, 0, "a warm environment looks nothing up");
}

#[tokio::test]
async fn misses_are_remembered_and_the_ttl_setting_is_read() {
    let mut config = sandbox_config();
    config.rows.insert("contacts".into(), vec![]);
    let h = Harness::with_config(config, &[("D365_MAPPING", &document(json!({}))), ("D365_IDENTITY_TTL_SECONDS", "0")]).await;
    direct(&h, vec![order("t1", None, Some("alex@example.net"))]).await;
    direct(&h, vec![order("t2", None, Some("alex@example.net"))]).await;
    assert_eq!(h.sandbox.stats().row_requests, 2, "TTL 0: nothing is reused");
}

#[tokio::test]
async fn a_throttled_or_failing_lookup_fails_the_record_and_sends_nothing() {
    let h = harness(json!({}), json!({})).await;
    h.sandbox.set_faults(Faults { rows_script: vec![429], retry_after_secs: Some(60), ..Faults::default() });
    let answer = h.invoke_within(json!(order("r1", None, Some("alex@example.net"))), 5.0).await.unwrap();
    let failed = &answer["failed"][0];
    assert_eq!((failed["outcome"].as_str(), failed["status"].as_u64()), (Some("failed"), Some(429)), "{answer}");
    assert!(h.sandbox.signals().is_empty());
    // A short Retry-After is waited for (the pacer's pause), then the lookup succeeds.
    let h = harness(json!({}), json!({})).await;
    h.sandbox.set_faults(Faults { rows_script: vec![429], retry_after_secs: Some(1), ..Faults::default() });
    let started = Instant::now();
    let answer = direct(&h, vec![order("r2", None, Some("alex@example.net"))]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    // 5xx: retried, at most four attempts, then failed.
    h.sandbox.reset();
    h.sandbox.set_faults(Faults { rows_script: vec![500; 4], ..Faults::default() });
    let answer = direct(&h, vec![order("r3", None, Some("sam@example.org"))]).await;
    assert_eq!(answer["failed"][0]["outcome"], "failed", "{answer}");
    assert_eq!(h.sandbox.stats().row_requests, 4);
    assert!(h.sandbox.signals().is_empty());
}

#[tokio::test]
async fn a_stalled_lookup_is_bounded_by_the_deadline() {
    let h = harness(json!({}), json!({})).await;
    h.sandbox.set_faults(Faults { rows_latency_ms: 30_000, ..Faults::default() });
    let bodies = vec![order("s1", None, Some("alex@example.net")).to_string(), order("s2", Some("b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33"), None).to_string()];
    let started = Instant::now();
    let answer = h.invoke_within(sqs_batch(&bodies, None), 3.0).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "answered before the deadline: {:?}", started.elapsed());
    assert_eq!(crate::helpers::failures(&answer), ["sqs-0"], "the stalled record failed; the GUID one was delivered");
}

#[tokio::test]
async fn with_create_an_unknown_address_becomes_a_contact_once() {
    let create = json!({"identity": {
        "lookup": [{ "entity": "contacts", "attribute": "emailaddress1", "from": "context.traits.email" }],
        "create": { "entity": "contacts", "attributes": { "emailaddress1": "context.traits.email", "lastname": "context.traits.last_name", "firstname": "context.traits.first_name" } }
    }});
    let h = harness(create, json!({})).await;
    let mut events = Vec::new();
    for i in 0..5 {
        let mut e = order(&format!("n{i}"), None, Some("New.Person@Example.com"));
        e["context"]["traits"]["last_name"] = json!("Person");
        e["context"]["traits"]["first_name"] = Value::Null;
        events.push(e);
    }
    let answer = direct(&h, events).await;
    assert_eq!(answer["delivered"], 5, "{answer}");
    let posts: Vec<_> = h.sandbox.row_requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "five records, one key: one create");
    assert_eq!(posts[0].headers["prefer"], "return=representation");
    assert_eq!(posts[0].body, json!({"emailaddress1": "new.person@example.com", "lastname": "Person"}), "null attributes are not sent");
    let created = h.sandbox.rows("contacts").into_iter().find(|r| r["emailaddress1"] == "new.person@example.com").unwrap();
    assert!(h.sandbox.accepted().iter().all(|s| s.body["msdynmkt_profileid"] == created["contactid"]));
    assert_eq!(h.sandbox.stats().row_requests, 2, "one lookup, one create");
}

#[tokio::test]
async fn an_identify_event_updates_the_resolved_contact() {
    let identify = json!({"identify": {"entity": "contacts", "attributes": {"firstname": "traits.first_name", "lastname": "traits.last_name", "telephone1": "traits.phone"}}});
    let h = harness(identify, json!({})).await;
    let event =
        json!({"type": "identify", "userId": "C-1003", "messageId": "id-1", "traits": {"first_name": "Priya", "last_name": "Shah-Jones", "phone": null}});
    let answer = direct(&h, vec![event]).await;
    assert_eq!((answer["delivered"].as_u64(), answer["failed"].as_array().unwrap().len()), (Some(1), 0), "{answer}");
    let patch = h.sandbox.row_requests().into_iter().find(|r| r.method == "PATCH").expect("a PATCH");
    assert_eq!(patch.path, format!("contacts({PRIYA})"));
    assert_eq!(patch.headers["if-match"], "*");
    assert_eq!(patch.body, json!({"firstname": "Priya", "lastname": "Shah-Jones"}), "mapped, non-null attributes only");
    assert!(h.sandbox.signals().is_empty(), "no trigger is raised");
    let row = h.sandbox.rows("contacts").into_iter().find(|r| r["contactid"] == PRIYA).unwrap();
    assert_eq!(row["lastname"], "Shah-Jones");
    // No match and no create: invalid; without an identify section: dropped.
    let answer = direct(&h, vec![json!({"type": "identify", "userId": "C-999", "traits": {"first_name": "X"}})]).await;
    assert_eq!(answer["failed"][0]["outcome"], "invalid", "{answer}");
    let plain = harness(json!({}), json!({})).await;
    let answer = direct(&plain, vec![json!({"type": "identify", "userId": "C-1003", "traits": {"first_name": "X"}})]).await;
    assert_eq!(answer["dropped"], 1);
    assert_eq!(plain.sandbox.stats().row_requests, 0);
}

#[tokio::test]
async fn consent_allows_denies_and_decides_when_missing() {
    let h = harness(json!({"consent": {"categories": ["Marketing"], "missing": "deny"}}), json!({})).await;
    let with = |id: &str, preferences: Value| {
        let mut e = order(id, None, Some("alex@example.net"));
        e["context"]["consent"] = json!({ "categoryPreferences": preferences });
        e
    };
    let answer = direct(
        &h,
        vec![
            with("ok", json!({"Marketing": true})),
            with("no", json!({"Marketing": false})),
            with("empty", json!({})),
            order("missing", None, Some("alex@example.net")),
        ],
    )
    .await;
    assert_eq!((answer["delivered"].as_u64(), answer["dropped"].as_u64()), (Some(1), Some(3)), "{answer}");
    assert_eq!(h.sandbox.accepted().len(), 1);
    assert_eq!(h.sandbox.stats().row_requests, 1, "no lookup for an event without consent");
    let allow = harness(json!({"consent": {"categories": ["Marketing"]}}), json!({})).await;
    let answer = direct(&allow, vec![order("missing", None, Some("alex@example.net")), with("no", json!({"Marketing": false}))]).await;
    assert_eq!((answer["delivered"].as_u64(), answer["dropped"].as_u64()), (Some(1), Some(1)), "missing: allow is the default");
}

#[tokio::test]
async fn check_reports_the_identity_setup_and_a_sample_events_profile_without_writing() {
    let create = json!({"create": {"entity": "contacts", "attributes": {"emailaddress1": "context.traits.email"}}});
    let mut extra = json!({"identity": {
        "lookup": [
            { "entity": "contacts", "attribute": "emailaddress1", "from": "context.traits.email" },
            { "entity": "contacts", "attribute": "new_customernumber", "from": "userId" }
        ]
    }});
    extra["identity"]["create"] = create["create"].clone();
    let h = harness(extra, json!({})).await;
    let answer = h.invoke(json!({"check": true, "event": order("k1", None, Some("Alex@Example.net"))})).await;
    assert_eq!(answer["ok"], true, "{answer:#}");
    let checks = answer["identity"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "two lookups and the create's column: {answer:#}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{answer:#}");
    assert_eq!(answer["event"]["profile"], format!("resolves to {ALEX}"));
    assert_eq!(answer["event"]["body"]["msdynmkt_profileid"], ALEX, "the body shows the resolved id");
    // An unknown address: the create is reported, not made.
    let answer = h.invoke(json!({"check": true, "event": order("k2", None, Some("new@example.com"))})).await;
    assert_eq!(answer["ok"], true, "a create is no problem: {answer:#}");
    assert!(answer["event"]["profile"].as_str().unwrap().contains("would be created (nothing was created)"), "{answer:#}");
    assert!(h.sandbox.row_requests().iter().all(|r| r.method == "GET"), "a check writes nothing");
    assert!(h.sandbox.signals().is_empty(), "a check raises nothing");
}

#[tokio::test]
async fn check_names_a_lookup_attribute_the_entity_lacks() {
    let extra = json!({"identity": {"lookup": [{ "entity": "contacts", "attribute": "emailaddress9", "from": "context.traits.email" }]}});
    let h = harness(extra, json!({})).await;
    let answer = h.invoke(json!({"check": true})).await;
    assert_eq!(answer["ok"], false, "{answer:#}");
    let problem = &answer["identity"]["problems"][0];
    assert!(problem["problem"].as_str().unwrap().starts_with("lookup: cannot read contacts.emailaddress9"), "{answer:#}");
    assert!(problem["fix"].as_str().unwrap().contains("is not a column of contacts"), "{answer:#}");
}

#[tokio::test]
async fn a_dry_run_looks_up_but_creates_and_updates_nothing() {
    let extra = json!({
        "identity": {
            "lookup": [{ "entity": "contacts", "attribute": "emailaddress1", "from": "context.traits.email" }],
            "create": {"entity": "contacts", "attributes": {"emailaddress1": "context.traits.email"}}
        },
        "identify": {"entity": "contacts", "attributes": {"firstname": "traits.first_name"}}
    });
    let h = harness(extra.clone(), json!({})).await;
    let relay =
        crate::helpers::relay_with(&h.sandbox, &[("D365_MAPPING", &document(extra))], |c| c, relay::startup::Options { dry_run: true, ..Default::default() });
    let identify = json!({"type": "identify", "userId": ALEX, "messageId": "id-dry", "traits": {"first_name": "Alexandra"}});
    let answer =
        relay.handle(json!({"batch": [order("d1", None, Some("new@example.com")), identify]}), Instant::now() + Duration::from_secs(30)).await.unwrap();
    assert_eq!(answer["failed"], json!([]), "{answer:#}");
    assert!(h.sandbox.row_requests().iter().all(|r| r.method == "GET"), "no POST, no PATCH in a dry run: {:?}", h.sandbox.row_requests());
    assert!(h.sandbox.signals().is_empty(), "no trigger raised");
}

#[tokio::test]
async fn an_identify_event_behind_a_failed_record_of_its_fifo_group_is_not_sent_and_a_redelivery_repeats_no_update() {
    let identify = json!({"identify": {"entity": "contacts", "attributes": {"firstname": "traits.first_name"}}});
    let h = harness(identify, json!({})).await;
    let patches = |h: &Harness| h.sandbox.row_requests().into_iter().filter(|r| r.method == "PATCH").count();
    let order = json!({"type": "track", "event": "Order Completed", "messageId": "fifo-order", "userId": PRIYA, "properties": {"order_id": "ORD-F"}});
    let identify = json!({"type": "identify", "userId": "C-1003", "messageId": "fifo-identify", "traits": {"first_name": "Priya"}});
    let bodies = [order.to_string(), identify.to_string()];
    // The group's first record fails (Dataverse down): the identify behind it waits its turn.
    h.sandbox.set_faults(Faults { unavailable_rate: 1.0, ..Faults::default() });
    let answer = h.invoke(sqs_batch(&bodies, Some(&["priya", "priya"]))).await;
    assert_eq!(crate::helpers::failures(&answer), ["sqs-0", "sqs-1"], "{answer}");
    assert_eq!(patches(&h), 0, "no update sent out of the group's order");
    // Redelivered: both go through, in order; once more: the update is not repeated.
    h.sandbox.set_faults(Faults::default());
    let answer = h.invoke(sqs_batch(&bodies, Some(&["priya", "priya"]))).await;
    assert_eq!(crate::helpers::failures(&answer), Vec::<String>::new(), "{answer}");
    assert_eq!(patches(&h), 1);
    let answer = h.invoke(sqs_batch(&bodies, Some(&["priya", "priya"]))).await;
    assert_eq!(crate::helpers::failures(&answer), Vec::<String>::new(), "{answer}");
    assert_eq!(patches(&h), 1, "a redelivered identify is a duplicate: no second PATCH");
    assert_eq!(h.sandbox.accepted().len(), 1, "the trigger too was raised once");
}

#[tokio::test]
async fn a_lookup_answered_401_twice_re_reads_a_rotated_secret_as_a_trigger_call_does() {
    let h = harness(json!({}), json!({})).await;
    assert_eq!(direct(&h, vec![order("w1", None, Some("alex@example.net"))]).await["delivered"], 1);
    // The secret is rotated (a new version); the relay still holds the old copy.
    let secret = sandbox_config().secrets["d365/relay-demo"].clone();
    h.sandbox.put_secret("d365/relay-demo", &secret);
    let secrets_before = h.sandbox.stats().secret_requests;
    // Dataverse answers the next two table requests 401: one token refresh, then one secret re-read.
    h.sandbox.set_faults(Faults { rows_script: vec![401, 401], ..Faults::default() });
    let answer = direct(&h, vec![order("w2", None, Some("sam@example.org"))]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert_eq!(h.sandbox.stats().secret_requests, secrets_before + 1, "the secret was read again once");
    let statuses: Vec<u16> = h.sandbox.row_requests().iter().skip(1).map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 200], "the same 401 policy as trigger calls");
}

#[tokio::test]
async fn a_secret_that_names_another_environment_finds_its_profiles_there() {
    let h = Harness::with_config(sandbox_config(), &[("D365_MAPPING", &document(json!({}))), ("D365_SECRET_TTL_SECONDS", "0")]).await;
    let first = direct(&h, vec![order("env-1", None, Some("alex@example.net"))]).await;
    assert_eq!(first["delivered"], 1, "{first}");
    assert_eq!(h.sandbox.accepted()[0].body["msdynmkt_profileid"], ALEX);
    // The secret now names another Dynamics environment, where the same address is another contact.
    let mut secret = sandbox_config().secrets["d365/relay-demo"].clone();
    secret["org_url_host"] = json!("contoso-test.crm4.dynamics.com");
    h.sandbox.set_apps(vec![serde_json::from_value(secret.clone()).unwrap()]);
    h.sandbox.put_secret("d365/relay-demo", &secret);
    h.sandbox.set_rows("contacts", vec![json!({"contactid": PRIYA, "emailaddress1": "alex@example.net"})]);
    let lookups = h.sandbox.row_requests().len();
    let second = direct(&h, vec![order("env-2", None, Some("alex@example.net"))]).await;
    assert_eq!(second["delivered"], 1, "{second}");
    assert_eq!(h.sandbox.row_requests().len(), lookups + 1, "looked up again in the other environment");
    assert_eq!(h.sandbox.accepted()[1].body["msdynmkt_profileid"], PRIYA, "not the first environment's contact");
}
