//! libFuzzer target: a wish-list file through `ducc_wishlist::WishList::from_yaml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ducc_unpack_fuzz::wishlist::check_wishlist(data);
});
