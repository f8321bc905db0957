//! libFuzzer target: a manifest or index document and its `Content-Type` through ducc-registry's manifest parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::registry::check_manifest(data);
});
