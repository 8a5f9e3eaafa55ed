//! Fuzz target `api_request_json`: see `meshgroup::fuzzing::api_request_json` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::api_request_json(data));
