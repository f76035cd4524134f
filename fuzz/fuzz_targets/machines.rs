//! Fuzz target: see kinetid_wsdump::fuzzcheck::machines for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kinetid_wsdump::fuzzcheck::machines(data));
