//! The Prometheus metrics, in the OpenMetrics text format of `prometheus-client`.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    endpoint: String,
    outcome: String,
}

/// What became of one event of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// A wished image, newly queued.
    Queued,
    /// A wished image that was queued already.
    Deduplicated,
    /// A tag push of an image the wish list does not name.
    NotWished,
    /// Not a tag push (a pull, a blob, another Harbor event).
    Skipped,
    /// A wished image refused because the queue was full.
    QueueFull,
    /// A wished image of another node's shard (`--shard`): that node converts it.
    OtherShard,
}

impl EventOutcome {
    fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Queued => "queued",
            EventOutcome::Deduplicated => "deduplicated",
            EventOutcome::NotWished => "not_wished",
            EventOutcome::Skipped => "skipped",
            EventOutcome::QueueFull => "queue_full",
            EventOutcome::OtherShard => "other_shard",
        }
    }
}

/// Every metric serve exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    converted: Counter,
    up_to_date: Counter,
    other_shard: Counter,
    revisions: Counter,
    lease_waits: Counter,
    /// The backend's lease-wait count when last looked at.
    lease_waits_seen: std::sync::atomic::AtomicU64,
    failures: Counter,
    requests: Family<RequestLabels, Counter>,
    events: Family<EventLabels, Counter>,
    queue_depth: Gauge,
    duration: Histogram,
    last_full_pass: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let converted = Counter::default();
        // prometheus-client adds the `_total` suffix of counters itself.
        registry.register(
            "ducc_images_converted",
            "Images converted (work was done)",
            converted.clone(),
        );
        let up_to_date = Counter::default();
        registry.register(
            "ducc_images_up_to_date",
            "Conversions that found the image up to date",
            up_to_date.clone(),
        );
        let other_shard = Counter::default();
        registry.register(
            "ducc_images_other_shard",
            "Images of a full pass left to another node's shard (--shard)",
            other_shard.clone(),
        );
        let revisions = Counter::default();
        registry.register(
            "ducc_revisions",
            "Repository revisions (cvmfs_server ingests and publishes) made by converted images",
            revisions.clone(),
        );
        let lease_waits = Counter::default();
        registry.register(
            "ducc_lease_waits",
            "Waits for a repository lease another publisher node held (behind a cvmfs gateway)",
            lease_waits.clone(),
        );
        let failures = Counter::default();
        registry.register(
            "ducc_conversion_failures",
            "Conversions that failed",
            failures.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ducc_webhook_requests",
            "HTTP requests answered, by endpoint and status code",
            requests.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "ducc_webhook_events",
            "Notification events, by endpoint and what became of them",
            events.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "ducc_queue_depth",
            "Images waiting for conversion",
            queue_depth.clone(),
        );
        // 0.25 s to about 2 h.
        let duration = Histogram::new(exponential_buckets(0.25, 2.0, 15));
        registry.register(
            "ducc_conversion_duration_seconds",
            "Wall time of one image's conversion",
            duration.clone(),
        );
        let last_full_pass = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "ducc_last_full_pass_timestamp_seconds",
            "When the last full pass over the wish list ended (Unix time)",
            last_full_pass.clone(),
        );
        Metrics {
            registry,
            converted,
            up_to_date,
            other_shard,
            revisions,
            lease_waits,
            lease_waits_seen: std::sync::atomic::AtomicU64::new(0),
            failures,
            requests,
            events,
            queue_depth,
            duration,
            last_full_pass,
        }
    }

    /// Counts an HTTP answer.
    pub fn request(&self, endpoint: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                code,
            })
            .inc();
    }

    /// Counts one notification event.
    pub fn event(&self, endpoint: &str, outcome: EventOutcome) {
        self.events
            .get_or_create(&EventLabels {
                endpoint: endpoint.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    /// Records a finished conversion.
    pub fn conversion(&self, outcome: Result<bool, ()>, took: Duration) {
        match outcome {
            Ok(true) => self.converted.inc(),
            Ok(false) => self.up_to_date.inc(),
            Err(()) => self.failures.inc(),
        };
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts the revisions a converted image made.
    pub fn revisions(&self, revisions: usize) {
        self.revisions
            .inc_by(u64::try_from(revisions).unwrap_or(u64::MAX));
    }

    /// Takes the backend's count of lease waits so far (it only grows): the counter moves by
    /// what was added since the last call.
    pub fn lease_waits(&self, total: u64) {
        let before = self
            .lease_waits_seen
            .fetch_max(total, std::sync::atomic::Ordering::SeqCst);
        if total > before {
            self.lease_waits.inc_by(total - before);
        }
    }

    /// Counts an image of a full pass left to another node's shard.
    pub fn other_shard(&self) {
        self.other_shard.inc();
    }

    /// Sets the queue depth.
    pub fn queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Records the end of a full pass.
    pub fn full_pass(&self, at: SystemTime) {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_full_pass.set(seconds);
    }

    /// The metrics in the OpenMetrics text format (`CONTENT_TYPE`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_names_every_metric() {
        let metrics = Metrics::new();
        metrics.request("/notify/distribution", 401);
        metrics.event("distribution", EventOutcome::NotWished);
        metrics.conversion(Ok(true), Duration::from_secs(2));
        metrics.conversion(Err(()), Duration::from_secs(1));
        metrics.queue_depth(3);
        metrics.revisions(2);
        metrics.revisions(1);
        // The backend's running total: counted once however often it is looked at.
        metrics.lease_waits(3);
        metrics.lease_waits(3);
        metrics.lease_waits(4);
        metrics.full_pass(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let text = metrics.encode();
        for line in [
            "ducc_images_converted_total 1",
            "ducc_revisions_total 3",
            "ducc_lease_waits_total 4",
            "ducc_conversion_failures_total 1",
            "ducc_webhook_requests_total{endpoint=\"/notify/distribution\",code=\"401\"} 1",
            "ducc_webhook_events_total{endpoint=\"distribution\",outcome=\"not_wished\"} 1",
            "ducc_queue_depth 3",
            "ducc_conversion_duration_seconds_count 2",
            "ducc_last_full_pass_timestamp_seconds 1700000000.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains("# TYPE ducc_conversion_duration_seconds histogram"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
