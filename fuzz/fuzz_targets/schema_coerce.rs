#![no_main]

libfuzzer_sys::fuzz_target!(init: relay::fuzzing::init(), |data: &[u8]| relay::fuzzing::schema_coerce(data));
