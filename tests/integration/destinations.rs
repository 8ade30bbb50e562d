//! Several Dynamics environments from one deployment (SPEC §23), against one
//! sandbox: routing, a record raised in two destinations under their own
//! keys, a best-effort mirror that cannot decide a record, an unknown
//! destination confined to its own actions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay::startup::Options;
use serde_json::{json, Value};

use crate::helpers::*;

/// The sandbox with the demo secret plus `destinations` (each a copy of the
/// top-level block), and a relay with `mapping`; its record lines.
async fn setup(destinations: &[&str], mapping: Value) -> (d365_sandbox::Sandbox, relay::Relay, Arc<Mutex<Vec<u8>>>) {
    let config = sandbox_config();
    let mut secret = config.secrets["d365/relay-demo"].clone();
    let block = json!({"tenant_id": secret["tenant_id"], "client_id": secret["client_id"], "client_secret": secret["client_secret"],
                       "org_url_host": secret["org_url_host"]});
    secret["destinations"] = destinations.iter().map(|name| (name.to_string(), block.clone())).collect::<serde_json::Map<_, _>>().into();
    let sandbox = d365_sandbox::Sandbox::start(config, 0).await.unwrap();
    sandbox.put_secret("d365/relay-demo", &secret);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mapping = mapping.to_string();
    let options = Options { record_lines: relay::startup::RecordLines::Buffer(lines.clone()), ..Options::default() };
    let relay = relay_with(&sandbox, &[("D365_MAPPING", mapping.as_str())], |c| c, options);
    (sandbox, relay, lines)
}

fn lines_of(buffer: &Mutex<Vec<u8>>) -> Vec<Value> {
    let text = String::from_utf8(std::mem::take(&mut *buffer.lock().unwrap())).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn invoke(relay: &relay::Relay, payload: Value) -> Value {
    relay.handle(payload, Instant::now() + Duration::from_secs(20)).await.unwrap()
}

#[tokio::test]
async fn a_record_routed_to_two_destinations_is_raised_in_both_and_its_redelivery_in_neither() {
    let mapping = json!({"events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id"}}}, "destinations": {"default": {"fallback": true}, "uat": {"best_effort": true}}});
    let (sandbox, relay, lines) = setup(&["uat"], mapping).await;
    let answer = invoke(&relay, json!([order("two-1")])).await;
    assert_eq!(answer, json!({"delivered": 1, "dropped": 0, "duplicates": 0, "failed": []}));
    let raised: Vec<_> = sandbox.accepted().into_iter().filter(|s| s.trigger == "msdynmkt_OrderCompleted").collect();
    assert_eq!(raised.len(), 2, "one call in each destination");
    assert_eq!(raised[0].body, raised[1].body, "the same request in both");
    let line = &lines_of(&lines)[0];
    let destinations: Vec<&str> = line["actions"].as_array().unwrap().iter().map(|a| a["destination"].as_str().unwrap()).collect();
    assert_eq!(destinations, ["default", "uat"]);

    let again = invoke(&relay, json!([order("two-1")])).await;
    assert_eq!(again, json!({"delivered": 0, "dropped": 0, "duplicates": 1, "failed": []}), "done in both: a duplicate");
    assert_eq!(sandbox.accepted().into_iter().filter(|s| s.trigger == "msdynmkt_OrderCompleted").count(), 2, "no new call in either");
}

#[tokio::test]
async fn a_best_effort_destination_the_secret_lacks_fails_only_its_own_actions() {
    let mapping = json!({"events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id"}}}, "destinations": {"default": {"fallback": true}, "uat": {"best_effort": true}}});
    let (sandbox, relay, lines) = setup(&[], mapping).await;
    let answer = invoke(&relay, json!([order("mirror-1")])).await;
    assert_eq!(answer, json!({"delivered": 1, "dropped": 0, "duplicates": 0, "failed": []}), "the mirror does not decide the record");
    assert_eq!(sandbox.accepted().len(), 1);
    let line = &lines_of(&lines)[0];
    assert_eq!(line["outcome"], "delivered");
    let uat = line["actions"].as_array().unwrap().iter().find(|a| a["destination"] == "uat").expect("the mirror's action is in the line");
    assert_eq!(uat["outcome"], "failed");
}

#[tokio::test]
async fn a_plain_destination_that_fails_fails_the_record_and_the_other_is_still_delivered() {
    let mapping =
        json!({"events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id"}}}, "destinations": {"default": {}, "brand": {}}});
    let (sandbox, relay, lines) = setup(&[], mapping).await;
    let bodies = vec![order("plain-1").to_string()];
    let answer = invoke(&relay, sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&answer), ["sqs-0"], "brand is not in the secret: the record is retried");
    assert_eq!(sandbox.accepted().len(), 1, "default delivered it all the same");
    let line = &lines_of(&lines)[0];
    assert_eq!(line["outcome"], "failed");
    let answer = invoke(&relay, sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&answer), ["sqs-0"]);
    assert_eq!(sandbox.accepted().len(), 1, "a redelivery repeats nothing done in default");
}

#[tokio::test]
async fn routes_follow_when_and_events_and_a_record_no_destination_takes_is_dropped() {
    let mapping = json!({
        "events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id", "msdynmkt_cartid": "properties.order_id"}}, "Signed Up": {"trigger": "msdynmkt_SignedUp"}},
        "destinations": {"default": {"events": ["Order Completed"]}, "fab": {"when": {"context.traits.brand": "fabrikam"},
                         "triggers": {"msdynmkt_OrderCompleted": "msdynmkt_CartAbandoned"}}}
    });
    let (sandbox, relay, lines) = setup(&["fab"], mapping).await;
    let mut fab = order("route-1");
    fab["context"] = json!({"traits": {"brand": "fabrikam"}});
    let signed_up = json!({"type": "track", "event": "Signed Up", "messageId": "route-2", "userId": "user-route-2"});
    let answer = invoke(&relay, json!([fab, signed_up])).await;
    assert_eq!(answer["delivered"], 1);
    assert_eq!(answer["dropped"], 1, "Signed Up reaches no destination");
    let triggers: Vec<String> = sandbox.accepted().into_iter().map(|s| s.trigger).collect();
    assert_eq!(triggers.iter().filter(|t| *t == "msdynmkt_OrderCompleted").count(), 1, "default: the order as it is");
    assert_eq!(triggers.iter().filter(|t| *t == "msdynmkt_CartAbandoned").count(), 1, "fab: renamed");
    let lines = lines_of(&lines);
    let dropped = lines.iter().find(|l| l["messageId"] == "route-2").unwrap();
    assert_eq!(dropped["outcome"], "dropped");
    assert!(dropped["reason"].as_str().unwrap().contains("no destination"), "{dropped}");
}
