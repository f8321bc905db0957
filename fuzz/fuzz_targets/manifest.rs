//! libFuzzer target: a manifest or index document served by a loopback registry, read through `ducc_registry::Client::fetch_manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::registry::check_manifest(data);
});
