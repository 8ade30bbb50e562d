//! Per-record CPU of mapping + serialisation (what a warm function spends per event
//! besides waiting on Dataverse).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use relay::config::Mapping;
use relay::mapping::{map_event, Decision, MapContext};
use std::hint::black_box;

fn spec_event() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/events/direct.json")).unwrap()
}

fn map_and_serialise(mapping: &Mapping, text: &str) -> Vec<u8> {
    let event: serde_json::Value = serde_json::from_str(text).unwrap();
    let ctx = MapContext { mapping, default_trigger: Some("msdynmkt_OrderCompleted"), default_phone_region: None, now: chrono::Utc::now() };
    match map_event(&event, &ctx) {
        Decision::Raise { call, .. } => serde_json::to_vec(&call.body).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let mapping = Mapping::default_preset();
    relay::mapping::warm_phone_metadata();
    let text = spec_event();
    let no_phone = text.replace("\"phone\": \"07700 900123\"", "\"x\": 1");
    let mut group = c.benchmark_group("per record");
    group.throughput(Throughput::Elements(1));
    for (name, input) in [("parse + map + serialise (SPEC event, email and phone)", &text), ("parse + map + serialise (no phone)", &no_phone)] {
        group.bench_function(name, |b| b.iter(|| map_and_serialise(&mapping, black_box(input))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
