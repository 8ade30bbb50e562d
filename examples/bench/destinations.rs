//! `destinations`: two Dynamics environments from one deployment (SPEC §23.3).
//! Production answers every trigger call 429 with Retry-After: 60; UAT is
//! healthy. The figure is UAT's batch time beside the throttled production ÷
//! the same records' time alone, in the same warm relay (the SPEC requires at
//! most 1.2, +50 ms), with the sandbox's latency in both environments.

use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox};
use serde_json::{json, Value};

use crate::batches::batch;
use crate::harness::{config, LATENCY_MS, ROOT};

const PROD: &str = "contoso.api.crm.dynamics.com";
const UAT: &str = "uat.api.crm.dynamics.com";
const N: usize = 100;
const C: usize = 8;
const ROUNDS: usize = 5;

/// The bench batch, each record routed to production too when `prod`.
fn routed(tag: &str, prod: bool) -> Value {
    let mut value = batch(N, tag);
    if prod {
        for record in value["Records"].as_array_mut().unwrap() {
            let mut event: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
            event["properties"]["prod"] = json!("yes");
            record["body"] = event.to_string().into();
        }
    }
    value
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub async fn run(line: &mut impl FnMut(String)) {
    let mut sandbox_config = config(Faults { latency_ms: LATENCY_MS, ..Faults::default() });
    let secret = sandbox_config.secrets.get_mut("d365/relay-demo").unwrap();
    secret["destinations"] = json!({"uat": {"tenant_id": secret["tenant_id"], "client_id": "22222222-2222-2222-2222-222222222222",
                                             "client_secret": "uat-client-secret", "org_url_host": UAT}});
    let sandbox = Sandbox::start(sandbox_config, 0).await.unwrap();
    // The demo mapping, production taking the records that say so and UAT every one.
    let mut mapping: Value = serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/events/mapping.json")).unwrap()).unwrap();
    mapping["destinations"] = json!({"default": {"when": {"properties.prod": "yes"}}, "uat": {}});
    let (mapping, base, c) = (mapping.to_string(), format!("{}/{{org_url_host}}", sandbox.url()), C.to_string());
    let settings = relay::sandbox_settings(
        &sandbox.url(),
        &[
            ("D365_MAPPING", &mapping),
            ("D365_DATAVERSE_BASE_URL", &base),
            ("D365_MAX_IN_FLIGHT", &c),
            ("D365_DEFAULT_PHONE_REGION", "GB"),
            ("D365_MAX_TRIGGERS_PER_MINUTE", "0"),
        ],
    );
    let sqs = relay::enqueue::sqs_client_for_endpoint(&sandbox.url());
    let relay = relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()).with_sqs(sqs), crate::harness::quiet());
    relay::mapping::warm_phone_metadata();
    // The template's Timeout (60 s): shorter than production's Retry-After, so its
    // records fail at once and are backed off (with a longer deadline the relay may
    // wait the pause out before answering, SPEC §7).
    let deadline = || Instant::now() + Duration::from_secs(60);
    // Warm: secret, tokens and definitions in both environments.
    relay.handle(routed("warm", true), deadline()).await.unwrap();

    sandbox.set_environment_faults(PROD, Faults { latency_ms: LATENCY_MS, throttle_rate: 1.0, retry_after_secs: Some(60), ..Faults::default() });
    let before = sandbox.stats();
    let prod_before = sandbox.environment_stats(PROD);
    let (mut alone, mut beside, mut prod_failed) = (Vec::new(), Vec::new(), 0);
    // Alternating, so both see the same machine.
    for round in 0..ROUNDS {
        let payload = routed(&format!("alone{round}"), false);
        let started = Instant::now();
        let answer = relay.handle(payload, deadline()).await.unwrap();
        alone.push(started.elapsed().as_secs_f64());
        assert!(answer["batchItemFailures"].as_array().unwrap().is_empty(), "UAT alone delivers every record");

        let payload = routed(&format!("both{round}"), true);
        let uat_before = sandbox.environment_accepted(UAT).len();
        let started = Instant::now();
        let answer = relay.handle(payload, deadline()).await.unwrap();
        beside.push(started.elapsed().as_secs_f64());
        prod_failed += answer["batchItemFailures"].as_array().unwrap().len();
        assert_eq!(sandbox.environment_accepted(UAT).len() - uat_before, N, "UAT delivers every record beside the throttled production");
    }
    let stats = sandbox.stats();
    let prod = sandbox.environment_stats(PROD);
    let calls = stats.calls() - before.calls();
    let prod_calls = prod.calls() - prod_before.calls();
    let (alone, beside) = (median(alone), median(beside));
    line(format!(
        "| two destinations: UAT beside production throttled (429, Retry-After 60) ÷ UAT alone (median of {ROUNDS}; {prod_calls} production calls in {} records) | {N} | {C} | {:.1} ms | alone {:.1} ms | **{:.3}** | {:.3} | {prod_failed} (production's, backed off) | {} | {:.2} |",
        ROUNDS * N,
        beside * 1000.0,
        alone * 1000.0,
        beside / alone,
        (stats.calls_with(429) - before.calls_with(429)) as f64 / calls.max(1) as f64,
        stats.token_requests,
        calls as f64 / (2 * ROUNDS * N) as f64,
    ));
}
