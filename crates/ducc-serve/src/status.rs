//! What `/status` shows: the queue, the conversion running, the last results with their errors,
//! the full passes and the wish list in use. JSON for programs, HTML for a browser.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use ducc_convert::Step;
use serde::Serialize;

use crate::queue::{Entry, Trigger};

/// Results kept for `/status`.
const KEPT_RESULTS: usize = 50;

/// How one conversion ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Finished {
    /// Work was done.
    Converted,
    /// The repository already had it.
    UpToDate,
    /// It failed at `step`.
    Failed {
        /// The conversion step.
        step: Step,
        /// The error, with its causes.
        error: String,
        /// Whether the wish list's `ignore_errors` covers it.
        ignored: bool,
        /// Seconds until the retry, when one is queued.
        retry_in_seconds: Option<u64>,
    },
}

#[derive(Debug, Clone, Serialize)]
struct ResultRecord {
    image: String,
    trigger: Trigger,
    attempt: u32,
    finished_at: u64,
    duration_seconds: f64,
    #[serde(flatten)]
    finished: Finished,
}

#[derive(Debug, Clone, Serialize)]
struct Running {
    image: String,
    trigger: Trigger,
    started_at: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Passes {
    running: bool,
    last_started_at: Option<u64>,
    last_finished_at: Option<u64>,
    last_converted: usize,
    last_up_to_date: usize,
    last_other_shard: usize,
    last_failed: usize,
    completed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct WishListState {
    path: String,
    loaded_at: Option<u64>,
    wishes: usize,
    reload_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    running: Option<Running>,
    /// Images converted and waiting for their batch's commit (`--batch`).
    batched: Vec<Running>,
    results: VecDeque<ResultRecord>,
    passes: Passes,
    wishlist: WishListState,
}

/// Counts of one full pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCounts {
    /// Images converted.
    pub converted: usize,
    /// Images found up to date.
    pub up_to_date: usize,
    /// Images left to other nodes' shards (`--shard`).
    pub other_shard: usize,
    /// Images (or wishes whose tags could not be listed) that failed.
    pub failed: usize,
}

/// The shared status; see the module documentation.
#[derive(Debug, Default)]
pub struct Status {
    state: Mutex<State>,
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Status {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few field stores: a panic cannot leave it inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the wish list now in use.
    pub fn wishlist_loaded(&self, path: &str, wishes: usize) {
        let mut state = self.lock();
        state.wishlist = WishListState {
            path: path.to_owned(),
            loaded_at: Some(unix(SystemTime::now())),
            wishes,
            reload_error: None,
        };
    }

    /// Records that re-reading the wish list failed (the last good one stays).
    pub fn wishlist_rejected(&self, error: &str) {
        self.lock().wishlist.reload_error = Some(error.to_owned());
    }

    /// Records the start of a conversion.
    pub fn started(&self, image: &str, trigger: Trigger) {
        self.lock().running = Some(Running {
            image: image.to_owned(),
            trigger,
            started_at: unix(SystemTime::now()),
        });
    }

    /// Records that the running conversion is complete and waits for its batch's commit.
    pub fn held(&self, image: &str) {
        let mut state = self.lock();
        if let Some(running) = state.running.take() {
            debug_assert_eq!(running.image, image);
            state.batched.push(running);
        }
    }

    /// Records the end of the running conversion, or of one waiting in the batch.
    pub fn finished(
        &self,
        image: &str,
        trigger: Trigger,
        attempt: u32,
        started: Instant,
        finished: Finished,
    ) {
        let mut state = self.lock();
        match state.batched.iter().position(|b| b.image == image) {
            Some(i) => {
                state.batched.remove(i);
            }
            None => state.running = None,
        }
        if state.results.len() == KEPT_RESULTS {
            state.results.pop_back();
        }
        state.results.push_front(ResultRecord {
            image: image.to_owned(),
            trigger,
            attempt,
            finished_at: unix(SystemTime::now()),
            duration_seconds: started.elapsed().as_secs_f64(),
            finished,
        });
    }

    /// Records the start of a full pass.
    pub fn pass_started(&self) {
        let mut state = self.lock();
        state.passes.running = true;
        state.passes.last_started_at = Some(unix(SystemTime::now()));
    }

    /// Records the end of a full pass.
    pub fn pass_finished(&self, counts: PassCounts) {
        let mut state = self.lock();
        state.passes.running = false;
        state.passes.last_finished_at = Some(unix(SystemTime::now()));
        state.passes.last_converted = counts.converted;
        state.passes.last_up_to_date = counts.up_to_date;
        state.passes.last_other_shard = counts.other_shard;
        state.passes.last_failed = counts.failed;
        state.passes.completed += 1;
    }

    /// The status as JSON.
    pub fn to_json(&self, view: &View<'_>) -> serde_json::Value {
        let state = self.lock();
        let now = Instant::now();
        let queue: Vec<serde_json::Value> = view
            .queued
            .iter()
            .map(|e| {
                serde_json::json!({
                    "image": e.target().key(),
                    "trigger": e.trigger(),
                    "queued_at": unix(e.queued_at()),
                    "attempt": e.attempt(),
                    "due_in_seconds": e.due_in(now).as_secs(),
                })
            })
            .collect();
        serde_json::json!({
            "worker_alive": view.worker_alive,
            "wishlist": state.wishlist,
            "queue": {"depth": queue.len(), "capacity": view.capacity, "images": queue},
            "running": state.running,
            "batch": {"images": state.batched},
            "full_pass": state.passes,
            "results": state.results,
        })
    }

    /// The status as an HTML page.
    pub fn to_html(&self, view: &View<'_>) -> String {
        let json = self.to_json(view);
        let mut page = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ducc serve</title>\
             <style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}\
             .failed{color:#a00}</style></head><body>\n<h1>ducc serve</h1>\n",
        );
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => escape(s),
            serde_json::Value::Null => "-".to_owned(),
            other => escape(&other.to_string()),
        };
        let _ = writeln!(
            page,
            "<p>worker: {}; wish list {} ({} wishes, loaded at {}){}</p>",
            if view.worker_alive { "alive" } else { "DEAD" },
            text(&json["wishlist"]["path"]),
            text(&json["wishlist"]["wishes"]),
            text(&json["wishlist"]["loaded_at"]),
            match json["wishlist"]["reload_error"].as_str() {
                Some(e) => format!(
                    "; <span class=\"failed\">last re-read failed: {}</span>",
                    escape(e)
                ),
                None => String::new(),
            }
        );
        let _ = writeln!(
            page,
            "<h2>Running</h2>\n<p>{}</p>",
            match &json["running"] {
                serde_json::Value::Null => "nothing".to_owned(),
                running => format!(
                    "{} ({}, since {})",
                    text(&running["image"]),
                    text(&running["trigger"]),
                    text(&running["started_at"])
                ),
            }
        );
        let batch: Vec<String> = json["batch"]["images"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| text(&b["image"]))
            .collect();
        if !batch.is_empty() {
            let _ = writeln!(
                page,
                "<p>Converted, waiting for their batch's commit: {}</p>",
                batch.join(", ")
            );
        }
        let passes = &json["full_pass"];
        let _ = writeln!(
            page,
            "<h2>Full passes</h2>\n<p>{} completed; last finished at {}: {} converted, {} up to date, {} other shard, {} failed{}</p>",
            text(&passes["completed"]),
            text(&passes["last_finished_at"]),
            text(&passes["last_converted"]),
            text(&passes["last_up_to_date"]),
            text(&passes["last_other_shard"]),
            text(&passes["last_failed"]),
            if passes["running"] == true {
                "; one is running"
            } else {
                ""
            }
        );
        let _ = writeln!(
            page,
            "<h2>Queue ({} of {})</h2>\n<table><tr><th>image</th><th>trigger</th><th>attempt</th><th>due in (s)</th></tr>",
            text(&json["queue"]["depth"]),
            view.capacity
        );
        for entry in json["queue"]["images"].as_array().into_iter().flatten() {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&entry["image"]),
                text(&entry["trigger"]),
                text(&entry["attempt"]),
                text(&entry["due_in_seconds"])
            );
        }
        page.push_str("</table>\n<h2>Last results</h2>\n<table><tr><th>finished at</th><th>image</th><th>trigger</th><th>outcome</th><th>seconds</th><th>error</th></tr>\n");
        for result in json["results"].as_array().into_iter().flatten() {
            let failed = result["outcome"] == "failed";
            let _ = writeln!(
                page,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
                if failed { " class=\"failed\"" } else { "" },
                text(&result["finished_at"]),
                text(&result["image"]),
                text(&result["trigger"]),
                text(&result["outcome"]),
                result["duration_seconds"].as_f64().unwrap_or(0.0),
                if failed {
                    format!("{}: {}", text(&result["step"]), text(&result["error"]))
                } else {
                    String::new()
                }
            );
        }
        page.push_str("</table>\n</body></html>\n");
        page
    }
}

/// What `/status` shows besides [`Status`] itself.
#[derive(Debug)]
pub struct View<'a> {
    /// Whether the worker thread runs.
    pub worker_alive: bool,
    /// The queue's entries, oldest first.
    pub queued: &'a [Entry],
    /// The queue's capacity.
    pub capacity: usize,
}

/// `text` with HTML's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn view() -> View<'static> {
        View {
            worker_alive: true,
            queued: &[],
            capacity: 8,
        }
    }

    #[test]
    fn failures_show_with_their_step_and_error_newest_first() {
        let status = Status::default();
        let started = Instant::now();
        status.started("http://r/app:1", Trigger::FullPass);
        assert_eq!(
            status.to_json(&view())["running"]["image"],
            "http://r/app:1"
        );
        status.finished(
            "http://r/app:1",
            Trigger::FullPass,
            0,
            started,
            Finished::Failed {
                step: Step::Manifest,
                error: "not found".into(),
                ignored: false,
                retry_in_seconds: Some(30),
            },
        );
        status.finished(
            "http://r/app:2",
            Trigger::Retry,
            1,
            started,
            Finished::Converted,
        );
        let json = status.to_json(&view());
        assert_eq!(json["running"], serde_json::Value::Null);
        assert_eq!(json["results"][0]["image"], "http://r/app:2");
        assert_eq!(json["results"][0]["outcome"], "converted");
        assert_eq!(json["results"][1]["outcome"], "failed");
        assert_eq!(json["results"][1]["step"], "manifest");
        assert_eq!(json["results"][1]["error"], "not found");
        assert_eq!(json["results"][1]["retry_in_seconds"], 30);
    }

    #[test]
    fn only_the_last_results_are_kept() {
        let status = Status::default();
        for n in 0..(KEPT_RESULTS + 10) {
            status.finished(
                &format!("http://r/app:{n}"),
                Trigger::FullPass,
                0,
                Instant::now(),
                Finished::UpToDate,
            );
        }
        let json = status.to_json(&view());
        assert_eq!(json["results"].as_array().unwrap().len(), KEPT_RESULTS);
    }

    #[test]
    fn the_html_page_escapes_what_registries_and_errors_say() {
        let status = Status::default();
        status.finished(
            "http://r/app:1",
            Trigger::FullPass,
            0,
            Instant::now(),
            Finished::Failed {
                step: Step::Layers,
                error: "<script>alert(1)</script>".into(),
                ignored: false,
                retry_in_seconds: None,
            },
        );
        let page = status.to_html(&view());
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<script>"), "{page}");
    }
}
