//! The public extraction entry points: layer directories, flat trees, verbatim tar streams.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::apply::{Applier, Target};
use crate::error::Error;
use crate::options::{ExtractOptions, LayerDirOptions};
use crate::report::Report;
use crate::stream::{LayerDescriptor, LayerDigests, LayerReader};
use ducc_oci::DiffId;

/// The result of unpacking one layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOutcome {
    /// What the extraction did.
    pub report: Report,
    /// The verified digests and sizes of the blob.
    pub digests: LayerDigests,
}

/// Extracts one layer's **uncompressed** tar stream into `dest`, an existing empty directory, as
/// a layer directory (`.layers/<hh>/<hex>/layerfs`): whiteouts in the form the options name, a
/// hardlink to a file outside the layer copied from the lower layers (or an error naming it).
///
/// Does not check digests: read the tar through a [`LayerReader`] and call its `finish`, or use
/// [`unpack_layer_dir`]. Independent layers may be extracted on several threads at once.
///
/// # Errors
/// [`Error::Destination`] when `dest` is not an existing empty directory; any parse, entry or
/// filesystem error, naming the layer and entry. On error `dest` holds a partial tree.
pub fn extract_layer_dir<R: Read>(
    tar: R,
    layer: &str,
    dest: &Path,
    options: &LayerDirOptions,
) -> Result<Report, Error> {
    let mut applier = Applier::open(
        dest,
        Target::LayerDir {
            whiteouts: options.whiteouts,
            lower_layers: options.lower_layers.clone(),
            leave_out_special: options.leave_out_special_files,
        },
        options.privileges,
        options.limits,
    )?;
    applier.apply_tar(tar, layer)?;
    Ok(applier.into_report())
}

/// Unpacks one layer blob (compressed as its media type and magic bytes say) into the new
/// directory `dest`, checking the digests the descriptor names.
///
/// The tree is built in a temporary sibling directory and renamed to `dest` only when the whole
/// blob was read and both digests match, so a failure never leaves a partial `dest` behind.
///
/// # Errors
/// [`Error::Destination`] when `dest` exists or its parent does not; [`Error::Read`] for a
/// truncated or corrupt blob; [`Error::BlobDigestMismatch`] / [`Error::DiffIdMismatch`];
/// any error of [`extract_layer_dir`].
pub fn unpack_layer_dir<R: Read + Send>(
    blob: R,
    descriptor: &LayerDescriptor,
    dest: &Path,
    options: &LayerDirOptions,
) -> Result<LayerOutcome, Error> {
    let staging = staging_path(dest)?;
    std::fs::create_dir(&staging).map_err(|source| Error::DestinationIo {
        path: staging.clone(),
        op: "create staging directory",
        source,
    })?;
    let result = pipelined(blob, descriptor, &options.limits, |tar| {
        extract_layer_dir(tar, &descriptor.name, &staging, options)
    })
    .map(|(report, digests)| LayerOutcome { report, digests });
    match result {
        Ok(outcome) => {
            std::fs::rename(&staging, dest).map_err(|source| {
                let _ = remove_tree(&staging);
                Error::DestinationIo {
                    path: dest.to_owned(),
                    op: "move the finished layer into place",
                    source,
                }
            })?;
            Ok(outcome)
        }
        Err(e) => {
            if let Err(cleanup) = remove_tree(&staging) {
                tracing::warn!(path = %staging.display(), error = %cleanup, "could not remove a failed layer's staging directory");
            }
            Err(e)
        }
    }
}

/// Size of the uncompressed chunks handed from the decompressing thread to the extracting one:
/// large, so that the two threads hand over (and wake each other) rarely.
const CHUNK: usize = 1024 * 1024;
/// Chunks in flight between the two threads (bounds the memory used: about 8 MiB).
const CHUNKS_IN_FLIGHT: usize = 6;

/// Decompresses `blob` on a second thread and hashes the uncompressed bytes on a third while
/// `consume` parses and writes the tar on this one, so that inflating, hashing and the
/// filesystem work overlap (on two cores the hash runs wherever there is room). Returns what
/// `consume` returned and the verified digests; a failure to read the blob or a digest mismatch
/// wins over the error `consume` saw because of it.
fn pipelined<R: Read + Send, T>(
    blob: R,
    descriptor: &LayerDescriptor,
    limits: &crate::Limits,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, Error>,
) -> Result<(T, LayerDigests), Error> {
    use std::sync::{Arc, mpsc};
    let mut reader = LayerReader::open_with_limits(blob, descriptor, limits)?;
    reader.hash_uncompressed_elsewhere();
    std::thread::scope(|scope| {
        let (chunks, incoming) =
            mpsc::sync_channel::<std::io::Result<Arc<Vec<u8>>>>(CHUNKS_IN_FLIGHT);
        let (to_hash, hash_incoming) = mpsc::sync_channel::<Arc<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
        let hash_recycle = recycle.clone();
        let hasher = scope.spawn(move || {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            for chunk in hash_incoming {
                hasher.update(chunk.as_slice());
                give_back(chunk, &hash_recycle);
            }
            DiffId::from_sha256_bytes(hasher.finalize().into())
        });
        let producer = scope.spawn(move || -> Result<LayerReader<R>, Error> {
            // Once the tar has ended, the rest of the stream (padding, trailing blocks) still
            // goes to the hasher: the diff_id covers every byte.
            let mut tar_ended = false;
            loop {
                let mut chunk = recycled.try_recv().unwrap_or_default();
                chunk.resize(CHUNK, 0);
                let mut filled = 0;
                let mut failed = None;
                while filled < CHUNK {
                    match reader.read(&mut chunk[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    let _ = chunks.send(Err(copy_with_causes(&e)));
                    return Err(reader.take_read_error().unwrap_or(Error::Read {
                        layer: descriptor.name.clone(),
                        what: "compressed",
                        source: e,
                    }));
                }
                if filled == 0 {
                    break;
                }
                chunk.truncate(filled);
                let chunk = Arc::new(chunk);
                if to_hash.send(Arc::clone(&chunk)).is_err() {
                    return Err(Error::Read {
                        layer: descriptor.name.clone(),
                        what: "uncompressed",
                        source: std::io::Error::other("the hashing thread ended early"),
                    });
                }
                if !tar_ended && chunks.send(Ok(chunk)).is_err() {
                    tar_ended = true;
                }
            }
            Ok(reader)
        });
        let mut tar = ChannelReader {
            incoming,
            recycle,
            current: Arc::new(Vec::new()),
            position: 0,
        };
        let consumed = consume(&mut tar);
        drop(tar);
        let reader = match producer.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let diff_id = match hasher.join() {
            Ok(diff_id) => diff_id,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let digests = reader.and_then(|reader| reader.finish_with_diff_id(diff_id));
        match (consumed, digests) {
            (Ok(value), Ok(digests)) => Ok((value, digests)),
            (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
        }
    })
}

/// Hands a chunk back for reuse once its last holder is done with it.
/// A copy of `e` for the other thread (an `io::Error` cannot be cloned) whose message carries
/// its causes too (`cannot write blob ...: No space left on device`): whichever thread's error is
/// reported, the cause is not lost.
fn copy_with_causes(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), ducc_oci::error_chain(e))
}

fn give_back(chunk: std::sync::Arc<Vec<u8>>, recycle: &std::sync::mpsc::Sender<Vec<u8>>) {
    if let Some(chunk) = std::sync::Arc::into_inner(chunk) {
        let _ = recycle.send(chunk);
    }
}

/// The extracting side of [`pipelined`]: reads the chunks the decompressing thread sends.
struct ChannelReader {
    incoming: std::sync::mpsc::Receiver<std::io::Result<std::sync::Arc<Vec<u8>>>>,
    recycle: std::sync::mpsc::Sender<Vec<u8>>,
    current: std::sync::Arc<Vec<u8>>,
    position: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.current.len() {
            match self.incoming.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    give_back(used, &self.recycle);
                    self.position = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// Where a layer directory is built before it is renamed to `dest`.
fn staging_path(dest: &Path) -> Result<PathBuf, Error> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(Error::Destination {
            path: dest.to_owned(),
            reason: "already exists".to_owned(),
        });
    }
    let Some(name) = dest.file_name() else {
        return Err(Error::Destination {
            path: dest.to_owned(),
            reason: "has no final component".to_owned(),
        });
    };
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(name);
    staging_name.push(format!(".partial-{}", std::process::id()));
    Ok(dest.with_file_name(staging_name))
}

/// Removes a tree this crate built, making directories writable first (unprivileged extraction
/// may leave directories without the owner's write bit).
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(first) => {
            fn open_up(dir: &Path) {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for entry in entries.flatten() {
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            open_up(&entry.path());
                        }
                    }
                }
            }
            if std::fs::symlink_metadata(path).is_err() {
                return Err(first);
            }
            open_up(path);
            std::fs::remove_dir_all(path)
        }
    }
}

/// Applies layers in order onto one directory, giving the flattened root filesystem with the OCI
/// rules: a whiteout hides only lower layers; an opaque marker hides the lower children of its
/// directory wherever it appears in its layer; a non-directory replaces what was there;
/// directory over directory merges and takes the new metadata; hardlinks may point at files of
/// lower layers; duplicate entries: the last wins.
///
/// ```no_run
/// # fn main() -> Result<(), ducc_unpack::Error> {
/// use ducc_unpack::{ExtractOptions, FlatExtractor, LayerDescriptor};
/// let mut flat = FlatExtractor::new("/tmp/rootfs".as_ref(), &ExtractOptions::new())?;
/// for (path, media_type) in [("layer0.tar.gz", "application/vnd.oci.image.layer.v1.tar+gzip")] {
///     let blob = std::fs::File::open(path).expect("blob");
///     flat.apply_blob(blob, &LayerDescriptor::new(path, media_type))?;
/// }
/// let report = flat.finish();
/// # let _ = report; Ok(()) }
/// ```
#[derive(Debug)]
pub struct FlatExtractor {
    applier: Applier,
}

impl FlatExtractor {
    /// Starts a flat tree in `dest`, an existing directory (normally empty; layers already
    /// applied to it count as lower layers).
    ///
    /// # Errors
    /// [`Error::Destination`] when `dest` is missing or not a directory.
    pub fn new(dest: &Path, options: &ExtractOptions) -> Result<Self, Error> {
        let target = Target::Flat {
            record_sources: options.record_sources,
            leave_out_special: options.leave_out_special_files,
        };
        let applier = Applier::open(dest, target, options.privileges, options.limits)?;
        Ok(FlatExtractor { applier })
    }

    /// Applies the next layer, given as its **uncompressed** tar stream. Digests are not checked.
    ///
    /// # Errors
    /// Any parse, entry or filesystem error, naming the layer and entry; the tree is then
    /// partially updated.
    pub fn apply_layer<R: Read>(&mut self, tar: R, layer: &str) -> Result<(), Error> {
        self.applier.apply_tar(tar, layer)
    }

    /// Applies the next layer from its blob, decompressing it and checking its digests. The blob
    /// is read, decompressed and hashed on a second thread while this one writes the files.
    ///
    /// # Errors
    /// As [`FlatExtractor::apply_layer`], plus [`Error::Read`] and the digest mismatches. The
    /// tree is then partially updated: discard it.
    pub fn apply_blob<R: Read + Send>(
        &mut self,
        blob: R,
        descriptor: &LayerDescriptor,
    ) -> Result<LayerDigests, Error> {
        let limits = self.applier.limits();
        let applier = &mut self.applier;
        pipelined(blob, descriptor, &limits, |tar| {
            applier.apply_tar(tar, &descriptor.name)
        })
        .map(|((), digests)| digests)
    }

    /// Applies the next layer, given as its **uncompressed** tar stream, and writes the same
    /// layer into its own directory `layer_dir` (an existing empty directory) in the same pass,
    /// as [`extract_layer_dir`] would: one decode feeds both trees. Digests are not checked.
    ///
    /// The layer directory's implicit parents, hardlinks into lower layers and whiteouts are
    /// resolved against this flat tree, which holds the layers beneath: stacked as overlayfs
    /// lower directories, the layer directories of an image show its flat tree
    /// ([`LayerDirOptions::lower_layers`] is not used). The stream is read under this
    /// extractor's [`ExtractOptions::limits`]. Returns the layer directory's report.
    ///
    /// # Errors
    /// As [`FlatExtractor::apply_layer`] and [`extract_layer_dir`]; both trees are then
    /// partially updated.
    pub fn apply_layer_with_layer_dir<R: Read>(
        &mut self,
        tar: R,
        layer: &str,
        layer_dir: &Path,
        options: &LayerDirOptions,
    ) -> Result<Report, Error> {
        let mut layer_applier = Applier::open(
            layer_dir,
            Target::LayerDir {
                whiteouts: options.whiteouts,
                lower_layers: Vec::new(),
                leave_out_special: options.leave_out_special_files,
            },
            options.privileges,
            options.limits,
        )?;
        crate::apply::apply_tar_both(&mut layer_applier, &mut self.applier, tar, layer)?;
        Ok(layer_applier.into_report())
    }

    /// As [`FlatExtractor::apply_layer_with_layer_dir`], from the layer's blob: read,
    /// decompressed and hashed on a second thread while this one writes both trees; both
    /// digests are checked at the end. On a mismatch both trees are partially updated:
    /// discard them (a publisher's staging area does).
    ///
    /// # Errors
    /// As [`FlatExtractor::apply_blob`] and [`extract_layer_dir`].
    pub fn apply_blob_with_layer_dir<R: Read + Send>(
        &mut self,
        blob: R,
        descriptor: &LayerDescriptor,
        layer_dir: &Path,
        options: &LayerDirOptions,
    ) -> Result<LayerOutcome, Error> {
        let limits = self.applier.limits();
        pipelined(blob, descriptor, &limits, |tar| {
            self.apply_layer_with_layer_dir(tar, &descriptor.name, layer_dir, options)
        })
        .map(|(report, digests)| LayerOutcome { report, digests })
    }

    /// The directory the flat tree is written in.
    pub fn root(&self) -> &Path {
        self.applier.root_path()
    }

    /// What the extraction did so far.
    pub fn report(&self) -> &Report {
        self.applier.report()
    }

    /// Ends the extraction and returns its report.
    pub fn finish(self) -> Report {
        self.applier.into_report()
    }
}

/// Extracts an uncompressed tar stream that is already canonical (see [`CanonicalTarWriter`])
/// into `dest`, an existing directory, verbatim: `.wh.` names stay files, character devices and
/// xattrs (`trusted.overlay.opaque` included) are created as the tar holds them. The safety and
/// metadata rules are those of the other extractors.
///
/// [`CanonicalTarWriter`]: crate::CanonicalTarWriter
///
/// # Errors
/// As [`extract_layer_dir`]; a hardlink whose target is not earlier in the stream is an error.
pub fn extract_canonical_tar<R: Read>(
    tar: R,
    name: &str,
    dest: &Path,
    options: &ExtractOptions,
) -> Result<Report, Error> {
    let mut applier = Applier::open(dest, Target::Verbatim, options.privileges, options.limits)?;
    applier.apply_tar(tar, name)?;
    Ok(applier.into_report())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_copy_for_the_other_thread_keeps_the_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("cannot write blob into the cache")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        #[derive(Debug)]
        struct Wrapper(Outer);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0.0)
            }
        }
        let full = std::io::Error::from_raw_os_error(28);
        let e = std::io::Error::other(Wrapper(Outer(full)));
        let copy = super::copy_with_causes(&e);
        let text = copy.to_string();
        assert!(
            text.starts_with("cannot write blob into the cache: "),
            "{text}"
        );
        assert!(text.contains("No space left on device"), "{text}");
        assert_eq!(copy.kind(), e.kind());
    }

    use std::io::Write;

    use super::*;
    use crate::testutil::{Layer, paths};
    use ducc_oci::{BlobDigest, DiffId};

    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn descriptor(blob: &[u8], tar: &[u8]) -> LayerDescriptor {
        use sha2::{Digest, Sha256};
        LayerDescriptor::new("sha256:test", GZIP)
            .with_blob_digest(BlobDigest::from_sha256_bytes(Sha256::digest(blob).into()))
            .with_diff_id(DiffId::from_sha256_bytes(Sha256::digest(tar).into()))
    }

    #[test]
    fn a_verified_layer_is_promoted_into_place() {
        let tar = Layer::new().dir("etc").file("etc/f", b"f").bytes();
        let blob = gzip(&tar);
        let base = tempfile::tempdir().expect("tempdir");
        let dest = base.path().join("layerfs");
        let outcome = unpack_layer_dir(
            &blob[..],
            &descriptor(&blob, &tar),
            &dest,
            &LayerDirOptions::new(),
        )
        .expect("unpack");
        assert_eq!(paths(&dest), ["etc", "etc/f"]);
        assert_eq!(outcome.digests.uncompressed_size, tar.len() as u64);
        assert_eq!(outcome.report.entries, 2);
        assert_eq!(
            paths(base.path()),
            ["layerfs", "layerfs/etc", "layerfs/etc/f"]
        );
    }

    #[test]
    fn a_failed_layer_leaves_no_directory_behind() {
        let tar = Layer::new()
            .dir("etc")
            .file("etc/f", &[1u8; 100_000])
            .bytes();
        let blob = gzip(&tar);
        let good = descriptor(&blob, &tar);
        let wrong_diff_id = good
            .clone()
            .with_diff_id(DiffId::from_sha256_bytes([0; 32]));
        let wrong_blob = good
            .clone()
            .with_blob_digest(BlobDigest::from_sha256_bytes([0; 32]));
        let truncated = &blob[..blob.len() / 2];
        let cases: [(&str, &[u8], &LayerDescriptor); 3] = [
            ("wrong diff_id", &blob, &wrong_diff_id),
            ("wrong blob digest", &blob, &wrong_blob),
            ("truncated blob", truncated, &good),
        ];
        for (what, blob, descriptor) in cases {
            let base = tempfile::tempdir().expect("tempdir");
            let dest = base.path().join("layerfs");
            let err =
                unpack_layer_dir(blob, descriptor, &dest, &LayerDirOptions::new()).expect_err(what);
            match what {
                "wrong diff_id" => assert!(matches!(err, Error::DiffIdMismatch { .. }), "{err}"),
                "wrong blob digest" => {
                    assert!(matches!(err, Error::BlobDigestMismatch { .. }), "{err}")
                }
                _ => assert!(matches!(err, Error::Read { .. }), "{what}: {err:?}"),
            }
            assert!(
                paths(base.path()).is_empty(),
                "{what}: {:?}",
                paths(base.path())
            );
        }
    }

    #[test]
    fn an_existing_layer_directory_is_not_overwritten() {
        let tar = Layer::new().file("f", b"f").bytes();
        let base = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(base.path().join("layerfs")).expect("mkdir");
        let d = LayerDescriptor::new("l", "application/vnd.oci.image.layer.v1.tar");
        let err = unpack_layer_dir(
            &tar[..],
            &d,
            &base.path().join("layerfs"),
            &LayerDirOptions::new(),
        )
        .expect_err("exists");
        assert!(matches!(err, Error::Destination { .. }), "{err}");
    }

    #[test]
    fn an_entry_error_in_a_sound_blob_is_reported_as_that_entry() {
        let tar = Layer::new()
            .file("ok", b"ok")
            .file("../escape", b"x")
            .file("after", b"a")
            .bytes();
        let blob = gzip(&tar);
        let base = tempfile::tempdir().expect("tempdir");
        let mut flat =
            FlatExtractor::new(base.path(), &crate::ExtractOptions::new()).expect("flat");
        let err = flat
            .apply_blob(&blob[..], &descriptor(&blob, &tar))
            .expect_err("refused");
        assert!(
            matches!(err, Error::InvalidEntry { ref entry, .. } if entry == "../escape"),
            "{err}"
        );
        assert_eq!(paths(base.path()), ["ok"]);
    }

    #[test]
    fn one_decode_writes_the_layer_directory_and_the_flat_tree() {
        let first = Layer::new()
            .dir_mode("etc", 0o700)
            .file("etc/a", b"a")
            .bytes();
        let second = Layer::new()
            .file("etc/b", b"b")
            .whiteout("etc/.wh.a")
            .bytes();
        let (b1, b2) = (gzip(&first), gzip(&second));
        let base = tempfile::tempdir().expect("tempdir");
        let flat_dir = base.path().join("flat");
        let (l1, l2) = (base.path().join("l1"), base.path().join("l2"));
        for dir in [&flat_dir, &l1, &l2] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        let mut flat = FlatExtractor::new(&flat_dir, &crate::ExtractOptions::new()).expect("flat");
        let options = LayerDirOptions::new().whiteouts(crate::WhiteoutFormat::Oci);
        flat.apply_blob_with_layer_dir(&b1[..], &descriptor(&b1, &first), &l1, &options)
            .expect("first");
        let outcome = flat
            .apply_blob_with_layer_dir(&b2[..], &descriptor(&b2, &second), &l2, &options)
            .expect("second");
        assert_eq!(outcome.digests.uncompressed_size, second.len() as u64);
        assert_eq!(paths(&flat_dir), ["etc", "etc/b"]);
        assert_eq!(paths(&l2), ["etc", "etc/.wh.a", "etc/b"]);
        assert_eq!(std::fs::read(l2.join("etc/b")).expect("read"), b"b");
        // The implicit etc/ of the second layer is the lower one's.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode(&l2.join("etc")), 0o700);
        assert_eq!(mode(&flat_dir.join("etc")), 0o700);
    }

    #[test]
    fn one_decode_reports_a_bad_digest_and_a_bad_layer_directory() {
        let tar = Layer::new().file("f", b"f").bytes();
        let blob = gzip(&tar);
        let base = tempfile::tempdir().expect("tempdir");
        let flat_dir = base.path().join("flat");
        let layer = base.path().join("layer");
        std::fs::create_dir(&flat_dir).expect("mkdir");
        std::fs::create_dir(&layer).expect("mkdir");
        let mut flat = FlatExtractor::new(&flat_dir, &crate::ExtractOptions::new()).expect("flat");
        let bad = descriptor(&blob, &tar).with_diff_id(DiffId::from_sha256_bytes([7; 32]));
        let err = flat
            .apply_blob_with_layer_dir(&blob[..], &bad, &layer, &LayerDirOptions::new())
            .expect_err("diff_id");
        assert!(matches!(err, Error::DiffIdMismatch { .. }), "{err}");
        // `layer` is not empty now: a layer directory must start empty.
        let err = flat
            .apply_blob_with_layer_dir(
                &blob[..],
                &descriptor(&blob, &tar),
                &layer,
                &LayerDirOptions::new(),
            )
            .expect_err("not empty");
        assert!(matches!(err, Error::Destination { .. }), "{err}");
    }

    #[test]
    fn the_diff_id_covers_every_byte_after_the_tar_end_hashed_on_its_own_thread() {
        // A file of several chunks, then zero blocks after the end of the archive for several
        // chunks more: the tar parser stops early, the hash must not.
        let mut tar = Layer::new().file("big", &[5u8; 3 << 20]).bytes();
        tar.extend(std::iter::repeat_n(0u8, 3 << 20));
        let blob = gzip(&tar);
        let good = descriptor(&blob, &tar);
        let base = tempfile::tempdir().expect("tempdir");
        let mut flat =
            FlatExtractor::new(base.path(), &crate::ExtractOptions::new()).expect("flat");
        let digests = flat.apply_blob(&blob[..], &good).expect("sound layer");
        assert_eq!(digests.uncompressed_size, tar.len() as u64);
        assert_eq!(
            std::fs::metadata(base.path().join("big"))
                .expect("big")
                .len(),
            3 << 20
        );
        let mut shorter = tar.clone();
        shorter.truncate(tar.len() - 512);
        let wrong = good.with_diff_id(DiffId::from_sha256_bytes(
            <sha2::Sha256 as sha2::Digest>::digest(&shorter).into(),
        ));
        let base = tempfile::tempdir().expect("tempdir");
        let mut flat =
            FlatExtractor::new(base.path(), &crate::ExtractOptions::new()).expect("flat");
        let err = flat
            .apply_blob(&blob[..], &wrong)
            .expect_err("the diff_id of all but the last block");
        assert!(matches!(err, Error::DiffIdMismatch { .. }), "{err}");
    }

    #[test]
    fn flat_blobs_are_verified_layer_by_layer() {
        let first = Layer::new().file("a", b"a").file("b", b"b").bytes();
        let second = Layer::new().whiteout(".wh.a").bytes();
        let (b1, b2) = (gzip(&first), gzip(&second));
        let base = tempfile::tempdir().expect("tempdir");
        let mut flat =
            FlatExtractor::new(base.path(), &crate::ExtractOptions::new()).expect("flat");
        flat.apply_blob(&b1[..], &descriptor(&b1, &first))
            .expect("first");
        let bad = descriptor(&b2, &second).with_diff_id(DiffId::from_sha256_bytes([9; 32]));
        assert!(matches!(
            flat.apply_blob(&b2[..], &bad),
            Err(Error::DiffIdMismatch { .. })
        ));
        flat.apply_blob(&b2[..], &descriptor(&b2, &second))
            .expect("second");
        assert_eq!(flat.report().entries, 4);
        assert_eq!(paths(base.path()), ["b"]);
    }
}
