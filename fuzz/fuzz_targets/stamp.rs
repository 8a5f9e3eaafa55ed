//! Fuzz target `stamp`: see `meshgroup::fuzzing::stamp` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::stamp(data));
