//! Fuzz target `client_reply`: see `meshgroup::fuzzing::client_reply` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::client_reply(data));
