//! libFuzzer target: one value as ducc-registry's `Retry-After` and as the `created` time `ducc_thin::ThinImage::build` reads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::dates::check(data);
});
