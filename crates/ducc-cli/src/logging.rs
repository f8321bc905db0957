//! Log lines on stderr, as text for people or as JSON for journald and log shippers (issue 27).
//!
//! Text: `2026-12-07T05:11:22Z ERROR registry.example.org/app:1: layers failed: cause: cause`,
//! the level coloured only when stderr is a terminal and `NO_COLOR` is unset (a pipe, a file or
//! journald gets no escape codes). JSON: one object per line with `time`, `level`, `message` and,
//! where the event has them, `image`, `step` and `error` (the error's chain, outermost first), plus
//! any other field of the event as a string.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use clap::ValueEnum;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::convert::log_line;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event (coloured only on a terminal without NO_COLOR)
    #[default]
    Text,
    /// One JSON object per line: time, level, image, step, message, error chain
    Json,
}

/// The format [`init`] chose, for what the CLI writes to stderr itself (the run's summary).
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Installs the log subscriber: `RUST_LOG` if set, else the level `-v` asks for.
pub fn init(verbose: u8, format: LogFormat) {
    let _ = FORMAT.set(format);
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,ducc=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let colour = wants_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_line)
        .event_format(LineFormat { format, colour })
        .try_init();
}

/// Writes the summary of a conversion run to stderr: as the text people read, or, with
/// `--log-format json`, as one more JSON line (`message` the counts, `failed` each failed image
/// with its step and error), so a log shipper reads every line of stderr as JSON.
pub fn summary(summary: &ducc_convert::Summary) {
    use std::io::Write as _;
    let line = match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => format!("{summary}\n"),
        LogFormat::Json => {
            let text = summary.to_string();
            let first = text.lines().next().unwrap_or("");
            let failed: Vec<Value> = summary
                .failed()
                .filter_map(|r| {
                    let failure = r.failure()?;
                    Some(serde_json::json!({
                        "image": r.image(),
                        "step": failure.step().to_string(),
                        "error": failure.error().chain(),
                    }))
                })
                .collect();
            let object = serde_json::json!({
                "time": now().to_string(),
                "level": if summary.has_failures() { "ERROR" } else { "INFO" },
                "message": first.strip_prefix("ducc: ").unwrap_or(first),
                "converted": summary.converted(),
                "up_to_date": summary.up_to_date(),
                "other_shard": summary.other_shard(),
                "revisions": summary.revisions(),
                "failed": failed,
            });
            format!("{object}\n")
        }
    };
    let mut out = log_line();
    let _ = out.write_all(line.as_bytes());
}

/// Writes a line the CLI has to say on stderr outside `tracing` (a fatal error, a stop, where
/// `serve` listens): `text` as it is, or, with `--log-format json`, a JSON line with `level` and
/// `text` as `message`.
pub fn notice(level: Level, text: &str) {
    use std::io::Write as _;
    let line = match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => format!("{text}\n"),
        LogFormat::Json => format!(
            "{}\n",
            serde_json::json!({"time": now().to_string(), "level": level.as_str(), "message": text})
        ),
    };
    let mut out = log_line();
    let _ = out.write_all(line.as_bytes());
}

/// Now, to the second.
fn now() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Colour only on a terminal, and only when `NO_COLOR` is unset or empty (no-color.org).
fn wants_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Formats one event as a line of [`LogFormat`].
struct LineFormat {
    format: LogFormat,
    colour: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let level = *event.metadata().level();
        match self.format {
            LogFormat::Text => writeln!(writer, "{}", fields.text(time, level, self.colour)),
            LogFormat::Json => writeln!(writer, "{}", fields.json(time, level)),
        }
    }
}

/// The fields of one event, the well-known ones apart.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    image: Option<String>,
    step: Option<String>,
    error: Vec<String>,
    other: Vec<(&'static str, String)>,
}

impl Fields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "image" => self.image = Some(value),
            "step" => self.step = Some(value),
            "error" => self.error = vec![value],
            name => self.other.push((name, value)),
        }
    }

    fn text(&self, time: jiff::Timestamp, level: Level, colour: bool) -> String {
        let mut line = format!("{time} ");
        if colour {
            let code = match level {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                Level::DEBUG => "34",
                Level::TRACE => "35",
            };
            let _ = write!(line, "\x1b[{code}m{level:>5}\x1b[0m ");
        } else {
            let _ = write!(line, "{level:>5} ");
        }
        if let Some(image) = &self.image {
            let _ = write!(line, "{image}: ");
        }
        line.push_str(&self.message);
        if !self.error.is_empty() {
            let _ = write!(line, ": {}", self.error.join(": "));
        }
        for (name, value) in &self.other {
            let _ = write!(line, " {name}={value}");
        }
        line
    }

    fn json(&self, time: jiff::Timestamp, level: Level) -> Value {
        let mut object = Map::new();
        object.insert("time".into(), Value::String(time.to_string()));
        object.insert("level".into(), Value::String(level.as_str().to_owned()));
        if let Some(image) = &self.image {
            object.insert("image".into(), Value::String(image.clone()));
        }
        if let Some(step) = &self.step {
            object.insert("step".into(), Value::String(step.clone()));
        }
        object.insert("message".into(), Value::String(self.message.clone()));
        if !self.error.is_empty() {
            object.insert(
                "error".into(),
                Value::Array(self.error.iter().cloned().map(Value::String).collect()),
            );
        }
        for (name, value) in &self.other {
            object.insert((*name).to_owned(), Value::String(value.clone()));
        }
        Value::Object(object)
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if field.name() != "error" {
            self.set(field, value.to_string());
            return;
        }
        self.error = ducc_oci::error_causes(value).collect();
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some(OsStr::new(""))));
        assert!(!wants_colour(true, Some(OsStr::new("1"))));
        assert!(!wants_colour(false, None));
    }
}
