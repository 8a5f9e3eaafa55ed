//! Fuzz target `api_request`: see `meshgroup::fuzzing::api_request` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::api_request(data));
