//! Layer directories whose whiteouts depend on the stack below them (issue 28): on a cvmfs
//! stratum 0 an opaque directory is written as a whiteout device for each entry the layers
//! beneath hold in it ([`ducc_unpack::WhiteoutFormat::OverlayDevices`]). A layer directory is
//! written once per blob, so the stack it was written over is recorded beside it
//! (`whiteouts.json`), and an image that reuses it over another stack is checked: its flat tree
//! is right whatever the layer directory holds, but a container that stacks the layer
//! directories (containerd's CernVM-FS snapshotter) would show what those devices miss.

use std::path::Path;

use ducc_cvmfs::{LayerDigest, LayerWhiteouts};
use ducc_unpack::{DiffId, EntryPath};

use crate::engine::Engine;
use crate::events::Event;

/// At most this many paths are named in a warning and its event.
const NAMED: usize = 20;

impl Engine {
    /// The `whiteouts.json` of a layer directory just written over `lower` (bottom first), when
    /// its whiteouts depend on that stack (`directories`, from the layer's report).
    pub(crate) fn whiteouts_record(
        &self,
        lower: &[DiffId],
        directories: &[EntryPath],
    ) -> Option<LayerWhiteouts> {
        if directories.is_empty() {
            return None;
        }
        Some(LayerWhiteouts::new(
            lower,
            directories.iter().map(ToString::to_string).collect(),
        ))
    }

    /// Before an image reuses the layer directory of `layer` over `lower` (bottom first), whose
    /// flattened tree is `below`: when the directory's whiteouts were written for another stack
    /// and miss entries of this one, warns and sends [`Event::LayerWhiteoutsMismatch`]. Never
    /// fails the image (its flat tree does not depend on it): what cannot be read is logged.
    pub(crate) fn check_reused_whiteouts(
        &self,
        image: &str,
        layer: &LayerDigest,
        lower: &[DiffId],
        below: &Path,
    ) {
        let record_path = self
            .publisher
            .published_path(&self.layout.layer_whiteouts(layer));
        let record = match LayerWhiteouts::read(&record_path) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(
                    "{image}: cannot check the whiteouts of the reused layer {layer}: {e}"
                );
                return;
            }
        };
        if record.written_for(lower) {
            return;
        }
        let mut directories = Vec::new();
        for dir in &record.directories {
            match EntryPath::normalise(dir.as_bytes()) {
                Ok(path) => directories.push(path),
                Err(reason) => {
                    tracing::warn!(
                        "{image}: cannot check the whiteouts of the reused layer {layer}: {} names {dir:?}: {reason}",
                        record_path.display()
                    );
                    return;
                }
            }
        }
        let layerfs = self.publisher.published_path(&self.layout.layerfs(layer));
        let uncovered = match ducc_unpack::uncovered_below(&layerfs, below, &directories) {
            Ok(uncovered) => uncovered,
            Err(e) => {
                tracing::warn!(
                    "{image}: cannot check the whiteouts of the reused layer {layer}: {e}"
                );
                return;
            }
        };
        if uncovered.is_empty() {
            return;
        }
        let named: Vec<String> = uncovered
            .iter()
            .take(NAMED)
            .map(|p| format!("/{p}"))
            .collect();
        let more = uncovered.len() - named.len();
        tracing::warn!(
            "{image}: layer {layer} was written over another stack of layers: its whiteouts \
             hide what that stack held, not all this image holds, so a container that \
             containerd's CernVM-FS snapshotter starts from this image shows {} path(s) the \
             image deleted: {}{} (the flat tree is right)",
            uncovered.len(),
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        self.events.event(&Event::LayerWhiteoutsMismatch {
            image: image.to_owned(),
            layer: layer.to_string(),
            written_for: record.lower_diff_ids,
            would_show: named,
            count: uncovered.len(),
        });
    }
}
