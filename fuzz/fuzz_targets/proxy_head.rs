#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agenfleet_daemon::fuzz::run("proxy_head", data));
