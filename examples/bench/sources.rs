//! `sources`: 100 records as SNS notifications in SQS against the same sent raw (SPEC §12).

use d365_sandbox::Faults;

use crate::harness::{run_with, LATENCY_MS};

/// 100 records in SNS notifications in SQS bodies against the same 100 sent raw:
/// the envelope must cost at most 5 % (SPEC §12). Medians of alternating runs,
/// with the sandbox's 50 ms latency and with none (where parsing weighs most).
/// `BENCH_ONLY=sources cargo run --release --example bench` runs only this.
pub async fn run(line: &mut impl FnMut(String)) {
    for latency_ms in [LATENCY_MS, 0] {
        let faults = Faults { latency_ms, ..Faults::default() };
        let (mut raw, mut sns) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            let r = run_with(100, 8, faults.clone(), false).await;
            let s = run_with(100, 8, faults.clone(), true).await;
            assert_eq!((r.failures, s.failures), (0, 0), "every record delivered");
            raw.push(r.wall.as_secs_f64());
            sns.push(s.wall.as_secs_f64());
        }
        raw.sort_by(f64::total_cmp);
        sns.sort_by(f64::total_cmp);
        let (raw, sns) = (raw[7], sns[7]);
        line(format!(
            "| SNS in SQS ÷ raw SQS (latency {latency_ms} ms, median of 15) | 100 | 8 | {:.1} ms | raw {:.1} ms | **{:.3}** | | 0 | |",
            sns * 1000.0,
            raw * 1000.0,
            sns / raw
        ));
    }
}
