//! libFuzzer target: an image reference through `ducc_oci::ImageRef::parse` (and back through its display).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::wishlist::check_reference(data);
});
