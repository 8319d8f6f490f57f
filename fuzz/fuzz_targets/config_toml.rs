#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agenfleet_daemon::fuzz::run("config_toml", data));
