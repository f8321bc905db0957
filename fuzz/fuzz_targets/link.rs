//! libFuzzer target: a `Link` header value through ducc-registry's `rel="next"` parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::registry::check_link(data);
});
