//! Fuzz target `propagation_response`: see `meshgroup::fuzzing::propagation_response` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::propagation_response(data));
