//! Progress bars for a run on a terminal: one spinner line per image being converted, showing
//! the steps done so far, and one byte bar per blob being downloaded.
//!
//! The display is driven by the run's events (the actions of the `-n` file) and by the blob
//! cache's downloads. It is transient: a line shows what is happening now and disappears when its
//! image or download ends; the log lines written through `tracing` are the lasting record. Those
//! go through [`log_line`], which lifts the bars while a line is written, so neither garbles the
//! other.

use std::collections::HashMap;
use std::ffi::OsStr;
#[cfg(test)]
use std::io::Read;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use ducc_convert::{DownloadObserver, EndStatus, Event, EventSink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of the process, once [`Progress::for_stderr`] has drawn any: log lines are written
/// around them.
static ACTIVE: RwLock<Option<MultiProgress>> = RwLock::new(None);

/// How often an image's spinner turns.
const SPIN: Duration = Duration::from_millis(120);

/// The progress display of a run; cheap to clone (all clones draw the same bars).
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    multi: MultiProgress,
    styles: Styles,
    images: Mutex<Images>,
    /// Spinner ticks; none where nobody watches (tests).
    spin: Option<Duration>,
}

struct Styles {
    working: ProgressStyle,
    finished: ProgressStyle,
    download: ProgressStyle,
}

/// The images with a line on screen, and which one a `symlink` event (it names no image) is for.
#[derive(Default)]
struct Images {
    lines: HashMap<String, ImageLine>,
    current: Option<String>,
}

struct ImageLine {
    bar: ProgressBar,
    steps: Steps,
}

/// What an image has done so far, as its events told.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Steps {
    /// Layers of the image, when `start_image` says.
    layers: Option<u64>,
    downloaded: u64,
    unpacked: u64,
    /// Layers another publisher node published meanwhile (not written here).
    found: u64,
    /// The repository lease being waited for (another publisher node holds it).
    waiting: Option<String>,
    flat: bool,
    symlink: bool,
    /// `Some(true)` pushed, `Some(false)` already in the registry.
    thin: Option<bool>,
}

/// How an image ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finish {
    Converted,
    UpToDate,
    Failed { step: String, ignored: bool },
}

impl Progress {
    /// Bars on stderr, or `None` where they would not be seen or not wanted: `--no-progress`,
    /// stderr not a terminal, `TERM` unset or `dumb`. Colours follow the terminal and `NO_COLOR`.
    /// From then on, log lines written through [`log_line`] are printed above the bars.
    pub fn for_stderr(disabled: bool) -> Option<Progress> {
        if !wants_bars(
            disabled,
            std::io::stderr().is_terminal(),
            std::env::var_os("TERM").as_deref(),
        ) {
            return None;
        }
        let progress = Progress::new(ProgressDrawTarget::stderr_with_hz(10), Some(SPIN));
        *ACTIVE.write().unwrap_or_else(|e| e.into_inner()) = Some(progress.inner.multi.clone());
        Some(progress)
    }

    /// A display drawing to `target`, its spinners turning every `spin`.
    fn new(target: ProgressDrawTarget, spin: Option<Duration>) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                multi: MultiProgress::with_draw_target(target),
                styles: Styles::new(),
                images: Mutex::new(Images::default()),
                spin,
            }),
        }
    }

    /// A bar for downloading blob `name` of `size` bytes, shown until the [`Download`] is dropped.
    pub fn download(&self, name: &str, size: u64) -> Download {
        let bar = self.inner.multi.add(
            ProgressBar::new(size)
                .with_style(self.inner.styles.download.clone())
                .with_prefix(format!("↓ {name}")),
        );
        // Drawn once at once: a small blob may be done before the first tick.
        bar.force_draw();
        Download {
            bar,
            progress: self.clone(),
        }
    }

    fn images(&self) -> MutexGuard<'_, Images> {
        self.inner.images.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_line(&self, image: &str, spinning: bool) -> ImageLine {
        let bar = self.inner.multi.add(
            ProgressBar::new_spinner()
                .with_style(self.inner.styles.working.clone())
                .with_prefix(shown_name(image).to_owned()),
        );
        if let Some(spin) = self.inner.spin.filter(|_| spinning) {
            bar.enable_steady_tick(spin);
        }
        ImageLine {
            bar,
            steps: Steps::default(),
        }
    }

    fn start(&self, image: &str, layers: Option<u64>) {
        let mut images = self.images();
        // A retried image (convert-single-image -r) starts again on its old line.
        let line = match images.lines.remove(image) {
            Some(line) => line,
            None => self.new_line(image, true),
        };
        let line = images.lines.entry(image.to_owned()).or_insert(line);
        line.steps = Steps {
            layers,
            ..Steps::default()
        };
        line.bar.set_message(line.steps.working());
        images.current = Some(image.to_owned());
    }

    /// Changes the steps of `image`, or of the image being converted when the event names none
    /// or names it without its platform (`--multi-arch` lines are `<image> (<platform>)`).
    fn update(&self, image: Option<&str>, change: impl FnOnce(&mut Steps)) {
        let mut images = self.images();
        let key = match image {
            Some(image) if images.lines.contains_key(image) => image.to_owned(),
            Some(image) => match &images.current {
                Some(current) if current.starts_with(&format!("{image} (")) => current.clone(),
                _ => return,
            },
            None => match &images.current {
                Some(current) => current.clone(),
                None => return,
            },
        };
        let Some(line) = images.lines.get_mut(&key) else {
            return;
        };
        change(&mut line.steps);
        line.bar.set_message(line.steps.working());
    }

    fn finish(&self, image: &str, finish: Finish) {
        let mut images = self.images();
        let line = match images.lines.remove(image) {
            Some(line) => line,
            // Failed before it started (manifest, tags) or up to date: a line only to end it.
            None => self.new_line(image, false),
        };
        if images.current.as_deref() == Some(image) {
            images.current = None;
        }
        line.bar.disable_steady_tick();
        line.bar.set_style(self.inner.styles.finished.clone());
        line.bar.finish_with_message(finish.message(&line.steps));
        self.inner.multi.remove(&line.bar);
        // The last line shown was drawn with its result; wipe it so that whatever is printed
        // next (the summary, the next pass of `loop`) starts on a clean line.
        if images.lines.is_empty() {
            let _ = self.inner.multi.clear();
        }
    }

    /// Ends every line, e.g. at the end of the run.
    fn clear(&self) {
        let lines: Vec<ImageLine> = self.images().lines.drain().map(|(_, l)| l).collect();
        for line in lines {
            line.bar.disable_steady_tick();
            line.bar.finish_and_clear();
            self.inner.multi.remove(&line.bar);
        }
        let _ = self.inner.multi.clear();
    }

    #[cfg(test)]
    fn shown(&self, image: &str) -> Option<String> {
        self.images().lines.get(image).map(|l| l.bar.message())
    }
}

/// An image as its line names it: without the `https://` of its whole name.
fn shown_name(image: &str) -> &str {
    image.split_once("://").map_or(image, |(_, name)| name)
}

/// Whether bars are drawn: asked for, on a terminal, and one that can move the cursor.
fn wants_bars(disabled: bool, stderr_is_terminal: bool, term: Option<&OsStr>) -> bool {
    !disabled && stderr_is_terminal && term.is_some_and(|term| !term.is_empty() && term != "dumb")
}

impl Styles {
    fn new() -> Styles {
        let template = |t: &str| {
            ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        Styles {
            working: template("{spinner:.cyan} {prefix:.bold} {msg} {elapsed:.dim}")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
            finished: template("  {prefix:.bold} {msg}"),
            download: template(
                "  {prefix:.dim} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
            )
            .progress_chars("=> "),
        }
    }
}

impl Steps {
    /// The steps done, for the line of an image being converted.
    fn done(&self) -> Vec<String> {
        let mut done = Vec::new();
        let layers = self.unpacked + self.found;
        match self.layers {
            Some(all) => done.push(format!("layers {layers}/{all}")),
            None if layers > 0 => done.push(format!("layers {layers}")),
            None => {}
        }
        if self.found > 0 {
            done.push(format!("{} found published by another node", self.found));
        }
        if self.downloaded > 0 {
            done.push(format!("{} downloaded", self.downloaded));
        }
        if self.flat {
            done.push("flat tree".to_owned());
        }
        if self.symlink {
            done.push("symlink".to_owned());
        }
        match self.thin {
            Some(true) => done.push("thin image pushed".to_owned()),
            Some(false) => done.push("thin image present".to_owned()),
            None => {}
        }
        done
    }

    fn working(&self) -> String {
        let done = self.done();
        let doing = if done.is_empty() {
            "converting".to_owned()
        } else {
            done.join(" · ")
        };
        match &self.waiting {
            Some(lease) => format!("{doing} · waiting for lease {lease} (another node holds it)"),
            None => doing,
        }
    }
}

impl Finish {
    fn message(&self, steps: &Steps) -> String {
        match self {
            Finish::Converted => {
                let done = steps.done();
                if done.is_empty() {
                    "✓ converted".to_owned()
                } else {
                    format!("✓ converted: {}", done.join(" · "))
                }
            }
            Finish::UpToDate => "= up to date".to_owned(),
            Finish::Failed {
                step,
                ignored: false,
            } => format!("✗ failed at {step}"),
            Finish::Failed {
                step,
                ignored: true,
            } => format!("✗ failed at {step} (ignored)"),
        }
    }
}

impl EventSink for Progress {
    /// Moves the line of the event's image through its steps; events of no interest to the
    /// display are ignored (it is best effort).
    fn event(&self, event: &Event) {
        match event {
            Event::StartImage { image, layers, .. } => {
                self.start(image, (*layers > 0).then_some(*layers as u64));
            }
            Event::LayerDownload { image, .. } => self.update(Some(image), |s| s.downloaded += 1),
            Event::LayerUnpack { image, .. } => self.update(Some(image), |s| s.unpacked += 1),
            Event::LayerFound { image, .. } => self.update(Some(image), |s| s.found += 1),
            Event::LeaseWait { lease, .. } => {
                self.update(None, |s| s.waiting = Some(lease.clone()));
            }
            Event::LeaseWaitEnd { .. } => self.update(None, |s| s.waiting = None),
            Event::FlatBuilt { image, .. } => self.update(Some(image), |s| s.flat = true),
            Event::Symlink { .. } => self.update(None, |s| s.symlink = true),
            Event::ThinPush { image, pushed, .. } => {
                self.update(Some(image), |s| s.thin = Some(*pushed));
            }
            Event::ImageUpToDate { image, .. } => self.finish(image, Finish::UpToDate),
            Event::EndImage { image, status } => {
                let finish = match status {
                    EndStatus::Error { step, ignored, .. } => Finish::Failed {
                        step: step.to_string(),
                        ignored: *ignored,
                    },
                    _ => Finish::Converted,
                };
                self.finish(image, finish);
            }
            Event::EndDucc { .. } => self.clear(),
            _ => {}
        }
    }

    fn download(&self, name: &str, size: u64) -> Box<dyn DownloadObserver> {
        Box::new(Progress::download(self, name, size))
    }
}

impl DownloadObserver for Download {
    fn advance(&self, bytes: u64) {
        Download::advance(self, bytes);
    }
}

/// The bar of one blob download; dropping it (done or failed) removes the bar.
pub struct Download {
    bar: ProgressBar,
    progress: Progress,
}

impl Download {
    /// Counts `bytes` more as downloaded.
    pub fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// `reader`, counting what is read from it on this bar.
    #[cfg(test)]
    pub fn reader<R: Read>(&self, reader: R) -> Counted<'_, R> {
        Counted {
            inner: reader,
            download: self,
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        self.progress.inner.multi.remove(&self.bar);
    }
}

/// A reader that reports its bytes to a download bar.
#[cfg(test)]
pub struct Counted<'d, R> {
    inner: R,
    download: &'d Download,
}

#[cfg(test)]
impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.download.advance(n as u64);
        Ok(n)
    }
}

/// The writer `tracing` formats each log line into: the line goes to stderr in one piece when
/// dropped, with the bars lifted meanwhile if any are shown.
pub fn log_line() -> LogLine {
    LogLine { line: Vec::new() }
}

/// One log line on its way to stderr; see [`log_line`].
pub struct LogLine {
    line: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let active = ACTIVE.read().unwrap_or_else(|e| e.into_inner()).clone();
        let print = || {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&self.line);
            let _ = stderr.flush();
        };
        match active {
            Some(multi) => multi.suspend(print),
            None => print(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use serde_json::{Value, json};

    use super::*;

    use ducc_tests::screen::Screen;

    /// Bars drawn on `screen`, spinners still.
    trait OnScreen {
        fn progress(&self) -> Progress;
    }

    impl OnScreen for Screen {
        fn progress(&self) -> Progress {
            Progress::new(ProgressDrawTarget::term_like(Box::new(self.clone())), None)
        }
    }

    const IMAGE: &str = "http://127.0.0.1:5000/library/app:1";
    const SHOWN: &str = "127.0.0.1:5000/library/app:1";

    /// The event `action` of the `-n` file with `fields`; the fields a test leaves out get
    /// neutral values (image: [`IMAGE`]).
    fn event_of(action: &str, fields: &Value) -> Event {
        let mut full = json!({"action": action, "image": IMAGE, "manifest": "", "config": "",
            "layers": 0, "layer": "", "size": 0, "diff_size": 0, "time_elapsed_s": 0.0,
            "link": "", "target": "", "thin_image": "", "digest": "", "pushed": true,
            "marker": "", "status": "ok", "layers_unpacked": 0, "flat_built": false,
            "step": "layers", "error": "", "ignored": false, "converted": 0, "up_to_date": 0,
            "failed": 0, "seconds": 0, "id": ""});
        if let (Value::Object(full), Value::Object(fields)) = (&mut full, fields.clone()) {
            full.extend(fields);
        }
        serde_json::from_value(full).unwrap_or_else(|e| panic!("{action} {fields}: {e}"))
    }

    /// Hands `progress` the event `action` with `fields`.
    fn send(progress: &Progress, action: &str, fields: &Value) {
        progress.event(&event_of(action, fields));
    }

    fn image_event(progress: &Progress, action: &str, extra: Value) {
        let mut fields = json!({"image": IMAGE});
        if let (Value::Object(fields), Value::Object(extra)) = (&mut fields, extra) {
            fields.extend(extra);
        }
        send(progress, action, &fields);
    }

    #[test]
    fn bars_only_when_asked_on_a_terminal_that_can_move_the_cursor() {
        let cases: &[(bool, bool, Option<&str>, bool)] = &[
            (false, true, Some("xterm-256color"), true),
            (false, true, Some("linux"), true),
            (true, true, Some("xterm"), false),
            (false, false, Some("xterm"), false),
            (false, true, Some("dumb"), false),
            (false, true, Some(""), false),
            (false, true, None, false),
        ];
        for &(disabled, terminal, term, bars) in cases {
            assert_eq!(
                wants_bars(disabled, terminal, term.map(OsStr::new)),
                bars,
                "disabled {disabled}, terminal {terminal}, TERM {term:?}"
            );
        }
    }

    #[test]
    fn events_move_an_image_line_through_its_steps() {
        let screen = Screen::default();
        let progress = screen.progress();
        let steps: &[(&str, Value, &str)] = &[
            ("start_image", json!({"layers": 2}), "layers 0/2"),
            ("layer_download", json!({}), "layers 0/2 · 1 downloaded"),
            ("layer_unpack", json!({}), "layers 1/2 · 1 downloaded"),
            ("layer_unpack", json!({}), "layers 2/2 · 1 downloaded"),
            (
                "flat_built",
                json!({}),
                "layers 2/2 · 1 downloaded · flat tree",
            ),
            (
                "thin_push",
                json!({"pushed": false}),
                "layers 2/2 · 1 downloaded · flat tree · thin image present",
            ),
        ];
        for (action, extra, message) in steps {
            image_event(&progress, action, extra.clone());
            assert_eq!(progress.shown(IMAGE).as_deref(), Some(*message), "{action}");
            let shown = screen.shown();
            assert!(
                shown
                    .iter()
                    .any(|row| row.contains(&format!("{SHOWN} {message}"))),
                "{action}: the screen shows {shown:?}"
            );
        }
    }

    #[test]
    fn a_lease_wait_shows_on_the_line_of_the_image_being_converted_until_it_ends() {
        let progress = Screen::default().progress();
        image_event(&progress, "start_image", json!({"layers": 2}));
        image_event(&progress, "layer_found", json!({}));
        assert_eq!(
            progress.shown(IMAGE).as_deref(),
            Some("layers 1/2 · 1 found published by another node")
        );
        send(
            &progress,
            "lease_wait",
            &json!({"lease": "r.org/.layers/ab/abcd", "limit_s": 120}),
        );
        assert_eq!(
            progress.shown(IMAGE).as_deref(),
            Some(
                "layers 1/2 · 1 found published by another node · waiting for lease \
                 r.org/.layers/ab/abcd (another node holds it)"
            )
        );
        send(
            &progress,
            "lease_wait_end",
            &json!({"lease": "r.org/.layers/ab/abcd", "waited_s": 1.0, "granted": true}),
        );
        assert_eq!(
            progress.shown(IMAGE).as_deref(),
            Some("layers 1/2 · 1 found published by another node")
        );
    }

    #[test]
    fn symlink_event_names_no_image_and_counts_for_the_image_being_converted() {
        let progress = Screen::default().progress();
        image_event(&progress, "start_image", json!({}));
        assert_eq!(progress.shown(IMAGE).as_deref(), Some("converting"));
        send(
            &progress,
            "symlink",
            &json!({"link": "a/b:1", "target": "../.flat/x"}),
        );
        assert_eq!(progress.shown(IMAGE).as_deref(), Some("symlink"));
        image_event(&progress, "layer_unpack", json!({}));
        assert_eq!(progress.shown(IMAGE).as_deref(), Some("layers 1 · symlink"));
    }

    #[test]
    fn image_ends_with_its_outcome_then_its_line_goes() {
        let cases: &[(&[(&str, Value)], &str)] = &[
            (
                &[
                    ("start_image", json!({})),
                    ("layer_unpack", json!({})),
                    ("thin_push", json!({"pushed": true})),
                    ("end_image", json!({"status": "ok"})),
                ],
                "✓ converted: layers 1 · thin image pushed",
            ),
            (
                &[
                    ("start_image", json!({})),
                    ("end_image", json!({"status": "ok"})),
                ],
                "✓ converted",
            ),
            (&[("image_up_to_date", json!({}))], "= up to date"),
            (
                &[
                    ("start_image", json!({"layers": 3})),
                    ("layer_download", json!({})),
                    (
                        "end_image",
                        json!({"status": "error", "step": "layers", "ignored": false}),
                    ),
                ],
                "✗ failed at layers",
            ),
            // Failed before it started: the line is made only to show the failure.
            (
                &[(
                    "end_image",
                    json!({"status": "error", "step": "manifest", "ignored": true}),
                )],
                "✗ failed at manifest (ignored)",
            ),
        ];
        for (events, last) in cases {
            let screen = Screen::default();
            let progress = screen.progress();
            for (action, extra) in *events {
                image_event(&progress, action, extra.clone());
            }
            assert_eq!(progress.shown(IMAGE), None, "{last}");
            let history = screen.history();
            let drawn = history
                .lines()
                .chain(history.split('\r'))
                .any(|l| l.contains(&format!("{SHOWN} {last}")));
            assert!(drawn, "{last} never drawn: {history:?}");
            assert_eq!(
                screen.shown(),
                Vec::<String>::new(),
                "{last}: left on screen"
            );
        }
    }

    #[test]
    fn steps_named_without_the_platform_count_for_that_platforms_line() {
        let progress = Screen::default().progress();
        let arm = format!("{IMAGE} (linux/arm64)");
        send(&progress, "start_image", &json!({"image": arm}));
        image_event(&progress, "layer_unpack", json!({}));
        image_event(&progress, "flat_built", json!({}));
        assert_eq!(
            progress.shown(&arm).as_deref(),
            Some("layers 1 · flat tree")
        );
        // Another image's steps never land on this line.
        send(
            &progress,
            "layer_unpack",
            &json!({"image": "http://127.0.0.1:5000/other:1"}),
        );
        assert_eq!(
            progress.shown(&arm).as_deref(),
            Some("layers 1 · flat tree")
        );
        send(
            &progress,
            "end_image",
            &json!({"image": arm, "status": "ok"}),
        );
        assert_eq!(progress.shown(&arm), None);
    }

    #[test]
    fn retried_image_starts_again_on_its_line() {
        let progress = Screen::default().progress();
        image_event(&progress, "start_image", json!({"layers": 1}));
        image_event(&progress, "layer_download", json!({}));
        image_event(&progress, "start_image", json!({"layers": 1}));
        assert_eq!(progress.shown(IMAGE).as_deref(), Some("layers 0/1"));
        assert_eq!(progress.images().lines.len(), 1);
    }

    #[test]
    fn end_of_run_clears_lines_of_images_that_never_ended() {
        let screen = Screen::default();
        let progress = screen.progress();
        image_event(&progress, "start_image", json!({}));
        assert_eq!(screen.shown().len(), 1);
        send(&progress, "end_ducc", &json!({}));
        assert_eq!(progress.shown(IMAGE), None);
        assert_eq!(screen.shown(), Vec::<String>::new());
    }

    #[test]
    fn download_bar_counts_the_bytes_read_and_goes_when_dropped() {
        let screen = Screen::default();
        let progress = screen.progress();
        let blob: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let download = progress.download("library/app@sha256:0123456789ab", 10_000);
        assert!(
            screen
                .shown()
                .iter()
                .any(|r| r.contains("↓ library/app@sha256:0123456789ab")),
            "{:?}",
            screen.shown()
        );
        let mut copy = Vec::new();
        // Small reads, as a network stream gives them.
        let mut reader = download.reader(io::BufReader::with_capacity(333, &blob[..]));
        io::copy(&mut reader, &mut copy).unwrap();
        assert_eq!(copy, blob);
        assert_eq!(download.bar.position(), 10_000);
        assert_eq!(download.bar.length(), Some(10_000));
        drop(download);
        assert_eq!(screen.shown(), Vec::<String>::new());
    }

    #[test]
    fn failed_download_counts_what_came_and_its_bar_still_goes() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("connection reset"));
                }
                let n = self.0.min(buf.len()).min(100);
                self.0 -= n;
                Ok(n)
            }
        }
        let screen = Screen::default();
        let progress = screen.progress();
        let download = progress.download("blob", 1_000);
        let error = io::copy(&mut download.reader(Broken(250)), &mut io::sink()).unwrap_err();
        assert_eq!(error.to_string(), "connection reset");
        assert_eq!(download.bar.position(), 250);
        drop(download);
        assert_eq!(screen.shown(), Vec::<String>::new());
    }

    #[test]
    fn downloads_and_images_share_the_screen() {
        let screen = Screen::default();
        let progress = screen.progress();
        image_event(&progress, "start_image", json!({"layers": 2}));
        let first = progress.download("a@sha256:1", 10);
        let second = progress.download("b@sha256:2", 10);
        let shown = screen.shown();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].contains(SHOWN), "{shown:?}");
        drop(first);
        let shown = screen.shown();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[1].contains("b@sha256:2"), "{shown:?}");
        drop(second);
        image_event(&progress, "end_image", json!({"status": "ok"}));
        assert_eq!(screen.shown(), Vec::<String>::new());
    }
}
