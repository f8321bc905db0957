//! The service: settings, the shared state, the HTTP threads and the conversion worker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ducc_convert::Shard;
use ducc_wishlist::WishList;

use crate::auth::Auth;
use crate::backend::{Backend, Conversion, ImageReport, Session};
use crate::matching::{self, Target};
use crate::metrics::Metrics;
use crate::queue::{Entry, Pushed, Queue, Trigger};
use crate::status::{Finished, PassCounts, Status};

/// How often idle threads look at the stop and reload flags.
const POLL: Duration = Duration::from_millis(100);

/// Settings of [`Service`]; see the `with_` methods for the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    wishlist: PathBuf,
    listen: SocketAddr,
    auth: Auth,
    interval: Duration,
    retry_backoff: Duration,
    settle: Duration,
    queue_capacity: usize,
    http_threads: usize,
    shard: Shard,
}

impl Config {
    /// Serve the wish list at `wishlist` on `listen`, checking notify requests with `auth`.
    pub fn new(wishlist: &Path, listen: SocketAddr, auth: Auth) -> Config {
        Config {
            wishlist: wishlist.to_owned(),
            listen,
            auth,
            interval: Duration::from_secs(3600),
            retry_backoff: Duration::from_secs(30),
            settle: Duration::from_millis(300),
            queue_capacity: 1024,
            http_threads: 4,
            shard: Shard::all(),
        }
    }

    /// Time between full passes (default one hour; the first runs at start).
    pub fn with_interval(mut self, interval: Duration) -> Config {
        self.interval = interval;
        self
    }

    /// Wait before the first retry of a failed image (default 30 s); it doubles with every
    /// further failure, up to the pass interval.
    pub fn with_retry_backoff(mut self, backoff: Duration) -> Config {
        self.retry_backoff = backoff;
        self
    }

    /// Wait between a notification and the conversion it queues (default 300 ms). The
    /// distribution registry notifies a manifest push before it links the tag, so a conversion
    /// started at once can find no manifest under that tag yet; a burst also settles into one
    /// entry meanwhile.
    pub fn with_settle(mut self, settle: Duration) -> Config {
        self.settle = settle;
        self
    }

    /// Most images the queue holds (default 1024); notifications beyond it get 503.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Config {
        self.queue_capacity = capacity;
        self
    }

    /// This node's shard of the wish list (default all of it): notifications of other shards'
    /// images are ignored (counted), and full passes leave those images alone. The backend's
    /// engine must have the same shard.
    pub fn with_shard(mut self, shard: Shard) -> Config {
        self.shard = shard;
        self
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.interval.max(self.retry_backoff);
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.retry_backoff.saturating_mul(factor).min(cap)
    }
}

/// The flags the process's signal handlers set.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// SIGTERM or SIGINT: stop accepting, abort the running conversion, return.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP: re-read the wish list.
    pub reload: Arc<AtomicBool>,
}

/// Why the service did not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// tiny_http's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Notifications without a token were asked for off loopback.
    #[error(
        "refusing to accept notifications without a token on {addr}: --no-auth is only allowed on a loopback address; set DUCC_WEBHOOK_TOKEN or --token-file"
    )]
    NoAuthOffLoopback {
        /// The address.
        addr: SocketAddr,
    },
    /// A thread could not be started.
    #[error("cannot start the {what} thread")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The worker thread ended on its own (a bug).
    #[error("the conversion worker stopped unexpectedly (a bug; see the log above)")]
    WorkerDied,
}

/// What the HTTP threads and the worker share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) auth: Auth,
    pub(crate) settle: Duration,
    pub(crate) shard: Shard,
    pub(crate) queue: Queue,
    pub(crate) metrics: Metrics,
    pub(crate) status: Status,
    list: RwLock<Arc<WishList>>,
    worker_alive: AtomicBool,
}

impl Shared {
    pub(crate) fn wishlist(&self) -> Arc<WishList> {
        Arc::clone(
            &self
                .list
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn set_wishlist(&self, list: WishList) {
        *self
            .list
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(list);
    }

    pub(crate) fn worker_alive(&self) -> bool {
        self.worker_alive.load(Ordering::SeqCst)
    }
}

/// `ducc serve`: a bound HTTP server and a conversion worker, started by [`Service::run`].
pub struct Service<B> {
    config: Config,
    server: Arc<tiny_http::Server>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    backend: B,
    signals: Signals,
}

impl<B: Backend + 'static> Service<B> {
    /// Opens the listening socket. `list` is the wish list as loaded at start (its
    /// `cvmfs_repo` stays the one served: a re-read list naming another is refused).
    ///
    /// # Errors
    /// [`ServeError::NoAuthOffLoopback`] for [`Auth::Disabled`] on a non-loopback address;
    /// [`ServeError::Bind`] when the address cannot be listened on.
    pub fn bind(
        config: Config,
        list: WishList,
        backend: B,
        signals: Signals,
    ) -> Result<Service<B>, ServeError> {
        if matches!(config.auth, Auth::Disabled) && !config.listen.ip().is_loopback() {
            return Err(ServeError::NoAuthOffLoopback {
                addr: config.listen,
            });
        }
        let server = tiny_http::Server::http(config.listen).map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = server.server_addr().to_ip().unwrap_or(config.listen);
        let status = Status::default();
        status.wishlist_loaded(&config.wishlist.display().to_string(), list.wishes().len());
        let shared = Arc::new(Shared {
            auth: config.auth.clone(),
            settle: config.settle,
            shard: config.shard,
            queue: Queue::new(config.queue_capacity),
            metrics: Metrics::new(),
            status,
            list: RwLock::new(Arc::new(list)),
            worker_alive: AtomicBool::new(true),
        });
        Ok(Service {
            config,
            server: Arc::new(server),
            local_addr,
            shared,
            backend,
            signals,
        })
    }

    /// The address it listens on (the port chosen when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the stop flag is set: then it stops accepting, lets the worker abort its
    /// conversion, and returns `Ok`.
    ///
    /// # Errors
    /// [`ServeError::Thread`] when a thread cannot start; [`ServeError::WorkerDied`] when the
    /// worker ends on its own.
    pub fn run(self) -> Result<(), ServeError> {
        let Service {
            config,
            server,
            local_addr: _,
            shared,
            backend,
            signals,
        } = self;
        let config = Arc::new(config);
        let worker = {
            let (shared, config, signals) =
                (Arc::clone(&shared), Arc::clone(&config), signals.clone());
            std::thread::Builder::new()
                .name("ducc-serve-worker".into())
                .spawn(move || {
                    let alive = AliveGuard(&shared);
                    Worker {
                        shared: &shared,
                        config: &config,
                        backend: &backend,
                        session: backend.session(),
                        held: Vec::new(),
                        pass: None,
                        signals: &signals,
                        attempts: std::collections::HashMap::new(),
                    }
                    .run();
                    drop(alive);
                })
                .map_err(|source| ServeError::Thread {
                    what: "worker",
                    source,
                })?
        };
        let accepting = Arc::new(AtomicBool::new(true));
        let mut http: Vec<JoinHandle<()>> = Vec::new();
        for n in 0..config.http_threads.max(1) {
            let (server, shared, open) = (
                Arc::clone(&server),
                Arc::clone(&shared),
                Arc::clone(&accepting),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("ducc-serve-http-{n}"))
                .spawn(move || {
                    while open.load(Ordering::SeqCst) {
                        match server.recv_timeout(POLL) {
                            Ok(Some(request)) => crate::http::handle(&shared, request),
                            Ok(None) => {}
                            Err(error) => tracing::debug!("cannot receive a request: {error}"),
                        }
                    }
                });
            match spawned {
                Ok(handle) => http.push(handle),
                Err(source) => {
                    signals.stop.store(true, Ordering::SeqCst);
                    accepting.store(false, Ordering::SeqCst);
                    let _ = worker.join();
                    return Err(ServeError::Thread {
                        what: "HTTP",
                        source,
                    });
                }
            }
        }
        while !signals.stop.load(Ordering::SeqCst) && !worker.is_finished() {
            std::thread::sleep(POLL);
        }
        // Stop accepting first, so nothing is queued that will not be converted.
        accepting.store(false, Ordering::SeqCst);
        for handle in http {
            let _ = handle.join();
        }
        drop(server);
        let worker_ended_itself = !signals.stop.load(Ordering::SeqCst);
        signals.stop.store(true, Ordering::SeqCst);
        let _ = worker.join();
        if worker_ended_itself {
            return Err(ServeError::WorkerDied);
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Marks the worker dead when its thread ends, by return or by panic.
struct AliveGuard<'a>(&'a Shared);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.worker_alive.store(false, Ordering::SeqCst);
    }
}

/// The conversion thread: full passes, queued images and retries, one at a time.
struct Worker<'a, B> {
    shared: &'a Shared,
    config: &'a Config,
    backend: &'a B,
    /// The backend's session: converted images may wait in its batch of commits.
    session: Box<dyn Session + 'a>,
    /// The images waiting in the session's batch.
    held: Vec<Held>,
    /// The counts of the full pass running, if one is.
    pass: Option<PassCounts>,
    signals: &'a Signals,
    /// Failures in a row per image key, for the backoff.
    attempts: std::collections::HashMap<String, u32>,
}

/// An image converted and waiting in the session's batch.
struct Held {
    target: Target,
    trigger: Trigger,
    attempt: u32,
    started: Instant,
}

impl<B: Backend> Worker<'_, B> {
    fn run(&mut self) {
        let mut next_pass = Instant::now();
        loop {
            if self.stopping() {
                // The images in the batch are complete: their commit goes in.
                self.publish_held();
                return;
            }
            if self.signals.reload.swap(false, Ordering::SeqCst) {
                self.reload("SIGHUP");
            }
            if Instant::now() >= next_pass {
                self.reload("the full pass");
                self.full_pass();
                next_pass = Instant::now() + self.config.interval;
                continue;
            }
            if let Some(entry) = self.shared.queue.take_due() {
                self.convert_queued(entry);
                continue;
            }
            // Nothing more to convert now: the batch goes in rather than wait.
            if !self.held.is_empty() {
                self.publish_held();
                continue;
            }
            let until_pass = next_pass.saturating_duration_since(Instant::now());
            self.shared.queue.wait(until_pass.min(POLL));
        }
    }

    fn stopping(&self) -> bool {
        self.signals.stop.load(Ordering::SeqCst)
    }

    /// Re-reads the wish list; a broken one, or one for another repository, keeps the last good.
    fn reload(&self, why: &str) {
        let path = &self.config.wishlist;
        let current = self.shared.wishlist();
        let problem = match WishList::load(path) {
            Ok(list) if list.cvmfs_repo() == current.cvmfs_repo() => {
                tracing::debug!("{}: re-read for {why}", path.display());
                self.shared
                    .status
                    .wishlist_loaded(&path.display().to_string(), list.wishes().len());
                self.shared.set_wishlist(list);
                return;
            }
            Ok(list) => format!(
                "{}: cvmfs_repo changed from {} to {}: restart ducc serve to switch repositories",
                path.display(),
                current.cvmfs_repo(),
                list.cvmfs_repo()
            ),
            Err(error) => ducc_oci::error_chain(&error),
        };
        tracing::error!("{problem}; keeping the previous wish list");
        self.shared.status.wishlist_rejected(&problem);
    }

    fn full_pass(&mut self) {
        let list = self.shared.wishlist();
        tracing::info!("full pass over {} wishes", list.wishes().len());
        self.shared.status.pass_started();
        self.pass = Some(PassCounts::default());
        'wishes: for wish in list.wishes() {
            if self.stopping() {
                break;
            }
            let targets = match self.backend.expand(&list, wish) {
                Ok(targets) => targets,
                Err(failure) => {
                    let image = wish.input.whole_name();
                    tracing::error!(image = %image, "{failure}");
                    self.count(|c| c.failed += 1);
                    self.shared.metrics.conversion(Err(()), Duration::ZERO);
                    self.shared.status.finished(
                        &image,
                        Trigger::FullPass,
                        0,
                        Instant::now(),
                        Finished::Failed {
                            step: failure.step(),
                            error: failure.message().to_owned(),
                            ignored: list.is_error_ignored(&wish.input),
                            retry_in_seconds: None,
                        },
                    );
                    continue;
                }
            };
            for target in targets {
                // Pushes that came in meanwhile go first, so a long pass does not delay them.
                while let Some(entry) = self.shared.queue.take_due() {
                    if self.stopping() {
                        break 'wishes;
                    }
                    self.convert_queued(entry);
                }
                if self.stopping() {
                    break 'wishes;
                }
                if !self.config.shard.contains(target.image()) {
                    tracing::debug!(image = %target.key(), "other shard");
                    self.count(|c| c.other_shard += 1);
                    self.shared.metrics.other_shard();
                    continue;
                }
                // This conversion covers a queued push of the same image.
                let queued = self.shared.queue.take(&target.key());
                let attempt = queued.map_or(0, |e| e.attempt());
                self.convert(&list, &target, Trigger::FullPass, attempt);
            }
        }
        // The pass's images are complete: the batch goes in, stopped or not.
        self.publish_held();
        let counts = self.pass.take().unwrap_or_default();
        if self.stopping() {
            return;
        }
        self.shared.status.pass_finished(counts);
        self.shared.metrics.full_pass(SystemTime::now());
        tracing::info!(
            "full pass done: {} converted, {} up to date, {} other shard, {} failed",
            counts.converted,
            counts.up_to_date,
            counts.other_shard,
            counts.failed
        );
    }

    fn convert_queued(&mut self, entry: Entry) {
        let list = self.shared.wishlist();
        // The list may have changed since the push: convert what it says now, or nothing.
        let target = match matching::wished_target(&list, entry.target().image()) {
            Ok(Some(target)) => target,
            Ok(None) | Err(_) => {
                tracing::info!(
                    "{}: no longer in the wish list; dropped from the queue",
                    entry.target().key()
                );
                self.attempts.remove(&entry.target().key());
                self.shared.metrics.queue_depth(self.shared.queue.len());
                return;
            }
        };
        self.convert(&list, &target, entry.trigger(), entry.attempt());
    }

    /// Adds to the counts of the full pass running, if one is.
    fn count(&mut self, add: impl FnOnce(&mut PassCounts)) {
        if let Some(counts) = &mut self.pass {
            add(counts);
        }
    }

    /// Converts one image and records the result, or holds it in the session's batch (which
    /// is published once due).
    fn convert(&mut self, list: &WishList, target: &Target, trigger: Trigger, attempt: u32) {
        let key = target.key();
        self.shared.metrics.queue_depth(self.shared.queue.len());
        self.shared.status.started(&key, trigger);
        let started = Instant::now();
        match self.session.convert(list, target, &self.signals.stop) {
            Conversion::Done(report) => {
                self.record(list, target, trigger, attempt, started, &report);
            }
            Conversion::Held => {
                tracing::info!(
                    "{key}: converted in {:.1} s, waiting for its batch's commit",
                    started.elapsed().as_secs_f64()
                );
                self.shared.status.held(&key);
                self.held.push(Held {
                    target: target.clone(),
                    trigger,
                    attempt,
                    started,
                });
                if self.session.batch_is_due() {
                    self.publish_held();
                }
            }
        }
    }

    /// Publishes the session's batch and records the images it held.
    fn publish_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let list = self.shared.wishlist();
        let mut held = std::mem::take(&mut self.held);
        for (target, report) in self.session.publish() {
            let Some(i) = held.iter().position(|h| h.target.key() == target.key()) else {
                continue;
            };
            let image = held.remove(i);
            self.record(
                &list,
                &image.target,
                image.trigger,
                image.attempt,
                image.started,
                &report,
            );
        }
        // A held image the batch did not report on (a bug): converted again at the next pass.
        for image in held {
            tracing::error!(
                "{}: its batch's commit gave no result for it (a bug); it is converted again at \
                 the next full pass",
                image.target.key()
            );
        }
    }

    /// Records the result of one image; a failure is queued again after its backoff.
    fn record(
        &mut self,
        list: &WishList,
        target: &Target,
        trigger: Trigger,
        attempt: u32,
        started: Instant,
        report: &ImageReport,
    ) {
        let key = target.key();
        let took = started.elapsed();
        let finished = match report {
            Ok(done) => {
                self.attempts.remove(&key);
                let converted = done.converted();
                self.shared.metrics.conversion(Ok(converted), took);
                if converted {
                    self.shared.metrics.revisions(done.revisions());
                }
                tracing::info!(
                    "{key}: {} in {:.1} s",
                    if converted { "converted" } else { "up to date" },
                    took.as_secs_f64()
                );
                if trigger == Trigger::FullPass {
                    self.count(|c| {
                        if converted {
                            c.converted += 1;
                        } else {
                            c.up_to_date += 1;
                        }
                    });
                }
                if converted {
                    Finished::Converted
                } else {
                    Finished::UpToDate
                }
            }
            Err(failure) => {
                if trigger == Trigger::FullPass {
                    self.count(|c| c.failed += 1);
                }
                self.shared.metrics.conversion(Err(()), took);
                let ignored = list.is_error_ignored(target.image());
                let failures = {
                    let count = self.attempts.entry(key.clone()).or_insert(0);
                    *count = count.saturating_add(1);
                    *count
                };
                // An interrupted conversion is done again at the next start; an ignored one at
                // the next pass.
                let retry = (!self.stopping() && !ignored).then(|| self.config.backoff(failures));
                let retry_in_seconds = match retry {
                    Some(delay) => match self.shared.queue.retry(target.clone(), failures, delay) {
                        Pushed::Full => None,
                        Pushed::Queued | Pushed::AlreadyQueued => Some(delay.as_secs()),
                    },
                    None => None,
                };
                let next = match retry_in_seconds {
                    Some(s) => format!("retrying in {s} s"),
                    None if ignored => "ignored by ignore_errors; next full pass".to_owned(),
                    None => "next full pass".to_owned(),
                };
                if ignored {
                    tracing::warn!(image = %key, step = %failure.step(), "{failure} (attempt {failures}; {next})");
                } else {
                    tracing::error!(image = %key, step = %failure.step(), "{failure} (attempt {failures}; {next})");
                }
                Finished::Failed {
                    step: failure.step(),
                    error: failure.message().to_owned(),
                    ignored,
                    retry_in_seconds,
                }
            }
        };
        self.shared
            .status
            .finished(&key, trigger, attempt, started, finished);
        self.shared.metrics.lease_waits(self.backend.lease_waits());
        self.shared.metrics.queue_depth(self.shared.queue.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_the_interval() {
        let config = Config::new(
            "w.yaml".as_ref(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Auth::Disabled,
        )
        .with_interval(Duration::from_secs(300))
        .with_retry_backoff(Duration::from_secs(30));
        let delays: Vec<u64> = (1..=6).map(|a| config.backoff(a).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 300, 300]);
        assert_eq!(config.backoff(u32::MAX).as_secs(), 300);
    }

    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use ducc_wishlist::Wish;

    use crate::backend::{ConversionFailure, Done, Session};

    /// A backend whose session holds every image in a batch, due at `due` images; what it
    /// did goes to `log` (`convert TAG`, `publish N`). With `stop_after`, it sets the stop flag
    /// once that many images converted.
    struct Batching {
        log: Mutex<Vec<String>>,
        due: usize,
        stop_after: Option<(usize, Arc<AtomicBool>)>,
    }

    struct BatchingSession<'a> {
        backend: &'a Batching,
        held: Vec<Target>,
        converted: usize,
    }

    /// What the scripted backends say of an image they converted.
    fn converted() -> ducc_convert::Outcome {
        ducc_convert::Outcome::Converted {
            layers_unpacked: 1,
            flat_built: true,
            thin: None,
        }
    }

    impl Backend for Batching {
        fn expand(&self, _: &WishList, wish: &Wish) -> Result<Vec<Target>, ConversionFailure> {
            Ok(vec![Target::new(wish.input.clone(), wish.output.clone())])
        }

        fn convert(&self, _: &WishList, _: &Target, _: &AtomicBool) -> ImageReport {
            unreachable!("the worker converts through its session")
        }

        /// One wait per image converted so far.
        fn lease_waits(&self) -> u64 {
            self.log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with("convert"))
                .count() as u64
        }

        fn session(&self) -> Box<dyn Session + '_> {
            Box::new(BatchingSession {
                backend: self,
                held: Vec::new(),
                converted: 0,
            })
        }
    }

    impl Session for BatchingSession<'_> {
        fn convert(&mut self, _: &WishList, target: &Target, _: &AtomicBool) -> Conversion {
            let tag = target.image().tag().unwrap_or_default().to_owned();
            self.backend
                .log
                .lock()
                .unwrap()
                .push(format!("convert {tag}"));
            self.held.push(target.clone());
            self.converted += 1;
            if let Some((after, stop)) = &self.backend.stop_after
                && self.converted == *after
            {
                stop.store(true, Ordering::SeqCst);
            }
            Conversion::Held
        }

        fn batch_is_due(&self) -> bool {
            self.held.len() >= self.backend.due
        }

        fn publish(&mut self) -> Vec<(Target, ImageReport)> {
            let held = std::mem::take(&mut self.held);
            self.backend
                .log
                .lock()
                .unwrap()
                .push(format!("publish {}", held.len()));
            held.into_iter()
                .map(|t| (t, Ok(Done::new(vec![converted()], 1))))
                .collect()
        }
    }

    /// A worker over a wish list of `tags` of one image, with `backend`, run until it stops
    /// by itself (`stop_after`) or after one full pass and its idle publish.
    fn run_worker(tags: &[&str], backend: &Batching, signals: &Signals) -> Arc<Shared> {
        let inputs: String = tags
            .iter()
            .map(|t| format!("  - http://127.0.0.1:9/app:{t}\n"))
            .collect();
        let list = WishList::from_yaml(
            "w.yaml".as_ref(),
            &format!("version: 1\ncvmfs_repo: unpacked.test\ninput:\n{inputs}"),
        )
        .unwrap();
        let config = Config::new(
            "/nonexistent/w.yaml".as_ref(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Auth::Disabled,
        );
        let shared = Arc::new(Shared {
            auth: Auth::Disabled,
            settle: config.settle,
            shard: config.shard,
            queue: Queue::new(16),
            metrics: Metrics::new(),
            status: Status::default(),
            list: RwLock::new(Arc::new(list)),
            worker_alive: AtomicBool::new(true),
        });
        {
            let mut worker = Worker {
                shared: &shared,
                config: &config,
                backend,
                session: backend.session(),
                held: Vec::new(),
                pass: None,
                signals,
                attempts: std::collections::HashMap::new(),
            };
            if backend.stop_after.is_some() {
                worker.run();
            } else {
                worker.full_pass();
                assert!(
                    worker.held.is_empty(),
                    "a pass ends with its batch published"
                );
            }
        }
        shared
    }

    #[test]
    fn a_full_pass_publishes_its_batch_when_due_and_at_its_end_and_counts_every_image() {
        let backend = Batching {
            log: Mutex::new(Vec::new()),
            due: 2,
            stop_after: None,
        };
        let shared = run_worker(&["1", "2", "3"], &backend, &Signals::default());
        assert_eq!(
            *backend.log.lock().unwrap(),
            [
                "convert 1",
                "convert 2",
                "publish 2",
                "convert 3",
                "publish 1"
            ]
        );
        let status = shared.status.to_json(&crate::status::View {
            worker_alive: true,
            queued: &[],
            capacity: 16,
        });
        assert_eq!(status["full_pass"]["last_converted"], 3, "{status:#}");
        assert_eq!(
            status["batch"]["images"],
            serde_json::json!([]),
            "{status:#}"
        );
        assert_eq!(status["results"].as_array().unwrap().len(), 3, "{status:#}");
        assert!(
            shared
                .metrics
                .encode()
                .lines()
                .any(|l| l == "ducc_lease_waits_total 3"),
            "the backend's lease waits reach /metrics"
        );
    }

    #[test]
    fn a_stopped_worker_publishes_the_images_it_holds_before_it_ends() {
        let signals = Signals::default();
        let backend = Batching {
            log: Mutex::new(Vec::new()),
            due: 10,
            stop_after: Some((2, Arc::clone(&signals.stop))),
        };
        let shared = run_worker(&["1", "2", "3"], &backend, &signals);
        assert_eq!(
            *backend.log.lock().unwrap(),
            ["convert 1", "convert 2", "publish 2"]
        );
        let status = shared.status.to_json(&crate::status::View {
            worker_alive: true,
            queued: &[],
            capacity: 16,
        });
        let results = status["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{status:#}");
        assert!(
            results.iter().all(|r| r["outcome"] == "converted"),
            "{status:#}"
        );
    }
}
