//! The umoci oracle: for every fixture image, ducc-unpack's flat extraction gives the same tree
//! as `umoci raw unpack` (Debian's umoci 0.4.7) of the same image (or of its gzip/dense twin where
//! umoci cannot read the layers): paths, types, modes, owners, sizes, content hashes, symlink
//! targets, device numbers, hardlink groups, xattrs and mtimes (except of directories that no
//! layer lists, whose time is the unpacker's choice).
//!
//! The images are built by `ducc_tests::fixtures` (cached in the target directory; the Debian one
//! runs debootstrap once). These tests need root (umoci sets owners, devices and
//! `security.capability`), umoci and debootstrap; a missing tool fails the test with what to
//! install.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ducc_tests::fixtures::{self, Image};
use ducc_tests::tree::{Tree, oracle_options, scratch_dir, umoci_tree};
use ducc_unpack::{ExtractOptions, FlatExtractor, LayerDescriptor};

/// Flat-extracts every layer of `image` with ducc-unpack, checking blob digests and diff_ids.
fn ducc_flat(image: &Image, dest: &Path) {
    let mut flat = FlatExtractor::new(dest, &ExtractOptions::new()).expect("flat extractor");
    for layer in &image.layers {
        let descriptor = LayerDescriptor::new(layer.digest.clone(), layer.media_type.clone())
            .with_blob_digest(layer.digest.parse().expect("blob digest"))
            .with_diff_id(layer.diff_id.parse().expect("diff id"));
        let blob = BufReader::new(File::open(image.blob_path(&layer.digest)).expect("open blob"));
        let digests = flat
            .apply_blob(blob, &descriptor)
            .unwrap_or_else(|e| panic!("{}: {e}", image.name));
        assert_eq!(
            digests.diff_id.to_string(),
            layer.diff_id,
            "{}: diff_id",
            image.name
        );
    }
    let report = flat.finish();
    assert!(
        report.warnings.is_empty(),
        "{}: ducc-unpack warned while running as root: {:?}",
        image.name,
        report.warnings
    );
}

/// Why the oracle needs root (CI runs it as root).
const NEEDS_ROOT: &str = "the umoci oracle compares owners, devices and security.capability";

fn check(name: &str) {
    if !ducc_tests::require_root(NEEDS_ROOT) {
        return;
    }
    let image = fixtures::image(name).expect("fixture image");
    let (expected, umoci_chose) = umoci_tree(&image);
    let scratch = scratch_dir(&format!("oracle-{name}")).expect("scratch dir");
    let dest = scratch.path().join("rootfs");
    std::fs::create_dir(&dest).expect("mkdir rootfs");
    ducc_flat(&image, &dest);
    let actual = Tree::scan(&dest).expect("scan ducc tree");
    assert!(
        expected.nodes.len() > 3,
        "umoci's tree of {name} is suspiciously small"
    );
    let options = oracle_options(&image, &umoci_chose);
    expected.assert_same_as(&actual, &options, "umoci", "ducc-unpack flat");
}

macro_rules! oracle {
    ($($test:ident => $image:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($image);
            }
        )*
    };
}

oracle! {
    flat_whiteouts_and_opaque_dirs_match_umoci => "whiteouts",
    flat_type_changes_and_symlinked_parents_match_umoci => "typechange",
    flat_hardlinks_within_and_across_layers_match_umoci => "hardlinks",
    flat_long_and_non_utf8_names_match_umoci => "longnames",
    flat_xattrs_devices_modes_owners_mtimes_match_umoci => "special",
    flat_sparse_files_match_umoci_on_dense_twin => "sparse",
    flat_plain_multimember_and_mislabelled_gzip_match_umoci => "mixed",
    flat_debian_minbase_rootfs_matches_umoci => "debian",
    flat_zstd_whiteouts_match_umoci_on_gzip_twin => "whiteouts-zstd",
    flat_zstd_type_changes_match_umoci_on_gzip_twin => "typechange-zstd",
    flat_zstd_hardlinks_match_umoci_on_gzip_twin => "hardlinks-zstd",
    flat_zstd_long_names_match_umoci_on_gzip_twin => "longnames-zstd",
    flat_zstd_special_files_match_umoci_on_gzip_twin => "special-zstd",
    flat_zstd_sparse_files_match_umoci_on_dense_twin => "sparse-zstd",
    flat_zstd_debian_rootfs_matches_umoci_on_gzip_twin => "debian-zstd",
}

/// The harness itself must see a difference where there is one: a ducc tree of one image
/// against umoci's tree of another fails.
#[test]
fn oracle_detects_a_different_image() {
    if !ducc_tests::require_root(NEEDS_ROOT) {
        return;
    }
    let whiteouts = fixtures::image("whiteouts").expect("fixture");
    let typechange = fixtures::image("typechange").expect("fixture");
    let (expected, _) = umoci_tree(&whiteouts);
    let scratch = scratch_dir("oracle-negative").expect("scratch dir");
    ducc_flat(&typechange, scratch.path());
    let actual = Tree::scan(scratch.path()).expect("scan");
    let differences = expected.diff(&actual, &oracle_options(&whiteouts, &Default::default()));
    assert!(
        !differences.is_empty(),
        "two different images compared equal"
    );
}
