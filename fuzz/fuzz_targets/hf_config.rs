#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| frugal_fuzz::hf_config(data));
