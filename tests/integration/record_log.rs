//! The record line (SPEC §22.1): one JSON line per record, delivered ones
//! included, with its actions; `D365_RECORD_LOG=failures|none`.

use std::sync::{Arc, Mutex};

use relay::startup::Options;
use serde_json::{json, Value};

use crate::helpers::*;

const MAPPING: &str = r#"{"events":{"Order Completed":{"attributes":{"msdynmkt_orderid":"properties.order_id"},"required":["msdynmkt_orderid"]},"Checkout Started":{"trigger":"msdynmkt_Misspelt"}}}"#;

/// A batch of a delivered, a rejected and a dropped record, through a relay
/// with `D365_RECORD_LOG=mode`; the record lines it wrote.
async fn lines(mode: &str) -> Vec<Value> {
    let sandbox = d365_sandbox::Sandbox::start(sandbox_config(), 0).await.unwrap();
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let options = Options { record_lines: relay::startup::RecordLines::Buffer(buffer.clone()), ..Options::default() };
    let relay = relay_with(&sandbox, &[("D365_MAPPING", MAPPING), ("D365_RECORD_LOG", mode)], |c| c, options);
    let mut delivered = order("rl-1");
    delivered["context"] = json!({"traits": {"email": "Jane.Doe@Example.com", "phone": "+447700900123"}});
    let rejected = json!({"type": "track", "event": "Checkout Started", "messageId": "rl-2", "userId": "user-2",
                          "properties": {"checkout_id": "CHK-7", "email": "jane.doe@example.com"}});
    let dropped = json!({"type": "track", "event": "Page Viewed", "messageId": "rl-3", "userId": "user-3"});
    let bodies: Vec<String> = [delivered, rejected, dropped].iter().map(Value::to_string).collect();
    let response = relay.handle(sqs_batch(&bodies, None), std::time::Instant::now() + std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(failures(&response), ["sqs-1"], "without a DLQ of its own the rejected record is left to SQS's redrive");
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    assert!(!text.to_lowercase().contains("jane"), "no e-mail in clear: {text}");
    assert!(!text.contains("7700900123"), "no phone in clear: {text}");
    text.lines().map(|l| serde_json::from_str(l).expect("each line is one JSON object")).collect()
}

#[tokio::test]
async fn every_record_gets_one_line_with_its_actions() {
    let lines = lines("all").await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let delivered = &lines[0];
    assert_eq!(delivered["message"], "record");
    assert_eq!(delivered["level"], "INFO");
    assert_eq!(delivered["messageId"], "rl-1");
    assert_eq!(delivered["sqsMessageId"], "sqs-0");
    assert_eq!(delivered["receiveCount"], 1);
    assert_eq!(delivered["event"], "Order Completed");
    assert_eq!(delivered["outcome"], "delivered");
    assert_eq!(delivered["ids"], json!({"properties.order_id": "ORD-rl-1", "msdynmkt_orderid": "ORD-rl-1"}));
    let action = &delivered["actions"][0];
    assert_eq!(delivered["actions"].as_array().unwrap().len(), 1);
    assert_eq!((action["destination"].as_str(), action["kind"].as_str(), action["outcome"].as_str()), (Some("default"), Some("trigger"), Some("delivered")));
    assert_eq!(action["attempts"], 1);
    assert!(action["status"].as_u64().is_some_and(|s| (200..300).contains(&s)), "{action}");
    assert!(action["ms"].is_u64() && delivered["ms"].is_u64());

    let rejected = &lines[1];
    assert_eq!((rejected["messageId"].as_str(), rejected["outcome"].as_str()), (Some("rl-2"), Some("rejected")));
    assert_eq!(rejected["ids"], json!({"properties.checkout_id": "CHK-7"}));
    assert_eq!(rejected["actions"][0]["target"], "msdynmkt_Misspelt");
    assert_eq!(rejected["actions"][0]["status"], 404);
    assert_eq!(rejected["actions"][0]["code"], "0x8006088a");
    assert_eq!(rejected["actions"][0]["attempts"], 0, "the trigger's definition says it does not exist: no call");

    let dropped = &lines[2];
    assert_eq!((dropped["messageId"].as_str(), dropped["outcome"].as_str()), (Some("rl-3"), Some("dropped")));
    assert_eq!(dropped["actions"], json!([]));
}

#[tokio::test]
async fn failures_only_and_none() {
    let lines_ = lines("failures").await;
    assert_eq!(lines_.iter().map(|l| l["messageId"].as_str().unwrap()).collect::<Vec<_>>(), ["rl-2"]);
    assert!(lines("none").await.is_empty());
}
