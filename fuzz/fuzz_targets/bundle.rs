#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pgolf_fuzz::bundle(data));
