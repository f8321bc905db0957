//! The content-addressed blob cache of a run: each blob is downloaded at most once, verified while
//! it streams (the image source checks size and digest at the end), and only then renamed into
//! `<dir>/sha256/<hex>`, so a file there is always a whole, verified blob.
//!
//! A blob still downloading can be read as it arrives ([`BlobCache::follow`]): the reader gets
//! the bytes written so far and sees the end of the blob only once the download has verified it,
//! so a decoder that reads it to the end has read a verified blob.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ducc_oci::BlobDigest;
use ducc_registry::Repository;

use crate::error::{Context as _, ConvertError};
use crate::events::{DownloadObserver, EventSink, NoEvents};
use crate::source::ImageSource;

/// The blob cache, shared by the threads of a run.
pub struct BlobCache {
    dir: PathBuf,
    /// One lock per blob, so two images sharing a layer download it once.
    in_flight: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Downloads in progress, by digest, for readers that follow them.
    downloading: Mutex<HashMap<String, Arc<InFlight>>>,
    /// Blobs this run fetched, removed again by [`BlobCache::clean`].
    fetched: Mutex<HashSet<PathBuf>>,
    /// Blobs downloaded ahead of the image that needs them, with their size: reported as
    /// downloaded to the first image that gets them.
    ahead: Mutex<HashMap<String, u64>>,
    downloads: Semaphore,
    /// Told of each download (progress bars).
    events: Arc<dyn EventSink>,
}

/// What [`BlobCache::get`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// The blob was already in the cache.
    Cached,
    /// It was downloaded, this many bytes.
    Downloaded(u64),
}

impl BlobCache {
    /// A cache in `dir`, with at most `max_downloads` downloads at once (0: no limit).
    pub fn open(dir: &Path, max_downloads: usize) -> Result<BlobCache, ConvertError> {
        for sub in ["sha256", "partial"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .with_context(|| format!("cannot create the blob cache {}", path.display()))?;
        }
        remove_dead_partials(&dir.join("partial"));
        Ok(BlobCache {
            dir: dir.to_owned(),
            in_flight: Mutex::new(HashMap::new()),
            downloading: Mutex::new(HashMap::new()),
            fetched: Mutex::new(HashSet::new()),
            ahead: Mutex::new(HashMap::new()),
            downloads: Semaphore::new(if max_downloads == 0 {
                usize::MAX
            } else {
                max_downloads
            }),
            events: Arc::new(NoEvents),
        })
    }

    /// Where a run's cache goes by default: `<temporary_dir>/ducc-cache`, else
    /// `$XDG_CACHE_HOME/ducc`, `~/.cache/ducc`, or `ducc-cache` in the system temp dir.
    pub fn default_dir(temporary_dir: Option<&Path>) -> PathBuf {
        if let Some(dir) = temporary_dir {
            return dir.join("ducc-cache");
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("ducc");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(home).join(".cache/ducc");
        }
        std::env::temp_dir().join("ducc-cache")
    }

    /// This cache, telling `events` of each download (for progress bars).
    pub fn with_events(self, events: Arc<dyn EventSink>) -> BlobCache {
        BlobCache { events, ..self }
    }

    /// Where the blob `digest` is (or will be) in the cache.
    pub fn path(&self, digest: &BlobDigest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    /// Makes sure blob `digest` of `size` bytes is in the cache, downloading it from `repository`
    /// if needed, and gives its path.
    pub fn get(
        &self,
        source: &dyn ImageSource,
        repository: &Repository,
        digest: &BlobDigest,
        size: u64,
    ) -> Result<(PathBuf, Fetch), ConvertError> {
        self.fetch(source, repository, digest, size, false)
    }

    /// [`BlobCache::get`]; `ahead`: for an image still to come, which is told it downloaded
    /// the blob when it gets it.
    fn fetch(
        &self,
        source: &dyn ImageSource,
        repository: &Repository,
        digest: &BlobDigest,
        size: u64,
        ahead: bool,
    ) -> Result<(PathBuf, Fetch), ConvertError> {
        let path = self.path(digest);
        let lock = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(digest.to_string()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        if fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            // The first image to get a blob downloaded ahead for it reports the download.
            let downloaded_ahead = (!ahead)
                .then(|| {
                    self.ahead
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&digest.to_string())
                })
                .flatten();
            return Ok((
                path,
                downloaded_ahead.map_or(Fetch::Cached, Fetch::Downloaded),
            ));
        }
        let _slot = self.downloads.acquire();
        let partial =
            self.dir
                .join("partial")
                .join(format!("{}.{}", digest.hex(), std::process::id()));
        let observer = self
            .events
            .download(&download_name(repository, digest), size);
        let file = File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let progress = Arc::new(InFlight {
            progress: Mutex::new(Progress {
                partial: partial.clone(),
                written: 0,
                ended: None,
            }),
            changed: Condvar::new(),
        });
        self.downloading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_string(), Arc::clone(&progress));
        let sink = Sink {
            file,
            partial: &partial,
            progress: &progress,
        };
        let result = download(source, repository, digest, size, sink, &*observer).and_then(|()| {
            // Under the progress lock: a follower opening the file sees it either at its partial
            // name or, once the download ended well, at its final one.
            let mut state = progress.lock();
            fs::rename(&partial, &path)
                .with_context(|| format!("cannot move blob {digest} into the cache"))?;
            state.ended = Some(Ok(()));
            Ok(())
        });
        drop(observer);
        self.downloading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest.to_string());
        if let Err(e) = result {
            progress.lock().ended = Some(Err(()));
            progress.changed.notify_all();
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        progress.changed.notify_all();
        self.fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone());
        if ahead {
            // Under the blob's lock: the image that waits for it sees the record.
            self.ahead
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(digest.to_string(), size);
        }
        Ok((path, Fetch::Downloaded(size)))
    }

    /// Downloads blob `digest` ahead of the image that will need it (see `ahead.rs`): the
    /// first [`BlobCache::get`] of it then says [`Fetch::Downloaded`], as if it downloaded it.
    pub(crate) fn prefetch(
        &self,
        source: &dyn ImageSource,
        repository: &Repository,
        digest: &BlobDigest,
        size: u64,
    ) -> Result<(), ConvertError> {
        let lock = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(digest.to_string()).or_default().clone()
        };
        // Not while the image itself downloads it: it would report it twice.
        let Ok(_guard) = lock.try_lock() else {
            return Ok(());
        };
        if fs::metadata(self.path(digest)).is_ok_and(|m| m.len() == size) {
            return Ok(());
        }
        drop(_guard);
        self.fetch(source, repository, digest, size, true)?;
        Ok(())
    }

    /// A reader of blob `digest` while it is being downloaded (by [`BlobCache::get`] on another
    /// thread), or `None` when no download of it is in progress. The reader gets the bytes as
    /// they are written and reaches the end only once the download verified the blob; should
    /// that download fail, the reader downloads the blob again itself (with `source` from
    /// `repository`) and goes on where it was. It fails once `stop` is set.
    pub(crate) fn follow<'a>(
        &'a self,
        source: &'a dyn ImageSource,
        repository: &'a Repository,
        digest: &BlobDigest,
        size: u64,
        stop: &'a AtomicBool,
    ) -> Option<FollowedBlob<'a>> {
        let download = self
            .downloading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest.to_string())
            .cloned()?;
        Some(FollowedBlob {
            cache: self,
            source,
            repository,
            digest: *digest,
            size,
            stop,
            download: Some(download),
            file: None,
            position: 0,
        })
    }

    /// Removes the blobs this run downloaded (their content is in the repository now), on two
    /// threads: freeing the pages of a large blob takes time of its own (on tmpfs about 0.2 s
    /// per GB), and this is the last thing a run does.
    pub fn clean(&self) {
        let fetched = std::mem::take(&mut *self.fetched.lock().unwrap_or_else(|e| e.into_inner()));
        let mut by_size: Vec<(u64, PathBuf)> = fetched
            .into_iter()
            .map(|path| (fs::metadata(&path).map_or(0, |m| m.len()), path))
            .collect();
        by_size.sort_unstable_by_key(|(size, _)| std::cmp::Reverse(*size));
        // Largest first, each to the less loaded half.
        let (mut halves, mut loads) = ([Vec::new(), Vec::new()], [0u64; 2]);
        for (size, path) in by_size {
            let half = usize::from(loads[1] < loads[0]);
            loads[half] += size;
            halves[half].push(path);
        }
        let remove = |paths: &[PathBuf]| {
            for path in paths {
                let _ = fs::remove_file(path);
            }
        };
        let [first, second] = &halves;
        if second.is_empty() {
            remove(first);
            return;
        }
        std::thread::scope(|scope| {
            scope.spawn(|| remove(second));
            remove(first);
        });
    }
}

/// A download in progress, as its followers see it.
struct InFlight {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Progress {
    /// The file the download writes, until it is renamed into the cache.
    partial: PathBuf,
    /// Bytes written to it so far.
    written: u64,
    /// `Ok` once the blob is verified and at its place in the cache, `Err` when the download
    /// failed.
    ended: Option<Result<(), ()>>,
}

/// How long a follower waits for more bytes before it looks at the stop flag again.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// A blob read while it downloads: see [`BlobCache::follow`].
pub(crate) struct FollowedBlob<'a> {
    cache: &'a BlobCache,
    source: &'a dyn ImageSource,
    repository: &'a Repository,
    digest: BlobDigest,
    size: u64,
    stop: &'a AtomicBool,
    /// The download followed; `None` once the blob is read from its cache file instead.
    download: Option<Arc<InFlight>>,
    /// The blob's file, opened once it exists.
    file: Option<File>,
    position: u64,
}

impl FollowedBlob<'_> {
    /// After the followed download failed: the blob downloaded again, read from where this
    /// reader was (the bytes of a verified blob are the same at every offset).
    fn download_again(&mut self) -> io::Result<()> {
        use std::io::Seek as _;
        let (path, _) = self
            .cache
            .get(self.source, self.repository, &self.digest, self.size)
            .map_err(io::Error::other)?;
        let mut file = File::open(&path)?;
        file.seek(io::SeekFrom::Start(self.position))?;
        self.file = Some(file);
        self.download = None;
        Ok(())
    }
}

impl io::Read for FollowedBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(io::Error::other("interrupted by a signal"));
            }
            let Some(download) = self.download.clone() else {
                let file = self
                    .file
                    .as_mut()
                    .ok_or_else(|| io::Error::other("a followed blob lost its file"))?;
                let n = file.read(buf)?;
                self.position += n as u64;
                return Ok(n);
            };
            let state = download.lock();
            if self.file.is_none() {
                match state.ended {
                    None => self.file = Some(File::open(&state.partial)?),
                    Some(Ok(())) => self.file = Some(File::open(self.cache.path(&self.digest))?),
                    Some(Err(())) => {}
                }
            }
            if state.written > self.position
                && let Some(file) = self.file.as_mut()
            {
                let available = state.written - self.position;
                drop(state);
                let want = buf
                    .len()
                    .min(usize::try_from(available).unwrap_or(usize::MAX));
                let n = file.read(&mut buf[..want])?;
                self.position += n as u64;
                return Ok(n);
            }
            match state.ended {
                // Every byte read, and verified.
                Some(Ok(())) => return Ok(0),
                Some(Err(())) => {
                    drop(state);
                    self.download_again()?;
                }
                None => {
                    let _ = download
                        .changed
                        .wait_timeout(state, FOLLOW_POLL)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

/// Where a download goes: the file at `partial`, with `progress` told of every byte written.
struct Sink<'a> {
    file: File,
    partial: &'a Path,
    progress: &'a InFlight,
}

/// Downloads blob `digest` of `size` bytes into `sink`.
fn download(
    source: &dyn ImageSource,
    repository: &Repository,
    digest: &BlobDigest,
    size: u64,
    sink: Sink<'_>,
    observer: &dyn DownloadObserver,
) -> Result<(), ConvertError> {
    let Sink {
        file: mut out,
        partial,
        progress,
    } = sink;
    let mut blob = source
        .open_blob(repository, digest, size)
        .with_context(|| format!("cannot download blob {digest}"))?;
    let write_failed = |e: io::Error| {
        ConvertError::from(e).context(format!(
            "cannot write blob {digest} into the cache: {}",
            partial.display()
        ))
    };
    // The reader fails at the end when size or digest do not match, so a copy that succeeds has
    // verified the bytes. Read and write errors are told apart: a full disk is not a registry
    // problem.
    let mut buffer = vec![0u8; 512 << 10];
    let mut filled = 0;
    loop {
        let n = match blob.read(&mut buffer[filled..]) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(match ducc_registry::Error::from_io(&e) {
                    Some(registry) => ConvertError::new(
                        crate::ErrorKind::Registry,
                        format!("cannot download blob {digest}: {registry}"),
                    ),
                    None => ConvertError::from(e).context(format!("cannot download blob {digest}")),
                });
            }
        };
        observer.advance(n as u64);
        filled += n;
        // Written in whole buffers, unbuffered beyond that, so that what `progress` counts is
        // in the file for the followers.
        if filled > 0 && (n == 0 || filled == buffer.len()) {
            out.write_all(&buffer[..filled]).map_err(write_failed)?;
            progress.lock().written += filled as u64;
            progress.changed.notify_all();
            filled = 0;
        }
        if n == 0 {
            break;
        }
    }
    out.sync_all().map_err(write_failed)?;
    Ok(())
}

/// `library/ubuntu@sha256:0123456789ab`: a blob, short enough for a bar.
fn download_name(repository: &Repository, digest: &BlobDigest) -> String {
    let hex = digest.hex();
    format!("{}@sha256:{}", repository.path(), &hex[..12])
}

/// A counting semaphore for the download limit.
struct Semaphore {
    free: Mutex<usize>,
    wake: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(count: usize) -> Semaphore {
        Semaphore {
            free: Mutex::new(count),
            wake: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.wake.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.wake.notify_one();
    }
}

/// Removes the partial downloads of processes that are gone (a killed run): the next download
/// starts afresh. Those of a live process (another ducc sharing the cache) are left alone; the
/// file names end in `.<pid>`.
fn remove_dead_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name
            .to_str()
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        let alive = owner.is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_the_cache_removes_only_partials_of_dead_processes() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial");
        fs::create_dir_all(&partial).unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let names = [
            format!("sha256:{}.{}", "a".repeat(64), live.id()),
            format!("sha256:{}.{dead_pid}", "b".repeat(64)),
            "garbage".to_owned(),
        ];
        for name in &names {
            fs::write(partial.join(name), b"part").unwrap();
        }
        let _cache = BlobCache::open(dir.path(), 2).unwrap();
        let mut left: Vec<String> = fs::read_dir(&partial)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let _ = live.kill();
        let _ = live.wait();
        assert_eq!(left, [names[0].clone()]);
    }

    #[test]
    fn cleaning_removes_every_blob_this_run_fetched_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 0).unwrap();
        let blobs = dir.path().join("sha256");
        // Sizes that split unevenly, so both threads get some.
        let sizes = [300_000, 5, 120_000, 0, 70_000];
        for (n, size) in sizes.iter().enumerate() {
            let path = blobs.join(format!("fetched-{n}"));
            fs::write(&path, vec![7u8; *size]).unwrap();
            cache.fetched.lock().unwrap().insert(path);
        }
        fs::write(blobs.join("from-an-earlier-run"), b"kept").unwrap();
        // Gone already: nothing to remove, no failure.
        cache
            .fetched
            .lock()
            .unwrap()
            .insert(blobs.join("never-written"));
        cache.clean();
        let left: Vec<String> = fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["from-an-earlier-run"]);
        assert!(cache.fetched.lock().unwrap().is_empty());
        // A second clean has nothing left to do.
        cache.clean();
        assert!(blobs.join("from-an-earlier-run").exists());
    }

    /// A cache with one download of `digest` registered as in progress, as `get` registers it.
    fn cache_with_download(digest: &BlobDigest) -> (tempfile::TempDir, BlobCache, Arc<InFlight>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 0).unwrap();
        let partial = dir.path().join("partial").join(digest.hex());
        File::create(&partial).unwrap();
        let download = Arc::new(InFlight {
            progress: Mutex::new(Progress {
                partial,
                written: 0,
                ended: None,
            }),
            changed: Condvar::new(),
        });
        cache
            .downloading
            .lock()
            .unwrap()
            .insert(digest.to_string(), Arc::clone(&download));
        (dir, cache, download)
    }

    /// Appends `bytes` to the download's file and tells its followers.
    fn write_some(download: &InFlight, bytes: &[u8]) {
        let path = download.lock().partial.clone();
        let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
        download.lock().written += bytes.len() as u64;
        download.changed.notify_all();
    }

    fn blob_bytes() -> Vec<u8> {
        (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect()
    }

    /// A client and a repository on a port nothing listens on: a follower that needs the
    /// registry fails.
    fn nowhere() -> (ducc_registry::Client, Repository) {
        let client = ducc_registry::Client::new(ducc_registry::ClientOptions::new());
        let repository =
            Repository::new(ducc_oci::Scheme::Http, "127.0.0.1:1", "follow/test").unwrap();
        (client, repository)
    }

    fn test_digest() -> BlobDigest {
        BlobDigest::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn a_follower_reads_a_blob_as_it_downloads_and_ends_only_once_it_is_verified() {
        let digest = test_digest();
        let blob = blob_bytes();
        let (_dir, cache, download) = cache_with_download(&digest);
        let (client, repository) = nowhere();
        let stop = AtomicBool::new(false);
        let verified = AtomicBool::new(false);
        let mut follower = cache
            .follow(&client, &repository, &digest, blob.len() as u64, &stop)
            .expect("a download is in progress");
        let read = std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut out = Vec::new();
                follower.read_to_end(&mut out).map(|_| out)
            });
            for chunk in blob.chunks(100_000) {
                write_some(&download, chunk);
                std::thread::sleep(Duration::from_millis(20));
            }
            // Every byte is written but not verified yet: the follower must still wait.
            std::thread::sleep(Duration::from_millis(300));
            let mut state = download.lock();
            fs::rename(&state.partial, cache.path(&digest)).unwrap();
            verified.store(true, Ordering::SeqCst);
            state.ended = Some(Ok(()));
            drop(state);
            download.changed.notify_all();
            reader.join().unwrap()
        });
        assert!(
            verified.load(Ordering::SeqCst),
            "the follower ended before the download"
        );
        assert_eq!(read.unwrap(), blob);
    }

    #[test]
    fn a_follower_of_a_failed_download_goes_on_from_the_blob_fetched_again() {
        let digest = test_digest();
        let blob = blob_bytes();
        let (_dir, cache, download) = cache_with_download(&digest);
        let (client, repository) = nowhere();
        let stop = AtomicBool::new(false);
        let mut follower = cache
            .follow(&client, &repository, &digest, blob.len() as u64, &stop)
            .expect("a download is in progress");
        write_some(&download, &blob[..500_000]);
        let mut head = vec![0u8; 400_000];
        follower.read_exact(&mut head).unwrap();
        // The download fails; the blob is in the cache again (as a second download leaves it),
        // so fetching it again needs no registry.
        fs::write(cache.path(&digest), &blob).unwrap();
        download.lock().ended = Some(Err(()));
        download.changed.notify_all();
        let mut rest = Vec::new();
        follower.read_to_end(&mut rest).unwrap();
        head.extend(rest);
        assert_eq!(head, blob);
    }

    #[test]
    fn a_follower_stops_waiting_when_told_to_stop() {
        let digest = test_digest();
        let (_dir, cache, _download) = cache_with_download(&digest);
        let (client, repository) = nowhere();
        let stop = AtomicBool::new(false);
        let mut follower = cache
            .follow(&client, &repository, &digest, 10, &stop)
            .expect("a download is in progress");
        let err = std::thread::scope(|scope| {
            let reader = scope.spawn(move || follower.read(&mut [0u8; 16]));
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::SeqCst);
            reader.join().unwrap()
        })
        .expect_err("stopped");
        assert!(err.to_string().contains("interrupted"), "{err}");
    }

    #[test]
    fn no_follower_without_a_download_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 0).unwrap();
        let (client, repository) = nowhere();
        let stop = AtomicBool::new(false);
        assert!(
            cache
                .follow(&client, &repository, &test_digest(), 1, &stop)
                .is_none()
        );
    }
}
