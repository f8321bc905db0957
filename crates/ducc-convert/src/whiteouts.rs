//! Layer directories whose whiteouts depend on the stack below them (issue 28): on a cvmfs
//! stratum 0 an opaque directory is written as a whiteout device for each entry the layers
//! beneath hold in it ([`ducc_unpack::WhiteoutFormat::OverlayDevices`]). A layer directory is
//! written once per blob, so the stack it was written over is recorded beside it
//! (`whiteouts.json`), and an image that reuses it over another stack is checked: its flat tree
//! is right whatever the layer directory holds, but a container that stacks the layer
//! directories (containerd's CernVM-FS snapshotter) would show what those devices miss.

use std::path::Path;

use ducc_cvmfs::LayerWhiteouts;
use ducc_oci::{DiffId, LayerDigest};
use ducc_unpack::EntryPath;

use crate::engine::Engine;
use crate::events::Event;

/// At most this many paths are named in a warning and its event.
const NAMED: usize = 20;

impl Engine {
    /// The `whiteouts.json` of a layer directory just written over `lower` (bottom first), when
    /// its whiteouts depend on that stack (from the layer directory's report: explicit
    /// whiteouts of opaque directories, whiteouts dropped for want of anything to hide).
    pub(crate) fn whiteouts_record(
        &self,
        lower: &[DiffId],
        report: &ducc_unpack::Report,
    ) -> Option<LayerWhiteouts> {
        if report.explicit_whiteout_dirs.is_empty() && report.dropped_whiteouts.is_empty() {
            return None;
        }
        let mut record = LayerWhiteouts::new(
            lower,
            report
                .explicit_whiteout_dirs
                .iter()
                .map(ToString::to_string)
                .collect(),
        );
        record.dropped = report
            .dropped_whiteouts
            .iter()
            .map(ToString::to_string)
            .collect();
        Some(record)
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
        let parse = |paths: &[String]| -> Option<Vec<EntryPath>> {
            let mut parsed = Vec::new();
            for path in paths {
                match EntryPath::normalise(path.as_bytes()) {
                    Ok(p) => parsed.push(p),
                    Err(reason) => {
                        tracing::warn!(
                            "{image}: cannot check the whiteouts of the reused layer {layer}: {} names {path:?}: {reason}",
                            record_path.display()
                        );
                        return None;
                    }
                }
            }
            Some(parsed)
        };
        let (Some(directories), Some(dropped)) =
            (parse(&record.directories), parse(&record.dropped))
        else {
            return;
        };
        let layerfs = self.publisher.published_path(&self.layout.layerfs(layer));
        let mut uncovered = match ducc_unpack::uncovered_below(&layerfs, below, &directories) {
            Ok(uncovered) => uncovered,
            Err(e) => {
                tracing::warn!(
                    "{image}: cannot check the whiteouts of the reused layer {layer}: {e}"
                );
                return;
            }
        };
        uncovered.extend(ducc_unpack::dropped_below(below, &dropped));
        uncovered.sort();
        uncovered.dedup();
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ducc_cvmfs::LocalPublisher;
    use ducc_oci::RepositoryName;

    use super::*;
    use crate::events::EventSink;
    use crate::settings::Settings;

    #[derive(Default)]
    struct Kept(Mutex<Vec<Event>>);

    impl EventSink for Kept {
        fn event(&self, event: &Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    /// An engine on a local repository, the layer `ab..` published with `layerfs/app/new` and
    /// `whiteouts.json` holding `record`, and a stack below holding `app/{a,c,new}`.
    struct Setup {
        _root: tempfile::TempDir,
        engine: Engine,
        events: Arc<Kept>,
        layer: LayerDigest,
        below: std::path::PathBuf,
    }

    fn setup(record: &[u8]) -> Setup {
        let root = tempfile::tempdir().unwrap();
        let repo = RepositoryName::parse("r.example.org").unwrap();
        let publisher = LocalPublisher::open(root.path(), &repo).unwrap();
        let events = Arc::new(Kept::default());
        let engine = Engine::builder(Box::new(publisher), repo)
            .settings(Settings::new().scratch_dir(root.path()))
            .events(events.clone())
            .build()
            .unwrap();
        let layer: LayerDigest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let layerfs = engine
            .publisher()
            .published_path(&engine.layout().layerfs(&layer));
        std::fs::create_dir_all(layerfs.join("app")).unwrap();
        std::fs::write(layerfs.join("app/new"), b"n").unwrap();
        let meta = engine
            .publisher()
            .published_path(&engine.layout().layer_whiteouts(&layer));
        std::fs::create_dir_all(meta.parent().unwrap()).unwrap();
        std::fs::write(&meta, record).unwrap();
        let below = root.path().join("below");
        std::fs::create_dir_all(below.join("app")).unwrap();
        for name in ["a", "c", "new"] {
            std::fs::write(below.join("app").join(name), b"x").unwrap();
        }
        Setup {
            _root: root,
            engine,
            events,
            layer,
            below,
        }
    }

    fn record(lower: &[DiffId], dirs: &[&str]) -> Vec<u8> {
        LayerWhiteouts::new(lower, dirs.iter().map(|d| d.to_string()).collect()).to_json()
    }

    #[test]
    fn a_whiteout_dropped_over_one_stack_shows_over_another_that_has_the_path() {
        let written_for = [DiffId::of(b"first base")];
        let mut dropped = LayerWhiteouts::new(&written_for, Vec::new());
        dropped.dropped = vec!["app/c".into(), "nowhere/x".into()];
        let s = setup(&dropped.to_json());
        s.engine
            .check_reused_whiteouts("r/i:2", &s.layer, &[DiffId::of(b"other base")], &s.below);
        let events = s.events.0.lock().unwrap().clone();
        assert!(
            matches!(&events[..], [Event::LayerWhiteoutsMismatch { would_show, count: 1, .. }]
                if would_show == &["/app/c".to_owned()]),
            "{events:?}"
        );
    }

    #[test]
    fn a_layer_reused_over_another_stack_names_what_its_whiteouts_miss() {
        let written_for = [DiffId::of(b"first base")];
        let s = setup(&record(&written_for, &["app"]));
        s.engine
            .check_reused_whiteouts("r/i:2", &s.layer, &[DiffId::of(b"other base")], &s.below);
        let events = s.events.0.lock().unwrap().clone();
        assert_eq!(
            events,
            [Event::LayerWhiteoutsMismatch {
                image: "r/i:2".into(),
                layer: s.layer.to_string(),
                written_for: vec![written_for[0].to_string()],
                would_show: vec!["/app/a".into(), "/app/c".into()],
                count: 2,
            }]
        );
    }

    #[test]
    fn a_layer_reused_over_its_own_stack_says_nothing() {
        let written_for = [DiffId::of(b"first base")];
        let s = setup(&record(&written_for, &["app"]));
        s.engine
            .check_reused_whiteouts("r/i:1", &s.layer, &written_for, &s.below);
        assert!(s.events.0.lock().unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_whiteouts_record_is_logged_and_the_image_goes_on() {
        for bad in [&b"{\"lower-diff-ids\": ["[..], &record(&[], &["../up"])] {
            let s = setup(bad);
            s.engine.check_reused_whiteouts(
                "r/i:2",
                &s.layer,
                &[DiffId::of(b"other base")],
                &s.below,
            );
            assert!(s.events.0.lock().unwrap().is_empty());
        }
    }

    #[test]
    fn a_publisher_that_stores_overlay_form_tells_nothing_about_raw_whiteouts() {
        let s = setup(b"{}");
        // A local publisher that may write overlay form has nothing to tell.
        s.engine.tell_raw_whiteouts("r/i:1");
        assert!(s.events.0.lock().unwrap().is_empty());
    }
}
