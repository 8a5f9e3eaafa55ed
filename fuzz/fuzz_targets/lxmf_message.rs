//! Fuzz target `lxmf_message`: see `meshgroup::fuzzing::lxmf_message` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshgroup::fuzzing::lxmf_message(data));
