//! The engine's decisions with images held in memory (no registry, no network), published by
//! the local publisher into a temporary directory: which layers are planned and written, which
//! platform of an index is converted, which blobs are fetched and in which order, and when an
//! image is up to date. The source records every read, so each test asserts what was fetched.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ducc_cvmfs::{LocalPublisher, RepositoryState};
use ducc_oci::{BlobDigest, ConfigDigest, ImageRef, RepositoryName};

use crate::source::memory::{InMemorySource, TAR, TestLayer};
use crate::{Engine, Event, EventSink, ImageResult, Outcome, Settings, Step, StopToken};

const REPOSITORY: &str = "library/app";

fn image(tag: &str) -> ImageRef {
    ImageRef::parse(&format!("registry.example/{REPOSITORY}:{tag}")).expect("a valid image")
}

/// An engine over `source` writing into a local repository under `root`, one layer download
/// at a time (so the order of fetches is the order of scheduling), without thin images or
/// podman store.
fn engine(source: &Arc<InMemorySource>, root: &Path, settings: Settings) -> Engine {
    recording_engine(source, root, settings).0
}

/// [`engine`], with the layer directories it writes recorded.
fn recording_engine(
    source: &Arc<InMemorySource>,
    root: &Path,
    settings: Settings,
) -> (Engine, Arc<LayerEvents>) {
    let repo = RepositoryName::parse("test.example.org").expect("a valid name");
    let publisher = LocalPublisher::open(root, &repo).expect("a local repository");
    let events = Arc::new(LayerEvents::default());
    let engine = Engine::builder(Box::new(publisher), repo)
        .settings(
            settings
                .scratch_dir(&root.join("scratch"))
                .parallel_layers(1)
                .skip_thin(true)
                .skip_podman(true),
        )
        .source(Arc::clone(source) as Arc<dyn crate::ImageSource>)
        .events(Arc::clone(&events) as Arc<dyn EventSink>)
        .build()
        .expect("an engine");
    (engine, events)
}

/// The layer directories an engine wrote ([`Event::LayerUnpack`]) and found written inside
/// their lease ([`Event::LayerFound`]), in order.
#[derive(Default)]
struct LayerEvents {
    unpacked: Mutex<Vec<String>>,
    found: Mutex<Vec<String>>,
}

impl EventSink for LayerEvents {
    fn event(&self, event: &Event) {
        match event {
            Event::LayerUnpack { layer, .. } => {
                self.unpacked
                    .lock()
                    .expect("not poisoned")
                    .push(layer.clone());
            }
            Event::LayerFound { layer, .. } => {
                self.found.lock().expect("not poisoned").push(layer.clone());
            }
            _ => {}
        }
    }
}

fn convert(engine: &Engine, image: &ImageRef) -> Vec<ImageResult> {
    engine.convert_image(image, None, &StopToken::new())
}

/// The one result of a single-image conversion, which must have succeeded.
fn converted(results: Vec<ImageResult>) -> Outcome {
    assert_eq!(results.len(), 1, "{results:?}");
    let result = results.into_iter().next().expect("one result");
    match result.into_result() {
        Ok(outcome) => outcome,
        Err(failure) => panic!("conversion failed: {}", chain(failure.error())),
    }
}

fn written(layers_unpacked: usize, flat_built: bool) -> Outcome {
    Outcome::Converted {
        layers_unpacked,
        flat_built,
        thin: None,
    }
}

/// An error with its causes, as the CLI prints them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn state(engine: &Engine) -> RepositoryState<'_> {
    RepositoryState::new(engine.publisher(), engine.layout())
}

fn sorted(mut digests: Vec<BlobDigest>) -> Vec<BlobDigest> {
    digests.sort();
    digests
}

fn layers_abc() -> [TestLayer; 3] {
    [
        TestLayer::files(&[("etc/a", "a")]),
        TestLayer::files(&[("usr/b", "b")]),
        TestLayer::files(&[("opt/c", "c")]),
    ]
}

#[test]
fn planning_writes_a_layer_listed_twice_once_and_leaves_foreign_layers_out() {
    let [a, b, _] = layers_abc();
    let foreign = TestLayer::foreign("windows base layer");
    let mut source = InMemorySource::default();
    let (_, config) = source.add_image(
        REPOSITORY,
        Some("1"),
        &[a.clone(), foreign.clone(), a.clone(), b.clone()],
        "linux/amd64",
    );
    let source = Arc::new(source);
    let root = tempfile::tempdir().expect("a temporary directory");
    let (engine, events) = recording_engine(&source, root.path(), Settings::new());

    assert_eq!(converted(convert(&engine, &image("1"))), written(2, true));
    // a is written where it first appears, and not tried again (found in its lease).
    assert_eq!(
        *events.unpacked.lock().expect("not poisoned"),
        [a.digest().to_string(), b.digest().to_string()]
    );
    assert!(events.found.lock().expect("not poisoned").is_empty());
    // The source does not have the foreign blob: asking for it would have failed.
    assert_eq!(
        sorted(source.reads().blobs),
        sorted(vec![a.digest(), b.digest()])
    );
    assert!(state(&engine).layer_complete(&a.digest()));
    assert!(state(&engine).layer_complete(&b.digest()));
    assert!(!state(&engine).layer_complete(&foreign.digest()));
    assert!(state(&engine).flat_complete(&config));
    let flat = engine
        .publisher()
        .published_path(&engine.layout().flat_image(&config));
    assert_eq!(
        std::fs::read_to_string(flat.join("etc/a")).ok().as_deref(),
        Some("a")
    );
    assert_eq!(
        std::fs::read_to_string(flat.join("usr/b")).ok().as_deref(),
        Some("b")
    );
}

#[test]
fn layers_are_downloaded_bottom_first() {
    let layers = layers_abc();
    let mut source = InMemorySource::default();
    source.add_image(REPOSITORY, Some("1"), &layers, "linux/amd64");
    let source = Arc::new(source);
    let root = tempfile::tempdir().expect("a temporary directory");
    let engine = engine(&source, root.path(), Settings::new());

    assert_eq!(converted(convert(&engine, &image("1"))), written(3, true));
    let reads = source.reads();
    assert_eq!(
        reads.blobs,
        layers.iter().map(TestLayer::digest).collect::<Vec<_>>()
    );
    assert_eq!(reads.configs.len(), 1, "{reads:?}");
}

#[test]
fn an_image_whose_marker_is_up_to_date_fetches_nothing_beyond_its_manifest() {
    let [a, b, _] = layers_abc();
    let mut source = InMemorySource::default();
    source.add_image(REPOSITORY, Some("1"), &[a, b], "linux/amd64");
    let source = Arc::new(source);
    let root = tempfile::tempdir().expect("a temporary directory");
    let engine = engine(&source, root.path(), Settings::new());
    converted(convert(&engine, &image("1")));
    source.forget_reads();

    assert_eq!(converted(convert(&engine, &image("1"))), Outcome::UpToDate);
    let reads = source.reads();
    assert_eq!(reads.manifests, ["1"]);
    assert!(reads.configs.is_empty(), "{reads:?}");
    assert!(reads.blobs.is_empty(), "{reads:?}");
}

/// Converts `layers` as `library/app:1`, empties the blob cache, and returns a second engine
/// on the same repository with `settings`.
fn converted_once(
    layers: &[TestLayer],
    settings: Settings,
) -> (Arc<InMemorySource>, tempfile::TempDir, Engine, ConfigDigest) {
    let mut source = InMemorySource::default();
    let (manifest, config) = source.add_image(REPOSITORY, Some("1"), layers, "linux/amd64");
    // The same manifest under a second tag: a second image slot on the same trees.
    let document: serde_json::Value =
        serde_json::from_slice(&manifest_bytes(&source, &manifest)).expect("json");
    source.add_manifest(REPOSITORY, Some("2"), &document);
    let source = Arc::new(source);
    let root = tempfile::tempdir().expect("a temporary directory");
    let first = engine(&source, root.path(), Settings::new());
    converted(convert(&first, &image("1")));
    first.clean_cache();
    drop(first);
    source.forget_reads();
    let second = engine(&source, root.path(), settings);
    (source, root, second, config)
}

fn manifest_bytes(
    source: &InMemorySource,
    digest: &ducc_registry::oci_spec::image::Digest,
) -> Vec<u8> {
    use crate::ImageSource as _;
    let repository = ducc_registry::Repository::of(&image("1"));
    source
        .fetch_manifest(
            &repository,
            &ducc_registry::Reference::digest(digest.clone()),
            &ducc_registry::ManifestSelection::Index,
        )
        .expect("the manifest just added")
        .into_bytes()
}

#[test]
fn converting_again_with_layers_and_flat_tree_present_fetches_no_blob() {
    let [a, b, _] = layers_abc();
    let (source, _root, engine, _) = converted_once(&[a, b], Settings::new().convert_again(true));

    assert_eq!(converted(convert(&engine, &image("1"))), written(0, false));
    let reads = source.reads();
    assert_eq!(reads.configs.len(), 1, "{reads:?}");
    assert!(reads.blobs.is_empty(), "{reads:?}");
}

#[test]
fn overwrite_layers_fetches_and_writes_every_layer_again() {
    let [a, b, _] = layers_abc();
    let (source, _root, engine, _) = converted_once(
        &[a.clone(), b.clone()],
        Settings::new().convert_again(true).overwrite_layers(true),
    );

    assert_eq!(converted(convert(&engine, &image("1"))), written(2, false));
    assert_eq!(source.reads().blobs, [a.digest(), b.digest()]);
}

#[test]
fn with_the_flat_tree_present_only_a_missing_layer_is_fetched() {
    let [a, b, c] = layers_abc();
    let (source, _root, engine, config) =
        converted_once(&[a.clone(), b.clone(), c.clone()], Settings::new());
    // Layer b's directory goes; the flat tree of the image stays.
    let mut tx = engine
        .publisher()
        .begin(&engine.layout().layer_dir(&b.digest()))
        .expect("a transaction");
    tx.remove(&engine.layout().layer_info(&b.digest()))
        .expect("removed");
    tx.commit().expect("committed");
    assert!(!state(&engine).layer_complete(&b.digest()));
    assert!(state(&engine).flat_complete(&config));

    // The second tag: its marker is missing, its trees but b are there.
    assert_eq!(converted(convert(&engine, &image("2"))), written(1, false));
    assert_eq!(source.reads().blobs, [b.digest()]);
    assert!(state(&engine).layer_complete(&b.digest()));
}

#[test]
fn without_the_flat_tree_layers_already_written_are_fetched_for_it_but_not_written() {
    let [a, b, c] = layers_abc();
    let mut source = InMemorySource::default();
    source.add_image(
        REPOSITORY,
        Some("1"),
        &[a.clone(), b.clone()],
        "linux/amd64",
    );
    let (_, config) = source.add_image(
        REPOSITORY,
        Some("other"),
        &[a.clone(), c.clone()],
        "linux/amd64",
    );
    let source = Arc::new(source);
    let root = tempfile::tempdir().expect("a temporary directory");
    let engine = engine(&source, root.path(), Settings::new());
    converted(convert(&engine, &image("1")));
    engine.clean_cache();
    source.forget_reads();

    assert_eq!(
        converted(convert(&engine, &image("other"))),
        written(1, true)
    );
    assert_eq!(source.reads().blobs, [a.digest(), c.digest()]);
    assert!(state(&engine).flat_complete(&config));
}

/// An index of an amd64 image (layer a), an arm64 image (layer b) and an attestation manifest
/// (`unknown/unknown`, layer c) under `library/app:1`.
fn multi_platform() -> (
    Arc<InMemorySource>,
    [TestLayer; 3],
    ducc_registry::oci_spec::image::Digest,
) {
    let [a, b, c] = layers_abc();
    let mut source = InMemorySource::default();
    let (amd64, _) = source.add_image(REPOSITORY, None, std::slice::from_ref(&a), "linux/amd64");
    let (arm64, _) = source.add_image(REPOSITORY, None, std::slice::from_ref(&b), "linux/arm64");
    let (attestation, _) = source.add_image(
        REPOSITORY,
        None,
        std::slice::from_ref(&c),
        "unknown/unknown",
    );
    source.add_index(
        REPOSITORY,
        "1",
        &[
            (amd64, "linux/amd64"),
            (arm64, "linux/arm64"),
            (attestation.clone(), "unknown/unknown"),
        ],
    );
    (Arc::new(source), [a, b, c], attestation)
}

#[test]
fn multi_arch_converts_each_linux_platform_of_an_index_and_no_attestation() {
    let (source, [a, b, c], attestation) = multi_platform();
    let root = tempfile::tempdir().expect("a temporary directory");
    let engine = engine(&source, root.path(), Settings::new().multi_arch(true));

    let results = convert(&engine, &image("1"));
    let labels: Vec<&str> = results.iter().map(ImageResult::image).collect();
    let whole = image("1").whole_name();
    assert_eq!(
        labels,
        [
            format!("{whole} (linux/amd64)"),
            format!("{whole} (linux/arm64)")
        ]
    );
    for result in &results {
        assert_eq!(
            result.result().as_ref().ok(),
            Some(&written(1, true)),
            "{result:?}"
        );
    }
    let reads = source.reads();
    assert_eq!(
        sorted(reads.blobs.clone()),
        sorted(vec![a.digest(), b.digest()])
    );
    assert!(
        !reads.manifests.contains(&attestation.to_string()),
        "{reads:?}"
    );
    assert!(!state(&engine).layer_complete(&c.digest()));
}

#[test]
fn the_platform_asked_for_is_chosen_from_an_index() {
    let (source, [_, b, _], _) = multi_platform();
    let root = tempfile::tempdir().expect("a temporary directory");
    let settings = Settings::new().platform("linux/arm64".parse().expect("a platform"));
    let engine = engine(&source, root.path(), settings);

    assert_eq!(converted(convert(&engine, &image("1"))), written(1, true));
    assert_eq!(source.reads().blobs, [b.digest()]);
}

#[test]
fn an_index_without_the_platform_asked_for_fails_at_the_manifest_naming_what_it_has() {
    let (source, _, _) = multi_platform();
    let root = tempfile::tempdir().expect("a temporary directory");
    let settings = Settings::new().platform("linux/s390x".parse().expect("a platform"));
    let engine = engine(&source, root.path(), settings);

    let results = convert(&engine, &image("1"));
    assert_eq!(results.len(), 1);
    let failure = results[0].failure().expect("a failure");
    assert_eq!(failure.step(), Step::Manifest);
    let message = chain(failure.error());
    for part in ["library/app:1", "linux/s390x", "linux/amd64", "linux/arm64"] {
        assert!(message.contains(part), "{part} in {message}");
    }
    let reads = source.reads();
    assert!(
        reads.configs.is_empty() && reads.blobs.is_empty(),
        "{reads:?}"
    );
}

/// A manifest whose config or layer is addressed by sha512: the repository layout names blobs
/// by sha256 hex, so it fails before any download, naming the image and the digest.
#[test]
fn a_blob_addressed_by_another_algorithm_than_sha256_fails_before_any_download() {
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let [a, ..] = layers_abc();
    let mut source = InMemorySource::default();
    let (_, config) = source.add_image(REPOSITORY, None, std::slice::from_ref(&a), "linux/amd64");
    let descriptor = |media_type: &str, digest: &str| serde_json::json!({"mediaType": media_type, "digest": digest, "size": 10});
    let config_type = "application/vnd.oci.image.config.v1+json";
    let cases = [
        // (tag, config digest, layer digest)
        ("sha512-config", sha512.clone(), a.digest().to_string()),
        ("sha512-layer", config.to_string(), sha512.clone()),
    ];
    for (tag, config_digest, layer_digest) in &cases {
        source.add_manifest(
            REPOSITORY,
            Some(tag),
            &serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptor(config_type, config_digest),
                "layers": [descriptor(TAR, layer_digest)],
            }),
        );
    }
    let source = Arc::new(source);
    let root = tempfile::tempdir().expect("a temporary directory");
    let engine = engine(&source, root.path(), Settings::new());

    for (tag, _, _) in cases {
        let results = convert(&engine, &image(tag));
        let failure = results[0].failure().expect("a failure");
        assert_eq!(failure.step(), Step::Manifest, "{tag}");
        let message = chain(failure.error());
        assert!(
            message.contains(&format!("library/app:{tag}")) && message.contains(&sha512),
            "{tag}: {message}"
        );
        assert!(message.contains("only sha256"), "{tag}: {message}");
    }
    let reads = source.reads();
    assert!(
        reads.configs.is_empty() && reads.blobs.is_empty(),
        "{reads:?}"
    );
}
