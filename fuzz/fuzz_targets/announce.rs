//! Fuzz target `announce`: see `meshgroup::fuzzing::announce` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::announce(data));
