//! libFuzzer target: a `WWW-Authenticate` header value through ducc-registry's challenge parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::registry::check_www_authenticate(data);
});
