//! Fuzz target: see kinetid_wsdump::fuzzcheck::pcap for the properties.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kinetid_wsdump::fuzzcheck::pcap(data));
