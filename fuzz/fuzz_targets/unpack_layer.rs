//! libFuzzer target: one input drives the layer parser and one of the extractors.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::check(data);
});
