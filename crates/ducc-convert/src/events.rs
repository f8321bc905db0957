//! What the engine tells while it works: one [`Event`] per step, handed to an [`EventSink`].
//!
//! Events serialise (serde, internally tagged by `action`) to the JSON objects of `ducc -n FILE`:
//! `{"action":"layer_unpack","image":...,"layer":...,"diff_size":...,"time_elapsed_s":...}`. A
//! sink that writes them (adding `time` and `pid`) and one that draws progress bars are the CLI's;
//! a program that embeds the engine brings its own, or [`NoEvents`]. A line of the `-n` file
//! deserialises back into its event (`time` and `pid` are ignored).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Step;

/// One thing that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A run starts.
    StartDucc {},
    /// An image starts converting: its marker does not record this config.
    StartImage {
        /// The image (with its platform, for one platform of a multi-platform image).
        image: String,
        /// Its manifest digest.
        manifest: String,
        /// Its config digest.
        config: String,
        /// How many layers its manifest lists.
        layers: usize,
    },
    /// The image's marker records this config: nothing to do.
    ImageUpToDate {
        /// The image.
        image: String,
        /// Its config digest.
        config: String,
    },
    /// The signature policy accepted the image (before any of its blobs was downloaded).
    SignatureVerified {
        /// The image.
        image: String,
        /// The digest checked (an index's, when the image's tag names an index).
        digest: String,
        /// The policy scope that applied.
        scope: String,
        /// Fingerprints of the keys that verified it (none when the scope accepts anything).
        keys: Vec<String>,
    },
    /// The image belongs to another node's shard (`--shard K/N`): this node leaves it alone.
    ImageOtherShard {
        /// The image.
        image: String,
        /// This node's shard (`K/N`).
        shard: String,
        /// The node (from 1) whose shard the image is in.
        owner: u32,
    },
    /// A layer blob was downloaded into the blob cache.
    LayerDownload {
        /// The image that needed it.
        image: String,
        /// The blob digest.
        layer: String,
        /// Bytes downloaded.
        size: u64,
        /// Seconds the download took.
        time_elapsed_s: f64,
    },
    /// A layer directory was published.
    LayerUnpack {
        /// The image.
        image: String,
        /// The blob digest.
        layer: String,
        /// The uncompressed size of the layer's tar.
        diff_size: u64,
        /// Seconds since the layer started.
        time_elapsed_s: f64,
    },
    /// A layer directory this image was to write was found published inside the layer's lease
    /// (another publisher node wrote it since this node looked): not written again; the image
    /// only joined its `origin.json`. Counted in [`EndStatus::Ok`]'s `layers_found`, not in
    /// `layers_unpacked`.
    LayerFound {
        /// The image.
        image: String,
        /// The blob digest.
        layer: String,
    },
    /// A repository lease this node needs is held by another publisher node (a cvmfs gateway
    /// answered busy): it waits, retrying with backoff, for up to `limit_s` seconds. Followed
    /// by [`Event::LeaseWaitEnd`].
    LeaseWait {
        /// The lease, as `REPO/PATH`.
        lease: String,
        /// The longest it waits, in seconds.
        limit_s: u64,
    },
    /// The wait of [`Event::LeaseWait`] ended.
    LeaseWaitEnd {
        /// The lease, as `REPO/PATH`.
        lease: String,
        /// Seconds waited.
        waited_s: f64,
        /// Whether the lease was granted (else the limit was reached and the step failed).
        granted: bool,
    },
    /// A flat tree was published.
    FlatBuilt {
        /// The image.
        image: String,
        /// Its config digest (the flat tree's name).
        config: String,
        /// Seconds the flat tree took (its layers included).
        time_elapsed_s: f64,
    },
    /// A symlink of the repository was set (a public name, a `.multiarch` link, an alias).
    Symlink {
        /// The link, relative to the repository.
        link: String,
        /// Its target, as written.
        target: String,
    },
    /// The image's entry in the podman store was written (or found as it should be).
    PodmanStore {
        /// The image.
        image: String,
        /// The name podman lists it under.
        name: String,
        /// The podman image id (the config digest's hex).
        id: String,
        /// `added`, `updated` or `unchanged`.
        outcome: String,
    },
    /// A thin image (or index) was pushed, or found already in the registry.
    ThinPush {
        /// The image it stands for.
        image: String,
        /// Where it was pushed.
        thin_image: String,
        /// Its manifest digest.
        digest: String,
        /// `false` when the registry already had it.
        pushed: bool,
    },
    /// What an image's conversion published, once it is in: on a `cvmfs_server` repository the
    /// revisions it took (each ingest and each publish is one) and how its flat tree's files
    /// went in (as graft files pointing at the layers' stored objects, or with their content).
    Published {
        /// The image.
        image: String,
        /// Revisions made for this image (0 with the local publisher).
        revisions: usize,
        /// Flat-tree files published as grafts of stored layer objects (not hashed again).
        grafted_files: u64,
        /// Flat-tree files of layers that went in with their content through a mounted
        /// transaction (0 when the flat tree went in by ingest: then every file was ingested).
        copied_files: u64,
        /// Seconds the commit of the image's new layers waited, once the last of them was
        /// decoded, for the server to finish them.
        layers_publish_s: f64,
        /// Seconds of the image's layers step, from its start until its layers were published:
        /// their decoding and the server's hashing of them (overlapped where the layers stream
        /// into their ingest as they decode, on a stratum 0).
        #[serde(default)]
        layers_s: f64,
        /// Seconds the publish of the rest took (flat tree, links, podman store, marker).
        image_publish_s: f64,
    },
    /// Entries the repository cannot store were left out of the image's layer directories and
    /// flat tree (device files and FIFOs behind a cvmfs gateway); `dropped.json` beside the
    /// marker lists them all.
    EntriesDropped {
        /// The image.
        image: String,
        /// How many entries (paths of a layer) were left out.
        count: usize,
        /// The first few, as `layer path (kind)`.
        first: Vec<String>,
    },
    /// The marker was written: the image is converted.
    Marker {
        /// The image.
        image: String,
        /// The marker's path in the repository.
        marker: String,
    },
    /// An image ended.
    EndImage {
        /// The image.
        image: String,
        /// How it ended.
        #[serde(flatten)]
        status: EndStatus,
    },
    /// A run ended.
    EndDucc {
        /// Seconds the run took.
        time_elapsed_s: f64,
        /// Images converted.
        converted: usize,
        /// Images already up to date.
        up_to_date: usize,
        /// Images left to other nodes (`--shard`).
        #[serde(default)]
        other_shard: usize,
        /// Images that failed (not counting those `ignore_errors` covers).
        failed: usize,
        /// Revisions the run made in the repository (`cvmfs_server` ingests and publishes).
        #[serde(default)]
        revisions: usize,
        /// Waits for a repository lease another publisher node held ([`Event::LeaseWait`]).
        #[serde(default)]
        lease_waits: usize,
    },
    /// An image was taken out of the repository (`delete-image`, `prune`): its markers and
    /// links.
    DeleteImage {
        /// The image's public name.
        image: String,
        /// The paths removed (markers' directories, links).
        paths: Vec<String>,
        /// Whether this was a plan only.
        dry_run: bool,
    },
    /// A wish of `prune` could not be expanded: the recorded images it could match are kept.
    PruneProtected {
        /// The wish.
        wish: String,
        /// Why it could not be expanded.
        error: String,
        /// The images it keeps.
        images: Vec<String>,
    },
    /// Garbage collection removed a piece (or would, on a dry run).
    GcRemove {
        /// `layer`, `flat` or `podman`.
        kind: String,
        /// Its digest or podman image ID.
        id: String,
        /// Its path in the repository.
        path: String,
        /// Bytes of its files.
        bytes: u64,
        /// Whether this was a plan only.
        dry_run: bool,
    },
    /// Garbage collection ended.
    GcEnd {
        /// Pieces removed (or to remove, on a dry run).
        removed: usize,
        /// Their bytes.
        removed_bytes: u64,
        /// Unreferenced pieces waiting for the grace period.
        waiting: usize,
        /// Their bytes.
        waiting_bytes: u64,
        /// Whether this was a plan only.
        dry_run: bool,
        /// Seconds the gc took.
        time_elapsed_s: f64,
    },
    /// Once per run, before the first layer directory is written: layer directories keep raw
    /// `.wh.` whiteout names although the publisher prefers overlay form (behind a cvmfs
    /// gateway), so containers that stack them (containerd's CernVM-FS snapshotter) show the
    /// files their images deleted.
    RawLayerWhiteouts {
        /// The image whose layer came first.
        image: String,
        /// Why overlay form cannot be stored.
        reason: String,
    },
    /// A layer directory written for another stack below is reused, and its whiteouts (written
    /// for what that stack held under the layer's opaque directories) do not hide everything
    /// this image's stack holds there: the image's flat tree is right, but a container that
    /// stacks the layer directories (containerd's CernVM-FS snapshotter) shows these paths.
    LayerWhiteoutsMismatch {
        /// The image.
        image: String,
        /// The layer's blob digest.
        layer: String,
        /// The diff_ids of the stack below the whiteouts were written for, bottom first.
        written_for: Vec<String>,
        /// Paths a snapshotter container would show that the image deleted (at most 20).
        would_show: Vec<String>,
        /// How many such paths there are in all.
        count: usize,
    },
    /// `ducc loop` sleeps until its next pass.
    WaitNextPass {
        /// How long.
        seconds: u64,
    },
}

/// Turns a publisher's lease waits into [`Event::LeaseWait`] and [`Event::LeaseWaitEnd`] and
/// counts them; the engine installs it on its publisher (`Publisher::observe`).
pub(crate) struct LeaseWaits {
    events: Arc<dyn EventSink>,
    count: std::sync::atomic::AtomicUsize,
}

impl LeaseWaits {
    pub(crate) fn new(events: Arc<dyn EventSink>) -> LeaseWaits {
        LeaseWaits {
            events,
            count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Waits begun so far.
    pub(crate) fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl ducc_cvmfs::PublishObserver for LeaseWaits {
    fn lease_busy(&self, lease: &str, limit: std::time::Duration) {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.events.event(&Event::LeaseWait {
            lease: lease.to_owned(),
            limit_s: limit.as_secs(),
        });
    }

    fn lease_wait_ended(&self, lease: &str, waited: std::time::Duration, granted: bool) {
        self.events.event(&Event::LeaseWaitEnd {
            lease: lease.to_owned(),
            waited_s: waited.as_secs_f64(),
            granted,
        });
    }
}

/// How an image ended, in [`Event::EndImage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndStatus {
    /// Converted.
    Ok {
        /// Layer directories written.
        layers_unpacked: usize,
        /// Layer directories it was to write that another publisher node published meanwhile
        /// ([`Event::LayerFound`]): not written by this one.
        #[serde(default)]
        layers_found: usize,
        /// Whether the flat tree was built.
        flat_built: bool,
        /// Seconds the image took.
        time_elapsed_s: f64,
    },
    /// Failed.
    Error {
        /// The step that failed.
        step: Step,
        /// The error with its causes.
        error: String,
        /// Whether the wish list's `ignore_errors` covers it.
        ignored: bool,
    },
}

impl Event {
    /// The image the event is about, where it names one.
    pub fn image(&self) -> Option<&str> {
        match self {
            Event::StartImage { image, .. }
            | Event::ImageUpToDate { image, .. }
            | Event::SignatureVerified { image, .. }
            | Event::ImageOtherShard { image, .. }
            | Event::LayerDownload { image, .. }
            | Event::LayerUnpack { image, .. }
            | Event::LayerFound { image, .. }
            | Event::FlatBuilt { image, .. }
            | Event::PodmanStore { image, .. }
            | Event::ThinPush { image, .. }
            | Event::Marker { image, .. }
            | Event::Published { image, .. }
            | Event::EntriesDropped { image, .. }
            | Event::EndImage { image, .. }
            | Event::DeleteImage { image, .. }
            | Event::RawLayerWhiteouts { image, .. }
            | Event::LayerWhiteoutsMismatch { image, .. } => Some(image),
            Event::StartDucc {}
            | Event::Symlink { .. }
            | Event::EndDucc { .. }
            | Event::LeaseWait { .. }
            | Event::LeaseWaitEnd { .. }
            | Event::WaitNextPass { .. }
            | Event::PruneProtected { .. }
            | Event::GcRemove { .. }
            | Event::GcEnd { .. } => None,
        }
    }
}

/// Where events go. Called from the engine's worker threads, so it must be quick and must not
/// fail: a sink that cannot write logs and goes on (events never stop a conversion).
pub trait EventSink: Send + Sync {
    /// Takes one event.
    fn event(&self, event: &Event);

    /// A blob download of `size` bytes starts (`name` is short, for a progress bar); the
    /// returned observer is told the bytes as they arrive and dropped when the download ends.
    fn download(&self, name: &str, size: u64) -> Box<dyn DownloadObserver> {
        let _ = (name, size);
        Box::new(())
    }
}

/// Watches one blob download (see [`EventSink::download`]).
pub trait DownloadObserver: Send {
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
}

impl DownloadObserver for () {
    fn advance(&self, _bytes: u64) {}
}

/// A sink that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn event(&self, _event: &Event) {}
}

/// Several sinks, each given every event, in order.
#[derive(Clone, Default)]
pub struct Sinks {
    sinks: Vec<Arc<dyn EventSink>>,
}

impl Sinks {
    /// No sink yet.
    pub fn new() -> Sinks {
        Sinks::default()
    }

    /// These sinks and `sink`.
    pub fn with(mut self, sink: Arc<dyn EventSink>) -> Sinks {
        self.sinks.push(sink);
        self
    }
}

impl EventSink for Sinks {
    fn event(&self, event: &Event) {
        for sink in &self.sinks {
            sink.event(event);
        }
    }

    fn download(&self, name: &str, size: u64) -> Box<dyn DownloadObserver> {
        let observers: Vec<Box<dyn DownloadObserver>> = self
            .sinks
            .iter()
            .map(|sink| sink.download(name, size))
            .collect();
        Box::new(observers)
    }
}

impl DownloadObserver for Vec<Box<dyn DownloadObserver>> {
    fn advance(&self, bytes: u64) {
        for observer in self {
            observer.advance(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use serde_json::json;

    /// A sink that keeps every event it is given.
    #[derive(Default)]
    struct Record(Mutex<Vec<Event>>);

    impl EventSink for Record {
        fn event(&self, event: &Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[test]
    fn events_serialise_to_the_json_objects_of_the_notification_file() {
        let cases = [
            (
                Event::LayerUnpack {
                    image: "r/a:1".into(),
                    layer: "sha256:ab".into(),
                    diff_size: 10,
                    time_elapsed_s: 0.5,
                },
                json!({"action": "layer_unpack", "image": "r/a:1", "layer": "sha256:ab",
                       "diff_size": 10, "time_elapsed_s": 0.5}),
            ),
            (
                Event::EndImage {
                    image: "r/a:1".into(),
                    status: EndStatus::Error {
                        step: Step::Layers,
                        error: "boom".into(),
                        ignored: false,
                    },
                },
                json!({"action": "end_image", "image": "r/a:1", "status": "error",
                       "step": "layers", "error": "boom", "ignored": false}),
            ),
            (
                Event::EndImage {
                    image: "r/a:1".into(),
                    status: EndStatus::Ok {
                        layers_unpacked: 2,
                        layers_found: 1,
                        flat_built: true,
                        time_elapsed_s: 1.0,
                    },
                },
                json!({"action": "end_image", "image": "r/a:1", "status": "ok",
                       "layers_unpacked": 2, "layers_found": 1, "flat_built": true,
                       "time_elapsed_s": 1.0}),
            ),
            (
                Event::LayerFound {
                    image: "r/a:1".into(),
                    layer: "sha256:ab".into(),
                },
                json!({"action": "layer_found", "image": "r/a:1", "layer": "sha256:ab"}),
            ),
            (
                Event::LeaseWait {
                    lease: "repo.org/.layers/ab/abcd".into(),
                    limit_s: 120,
                },
                json!({"action": "lease_wait", "lease": "repo.org/.layers/ab/abcd",
                       "limit_s": 120}),
            ),
            (
                Event::LeaseWaitEnd {
                    lease: "repo.org/.layers/ab/abcd".into(),
                    waited_s: 1.5,
                    granted: true,
                },
                json!({"action": "lease_wait_end", "lease": "repo.org/.layers/ab/abcd",
                       "waited_s": 1.5, "granted": true}),
            ),
            (
                Event::EndDucc {
                    time_elapsed_s: 2.0,
                    converted: 1,
                    up_to_date: 0,
                    other_shard: 2,
                    failed: 0,
                    revisions: 4,
                    lease_waits: 1,
                },
                json!({"action": "end_ducc", "time_elapsed_s": 2.0, "converted": 1,
                       "up_to_date": 0, "other_shard": 2, "failed": 0, "revisions": 4,
                       "lease_waits": 1}),
            ),
            (
                Event::LayerWhiteoutsMismatch {
                    image: "r/a:2".into(),
                    layer: "sha256:ab".into(),
                    written_for: vec!["sha256:cd".into()],
                    would_show: vec!["/app/c".into()],
                    count: 1,
                },
                json!({"action": "layer_whiteouts_mismatch", "image": "r/a:2",
                       "layer": "sha256:ab", "written_for": ["sha256:cd"],
                       "would_show": ["/app/c"], "count": 1}),
            ),
            (
                Event::RawLayerWhiteouts {
                    image: "r/a:1".into(),
                    reason: "a gateway".into(),
                },
                json!({"action": "raw_layer_whiteouts", "image": "r/a:1", "reason": "a gateway"}),
            ),
            (
                Event::EntriesDropped {
                    image: "r/a:1".into(),
                    count: 3,
                    first: vec!["sha256:ab dev/null (char)".into()],
                },
                json!({"action": "entries_dropped", "image": "r/a:1", "count": 3,
                       "first": ["sha256:ab dev/null (char)"]}),
            ),
            (Event::StartDucc {}, json!({"action": "start_ducc"})),
            (
                Event::WaitNextPass { seconds: 3 },
                json!({"action": "wait_next_pass", "seconds": 3}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(serde_json::to_value(&event).unwrap(), expected, "{event:?}");
            // A line of the file, with the sink's `time` and `pid`, reads back as the event.
            let mut line = expected.clone();
            line["time"] = json!(1.5e9);
            line["pid"] = json!(7);
            assert_eq!(serde_json::from_value::<Event>(line).unwrap(), event);
        }
    }

    #[test]
    fn lines_written_before_lease_waits_and_found_layers_were_counted_still_read() {
        let end: Event = serde_json::from_value(json!({"action": "end_ducc",
            "time_elapsed_s": 1.0, "converted": 1, "up_to_date": 0, "failed": 0}))
        .unwrap();
        assert!(
            matches!(end, Event::EndDucc { lease_waits: 0, .. }),
            "{end:?}"
        );
        let image: Event = serde_json::from_value(json!({"action": "end_image", "image": "r/a:1",
            "status": "ok", "layers_unpacked": 2, "flat_built": true, "time_elapsed_s": 1.0}))
        .unwrap();
        assert!(
            matches!(
                image,
                Event::EndImage {
                    status: EndStatus::Ok {
                        layers_found: 0,
                        ..
                    },
                    ..
                }
            ),
            "{image:?}"
        );
    }

    #[test]
    fn lease_waits_become_events_and_are_counted_once_per_wait() {
        use ducc_cvmfs::PublishObserver as _;
        let record = Arc::new(Record::default());
        let waits = LeaseWaits::new(record.clone());
        waits.lease_busy("r.org/a", std::time::Duration::from_secs(120));
        waits.lease_wait_ended("r.org/a", std::time::Duration::from_millis(1500), true);
        assert_eq!(waits.count(), 1);
        assert_eq!(
            *record.0.lock().unwrap(),
            [
                Event::LeaseWait {
                    lease: "r.org/a".into(),
                    limit_s: 120
                },
                Event::LeaseWaitEnd {
                    lease: "r.org/a".into(),
                    waited_s: 1.5,
                    granted: true
                }
            ]
        );
    }

    #[test]
    fn every_sink_sees_every_event() {
        let a = Arc::new(Record::default());
        let b = Arc::new(Record::default());
        let sinks = Sinks::new().with(a.clone()).with(b.clone());
        sinks.event(&Event::StartDucc {});
        sinks.download("x", 1).advance(1);
        assert_eq!(a.0.lock().unwrap().len(), 1);
        assert_eq!(b.0.lock().unwrap().len(), 1);
    }
}
