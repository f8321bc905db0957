//! The HTTP endpoints, on `tiny_http`.

use std::io::Read as _;

use tiny_http::{Header, Method, Request, Response};

use crate::event::{self, Event, Source};
use crate::matching;
use crate::metrics::{self, EventOutcome};
use crate::queue::{Pushed, Trigger};
use crate::service::Shared;
use crate::status::View;

/// Largest notification body accepted; a larger one is answered 413 without being parsed.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Seconds a registry is told to wait when the queue is full.
const RETRY_AFTER_FULL: &str = "30";

type Answer = Response<std::io::Cursor<Vec<u8>>>;

/// Adds a header; tiny_http refuses only non-ASCII bytes, which the values built here never hold.
fn with_header(answer: Answer, name: &str, value: &str) -> Answer {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(header) => answer.with_header(header),
        Err(()) => answer,
    }
}

fn text(code: u16, body: impl Into<String>) -> Answer {
    with_header(
        Response::from_string(body.into()).with_status_code(code),
        "Content-Type",
        "text/plain; charset=utf-8",
    )
}

fn json(code: u16, body: &serde_json::Value) -> Answer {
    with_header(
        Response::from_string(body.to_string()).with_status_code(code),
        "Content-Type",
        "application/json",
    )
}

/// Answers one request and counts the answer.
pub fn handle(shared: &Shared, mut request: Request) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    let method = request.method().clone();
    let (endpoint, answer) = match path.as_str() {
        "/notify/distribution" | "/notify/harbor" if method == Method::Post => {
            let source = if path == "/notify/harbor" {
                Source::Harbor
            } else {
                Source::Distribution
            };
            (path.as_str(), notify(shared, &mut request, source))
        }
        "/healthz" if matches!(method, Method::Get | Method::Head) => {
            let answer = if shared.worker_alive() {
                text(200, "ok\n")
            } else {
                text(503, "the conversion worker is not running\n")
            };
            (path.as_str(), answer)
        }
        "/status" if matches!(method, Method::Get | Method::Head) => {
            (path.as_str(), status(shared, &request))
        }
        "/metrics" if matches!(method, Method::Get | Method::Head) => {
            // Counted before encoding, so a scrape sees itself.
            shared.metrics.request("/metrics", 200);
            let answer = with_header(
                Response::from_string(shared.metrics.encode()),
                "Content-Type",
                metrics::CONTENT_TYPE,
            );
            let _ = request.respond(answer);
            return;
        }
        "/notify/distribution" | "/notify/harbor" | "/healthz" | "/status" | "/metrics" => (
            path.as_str(),
            text(405, format!("{method} is not allowed on {path}\n")),
        ),
        // Unknown paths share one label, so scanners cannot grow the metrics without bound.
        _ => ("other", text(404, "not found\n")),
    };
    shared.metrics.request(endpoint, answer.status_code().0);
    if let Err(error) = request.respond(answer) {
        tracing::debug!("cannot answer a request for {path}: {error}");
    }
}

fn status(shared: &Shared, request: &Request) -> Answer {
    let queued = shared.queue.snapshot();
    let view = View {
        worker_alive: shared.worker_alive(),
        queued: &queued,
        capacity: shared.queue.capacity(),
    };
    let wants_html = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("text/html"))
        && !request.url().contains("format=json");
    if wants_html {
        with_header(
            Response::from_string(shared.status.to_html(&view)),
            "Content-Type",
            "text/html; charset=utf-8",
        )
    } else {
        json(200, &shared.status.to_json(&view))
    }
}

fn notify(shared: &Shared, request: &mut Request, source: Source) -> Answer {
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_owned());
    if !shared.auth.allows(authorization.as_deref()) {
        // The header's value is never logged: it may be a mistyped token.
        tracing::warn!(
            "refused a {} notification from {}: {}",
            source.as_str(),
            remote(request),
            if authorization.is_some() {
                "wrong token"
            } else {
                "no Authorization header"
            }
        );
        return with_header(
            text(401, "a valid Authorization: Bearer token is required\n"),
            "WWW-Authenticate",
            "Bearer realm=\"ducc serve\"",
        );
    }
    if request.body_length().is_some_and(|n| n > BODY_LIMIT) {
        return too_large();
    }
    let mut body = Vec::new();
    let limit = u64::try_from(BODY_LIMIT).unwrap_or(u64::MAX) + 1;
    if let Err(error) = request.as_reader().take(limit).read_to_end(&mut body) {
        return text(400, format!("cannot read the request body: {error}\n"));
    }
    if body.len() > BODY_LIMIT {
        return too_large();
    }
    let events = match source {
        Source::Distribution => event::parse_distribution(&body),
        Source::Harbor => event::parse_harbor(&body),
    };
    let events = match events {
        Ok(events) => events,
        Err(error) => {
            tracing::warn!("refused a notification from {}: {error}", remote(request));
            return text(400, format!("{error}\n"));
        }
    };
    let list = shared.wishlist();
    let (mut queued, mut deduplicated, mut not_wished, mut skipped, mut full) = (0, 0, 0, 0, 0);
    let mut other_shard = 0;
    for event in events {
        let outcome = match event {
            Event::Skipped(_) => EventOutcome::Skipped,
            Event::TagPushed(image) => match matching::wished_target(&list, &image) {
                Ok(None) => {
                    tracing::info!(image = %image, "pushed, not in the wish list; ignored");
                    EventOutcome::NotWished
                }
                Err(error) => {
                    tracing::error!(
                        "{image}: pushed, but the wish list's output format gives no valid thin image for it: {error}"
                    );
                    EventOutcome::NotWished
                }
                Ok(Some(target)) if !shared.shard.contains(target.image()) => {
                    tracing::info!(
                        image = %target.key(),
                        "pushed, in another node's shard (this node is {}); ignored",
                        shared.shard
                    );
                    EventOutcome::OtherShard
                }
                Ok(Some(target)) => {
                    let key = target.key();
                    match shared
                        .queue
                        .push(target, Trigger::Notification(source), shared.settle)
                    {
                        Pushed::Queued => {
                            tracing::info!(image = %key, "pushed; queued");
                            EventOutcome::Queued
                        }
                        Pushed::AlreadyQueued => EventOutcome::Deduplicated,
                        Pushed::Full => {
                            tracing::warn!(
                                "{key}: pushed, but the queue is full ({} images); the registry will send it again",
                                shared.queue.capacity()
                            );
                            EventOutcome::QueueFull
                        }
                    }
                }
            },
        };
        shared.metrics.event(source.as_str(), outcome);
        *match outcome {
            EventOutcome::Queued => &mut queued,
            EventOutcome::Deduplicated => &mut deduplicated,
            EventOutcome::NotWished => &mut not_wished,
            EventOutcome::Skipped => &mut skipped,
            EventOutcome::QueueFull => &mut full,
            EventOutcome::OtherShard => &mut other_shard,
        } += 1;
    }
    shared.metrics.queue_depth(shared.queue.len());
    let summary = serde_json::json!({
        "queued": queued, "deduplicated": deduplicated, "not_wished": not_wished,
        "skipped": skipped, "queue_full": full, "other_shard": other_shard,
    });
    if full > 0 {
        with_header(json(503, &summary), "Retry-After", RETRY_AFTER_FULL)
    } else {
        json(200, &summary)
    }
}

fn too_large() -> Answer {
    text(
        413,
        format!("notification bodies are limited to {BODY_LIMIT} bytes\n"),
    )
}

fn remote(request: &Request) -> String {
    request
        .remote_addr()
        .map_or_else(|| "an unknown peer".to_owned(), ToString::to_string)
}
