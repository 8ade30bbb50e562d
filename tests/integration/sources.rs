//! Every producer, one relay (SPEC §12): each payload shape and envelope, as the
//! real senders send it, through the real handler to the sandbox; and each
//! sender scheme with good, wrong, stale and missing signatures.

use crate::helpers::*;
use relay::intake::IntakeError;
use serde_json::{json, Value};

const SECRET: &[u8] = b"sandbox-webhook-secret";

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The bodies Dynamics received, in arrival order, without the ingestion time.
fn received(h: &Harness) -> Vec<(String, Value)> {
    h.sandbox
        .signals()
        .into_iter()
        .map(|s| {
            let mut body = s.body.clone();
            body.as_object_mut().unwrap().remove("msdynmkt_signalingestiontimestamp");
            (s.trigger.clone(), body)
        })
        .collect()
}

fn http_answer(answer: &Value) -> (u64, Value) {
    (answer["statusCode"].as_u64().unwrap(), serde_json::from_str(answer["body"].as_str().unwrap()).unwrap())
}

/// An SNS subscription's invocation with these messages (strings, as SNS delivers them).
fn sns_invocation(messages: &[(&str, String)]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, message)| {
            json!({"EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:aws:sns:us-east-1:1:t:sub",
                   "Sns": {"Type": "Notification", "MessageId": id, "TopicArn": "arn:aws:sns:us-east-1:1:t", "Subject": null,
                           "Message": message, "Timestamp": "2026-06-06T10:00:00.000Z", "MessageAttributes": {}}})
        })
        .collect();
    json!({ "Records": records })
}

fn sns_notification(id: &str, message: &Value) -> String {
    json!({"Type": "Notification", "MessageId": id, "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": message.to_string(),
           "Timestamp": "2026-06-06T10:00:00.000Z", "SignatureVersion": "1", "Signature": "x", "UnsubscribeURL": "https://example.com"})
    .to_string()
}

#[tokio::test]
async fn an_sns_subscription_raises_the_message_and_answers_the_summary() {
    let h = Harness::new(&[]).await;
    let answer = h.invoke(event_file("sns.json")).await;
    assert_eq!(answer, json!({"delivered": 1, "dropped": 0, "duplicates": 0, "failed": []}));
    assert_eq!(
        received(&h),
        [(
            "msdynmkt_ProductAdded".to_string(),
            json!({"msdynmkt_profileid": "c0ffee00-0000-4000-8000-000000000004", "msdynmkt_signaluserauthid": "c0ffee00-0000-4000-8000-000000000004",
                   "msdynmkt_signaltimestamp": "2026-06-06T10:00:00Z", "msdynmkt_productid": "SKU-1", "msdynmkt_productname": "Kettle",
                   "msdynmkt_price": 24.99, "msdynmkt_currency": "GBP"})
        )]
    );
    // SNS redelivers with the same MessageId: the event had none, so that is its key.
    let again = h.invoke(event_file("sns.json")).await;
    assert_eq!(again["duplicates"], 1);
    assert_eq!(h.sandbox.signals().len(), 1);
}

#[tokio::test]
async fn an_sns_invocation_with_a_record_not_done_is_an_error_and_its_retry_skips_the_delivered() {
    let h = Harness::new(&[]).await;
    let mut no_user = order("n");
    no_user.as_object_mut().unwrap().remove("userId");
    let payload = sns_invocation(&[("sns-a", order("a").to_string()), ("sns-b", no_user.to_string()), ("sns-c", "Hello\r\nworld!".to_string())]);
    let error = h.invoke_within(payload.clone(), 10.0).await.unwrap_err();
    match &error {
        IntakeError::NotDelivered { source_name, not_done, records, outcomes } => {
            assert_eq!((*source_name, *not_done, *records), ("sns", 2, 3));
            assert!(outcomes.contains("missing userId") && outcomes.contains("the SNS message is not JSON"), "{outcomes}");
        }
        other => panic!("expected NotDelivered, got {other:?}"),
    }
    assert_eq!(h.sandbox.signals().len(), 1);
    // Lambda's asynchronous retry sends the same payload: the delivered record is a duplicate.
    assert!(h.invoke_within(payload, 10.0).await.is_err());
    assert_eq!(h.sandbox.signals().len(), 1, "nothing raised twice");
}

#[tokio::test]
async fn an_sns_invocation_whose_delivery_fails_is_an_error() {
    let h = Harness::new(&[]).await;
    h.sandbox.set_faults(d365_sandbox::Faults { error_rate: 1.0, ..Default::default() });
    let error = h.invoke_within(sns_invocation(&[("sns-f", order("f").to_string())]), 3.0).await.unwrap_err();
    assert!(matches!(error, IntakeError::NotDelivered { not_done: 1, .. }), "{error:?}");
    h.sandbox.set_faults(d365_sandbox::Faults::default());
    let answer = h.invoke(sns_invocation(&[("sns-f", order("f").to_string())])).await;
    assert_eq!(answer["delivered"], 1, "the released claim lets the retry through");
}

#[tokio::test]
async fn sns_notifications_in_sqs_bodies_are_unwrapped() {
    let h = Harness::new(&[]).await;
    let answer = h.invoke(event_file("sqs-sns.json")).await;
    assert_eq!(failures(&answer), Vec::<String>::new());
    let got = received(&h);
    assert_eq!(got.len(), 2);
    let order_call = got.iter().find(|(t, _)| t == "msdynmkt_OrderCompleted").unwrap();
    assert_eq!(
        order_call.1,
        json!({"msdynmkt_profileid": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33", "msdynmkt_signaluserauthid": "b6a8c2e0-1234-4f9a-9c3d-aa11bb22cc33",
               "msdynmkt_signaltimestamp": "2026-06-06T14:30:00Z", "contactpoint_email": "jane@example.com",
               "msdynmkt_orderid": "ORD-20001", "msdynmkt_ordertotal": 59.5, "msdynmkt_currency": "GBP"})
    );
    // The same SNS notification delivered again under a new SQS messageId (SNS's retry): a duplicate.
    let mut again = event_file("sqs-sns.json");
    again["Records"][0]["messageId"] = json!("another-sqs-id");
    again["Records"].as_array_mut().unwrap().truncate(1);
    assert_eq!(failures(&h.invoke(again).await), Vec::<String>::new());
    assert_eq!(h.sandbox.signals().len(), 2);
}

#[tokio::test]
async fn eventbridge_events_build_an_event_from_detail() {
    let h = Harness::new(&[]).await;
    let answer = h.invoke(event_file("eventbridge.json")).await;
    assert_eq!(answer, json!({"delivered": 1, "dropped": 0, "duplicates": 0, "failed": []}));
    assert_eq!(
        received(&h),
        [(
            "msdynmkt_OrderCompleted".to_string(),
            json!({"msdynmkt_profileid": "c0ffee00-0000-4000-8000-000000000005", "msdynmkt_signaluserauthid": "c0ffee00-0000-4000-8000-000000000005",
                   "msdynmkt_signaltimestamp": "2026-06-06T11:00:00Z", "contactpoint_email": "lena@example.de",
                   "msdynmkt_orderid": "ORD-30001", "msdynmkt_ordertotal": 18.0, "msdynmkt_currency": "EUR"})
        )]
    );
    // EventBridge's retry carries the same id: a duplicate.
    assert_eq!(h.invoke(event_file("eventbridge.json")).await["duplicates"], 1);
}

#[tokio::test]
async fn an_eventbridge_event_not_done_is_an_error_and_an_unmapped_one_is_dropped() {
    let h = Harness::new(&[]).await;
    let mut no_user = event_file("eventbridge.json");
    no_user["detail"].as_object_mut().unwrap().remove("userId");
    let error = h.invoke_within(no_user, 5.0).await.unwrap_err();
    assert!(matches!(error, IntakeError::NotDelivered { source_name: "eventbridge", not_done: 1, records: 1, .. }), "{error:?}");
    // AWS's own events (EC2 state changes, schedules) are not in the mapping: dropped, not an error.
    let ec2 = json!({"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "EC2 Instance State-change Notification",
                     "source": "aws.ec2", "account": "123456789012", "time": "2021-11-11T21:29:54Z", "region": "us-east-1",
                     "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"], "detail": {"instance-id": "i-abcd1111", "state": "pending"}});
    assert_eq!(h.invoke(ec2).await, json!({"delivered": 0, "dropped": 1, "duplicates": 0, "failed": []}));
    assert!(h.sandbox.signals().is_empty());
}

#[tokio::test]
async fn eventbridge_events_in_sqs_bodies_are_unwrapped() {
    let h = Harness::new(&[]).await;
    let answer = h.invoke(event_file("sqs-eventbridge.json")).await;
    assert_eq!(failures(&answer), Vec::<String>::new());
    let got = received(&h);
    let signed_up = got.iter().find(|(t, _)| t == "msdynmkt_SignedUp").expect("the Segment event in detail");
    assert_eq!(signed_up.1["msdynmkt_signupsource"], "eventbridge-demo");
    assert_eq!(signed_up.1["msdynmkt_profileid"], "c0ffee00-0000-4000-8000-000000000006");
    let order_call = got.iter().find(|(t, _)| t == "msdynmkt_OrderCompleted").expect("the built event");
    assert_eq!(order_call.1["msdynmkt_orderid"], "ORD-30002");
}

#[tokio::test]
async fn eventbridge_in_sns_in_sqs_is_unwrapped_all_the_way() {
    let h = Harness::new(&[]).await;
    let inner = event_file("eventbridge.json");
    let body = sns_notification("sns-eb-1", &inner);
    let answer = h.invoke(sqs_batch(&[body], None)).await;
    assert_eq!(failures(&answer), Vec::<String>::new());
    assert_eq!(received(&h)[0].1["msdynmkt_orderid"], "ORD-30001");
}

#[tokio::test]
async fn an_alb_request_gets_an_alb_answer_in_the_request_s_header_form() {
    let h = Harness::new(&[]).await;
    let mut single = event_file("alb.json");
    relay::webhook::resign_event(&mut single, SECRET, chrono::Utc::now().timestamp_millis());
    let answer = h.invoke(single.clone()).await;
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["statusDescription"], "200 OK");
    assert_eq!(answer["headers"]["content-type"], "application/json");
    assert_eq!(answer["isBase64Encoded"], false);
    assert_eq!(http_answer(&answer).1, json!({"delivered": 2, "dropped": 0, "duplicates": 0, "failed": []}));
    assert_eq!(h.sandbox.signals().len(), 2);

    // A target group with multi-value headers: the answer uses multiValueHeaders.
    let mut multi = single.clone();
    let headers = multi.as_object_mut().unwrap().remove("headers").unwrap();
    multi["multiValueHeaders"] = Value::Object(headers.as_object().unwrap().iter().map(|(k, v)| (k.clone(), json!([v]))).collect());
    let answer = h.invoke(multi).await;
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["multiValueHeaders"]["content-type"], json!(["application/json"]));
    assert!(answer.get("headers").is_none());
    assert_eq!(http_answer(&answer).1["duplicates"], 2);

    // Unsigned: 401, in the ALB's shape.
    let mut unsigned = single;
    unsigned["headers"].as_object_mut().unwrap().remove("x-signature");
    let answer = h.invoke(unsigned).await;
    assert_eq!((answer["statusCode"].as_u64(), answer["statusDescription"].as_str()), (Some(401), Some("401 Unauthorized")));
    assert_eq!(h.sandbox.signals().len(), 2);
}

#[tokio::test]
async fn fields_the_relay_does_not_read_never_fail_a_batch() {
    let h = Harness::new(&[]).await;
    let mut batch = sqs_batch(&[order("a").to_string(), order("b").to_string(), order("c").to_string()], None);
    // A binaryValue that is not base64, lists of odd types, a null where an object is usual, unknown keys.
    batch["Records"][0]["messageAttributes"] =
        json!({"trace": {"binaryValue": "***not base64***", "stringListValues": [1, null], "binaryListValues": ["%%"], "dataType": "Binary"}});
    batch["Records"][1]["attributes"] = Value::Null;
    batch["Records"][1]["messageAttributes"] = json!("text");
    batch["Records"][2]["md5OfBody"] = json!(42);
    batch["Records"][2]["somethingNew"] = json!({"x": [1, 2]});
    batch["Records"][2]["awsRegion"] = Value::Null;
    let answer = h.invoke(batch).await;
    assert_eq!(failures(&answer), Vec::<String>::new());
    assert_eq!(h.sandbox.signals().len(), 3);
}

#[tokio::test]
async fn an_object_that_is_neither_an_event_nor_an_envelope_is_invalid_not_dropped() {
    let h = Harness::new(&[]).await;
    // Powertools' sample SNS message, in SNS in SQS; a bare object; an SNS confirmation.
    let hello = json!({"message": "hello world", "username": "lessa"});
    let confirmation = json!({"Type": "SubscriptionConfirmation", "MessageId": "m", "Token": "t", "Message": "You have chosen to subscribe", "SubscribeURL": "https://example.com"});
    let bodies = [sns_notification("sns-hello", &hello), json!({"message": "foo"}).to_string(), confirmation.to_string(), order("ok").to_string()];
    let answer = h.invoke(sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&answer), ["sqs-0", "sqs-1", "sqs-2"]);

    let direct = h.invoke(json!({"message": "foo"})).await;
    assert_eq!(direct["dropped"], 0);
    assert_eq!(direct["failed"][0]["outcome"], "invalid");
    assert_eq!(direct["failed"][0]["error"], "not an event: no `event` or `type`");
}

#[tokio::test]
async fn a_dataverse_webhook_raises_the_change_event_for_the_row() {
    let h = Harness::new(&[("D365_WEBHOOK_AUTH", "hmac,key")]).await;
    let answer = h.invoke(event_file("dataverse-webhook.json")).await;
    assert_eq!(http_answer(&answer), (200, json!({"delivered": 1, "dropped": 0, "duplicates": 0, "failed": []})));
    let contact = "7d4a2c6e-3b1f-4e0a-9c8d-2f6e5a4b3c21";
    assert_eq!(
        received(&h),
        [(
            "msdynmkt_ContactUpdated".to_string(),
            json!({"msdynmkt_profileid": contact, "msdynmkt_signaluserauthid": contact,
                   "msdynmkt_signaltimestamp": "2026-06-06T10:00:01Z", "msdynmkt_firstname": "Jane", "msdynmkt_fullname": "Jane Doe (sample)",
                   "msdynmkt_modifiedon": "2026-06-06T10:00:00Z", "msdynmkt_modifiedby": "a1b2c3d4-0000-4000-8000-0000000000aa"})
        )]
    );
    // Dataverse retries after a 502/503/504 with the same OperationId: a duplicate.
    let again = h.invoke(event_file("dataverse-webhook.json")).await;
    assert_eq!(http_answer(&again), (200, json!({"delivered": 0, "dropped": 0, "duplicates": 1, "failed": []})));

    // A wrong key, no key, and the default scheme list (hmac only): 401, nothing raised.
    let mut wrong = event_file("dataverse-webhook.json");
    wrong["rawQueryString"] = json!("code=not-the-key");
    wrong["queryStringParameters"]["code"] = json!("not-the-key");
    assert_eq!(http_answer(&h.invoke(wrong).await).0, 401);
    let mut missing = event_file("dataverse-webhook.json");
    missing["rawQueryString"] = json!("");
    missing.as_object_mut().unwrap().remove("queryStringParameters");
    let (status, body) = http_answer(&h.invoke(missing).await);
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("X-Timestamp"), "the first listed scheme's reason: {body}");
    let hmac_only = Harness::new(&[]).await;
    assert_eq!(http_answer(&hmac_only.invoke(event_file("dataverse-webhook.json")).await).0, 401);
    assert_eq!(h.sandbox.signals().len() + hmac_only.sandbox.signals().len(), 1);
}

#[tokio::test]
async fn the_key_is_url_decoded_and_read_from_alb_and_rest_requests() {
    let mut config = sandbox_config();
    config.secrets.get_mut("d365/relay-demo").unwrap()["webhook_key"] = json!("k+y/=&1");
    let h = Harness::with_config(config, &[("D365_WEBHOOK_AUTH", "key")]).await;
    let body = fixture("power-automate-change.json").to_string();
    // ALB passes the query as sent (URL-encoded).
    let mut alb = event_file("alb.json");
    alb["body"] = json!(body);
    alb["queryStringParameters"] = json!({"code": "k%2By%2F%3D%261"});
    assert_eq!(http_answer(&h.invoke(alb.clone()).await).0, 200);
    alb["queryStringParameters"] = json!({"code": "k+y/=&1"});
    assert_eq!(http_answer(&h.invoke(alb).await).0, 401, "'+' is a space once decoded");
    // API Gateway REST decodes it already.
    let mut rest = event_file("apigw-rest.json");
    rest["body"] = json!(body);
    rest["queryStringParameters"] = json!({"code": "k+y/=&1"});
    assert_eq!(http_answer(&h.invoke(rest).await).0, 200);
}

#[tokio::test]
async fn a_power_automate_flow_posts_the_plain_form_with_an_api_key() {
    let h = Harness::new(&[("D365_WEBHOOK_AUTH", "key")]).await;
    let answer = h.invoke(event_file("power-automate.json")).await;
    assert_eq!(http_answer(&answer).0, 200);
    let got = received(&h);
    assert_eq!(got[0].0, "msdynmkt_ContactUpdated");
    assert_eq!(got[0].1["msdynmkt_firstname"], "Omar");
    assert_eq!(got[0].1["msdynmkt_modifiedon"], "2026-06-06T13:00:00Z");
    assert_eq!(got[0].1["msdynmkt_profileid"], "5b6c7d8e-9f00-4a1b-8c2d-3e4f5a6b7c8d");

    // Without CorrelationId the key is the body's hash: a resend is a duplicate, a new change is not.
    let mut flow = fixture("power-automate-change.json");
    flow.as_object_mut().unwrap().remove("CorrelationId");
    let send = |body: &Value| {
        let mut event = event_file("power-automate.json");
        event["body"] = json!(body.to_string());
        event
    };
    assert_eq!(http_answer(&h.invoke(send(&flow)).await).1["delivered"], 1);
    assert_eq!(http_answer(&h.invoke(send(&flow)).await).1["duplicates"], 1);
    flow["InputParameters"][0]["value"]["firstname"] = json!("Omar K.");
    assert_eq!(http_answer(&h.invoke(send(&flow)).await).1["delivered"], 1);

    // A wrong or missing X-Api-Key: 401.
    let mut wrong = event_file("power-automate.json");
    wrong["headers"]["x-api-key"] = json!("nope");
    assert_eq!(http_answer(&h.invoke(wrong.clone()).await).0, 401);
    wrong["headers"].as_object_mut().unwrap().remove("x-api-key");
    assert_eq!(http_answer(&h.invoke(wrong).await).0, 401);
    assert_eq!(h.sandbox.signals().len(), 3);
}

#[tokio::test]
async fn the_key_scheme_without_webhook_key_rejects() {
    let mut config = sandbox_config();
    config.secrets.get_mut("d365/relay-demo").unwrap().as_object_mut().unwrap().remove("webhook_key");
    let h = Harness::with_config(config, &[("D365_WEBHOOK_AUTH", "key")]).await;
    let (status, body) = http_answer(&h.invoke(event_file("power-automate.json")).await);
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("webhook_key"), "{body}");
}

/// An HTTP API request with `body` and these headers.
fn http_with(body: &str, headers: &[(&str, String)]) -> Value {
    let mut event = event_file("apigw-http.json");
    event["headers"] = Value::Object(headers.iter().map(|(k, v)| (k.to_string(), json!(v))).collect());
    event["body"] = json!(body);
    event
}

#[tokio::test]
async fn standard_webhooks_good_wrong_stale_and_missing() {
    let h = Harness::new(&[("D365_WEBHOOK_AUTH", "standard")]).await;
    let mut event = order("std");
    event.as_object_mut().unwrap().remove("messageId");
    let body = event.to_string();
    let now = chrono::Utc::now().timestamp();
    let signed = |id: &str, ts: i64| {
        let sig = relay::auth::sign_standard(SECRET, id, &ts.to_string(), body.as_bytes()).unwrap();
        http_with(&body, &[("webhook-id", id.into()), ("webhook-timestamp", ts.to_string()), ("webhook-signature", format!("v1,bm90IGl0 {sig}"))])
    };
    assert_eq!(http_answer(&h.invoke(signed("msg_1", now)).await), (200, json!({"delivered": 1, "dropped": 0, "duplicates": 0, "failed": []})));
    // The sender's retry: same webhook-id, a new timestamp and signature. webhook-id is the key.
    assert_eq!(http_answer(&h.invoke(signed("msg_1", now + 1)).await).1["duplicates"], 1);
    assert_eq!(h.sandbox.signals().len(), 1);

    let mut wrong = signed("msg_2", now);
    wrong["headers"]["webhook-signature"] = json!("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    assert_eq!(http_answer(&h.invoke(wrong).await).0, 401);
    let (status, stale) = http_answer(&h.invoke(signed("msg_3", now - 600)).await);
    assert_eq!(status, 401);
    assert!(stale["error"].as_str().unwrap().contains("5 minutes"));
    let (status, missing) = http_answer(&h.invoke(http_with(&body, &[])).await);
    assert_eq!(status, 401);
    assert!(missing["error"].as_str().unwrap().contains("webhook-id"));
    assert_eq!(h.sandbox.signals().len(), 1);
}

#[tokio::test]
async fn segment_signatures_good_wrong_replayed_and_missing() {
    let h = Harness::new(&[("D365_WEBHOOK_AUTH", "segment")]).await;
    let body = order("seg").to_string();
    let good = http_with(&body, &[("x-signature", relay::auth::sign_segment(SECRET, body.as_bytes())), ("user-agent", "Segment.io/1.0".into())]);
    assert_eq!(http_answer(&h.invoke(good.clone()).await).1["delivered"], 1);
    // No timestamp, no replay window: a replay is a duplicate, never a second trigger.
    assert_eq!(http_answer(&h.invoke(good).await).1["duplicates"], 1);
    let wrong = http_with(&body, &[("x-signature", relay::auth::sign_segment(b"another secret", body.as_bytes()))]);
    assert_eq!(http_answer(&h.invoke(wrong).await).0, 401);
    let (status, missing) = http_answer(&h.invoke(http_with(&body, &[])).await);
    assert_eq!(status, 401);
    assert!(missing["error"].as_str().unwrap().contains("X-Signature"));
    assert_eq!(h.sandbox.signals().len(), 1);
}

#[tokio::test]
async fn any_listed_scheme_may_accept_and_the_first_listed_gives_the_reason() {
    let h = Harness::new(&[("D365_WEBHOOK_AUTH", "standard,hmac,segment")]).await;
    // hmac-signed (stale for nothing else) passes through the second scheme.
    let answer = h.invoke(signed_http(&order("h").to_string())).await;
    assert_eq!(http_answer(&answer).0, 200);
    let body = order("s").to_string();
    let segment = http_with(&body, &[("x-signature", relay::auth::sign_segment(SECRET, body.as_bytes()))]);
    assert_eq!(http_answer(&h.invoke(segment).await).0, 200);
    let (status, refused) = http_answer(&h.invoke(http_with(&body, &[])).await);
    assert_eq!(status, 401);
    assert_eq!(refused["error"], "missing webhook-id (or svix-id) header", "the reason of the first scheme listed");

    let open = Harness::new(&[("D365_WEBHOOK_AUTH", "none")]).await;
    assert_eq!(http_answer(&open.invoke(http_with(&order("n").to_string(), &[])).await).0, 200);
}
