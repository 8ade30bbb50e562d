//! Per-record CPU of mapping + serialisation (what a warm function spends per event
//! besides waiting on Dataverse).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use relay::config::Mapping;
use relay::mapping::{map_event, Decision, MapContext};
use std::hint::black_box;

fn spec_event() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/events/direct.json")).unwrap()
}

fn bench(c: &mut Criterion) {
    let mapping = Mapping::default_preset();
    relay::mapping::warm_phone_metadata();
    let text = spec_event();
    let mut group = c.benchmark_group("per record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse + map + serialise (SPEC event, email and phone)", |b| {
        b.iter(|| {
            let event: serde_json::Value = serde_json::from_str(black_box(&text)).unwrap();
            let ctx = MapContext { mapping: &mapping, default_trigger: Some("msdynmkt_OrderCompleted"), default_phone_region: None, now: chrono::Utc::now() };
            match map_event(&event, &ctx) {
                Decision::Raise { call, .. } => serde_json::to_vec(&call.body).unwrap(),
                other => panic!("{other:?}"),
            }
        })
    });
    let no_contacts = text.replace("\"phone\": \"07700 900123\"", "\"x\": 1");
    group.bench_function("parse + map + serialise (no phone)", |b| {
        b.iter(|| {
            let event: serde_json::Value = serde_json::from_str(black_box(&no_contacts)).unwrap();
            let ctx = MapContext { mapping: &mapping, default_trigger: Some("msdynmkt_OrderCompleted"), default_phone_region: None, now: chrono::Utc::now() };
            match map_event(&event, &ctx) {
                Decision::Raise { call, .. } => serde_json::to_vec(&call.body).unwrap(),
                other => panic!("{other:?}"),
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
