//! The content-addressed blob cache of a run: each blob is downloaded at most once, verified while
//! it streams (the registry client checks size and digest at the end), and only then renamed into
//! `<dir>/sha256/<hex>`, so a file there is always a whole, verified blob.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use ducc_registry::{Client, Digest, Repository};

use crate::error::{Context as _, ConvertError};
use crate::events::{DownloadObserver, EventSink, NoEvents};

/// The blob cache, shared by the threads of a run.
pub struct BlobCache {
    dir: PathBuf,
    /// One lock per blob, so two images sharing a layer download it once.
    in_flight: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Blobs this run fetched, removed again by [`BlobCache::clean`].
    fetched: Mutex<HashSet<PathBuf>>,
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
            fetched: Mutex::new(HashSet::new()),
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
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.digest())
    }

    /// Makes sure blob `digest` of `size` bytes is in the cache, downloading it from `repository`
    /// if needed, and gives its path.
    pub fn get(
        &self,
        client: &Client,
        repository: &Repository,
        digest: &Digest,
        size: u64,
    ) -> Result<(PathBuf, Fetch), ConvertError> {
        let path = self.path(digest);
        let lock = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(digest.to_string()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        if fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            return Ok((path, Fetch::Cached));
        }
        let _slot = self.downloads.acquire();
        let partial =
            self.dir
                .join("partial")
                .join(format!("{}.{}", digest.digest(), std::process::id()));
        let observer = self
            .events
            .download(&download_name(repository, digest), size);
        let result = download(client, repository, digest, size, &partial, &*observer);
        drop(observer);
        if let Err(e) = result {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        fs::rename(&partial, &path)
            .with_context(|| format!("cannot move blob {digest} into the cache"))?;
        self.fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone());
        Ok((path, Fetch::Downloaded(size)))
    }

    /// Removes the blobs this run downloaded (their content is in the repository now).
    pub fn clean(&self) {
        let fetched = std::mem::take(&mut *self.fetched.lock().unwrap_or_else(|e| e.into_inner()));
        for path in fetched {
            let _ = fs::remove_file(path);
        }
    }
}

fn download(
    client: &Client,
    repository: &Repository,
    digest: &Digest,
    size: u64,
    partial: &Path,
    observer: &dyn DownloadObserver,
) -> Result<(), ConvertError> {
    let blob = client
        .open_blob(repository, digest, Some(size))
        .with_context(|| format!("cannot download blob {digest}"))?;
    let mut blob = blob;
    let file =
        File::create(partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let write_failed = |e: io::Error| {
        ConvertError::from(e).context(format!(
            "cannot write blob {digest} into the cache: {}",
            partial.display()
        ))
    };
    // The reader fails at the end when size or digest do not match, so a copy that succeeds has
    // verified the bytes. Read and write errors are told apart: a full disk is not a registry
    // problem.
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let n = match blob.read(&mut buffer) {
            Ok(0) => break,
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
        out.write_all(&buffer[..n]).map_err(write_failed)?;
    }
    let file = out.into_inner().map_err(|e| write_failed(e.into_error()))?;
    file.sync_all().map_err(write_failed)?;
    Ok(())
}

/// `library/ubuntu@sha256:0123456789ab`: a blob, short enough for a bar.
fn download_name(repository: &Repository, digest: &Digest) -> String {
    let digest = digest.to_string();
    let short = match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", hex.get(..12).unwrap_or(hex)),
        None => digest,
    };
    format!("{}@{short}", repository.path())
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
}
