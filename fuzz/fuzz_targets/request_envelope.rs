//! Fuzz target `request_envelope`: see `meshgroup::fuzzing::request_envelope` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::request_envelope(data));
