#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| frugal_fuzz::chat_template(data));
