//! libFuzzer target: `Retry-After` and `created` values through the jiff parsing call pattern of ducc-rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::dates::check(data);
});
