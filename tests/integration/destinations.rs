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
    let base = format!("{}/{{org_url_host}}", sandbox.url());
    let relay = relay_with(&sandbox, &[("D365_MAPPING", mapping.as_str()), ("D365_DATAVERSE_BASE_URL", base.as_str())], |c| c, options);
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

// ---- One sandbox serving two environments through `D365_DATAVERSE_BASE_URL=…/{org_url_host}` ----

const PROD: &str = "contoso.api.crm.dynamics.com";
const UAT: &str = "uat.api.crm.dynamics.com";

/// A sandbox whose secret's top level is production (`contoso…`, the
/// destination `default`) and whose `destinations.uat` is another environment
/// with its own app (`uat…`); a relay reaching each environment through the
/// sandbox's path prefix, with `mapping`, backing records off in the sandbox's SQS.
async fn two_environments(mapping: Value) -> (d365_sandbox::Sandbox, relay::Relay, Arc<Mutex<Vec<u8>>>) {
    let mut config = sandbox_config();
    let secret = config.secrets.get_mut("d365/relay-demo").unwrap();
    secret["destinations"] = json!({"uat": {"tenant_id": secret["tenant_id"], "client_id": "22222222-2222-2222-2222-222222222222",
                                             "client_secret": "uat-client-secret", "org_url_host": UAT}});
    let sandbox = d365_sandbox::Sandbox::start(config, 0).await.unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (mapping, base) = (mapping.to_string(), format!("{}/{{org_url_host}}", sandbox.url()));
    let options = Options { record_lines: relay::startup::RecordLines::Buffer(lines.clone()), ..Options::default() };
    let sqs = relay::enqueue::sqs_client_for_endpoint(&sandbox.url());
    let relay = relay_with(&sandbox, &[("D365_MAPPING", mapping.as_str()), ("D365_DATAVERSE_BASE_URL", base.as_str())], |c| c.with_sqs(sqs), options);
    (sandbox, relay, lines)
}

fn order_ids(signals: &[d365_sandbox::Signal]) -> Vec<String> {
    let mut ids: Vec<String> = signals.iter().map(|s| s.body["msdynmkt_orderid"].as_str().unwrap_or("").to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn two_environments_a_record_routed_to_both_is_raised_in_each_and_its_redelivery_in_neither() {
    let mapping =
        json!({"events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id"}}}, "destinations": {"default": {}, "uat": {}}});
    let (sandbox, relay, lines) = two_environments(mapping).await;
    let bodies = vec![order("env-1").to_string()];
    let answer = invoke(&relay, sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&answer), Vec::<String>::new());
    let (prod, uat) = (sandbox.environment_accepted(PROD), sandbox.environment_accepted(UAT));
    assert_eq!((prod.len(), uat.len()), (1, 1), "one call in each environment");
    assert!(sandbox.environment_signals("").is_empty(), "nothing reached the sandbox without a prefix");
    assert_eq!(prod[0].body, uat[0].body, "the same trigger call in both");
    assert_eq!(prod[0].path, "/api/data/v9.2/msdynmkt_OrderCompleted");
    assert_eq!(uat[0].client_id, "22222222-2222-2222-2222-222222222222", "UAT's own application user");
    assert_eq!(prod[0].client_id, "11111111-1111-1111-1111-111111111111");
    let line = &lines_of(&lines)[0];
    assert_eq!(line["outcome"], "delivered");

    let again = invoke(&relay, sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&again), Vec::<String>::new());
    assert_eq!((sandbox.environment_signals(PROD).len(), sandbox.environment_signals(UAT).len()), (1, 1), "the redelivery raises in neither");
    assert_eq!(lines_of(&lines)[0]["outcome"], "duplicate");
}

#[tokio::test]
async fn two_environments_a_best_effort_uat_answering_503_does_not_fail_the_record() {
    let mapping = json!({"events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id"}}},
                         "destinations": {"default": {"fallback": true}, "uat": {"best_effort": true}}});
    let (sandbox, relay, lines) = two_environments(mapping).await;
    sandbox.set_environment_faults(UAT, d365_sandbox::Faults { unavailable_rate: 1.0, ..Default::default() });
    let bodies = vec![order("mirror-503-1").to_string(), order("mirror-503-2").to_string()];
    let answer = invoke(&relay, sqs_batch(&bodies, None)).await;
    assert_eq!(failures(&answer), Vec::<String>::new(), "the mirror's 503s decide nothing");
    assert_eq!(order_ids(&sandbox.environment_accepted(PROD)), ["ORD-mirror-503-1", "ORD-mirror-503-2"]);
    let uat = sandbox.environment_signals(UAT);
    assert!(!uat.is_empty() && uat.iter().all(|s| s.status == 503), "UAT was called and answered 503: {uat:?}");
    for line in lines_of(&lines) {
        assert_eq!(line["outcome"], "delivered", "{line}");
        let mirror = line["actions"].as_array().unwrap().iter().find(|a| a["destination"] == "uat").expect("the mirror's action is in the line");
        assert_eq!(mirror["outcome"], "failed", "{line}");
    }
}

/// An SQS batch of `n` orders (`{prefix}-{i}`), to production too when `prod`.
fn orders(prefix: &str, n: usize, prod: bool) -> Value {
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            let mut event = order(&format!("{prefix}-{i}"));
            if prod {
                event["properties"]["prod"] = json!("yes");
            }
            event.to_string()
        })
        .collect();
    sqs_batch(&bodies, None)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// SPEC §23.3's required effect: production answering 429 with Retry-After: 60
/// for a whole batch leaves UAT's records delivered within 1.2 × the time the
/// same records take alone (+50 ms), in the same warm relay; production's
/// records are reported failed and backed off until the pause ends, and a
/// paused production does not spin (its actions fail without calls).
#[tokio::test]
async fn two_environments_production_throttled_for_a_whole_batch_leaves_uat_as_fast_as_alone() {
    const N: usize = 20;
    let mapping = json!({"events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id"}}},
                         "destinations": {"default": {"when": {"properties.prod": "yes"}}, "uat": {}}});
    let (sandbox, relay, _lines) = two_environments(mapping).await;
    let latency = d365_sandbox::Faults { latency_ms: 20, ..Default::default() };
    sandbox.set_environment_faults(UAT, latency.clone());
    sandbox.set_environment_faults(PROD, latency);
    // Warm: tokens and definitions in both environments.
    let warm = invoke(&relay, orders("warm", 2, true)).await;
    assert_eq!(failures(&warm), Vec::<String>::new());

    let mut alone = Vec::new();
    for round in 0..3 {
        let started = Instant::now();
        let answer = invoke(&relay, orders(&format!("alone{round}"), N, false)).await;
        alone.push(started.elapsed());
        assert_eq!(failures(&answer), Vec::<String>::new());
    }
    assert_eq!(sandbox.environment_accepted(PROD).len(), 2, "the UAT-only batches never reached production");

    sandbox.set_environment_faults(PROD, d365_sandbox::Faults { latency_ms: 20, throttle_rate: 1.0, retry_after_secs: Some(60), ..Default::default() });
    let prod_calls_before = sandbox.environment_stats(PROD).calls();
    let changes_before = sandbox.visibility_changes().len();
    let mut with = Vec::new();
    let mut prod_calls = Vec::new();
    for round in 0..3 {
        let started = Instant::now();
        let answer = invoke(&relay, orders(&format!("both{round}"), N, true)).await;
        with.push(started.elapsed());
        prod_calls.push(sandbox.environment_stats(PROD).calls() - prod_calls_before);
        let expected: Vec<String> = (0..N).map(|i| format!("sqs-{i}")).collect();
        let mut failed = failures(&answer);
        failed.sort_by_key(|id| id[4..].parse::<usize>().unwrap());
        assert_eq!(failed, expected, "production's actions failed: every record is retried");
        let delivered = order_ids(&sandbox.environment_accepted(UAT)).into_iter().filter(|id| id.starts_with(&format!("ORD-both{round}-"))).count();
        assert_eq!(delivered, N, "UAT delivered every record of the batch");
    }
    let (alone, with) = (median(alone), median(with));
    eprintln!(
        "UAT alone {alone:?}, beside a throttled production {with:?}: {:.2}×; production calls after each batch {prod_calls:?}",
        with.as_secs_f64() / alone.as_secs_f64()
    );
    assert!(with <= alone.mul_f64(1.2) + Duration::from_millis(50), "UAT beside a throttled production took {with:?}, alone {alone:?}");

    // Production did not spin: at most one round of calls in flight met the 429, and none once paused.
    assert!(prod_calls[0] <= 8, "production calls in the first throttled batch: {}", prod_calls[0]);
    assert_eq!(prod_calls[2], prod_calls[0], "a paused production's actions fail without calls");
    // Backed off until the pause ends (60 s, + up to 20 % jitter).
    let changes = &sandbox.visibility_changes()[changes_before..];
    assert_eq!(changes.len(), 3 * N, "each failed record backed off");
    assert!(changes.iter().all(|c| (55..=75).contains(&c.visibility_timeout)), "{changes:?}");
}

/// SPEC §23.3 with production down (503 for a whole batch): UAT's records are
/// delivered (their calls accepted) within 1.2 × their time alone (+50 ms);
/// production's are retried (§7) and reported failed. The invocation itself
/// lasts as long as production's retries (printed, not asserted).
#[tokio::test]
async fn two_environments_production_answering_503_for_a_whole_batch_leaves_uat_delivered_as_fast_as_alone() {
    const N: usize = 20;
    let mapping = json!({"events": {"Order Completed": {"attributes": {"msdynmkt_orderid": "properties.order_id"}}},
                         "destinations": {"default": {"when": {"properties.prod": "yes"}}, "uat": {}}});
    let (sandbox, relay, _lines) = two_environments(mapping).await;
    let latency = d365_sandbox::Faults { latency_ms: 20, ..Default::default() };
    sandbox.set_environment_faults(UAT, latency.clone());
    sandbox.set_environment_faults(PROD, latency);
    assert_eq!(failures(&invoke(&relay, orders("warm", 2, true)).await), Vec::<String>::new());

    sandbox.set_environment_faults(PROD, d365_sandbox::Faults { latency_ms: 20, unavailable_rate: 1.0, ..Default::default() });
    // The time from the invocation's start to UAT's last accepted call of the batch.
    let uat_done = |sandbox: &d365_sandbox::Sandbox, tag: &str, started: chrono::DateTime<chrono::Utc>| {
        let signals: Vec<_> = sandbox.environment_accepted(UAT).into_iter().filter(|s| s.body["msdynmkt_orderid"].as_str().unwrap().starts_with(tag)).collect();
        assert_eq!(signals.len(), N, "UAT delivered every record of the batch");
        let last = signals.iter().map(|s| chrono::DateTime::parse_from_rfc3339(&s.received_at).unwrap().with_timezone(&chrono::Utc)).max().unwrap();
        (last - started).to_std().unwrap_or_default()
    };
    let (mut alone, mut with, mut invocation) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let started = chrono::Utc::now();
        let answer = invoke(&relay, orders(&format!("alone{round}"), N, false)).await;
        assert_eq!(failures(&answer), Vec::<String>::new());
        alone.push(uat_done(&sandbox, &format!("ORD-alone{round}-"), started));
        let (started, clock) = (chrono::Utc::now(), Instant::now());
        let answer = invoke(&relay, orders(&format!("down{round}"), N, true)).await;
        invocation.push(clock.elapsed());
        assert_eq!(failures(&answer).len(), N, "production's actions failed: every record is retried");
        with.push(uat_done(&sandbox, &format!("ORD-down{round}-"), started));
    }
    let (alone, with, invocation) = (median(alone), median(with), median(invocation));
    eprintln!(
        "UAT delivered alone in {alone:?}, beside production answering 503 in {with:?}: {:.2}×; the invocation took {invocation:?} ({:.1}×); production 503s {}",
        with.as_secs_f64() / alone.as_secs_f64(),
        invocation.as_secs_f64() / alone.as_secs_f64(),
        sandbox.environment_stats(PROD).calls_with(503)
    );
    assert!(with <= alone.mul_f64(1.2) + Duration::from_millis(50), "UAT beside a production that is down was delivered in {with:?}, alone {alone:?}");
}
