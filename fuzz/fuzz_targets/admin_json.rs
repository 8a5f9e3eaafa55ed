//! Fuzz target `admin_json`: see `meshgroup::fuzzing::admin_json` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::admin_json(data));
