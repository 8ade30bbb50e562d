//! `gzip`: a gzipped 500-call `/v1/batch` from an analytics SDK against the same
//! batch uncompressed (SPEC §20).

use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox};
use serde_json::{json, Value};

use crate::batches::{profile_id, webhook};
use crate::harness::{config, LATENCY_MS, ROOT};

/// A 500-call `/v1/batch` as an analytics SDK posts it to a function URL
/// (Basic auth with the write key), gzipped (base64, as Lambda passes a binary
/// body) or not. Each call carries an SDK's context, as production calls do.
fn sdk_batch(tag: &str, gzip: bool) -> Value {
    use std::io::Write;
    let calls: Vec<Value> = (0..500)
        .map(|i| {
            json!({"type": "track", "event": "Order Completed", "messageId": format!("{tag}-{i}"), "userId": profile_id(i),
                   "anonymousId": null, "integrations": {}, "timestamp": "2026-06-06T15:30:00+00:00",
                   "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
                   "properties": {"order_id": format!("ORD-{tag}-{i}"), "revenue": 10.5, "currency": "GBP"}})
        })
        .collect();
    let body = json!({"batch": calls, "sentAt": "2026-06-06T15:30:01+00:00", "writeKey": "sandbox-write-key"}).to_string();
    use base64::Engine;
    let authorization = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("sandbox-write-key:"));
    let mut headers = json!({"content-type": "application/json", "authorization": authorization, "user-agent": "analytics-python/2.4.0"});
    let (body, base64) = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(body.as_bytes()).unwrap();
        headers["content-encoding"] = json!("gzip");
        (base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap()), true)
    } else {
        (body, false)
    };
    json!({"version": "2.0", "routeKey": "$default", "rawPath": "/v1/batch", "headers": headers,
           "requestContext": {"http": {"method": "POST", "path": "/v1/batch"}, "domainName": "bench.lambda-url.us-east-1.on.aws"},
           "body": body, "isBase64Encoded": base64})
}

/// A gzipped 500-call `/v1/batch` against the same uncompressed, Dataverse at
/// 50 ms, C = 32 (SPEC §20): decoding must cost at most 5 %. Medians of
/// alternating warm requests, each of new messageIds.
/// `BENCH_ONLY=gzip cargo run --release --example bench` runs only this.
pub async fn run(line: &mut impl FnMut(String)) {
    let sandbox = Sandbox::start(config(Faults { latency_ms: LATENCY_MS, ..Faults::default() }), 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let overrides =
        [("D365_MAPPING_FILE", mapping.as_str()), ("D365_MAX_IN_FLIGHT", "32"), ("D365_WEBHOOK_AUTH", "writekey,hmac"), ("D365_MAX_TRIGGERS_PER_MINUTE", "0")];
    let relay = relay::startup::relay(
        relay::sandbox_settings(&sandbox.url(), &overrides),
        relay::startup::Clients::for_endpoint(&sandbox.url()),
        crate::harness::quiet(),
    );
    relay::mapping::warm_phone_metadata();
    relay.handle(webhook(1, "warm"), Instant::now() + Duration::from_secs(60)).await.unwrap();
    let (mut plain, mut gzipped) = (Vec::new(), Vec::new());
    let (plain_bytes, gzip_bytes) = (sdk_batch("size", false)["body"].as_str().unwrap().len(), sdk_batch("size", true)["body"].as_str().unwrap().len());
    for run in 0..9 {
        for (gzip, times) in [(false, &mut plain), (true, &mut gzipped)] {
            let request = sdk_batch(&format!("r{run}-{gzip}"), gzip);
            let started = Instant::now();
            let response = relay.handle(request, Instant::now() + Duration::from_secs(60)).await.unwrap();
            times.push(started.elapsed().as_secs_f64());
            assert_eq!((response["statusCode"].as_u64(), response["body"].as_str()), (Some(200), Some(r#"{"success":true}"#)), "every call delivered");
        }
    }
    assert_eq!(sandbox.stats().calls(), 1 + 18 * 500, "each call raised once");
    plain.sort_by(f64::total_cmp);
    gzipped.sort_by(f64::total_cmp);
    let (p, g) = (plain[4], gzipped[4]);
    line(String::new());
    line("| analytics SDK `/v1/batch`, 500 calls, C = 32, Dataverse at 50 ms (median of 9 alternating) | body | wall | ÷ uncompressed |".into());
    line("|---|---|---|---|".into());
    line(format!("| uncompressed | {:.0} KB | {:.1} ms | 1 |", plain_bytes as f64 / 1e3, p * 1000.0));
    line(format!(
        "| gzip (`Content-Encoding: gzip`, base64 in the event) | {:.0} KB | {:.1} ms | **{:.3}** (target ≤ 1.05) |",
        gzip_bytes as f64 / 1e3,
        g * 1000.0,
        g / p
    ));
}
