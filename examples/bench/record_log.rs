//! `record_log`: what the record line costs (SPEC §22.1): the 1,000-record
//! batch at C = 32, Dataverse at 50 ms, with `D365_RECORD_LOG=all` against
//! `none` (each line built and let go, as in Lambda it leaves for the log),
//! five warm batches each, alternated; the process's CPU time per record
//! (the sandbox's included, the same in both).

use std::time::{Duration, Instant};

use d365_sandbox::{Faults, Sandbox};

use crate::batches::{batch, batch_of};
use crate::harness::{config, LATENCY_MS, ROOT};

const N: usize = 1_000;
const ROUNDS: usize = 5;

fn cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    time(usage.ru_utime) + time(usage.ru_stime)
}

pub async fn run(line: &mut impl FnMut(String)) {
    let sandbox = Sandbox::start(config(Faults { latency_ms: LATENCY_MS, ..Faults::default() }), 0).await.unwrap();
    let mapping = format!("{ROOT}/events/mapping.json");
    let relay_with = |mode: &str| {
        let settings = relay::sandbox_settings(
            &sandbox.url(),
            &[("D365_MAPPING_FILE", &mapping), ("D365_MAX_IN_FLIGHT", "32"), ("D365_MAX_TRIGGERS_PER_MINUTE", "0"), ("D365_RECORD_LOG", mode)],
        );
        let options = relay::startup::Options { record_lines: relay::startup::RecordLines::Discard, ..Default::default() };
        relay::startup::relay(settings, relay::startup::Clients::for_endpoint(&sandbox.url()), options)
    };
    let (all, none) = (relay_with("all"), relay_with("none"));
    relay::mapping::warm_phone_metadata();
    for relay in [&all, &none] {
        relay.handle(batch(1, "warm"), Instant::now() + Duration::from_secs(60)).await.unwrap();
    }
    let mut per_record = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (which, relay) in [&all, &none].into_iter().enumerate() {
            let payload = batch_of(N, &format!("rl{round}-{which}"), false);
            let before = cpu();
            let answer = relay.handle(payload, Instant::now() + Duration::from_secs(120)).await.unwrap();
            let spent = cpu() - before;
            assert_eq!(answer["batchItemFailures"].as_array().map(Vec::len), Some(0));
            per_record[which].push(spent.as_secs_f64() * 1e6 / N as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (all_us, none_us) = (median(&mut per_record[0]), median(&mut per_record[1]));
    line(format!(
        "| record line | {N} | 32 | CPU {all_us:.1} µs/record with all, {none_us:.1} with none | – | **{:.3}** (all ÷ none, median of {ROUNDS}) | – | 0 | – | – |",
        all_us / none_us
    ));
}
