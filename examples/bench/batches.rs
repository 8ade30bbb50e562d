//! The payloads the scenarios send: SQS batches (raw, in SNS notifications, with
//! a browser source's context, as many as fit in a size) and signed webhook requests.

use serde_json::{json, Value};

pub fn batch(n: usize, tag: &str) -> Value {
    batch_of(n, tag, false)
}

/// An SQS batch of N Order Completed events, sent raw or (`sns`) as SNS
/// notifications in the bodies (an SNS topic → SQS subscription, raw delivery off).
pub fn batch_of(n: usize, tag: &str, sns: bool) -> Value {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let event = json!({"type": "track", "event": "Order Completed", "messageId": format!("{tag}-{i}"), "userId": format!("00000000-0000-4000-8000-{i:012}"),
                "timestamp": "2026-06-06T15:30:00Z", "properties": {"order_id": format!("ORD-{tag}-{i}"), "revenue": 10.5, "currency": "GBP"},
                "context": {"traits": {"email": format!("Customer{i}@Example.com"), "phone": "07700 900123"}, "locale": "en-GB"}});
            let body = if sns {
                json!({"Type": "Notification", "MessageId": format!("{tag}-sns-{i}"), "TopicArn": "arn:aws:sns:us-east-1:1:shop-events",
                       "Message": event.to_string(), "Timestamp": "2026-06-06T15:30:01.000Z", "SignatureVersion": "1",
                       "Signature": "EXAMPLEsignatureBASE64EXAMPLEsignatureBASE64EXAMPLEsignatureBASE64EXAMPLEsignatureBASE64==",
                       "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
                       "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:1:shop-events:0000"})
                .to_string()
            } else {
                event.to_string()
            };
            json!({"messageId": format!("{tag}-sqs-{i}"), "receiptHandle": "h", "body": body, "attributes": {},
                   "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"})
        })
        .collect();
    json!({ "Records": records })
}

/// The bench batch, each event with the context a Segment browser source sends
/// (library, user agent, page, IP): about 1.3 KB a record, as production events.
pub fn batch_with_context(n: usize, tag: &str) -> Value {
    let mut value = batch(n, tag);
    for record in value["Records"].as_array_mut().unwrap() {
        let mut event: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        event["context"]["library"] = json!({"name": "analytics.js", "version": "next-1.81.0"});
        event["context"]["userAgent"] =
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36".into();
        event["context"]["ip"] = "203.0.113.42".into();
        event["context"]["page"] = json!({"path": "/checkout/complete", "referrer": "https://shop.example.com/checkout/payment?step=3&session=8f14e45fceea167a5a36dedd4bea2543",
            "title": "Thank you for your order", "url": "https://shop.example.com/checkout/complete?order=ORD-12345&utm_source=newsletter&utm_medium=email&utm_campaign=summer"});
        event["anonymousId"] = format!("anon-{tag}-{}", record["messageId"]).into();
        record["body"] = event.to_string().into();
        record["attributes"] = json!({"ApproximateReceiveCount": "1", "SentTimestamp": "1780759800000", "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1780759800100"});
        record["md5OfBody"] = "e4e68fb7bd0e697a0ae8f1bb342846b3".into();
        record["receiptHandle"] = "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...".into();
    }
    value
}

/// An SQS batch of as many context-rich records as fit in `bytes` (Lambda's payload limit is 6 MiB).
pub fn batch_of_size(bytes: usize, tag: &str) -> (Value, usize, usize) {
    let per_record = batch_with_context(100, tag).to_string().len() / 100;
    let mut n = bytes / per_record;
    loop {
        let candidate = batch_with_context(n, tag);
        let size = candidate.to_string().len();
        if size <= bytes {
            return (candidate, n, size);
        }
        n -= n / 100 + 1;
    }
}

/// A Dataverse-style profile id (a GUID passes identity resolution untouched).
pub fn profile_id(i: usize) -> String {
    format!("b6a8c2e0-0000-4000-8000-{i:012}")
}

/// A webhook request of `n` events, signed now with the sandbox's webhook secret.
pub fn webhook(n: usize, tag: &str) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"type": "track", "event": "Order Completed", "messageId": format!("{tag}-{i}"), "userId": profile_id(i),
            "timestamp": "2026-06-06T15:30:00Z", "properties": {"order_id": format!("ORD-{tag}-{i}"), "revenue": 10.5, "currency": "GBP"}})
        })
        .collect();
    let body = json!({ "batch": events }).to_string();
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let signature = relay::webhook::sign(b"sandbox-webhook-secret", &ts, body.as_bytes());
    json!({"version": "2.0", "routeKey": "POST /events", "rawPath": "/events", "headers": {"content-type": "application/json", "x-timestamp": ts, "x-signature": signature},
           "requestContext": {"http": {"method": "POST", "path": "/events"}, "domainName": "bench.execute-api.us-east-1.amazonaws.com"}, "body": body, "isBase64Encoded": false})
}
