//! The overlayfs consumer test: each layer unpacked into its own directory in overlay whiteout
//! form (char device 0/0, `trusted.overlay.opaque=y`), stacked with
//! `mount -t overlay -o ro,lowerdir=TOP:...:BOTTOM`, must show the same tree as ducc-unpack's flat
//! extraction of the same image. This is how containerd's cvmfs snapshotter and podman consume
//! `.layers/<hh>/<hex>/layerfs`.
//!
//! Each image's layer directories are written both ways: together with the flat tree (one decode
//! per layer, as `ducc convert` does) and each alone on top of the lower layer directories. Both
//! overlays must equal the flat tree in everything, directory times of implicit parents included
//! (issue 14). The one exception is hardlink groups: a hardlink to a lower-layer file is
//! materialised as a copy in its layer directory, and overlayfs reports its own inode numbers.
//! Mounting needs root (or CAP_SYS_ADMIN); where it is refused the test prints why and stops.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ducc_tests::fixtures::{self, Image};
use ducc_tests::overlay::OverlayMount;
use ducc_tests::tree::{Options, Tree, scratch_dir};
use ducc_unpack::{
    ExtractOptions, FlatExtractor, LayerDescriptor, LayerDirOptions, Privileges, WhiteoutFormat,
    unpack_layer_dir,
};

fn descriptor(layer: &fixtures::LayerInfo) -> LayerDescriptor {
    LayerDescriptor::new(layer.digest.clone(), layer.media_type.clone())
        .with_blob_digest(layer.digest.parse().expect("blob digest"))
        .with_diff_id(layer.diff_id.parse().expect("diff id"))
}

fn open_blob(image: &Image, digest: &str) -> BufReader<File> {
    BufReader::new(File::open(image.blob_path(digest)).expect("open blob"))
}

/// Unpacks every layer into `base/<n>`, bottom first; returns the directories bottom first.
fn unpack_layers(image: &Image, base: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (n, layer) in image.layers.iter().enumerate() {
        let dest = base.join(n.to_string());
        let lower: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
        let options = LayerDirOptions::new()
            .whiteouts(WhiteoutFormat::Overlay)
            .lower_layers(lower)
            .privileges(Privileges::Root);
        unpack_layer_dir(
            open_blob(image, &layer.digest),
            &descriptor(layer),
            &dest,
            &options,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", image.name));
        dirs.push(dest);
    }
    dirs
}

/// The flat tree in `flat` and every layer directory in `base/together-<n>`, in one decode per
/// layer; returns the directories bottom first.
fn flatten_with_layers(image: &Image, flat: &Path, base: &Path) -> Vec<PathBuf> {
    let mut extractor = FlatExtractor::new(flat, &ExtractOptions::new()).expect("flat extractor");
    let mut dirs = Vec::new();
    for (n, layer) in image.layers.iter().enumerate() {
        let dest = base.join(format!("together-{n}"));
        std::fs::create_dir(&dest).expect("mkdir layer");
        let options = LayerDirOptions::new()
            .whiteouts(WhiteoutFormat::Overlay)
            .privileges(Privileges::Root);
        extractor
            .apply_blob_with_layer_dir(
                open_blob(image, &layer.digest),
                &descriptor(layer),
                &dest,
                &options,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", image.name));
        dirs.push(dest);
    }
    extractor.finish();
    dirs
}

fn flatten(image: &Image, dest: &Path) {
    let mut flat = FlatExtractor::new(dest, &ExtractOptions::new()).expect("flat extractor");
    for layer in &image.layers {
        flat.apply_blob(open_blob(image, &layer.digest), &descriptor(layer))
            .unwrap_or_else(|e| panic!("{}: {e}", image.name));
    }
    flat.finish();
}

fn check(name: &str) {
    let image = fixtures::image(name).expect("fixture image");
    let scratch = scratch_dir(&format!("overlay-{name}")).expect("scratch dir");
    let flat = scratch.path().join("flat");
    std::fs::create_dir(&flat).expect("mkdir flat");
    flatten(&image, &flat);
    let layers_dir = scratch.path().join("layers");
    std::fs::create_dir(&layers_dir).expect("mkdir layers");
    let alone = unpack_layers(&image, &layers_dir);
    let together_flat = scratch.path().join("together-flat");
    std::fs::create_dir(&together_flat).expect("mkdir flat");
    let together = flatten_with_layers(&image, &together_flat, &layers_dir);
    let flat_tree = Tree::scan(&flat).expect("scan flat tree");
    // Writing the layer directories on the way does not change the flat tree.
    flat_tree.assert_same_as(
        &Tree::scan(&together_flat).expect("scan flat tree"),
        &Options::default(),
        "flat extraction",
        "flat extraction with the layer dirs",
    );
    for (label, layers) in [("alone", &alone), ("together", &together)] {
        let merged = scratch.path().join(format!("merged-{label}"));
        std::fs::create_dir(&merged).expect("mkdir merged");
        let mount = match OverlayMount::mount(layers, &merged) {
            Ok(mount) => mount,
            Err(reason) => {
                ducc_tests::skip_or_fail(&format!(
                    "overlay mounting is not allowed here ({reason}); run as root to check the layer dirs"
                ));
                return;
            }
        };
        let merged_tree = Tree::scan(&merged).expect("scan merged view");
        drop(mount);
        // Hardlink groups are the only exception; implicit directories' times are compared.
        let options = Options {
            hardlinks: false,
            ..Options::default()
        };
        flat_tree.assert_same_as(
            &merged_tree,
            &options,
            "flat extraction",
            &format!("overlay of the layer dirs written {label}"),
        );
    }
}

macro_rules! overlay {
    ($($test:ident => $image:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($image);
            }
        )*
    };
}

overlay! {
    overlay_of_whiteout_layers_equals_flat_tree => "whiteouts",
    overlay_of_type_change_layers_equals_flat_tree => "typechange",
    overlay_of_hardlink_layers_equals_flat_tree => "hardlinks",
    overlay_of_long_name_layers_equals_flat_tree => "longnames",
    overlay_of_special_file_layers_equals_flat_tree => "special",
    overlay_of_sparse_layer_equals_flat_tree => "sparse",
    overlay_of_debian_layers_equals_flat_tree => "debian",
}
