//! A gzip bomb (SPEC §20): about 50 KB that would expand to 50 MiB is refused
//! with 413 once decoding passes 1 MiB, and never becomes a large buffer — the
//! process's peak RSS stays under 64 MB and the relay's heap grows by a few
//! MiB at most. A binary of its own, because RSS and the counting allocator are
//! process-wide (as in `tests/memory.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

#[path = "integration/helpers.rs"]
mod helpers;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The process's peak resident set (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// `{"batch": [{"event": "xxx…` with 50 MiB of x, compressed a MiB at a time so
/// the test itself never holds the expanded text.
fn bomb() -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(b"{\"batch\": [{\"type\": \"track\", \"event\": \"").unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..50 {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.write_all(b"\"}]}").unwrap();
    encoder.finish().unwrap()
}

fn function_url(headers: Value, body: &[u8]) -> Value {
    let mut event = helpers::event_file("function-url.json");
    event["rawPath"] = json!("/v1/batch");
    event["headers"] = headers;
    event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
    event["isBase64Encoded"] = json!(true);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_kb_gzip_bomb_is_413_and_peak_rss_stays_under_64_mb() {
    let sandbox = d365_sandbox::Sandbox::start(helpers::sandbox_config(), 0).await.unwrap();
    let mapping = helpers::mapping_file();
    let relay = helpers::relay_for(&sandbox, &[("D365_MAPPING_FILE", mapping.as_str()), ("D365_WEBHOOK_AUTH", "writekey")]);
    let bomb = bomb();
    assert!((40_000..60_000).contains(&bomb.len()), "the bomb is about 50 KB: {} bytes", bomb.len());
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("sandbox-write-key:"));
    // With the key in a header; and without one, where the body is decoded to look for a writeKey field.
    let requests = [
        function_url(json!({"authorization": basic, "content-encoding": "gzip", "content-type": "application/json"}), &bomb),
        function_url(json!({"content-encoding": "gzip", "content-type": "text/plain"}), &bomb),
    ];
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut answers = Vec::new();
    for request in requests {
        let response = relay.handle(request, Instant::now() + Duration::from_secs(30)).await.unwrap();
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
        answers.push((response["statusCode"].as_u64(), body["code"].as_str().map(str::to_string)));
    }
    let heap_growth = PEAK.load(Ordering::Relaxed) - before;
    let rss = peak_rss();

    assert_eq!(answers[0], (Some(413), Some("too_large".into())), "the key in a header: decoded after it, stopped at 1 MiB");
    assert_eq!(answers[1], (Some(401), Some("unauthorized".into())), "no key: stopped at 1 MiB while looking for one, then 401");
    assert_eq!(sandbox.stats().calls(), 0);
    assert!(rss < 64 * 1024 * 1024, "peak RSS {:.1} MiB (≥ 64 MiB)", rss as f64 / 1048576.0);
    assert!(heap_growth < 4 * 1024 * 1024, "the heap grew by {:.1} MiB while refusing the bomb (≥ 4 MiB)", heap_growth as f64 / 1048576.0);
    println!("gzip bomb: {} bytes sent, peak RSS {:.1} MiB, heap growth {:.2} MiB", bomb.len(), rss as f64 / 1048576.0, heap_growth as f64 / 1048576.0);
}
