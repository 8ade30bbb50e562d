//! Rows (SPEC §19): an event writes Dataverse rows — an account, an
//! opportunity bound to it and to the contact — in order, before its trigger;
//! every mode, binds, missing values and rows, a failure half-way and its
//! redelivery, coercion and omission by the entity definitions, and `check`.

use d365_sandbox::{Faults, RowRequest};
use serde_json::{json, Value};

use crate::helpers::{failures, relay_command, run, sandbox_config, sqs_batch, Harness};

const ALEX: &str = "5e1c0a7e-0001-4c0e-9a11-000000000001";

/// The SPEC's example: an account by `accountnumber`, an opportunity by
/// `new_orderid` bound to it and to the profile, then the order's trigger.
fn spec_rows() -> Value {
    json!([
        { "entity": "accounts",
          "key": { "accountnumber": "properties.account_id" },
          "attributes": { "name": "properties.company" } },
        { "entity": "opportunities",
          "key": { "new_orderid": "properties.order_id" },
          "attributes": { "name": "properties.order_id", "estimatedvalue": "properties.revenue" },
          "bind": { "parentaccountid": { "entity": "accounts", "key": { "accountnumber": "properties.account_id" } },
                    "parentcontactid": "profile" } }
    ])
}

fn document(entry: Value) -> String {
    json!({ "trigger": "msdynmkt_SignedUp", "events": { "Order Completed": entry } }).to_string()
}

fn spec_document() -> String {
    document(json!({
        "trigger": "msdynmkt_OrderCompleted",
        "attributes": { "msdynmkt_orderid": "properties.order_id", "msdynmkt_ordertotal": "properties.revenue" },
        "required": ["msdynmkt_orderid"],
        "rows": spec_rows()
    }))
}

async fn harness(mapping: &str) -> Harness {
    harness_with(mapping, &[]).await
}

async fn harness_with(mapping: &str, overrides: &[(&str, &str)]) -> Harness {
    let mut all = vec![("D365_MAPPING", mapping)];
    all.extend_from_slice(overrides);
    Harness::with_config(sandbox_config(), &all).await
}

fn order(id: &str, account: &str) -> Value {
    json!({
        "type": "track", "event": "Order Completed", "messageId": id, "userId": ALEX,
        "properties": { "order_id": format!("ORD-{id}"), "account_id": account, "company": "Contoso", "revenue": 129.5 }
    })
}

async fn direct(h: &Harness, events: Vec<Value>) -> Value {
    h.invoke(json!({ "batch": events })).await
}

/// The writes (not identity's lookups) the sandbox received, in order.
fn writes(h: &Harness) -> Vec<RowRequest> {
    h.sandbox.row_requests().into_iter().filter(|r| r.method != "GET").collect()
}

fn row<'a>(rows: &'a [Value], column: &str, value: &str) -> &'a Value {
    rows.iter().find(|r| r[column] == value).unwrap_or_else(|| panic!("no row with {column} = {value}: {rows:?}"))
}

#[tokio::test]
async fn an_order_upserts_its_account_then_its_opportunity_bound_to_both_then_raises_its_trigger() {
    let h = harness(&spec_document()).await;
    let answer = direct(&h, vec![order("1", "ACC-1")]).await;
    assert_eq!((answer["delivered"].as_u64(), answer["failed"].as_array().unwrap().len()), (Some(1), 0), "{answer}");

    let sent = writes(&h);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!((sent[0].method.as_str(), sent[0].path.as_str()), ("PATCH", "accounts(accountnumber='ACC-1')"));
    assert_eq!(sent[0].body, json!({ "name": "Contoso" }));
    assert!(!sent[0].headers.contains_key("if-match") && !sent[0].headers.contains_key("if-none-match"), "an upsert is unconditional");
    assert_eq!((sent[1].method.as_str(), sent[1].path.as_str()), ("PATCH", "opportunities(new_orderid='ORD-1')"));
    assert_eq!(
        sent[1].body,
        json!({
            "name": "ORD-1",
            "estimatedvalue": 129.5,
            "parentaccountid@odata.bind": "/accounts(accountnumber='ACC-1')",
            "parentcontactid@odata.bind": format!("/contacts({ALEX})")
        })
    );
    // The trigger comes after both rows, with the event's own body.
    let signals = h.sandbox.signals();
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].trigger, "msdynmkt_OrderCompleted");
    assert_eq!((signals[0].body["msdynmkt_orderid"].as_str(), signals[0].body["msdynmkt_profileid"].as_str()), (Some("ORD-1"), Some(ALEX)));
    assert!(signals[0].received_at >= sent[1].received_at && sent[1].received_at >= sent[0].received_at, "rows first, in order, then the trigger");

    // What Dataverse now holds: the account, and the opportunity bound to it and to Alex.
    let accounts = h.sandbox.rows("accounts");
    let account = row(&accounts, "accountnumber", "ACC-1");
    assert_eq!(account["name"], "Contoso");
    let opportunities = h.sandbox.rows("opportunities");
    let opportunity = row(&opportunities, "new_orderid", "ORD-1");
    assert_eq!(opportunity["_parentaccountid_value"], account["accountid"]);
    assert_eq!(opportunity["_parentcontactid_value"], ALEX);

    // Definitions are read once per TTL: a second order reads none and updates the same account.
    assert_eq!(h.sandbox.stats().entity_requests, 2, "accounts and opportunities");
    let answer = direct(&h, vec![order("2", "ACC-1")]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert_eq!(h.sandbox.stats().entity_requests, 2, "cached");
    assert_eq!(h.sandbox.rows("accounts").len(), 1, "an upsert by key updates the account it created");
    assert_eq!(h.sandbox.rows("opportunities").len(), 2);
}

#[tokio::test]
async fn a_redelivered_order_repeats_nothing_and_a_503_on_the_second_row_is_retried_then_redelivered_for_what_was_not_done() {
    let h = harness(&spec_document()).await;
    let bodies = [order("r", "ACC-R").to_string()];
    // The first row is written; the second is answered 503 four times (every attempt): the record fails.
    h.sandbox.set_faults(Faults { rows_script: vec![200, 503, 503, 503, 503], ..Faults::default() });
    let answer = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&answer), ["sqs-0"], "{answer}");
    let sent = writes(&h);
    let paths: Vec<(&str, u16)> = sent.iter().map(|r| (r.path.as_str(), r.status)).collect();
    assert_eq!(
        paths,
        [
            ("accounts(accountnumber='ACC-R')", 204),
            ("opportunities(new_orderid='ORD-r')", 503),
            ("opportunities(new_orderid='ORD-r')", 503),
            ("opportunities(new_orderid='ORD-r')", 503),
            ("opportunities(new_orderid='ORD-r')", 503)
        ],
        "retried as every call is (at most four attempts)"
    );
    assert!(h.sandbox.signals().is_empty(), "the trigger waits for its rows");

    // Redelivered: only what was not done — the opportunity, then the trigger.
    h.sandbox.reset();
    h.sandbox.set_faults(Faults::default());
    let answer = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&answer), Vec::<String>::new(), "{answer}");
    let paths: Vec<String> = writes(&h).iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["opportunities(new_orderid='ORD-r')"], "the account was not written again");
    assert_eq!(h.sandbox.accepted().len(), 1);

    // Once more: every action was done, nothing is sent, and the record is a duplicate.
    h.sandbox.reset();
    let answer = direct(&h, vec![order("r", "ACC-R")]).await;
    assert_eq!((answer["delivered"].as_u64(), answer["duplicates"].as_u64()), (Some(0), Some(1)), "{answer}");
    assert!(writes(&h).is_empty() && h.sandbox.signals().is_empty());
}

#[tokio::test]
async fn update_needs_the_row_create_never_overwrites_and_an_unkeyed_create_posts() {
    let doc = json!({ "events": {
        "Account Renamed": { "rows": [{ "entity": "accounts", "mode": "update", "key": { "accountnumber": "properties.account_id" }, "attributes": { "name": "properties.name" } }] },
        "Account Opened": { "rows": [{ "entity": "accounts", "mode": "create", "key": { "accountnumber": "properties.account_id" }, "attributes": { "name": "properties.name" } }] },
        "Note Taken": { "rows": [
            { "entity": "accounts", "attributes": { "name": "properties.name" } },
            { "entity": "accounts", "attributes": { "name": "properties.other" } }
        ] }
    }});
    let h = harness(&doc.to_string()).await;
    let event = |id: &str, name: &str, account: &str| json!({"event": name, "messageId": id, "properties": {"account_id": account, "name": format!("{name} {id}"), "other": "Second"}});

    // update: a missing row is rejected, naming the row and Dataverse's code; nothing is created.
    let answer = direct(&h, vec![event("u1", "Account Renamed", "ACC-U")]).await;
    let failed = &answer["failed"][0];
    assert_eq!((failed["outcome"].as_str(), failed["status"].as_u64(), failed["code"].as_str()), (Some("rejected"), Some(404), Some("0x80040217")), "{answer}");
    assert!(failed["error"].as_str().unwrap().contains("row accounts(accountnumber='ACC-U')"), "{failed}");
    assert_eq!(writes(&h)[0].headers["if-match"], "*");
    assert!(h.sandbox.rows("accounts").is_empty());

    // create: If-None-Match; a second create of the same key is answered 412, which is a success, and overwrites nothing.
    let answer = direct(&h, vec![event("c1", "Account Opened", "ACC-C")]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let answer = direct(&h, vec![event("c2", "Account Opened", "ACC-C")]).await;
    assert_eq!(answer["delivered"], 1, "412: the row exists, which is what a create wants: {answer}");
    let creates: Vec<(String, u16)> =
        writes(&h).iter().filter(|r| r.headers.get("if-none-match").is_some_and(|v| v == "*")).map(|r| (r.path.clone(), r.status)).collect();
    assert_eq!(creates, [("accounts(accountnumber='ACC-C')".to_string(), 204), ("accounts(accountnumber='ACC-C')".to_string(), 412)]);
    assert_eq!(row(&h.sandbox.rows("accounts"), "accountnumber", "ACC-C")["name"], "Account Opened c1", "not overwritten");

    // Now the update finds its row.
    let answer = direct(&h, vec![event("u2", "Account Renamed", "ACC-C")]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert_eq!(row(&h.sandbox.rows("accounts"), "accountnumber", "ACC-C")["name"], "Account Renamed u2");

    // No key: a POST per row; each is its own action (`#accounts#1`, `#accounts#2`), so a redelivery creates nothing more.
    h.sandbox.reset();
    let answer = direct(&h, vec![event("n1", "Note Taken", "")]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let posts: Vec<(String, String, Value)> = writes(&h).into_iter().map(|r| (r.method, r.path, r.body)).collect();
    assert_eq!(
        posts,
        [
            ("POST".to_string(), "accounts".to_string(), json!({"name": "Note Taken n1"})),
            ("POST".to_string(), "accounts".to_string(), json!({"name": "Second"}))
        ]
    );
    let answer = direct(&h, vec![event("n1", "Note Taken", "")]).await;
    assert_eq!(answer["duplicates"], 1, "{answer}");
    assert_eq!(writes(&h).len(), 2, "the idempotency keys remember both creates");
    assert!(h.sandbox.signals().is_empty(), "entries with rows and no trigger of their own raise none (not even the document's)");
}

#[tokio::test]
async fn a_missing_key_value_is_invalid_and_a_missing_bound_row_is_rejected_before_the_trigger() {
    let h = harness(&spec_document()).await;
    // No account_id: the account's key and the opportunity's bound key have no value — nothing is sent.
    let mut e = order("m1", "");
    e["properties"].as_object_mut().unwrap().remove("account_id");
    let answer = direct(&h, vec![e]).await;
    let failed = &answer["failed"][0];
    assert_eq!(failed["outcome"], "invalid", "{answer}");
    assert_eq!(failed["error"], "row accounts(accountnumber): no value for key accountnumber at properties.account_id");
    assert!(h.sandbox.row_requests().is_empty() && h.sandbox.signals().is_empty(), "nothing was sent");
    assert_eq!(h.sandbox.stats().entity_requests, 0, "not even a definition read");

    // An opportunity bound to an account that does not exist: 404 from Dataverse, rejected, no trigger.
    let doc = document(json!({ "trigger": "msdynmkt_OrderCompleted", "attributes": { "msdynmkt_orderid": "properties.order_id" },
        "rows": [spec_rows()[1].clone()] }));
    let h = harness(&doc).await;
    let answer = direct(&h, vec![order("b1", "ACC-NOPE")]).await;
    let failed = &answer["failed"][0];
    assert_eq!((failed["outcome"].as_str(), failed["status"].as_u64(), failed["code"].as_str()), (Some("rejected"), Some(404), Some("0x80040217")), "{answer}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("row opportunities(new_orderid='ORD-b1')") && error.contains("does not exist in account entity"), "{error}");
    assert!(h.sandbox.signals().is_empty(), "the trigger is not raised after a row that failed");
    assert!(h.sandbox.rows("opportunities").is_empty());
}

#[tokio::test]
async fn values_are_coerced_to_column_types_unknown_columns_omitted_and_keys_percent_encoded() {
    let doc = document(json!({ "rows": [{ "entity": "accounts", "key": { "accountnumber": "properties.account_id" },
        "attributes": { "name": "properties.company", "revenue": "properties.revenue", "numberofemployees": "properties.staff",
                        "creditonhold": "properties.on_hold", "lastusedincampaign": "properties.at", "new_colour": "properties.colour" } }] }));
    let h = harness(&doc).await;
    let e = json!({"event": "Order Completed", "messageId": "co1", "properties": {
        "account_id": "O'Brien Co é", "company": 42, "revenue": "129.50", "staff": "12", "on_hold": "TRUE", "at": "2026-06-06T15:30:00+01:00", "colour": "red"}});
    let answer = direct(&h, vec![e]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let sent = &writes(&h)[0];
    assert_eq!(sent.path, "accounts(accountnumber='O''Brien%20Co%20%C3%A9')", "quote doubled, percent-encoded");
    assert_eq!(
        sent.body,
        json!({"name": "42", "revenue": 129.5, "numberofemployees": 12, "creditonhold": true, "lastusedincampaign": "2026-06-06T14:30:00Z"}),
        "coerced to String, Money, Integer, Boolean, DateTime; new_colour (no such column) omitted"
    );
    assert_eq!(row(&h.sandbox.rows("accounts"), "accountnumber", "O'Brien Co é")["revenue"], 129.5);
    assert_eq!(h.relay.entities().unwrap().omitted.load(std::sync::atomic::Ordering::Relaxed), 1);
    // A value that cannot be coerced: invalid, naming the row, the column and the type.
    let e = json!({"event": "Order Completed", "messageId": "co2", "properties": {"account_id": "A-2", "staff": "twelve"}});
    let answer = direct(&h, vec![e]).await;
    assert_eq!(answer["failed"][0]["outcome"], "invalid", "{answer}");
    assert_eq!(answer["failed"][0]["error"], "row accounts(accountnumber='A-2'): column numberofemployees (Integer): a string that is not a number");
    // A value Dataverse cannot address: invalid before anything is sent.
    h.sandbox.reset();
    let e = json!({"event": "Order Completed", "messageId": "co3", "properties": {"account_id": "A/3"}});
    let answer = direct(&h, vec![e]).await;
    assert!(answer["failed"][0]["error"].as_str().unwrap().contains("key value not addressable"), "{answer}");
    assert!(h.sandbox.row_requests().is_empty());
}

#[tokio::test]
async fn an_unreadable_definition_never_blocks_delivery_and_an_unknown_entity_set_is_rejected_without_a_request() {
    let doc = document(json!({ "rows": [{ "entity": "accounts", "key": { "accountnumber": "properties.account_id" },
        "attributes": { "name": "properties.company", "numberofemployees": "properties.staff" } }] }));
    let h = harness(&doc).await;
    h.sandbox.set_faults(Faults { entities_status: Some(403), ..Faults::default() });
    let e = |id: &str, staff: Value| json!({"event": "Order Completed", "messageId": id, "properties": {"account_id": "A-1", "company": "Contoso", "staff": staff}});
    let answer = direct(&h, vec![e("d1", json!(12))]).await;
    assert_eq!(answer["delivered"], 1, "sent as mapped: {answer}");
    assert_eq!(h.sandbox.stats().entity_requests, 1);
    // As mapped means uncoerced: a numeric string goes as it is, and Dataverse's 400 rejects it, naming the row.
    let answer = direct(&h, vec![e("d2", json!("12"))]).await;
    assert_eq!(writes(&h)[1].body, json!({"name": "Contoso", "numberofemployees": "12"}));
    let failed = &answer["failed"][0];
    assert_eq!((failed["outcome"].as_str(), failed["status"].as_u64(), failed["code"].as_str()), (Some("rejected"), Some(400), Some("0x80048d19")), "{answer}");
    assert!(failed["error"].as_str().unwrap().starts_with("Dataverse answered 400 0x80048d19: row accounts(accountnumber='A-1'): "), "{failed}");
    assert_eq!(h.sandbox.stats().entity_requests, 1, "an unreadable definition is read again no sooner than 60 s later");

    let doc = document(json!({ "rows": [{ "entity": "widgets", "key": { "new_code": "properties.account_id" } }] }));
    let h = harness(&doc).await;
    let answer = direct(&h, vec![e("w1", json!(1))]).await;
    let failed = &answer["failed"][0];
    assert_eq!((failed["outcome"].as_str(), failed["status"].as_u64()), (Some("rejected"), Some(404)), "{answer}");
    assert!(failed["error"].as_str().unwrap().contains("no entity set named 'widgets'"), "{failed}");
    assert!(h.sandbox.row_requests().is_empty(), "no request");
}

#[tokio::test]
async fn a_key_the_table_does_not_define_is_answered_400_and_the_profile_bind_follows_identity() {
    // accounts has an alternate key on accountnumber only: a PATCH by name is Dataverse's 400.
    let doc =
        document(json!({ "rows": [{ "entity": "accounts", "key": { "name": "properties.company" }, "attributes": { "telephone1": "properties.phone" } }] }));
    let h = harness(&doc).await;
    let answer = direct(&h, vec![json!({"event": "Order Completed", "messageId": "k1", "properties": {"company": "Contoso", "phone": "1"}})]).await;
    let failed = &answer["failed"][0];
    assert_eq!((failed["outcome"].as_str(), failed["status"].as_u64(), failed["code"].as_str()), (Some("rejected"), Some(400), Some("0x80060888")), "{answer}");
    assert!(
        failed["error"].as_str().unwrap().contains("row accounts(name='Contoso')") && failed["error"].as_str().unwrap().contains("not an alternate key"),
        "{failed}"
    );

    // With an identity section, "profile" is the contact an e-mail address resolves to (no userId needed).
    let mut doc: Value = serde_json::from_str(&spec_document()).unwrap();
    doc["identity"] = json!({"lookup": [{ "entity": "contacts", "attribute": "emailaddress1", "from": "context.traits.email" }]});
    let h = harness(&doc.to_string()).await;
    let mut e = order("i1", "ACC-I");
    e.as_object_mut().unwrap().remove("userId");
    e["context"] = json!({"traits": {"email": "Alex@Example.net"}});
    let answer = direct(&h, vec![e]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let sent = writes(&h);
    assert_eq!(sent[1].body["parentcontactid@odata.bind"], format!("/contacts({ALEX})"));
    assert_eq!(h.sandbox.accepted()[0].body["msdynmkt_profileid"], ALEX);
    // Without a GUID userId or an identity section a profile bind cannot be made: invalid, nothing sent.
    let h = harness(&spec_document()).await;
    let answer =
        direct(&h, vec![json!({"event": "Order Completed", "messageId": "p1", "userId": "user-1", "properties": {"order_id": "O", "account_id": "A"}})]).await;
    assert_eq!(answer["failed"][0]["outcome"], "invalid", "{answer}");
    assert!(answer["failed"][0]["error"].as_str().unwrap().contains("not a Dataverse id"), "{answer}");
    assert!(writes(&h).is_empty());
}

#[tokio::test]
async fn a_mapping_error_in_rows_is_a_configuration_error_naming_the_event_and_the_row() {
    let doc = document(json!({ "rows": [{ "entity": "accounts", "attributes": { "name": "properties.company" } },
                                         { "entity": "accounts", "mode": "update", "attributes": { "name": "properties.company" } }] }));
    let h = harness(&doc).await;
    let answer = direct(&h, vec![order("x1", "A")]).await;
    let error = answer["failed"][0]["error"].as_str().unwrap().to_string();
    assert_eq!(answer["failed"][0]["outcome"], "failed", "{answer}");
    assert!(error.contains("events[\"Order Completed\"].rows[1] (accounts): mode update needs a key"), "{error}");
    assert!(h.sandbox.row_requests().is_empty() && h.sandbox.signals().is_empty());
}

#[tokio::test]
async fn check_reports_each_row_and_check_event_prints_every_request_in_order() {
    let h = harness(&spec_document()).await;
    let answer = h.invoke(json!({"check": true, "event": order("c1", "ACC-1")})).await;
    assert_eq!(answer["ok"], true, "{answer:#}");
    let checks = answer["rows"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["key"]["detail"], "an Active alternate key");
    assert_eq!(checks[1]["columns"], json!([{"column": "estimatedvalue", "type": "Money"}, {"column": "name", "type": "String"}]));
    assert_eq!(
        checks[1]["binds"][0],
        json!({"property": "parentaccountid", "exists": true, "refers_to": "account", "key": {"columns": ["accountnumber"], "detail": "an Active alternate key"}})
    );
    let requests = answer["event"]["requests"].as_array().unwrap();
    let lines: Vec<String> = requests.iter().map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap())).collect();
    assert_eq!(
        lines,
        [
            "PATCH /api/data/v9.2/accounts(accountnumber='ACC-1')",
            "PATCH /api/data/v9.2/opportunities(new_orderid='ORD-c1')",
            "POST /api/data/v9.2/msdynmkt_OrderCompleted"
        ]
    );
    assert_eq!(requests[1]["body"]["parentcontactid@odata.bind"], format!("/contacts({ALEX})"));
    assert_eq!(requests[2]["body"]["msdynmkt_ordertotal"], 129.5);
    assert!(writes(&h).is_empty() && h.sandbox.signals().is_empty(), "a check writes and raises nothing");

    // A key that is not an alternate key, a column the table lacks, a lookup under attributes, a navigation property miscased.
    let doc = document(json!({ "rows": [{ "entity": "accounts", "key": { "name": "properties.company" },
        "attributes": { "new_colour": "properties.colour", "primarycontactid": "properties.contact" },
        "bind": { "ParentAccountId": { "entity": "accounts", "key": { "accountnumber": "properties.account_id" } } } }] }));
    let h = harness(&doc).await;
    let answer = h.invoke(json!({"check": true})).await;
    assert_eq!(answer["ok"], false, "{answer:#}");
    let problems: Vec<(String, String)> = answer["rows"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["problem"].as_str().unwrap().to_string(), p["fix"].as_str().unwrap().to_string()))
        .collect();
    let at = "events[\"Order Completed\"].rows[0] (accounts): ";
    assert!(
        problems.contains(&(
            format!("{at}accounts has no column 'new_colour'"),
            "map a column of accounts (names are lowercase logical names); it is omitted meanwhile".into()
        )),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|(p, f)| *p == format!("{at}primarycontactid is a Lookup column under attributes") && f.starts_with("use bind")),
        "{problems:#?}"
    );
    assert!(
        problems.contains(&(format!("{at}name is not an alternate key of accounts"), "define an alternate key on name, or key by the id (accountid)".into())),
        "{problems:#?}"
    );
    assert!(
        problems.contains(&(
            format!("{at}accounts has no navigation property 'ParentAccountId'"),
            "navigation property names are case-sensitive: write parentaccountid".into()
        )),
        "{problems:#?}"
    );
}

#[tokio::test]
async fn a_throttled_row_waits_out_its_retry_after_and_definitions_follow_the_schema_ttl() {
    let h = harness_with(&spec_document(), &[("D365_SCHEMA_TTL_SECONDS", "0")]).await;
    // 429 on the first row with Retry-After 1: the pacer's pause, then the same request again.
    h.sandbox.set_faults(Faults { rows_script: vec![429], retry_after_secs: Some(1), ..Faults::default() });
    let started = std::time::Instant::now();
    let answer = direct(&h, vec![order("t1", "ACC-T")]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "waited for Retry-After");
    let statuses: Vec<(String, u16)> = writes(&h).iter().map(|r| (r.path.clone(), r.status)).collect();
    assert_eq!(statuses[..2], [("accounts(accountnumber='ACC-T')".to_string(), 429), ("accounts(accountnumber='ACC-T')".to_string(), 204)]);
    // TTL 0: every invocation reads the definitions again.
    assert_eq!(h.sandbox.stats().entity_requests, 2);
    direct(&h, vec![order("t2", "ACC-T")]).await;
    assert_eq!(h.sandbox.stats().entity_requests, 4);
}

#[tokio::test]
async fn reads_and_rows_count_against_the_budget_and_a_row_answered_a_budget_429_waits_and_is_written_once() {
    let h = harness(&spec_document()).await;
    // 4 requests per 2 s for the application user: the trigger's definition, the two
    // tables' definitions and the account spend it, so the opportunity meets a spent window.
    h.sandbox.set_faults(Faults { budget_requests: Some(4), budget_window_secs: Some(2), ..Faults::default() });
    let started = std::time::Instant::now();
    let answer = direct(&h, vec![order("b1", "ACC-B")]).await;
    assert_eq!((answer["delivered"].as_u64(), answer["failed"].as_array().unwrap().len()), (Some(1), 0), "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "waited for the window to have room: {:?}", started.elapsed());
    let stats = h.sandbox.stats();
    assert_eq!((stats.metadata_requests, stats.entity_requests), (1, 2), "the reads were made, and counted");
    let statuses: Vec<(String, u16)> = writes(&h).iter().map(|r| (r.path.clone(), r.status)).collect();
    assert_eq!(
        statuses,
        [
            ("accounts(accountnumber='ACC-B')".to_string(), 204),
            ("opportunities(new_orderid='ORD-b1')".to_string(), 429),
            ("opportunities(new_orderid='ORD-b1')".to_string(), 204)
        ],
        "the account once, the opportunity after its Retry-After"
    );
    assert_eq!(h.sandbox.signals().len(), 1, "then the trigger, once");
    assert_eq!(h.sandbox.rows("opportunities").len(), 1);
}

#[tokio::test]
async fn check_event_and_schema_entity_from_a_shell() {
    let h = harness(&spec_document()).await;
    let dir = std::env::temp_dir().join(format!("relay-rows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mapping = dir.join("mapping.json");
    std::fs::write(&mapping, spec_document()).unwrap();
    let event = dir.join("event.json");
    std::fs::write(&event, order("s1", "ACC-S").to_string()).unwrap();
    let env = [("D365_MAPPING_FILE", mapping.to_str().unwrap())];
    let out = run(relay_command(&h.sandbox, &env), &["check", "--event", event.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} not in:\n{text}"));
    let (account, opportunity, trigger) = (
        at("PATCH /api/data/v9.2/accounts(accountnumber='ACC-S') (nothing was sent):"),
        at("PATCH /api/data/v9.2/opportunities(new_orderid='ORD-s1') (nothing was sent):"),
        at("POST /api/data/v9.2/msdynmkt_OrderCompleted (nothing was sent):"),
    );
    assert!(account < opportunity && opportunity < trigger, "every request, in order:\n{text}");
    assert!(text.contains("\"parentaccountid@odata.bind\": \"/accounts(accountnumber='ACC-S')\""), "{text}");
    assert!(text.contains("ok      Order Completed row 1 → opportunities (upsert), key: an Active alternate key"), "{text}");
    assert!(writes(&h).is_empty() && h.sandbox.signals().is_empty(), "nothing was sent");

    let out = run(relay_command(&h.sandbox, &env), &["schema", "--entity", "opportunities", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["keys"], json!([{"columns": ["new_orderid"], "status": "Active"}]));
    let starter = &report["rows"][0];
    assert_eq!(starter["entity"], "opportunities");
    assert_eq!(starter["key"], json!({"new_orderid": "properties.orderid"}));
    assert_eq!(starter["attributes"]["estimatedvalue"], "properties.estimatedvalue");
    assert!(starter["attributes"].get("parentaccountid").is_none(), "lookups are binds, not attributes");
    assert_eq!(starter["bind"]["parentaccountid"], json!({"entity": "accounts", "key": {"accountid": "properties.account_id"}}));
    // The starter entry is a valid mapping document entry.
    let document = json!({"events": {"Order Completed": {"rows": report["rows"]}}}).to_string();
    assert!(relay::config::Mapping::parse(&document).is_ok(), "{document}");
    let out = run(relay_command(&h.sandbox, &env), &["schema", "--entity", "widgets"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no entity set named 'widgets'"));
}

#[tokio::test]
async fn a_dry_run_reports_every_request_and_writes_nothing() {
    let h = harness(&spec_document()).await;
    let relay =
        crate::helpers::relay_with(&h.sandbox, &[("D365_MAPPING", &spec_document())], |c| c, relay::startup::Options { dry_run: true, ..Default::default() });
    let records = relay::intake::direct_records(vec![order("d1", "ACC-D")]);
    let results = relay.process_events(records, relay::deadline::Cutoffs::until(std::time::Instant::now() + std::time::Duration::from_secs(30))).await;
    let relay::outcome::Outcome::DryRun { body } = &results[0].outcome else { panic!("{:?}", results[0].outcome) };
    let requests = body["requests"].as_array().unwrap();
    let lines: Vec<String> = requests.iter().map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap())).collect();
    assert_eq!(
        lines,
        [
            "PATCH /api/data/v9.2/accounts(accountnumber='ACC-D')",
            "PATCH /api/data/v9.2/opportunities(new_orderid='ORD-d1')",
            "POST /api/data/v9.2/msdynmkt_OrderCompleted"
        ]
    );
    assert_eq!(requests[0]["body"], json!({"name": "Contoso"}));
    assert!(writes(&h).is_empty() && h.sandbox.signals().is_empty(), "a dry run writes and raises nothing");
    // The same relay again: nothing was claimed, so it is a dry run again, not a duplicate.
    let results = relay
        .process_events(
            relay::intake::direct_records(vec![order("d1", "ACC-D")]),
            relay::deadline::Cutoffs::until(std::time::Instant::now() + std::time::Duration::from_secs(30)),
        )
        .await;
    assert_eq!(results[0].outcome.name(), "dry-run");
}

#[tokio::test]
async fn identity_lookups_select_the_entity_s_primary_id_attribute() {
    let mut config = sandbox_config();
    let kim = "9e000000-0000-4000-8000-000000000001";
    config.rows.insert("new_witnesses".into(), vec![json!({"new_witnessid": kim, "emailaddress1": "kim@example.com"})]);
    let doc = json!({
        "events": {"Order Completed": {"trigger": "msdynmkt_OrderCompleted", "attributes": {"msdynmkt_orderid": "properties.order_id"}}},
        "identity": {"lookup": [{"entity": "new_witnesses", "attribute": "emailaddress1", "from": "context.traits.email"}]}
    });
    let h = Harness::with_config(config, &[("D365_MAPPING", &doc.to_string())]).await;
    let event = json!({"event": "Order Completed", "messageId": "w1", "properties": {"order_id": "O-1"}, "context": {"traits": {"email": "Kim@Example.com"}}});
    let answer = direct(&h, vec![event]).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let lookup = &h.sandbox.row_requests()[0];
    assert_eq!((lookup.path.as_str(), lookup.query["$select"].as_str()), ("new_witnesses", "new_witnessid"), "the set's name would guess new_witnesseid");
    assert_eq!(h.sandbox.accepted()[0].body["msdynmkt_profileid"], kim);
    // A definition that cannot be read never blocks a lookup: the id column is guessed from the set's name.
    let mut config = sandbox_config();
    config.rows.insert("contacts".into(), vec![json!({"contactid": ALEX, "emailaddress1": "alex@example.net"})]);
    let doc = json!({
        "events": {"Order Completed": {"trigger": "msdynmkt_OrderCompleted", "attributes": {"msdynmkt_orderid": "properties.order_id"}}},
        "identity": {"lookup": [{"entity": "contacts", "attribute": "emailaddress1", "from": "context.traits.email"}]}
    });
    let h = Harness::with_config(config, &[("D365_MAPPING", &doc.to_string())]).await;
    h.sandbox.set_faults(Faults { entities_status: Some(503), ..Faults::default() });
    let event = json!({"event": "Order Completed", "messageId": "w2", "properties": {"order_id": "O-2"}, "context": {"traits": {"email": "alex@example.net"}}});
    assert_eq!(direct(&h, vec![event]).await["delivered"], 1);
    assert_eq!(h.sandbox.row_requests()[0].query["$select"], "contactid");
}
