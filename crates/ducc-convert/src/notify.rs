//! The notification file sink.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::error::ConvertError;
use crate::events::{Event, EventSink};

/// The notification file (`ducc -n FILE`): one JSON object per event and line,
/// `{"time":..,"pid":..,"action":..., ...fields}`, appended, so several processes can share one
/// file (each line is a single `write` on an `O_APPEND` file). Without a file, events cost
/// nothing.
pub struct NotificationFile {
    file: Option<Mutex<File>>,
}

impl NotificationFile {
    /// Events appended to `path`, or none.
    ///
    /// # Errors
    /// When the file cannot be opened for appending (the error names it).
    pub fn open(path: Option<&Path>) -> Result<NotificationFile, ConvertError> {
        let file = match path {
            Some(path) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        ConvertError::from(e)
                            .context(format!("cannot open notification file {}", path.display()))
                    })?,
            )),
            None => None,
        };
        Ok(NotificationFile { file })
    }
}

/// `{"time":..,"pid":..,"action":..., ...fields}` for `event`.
fn line(event: &Event) -> String {
    let mut object = match serde_json::to_value(event) {
        Ok(Value::Object(object)) => object,
        // Every event serialises to an object; anything else would be a bug, kept visible.
        Ok(other) => [("event".to_owned(), other)].into_iter().collect(),
        Err(e) => [("error".to_owned(), json!(e.to_string()))]
            .into_iter()
            .collect(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    object.insert("time".to_owned(), json!(now.as_secs_f64()));
    object.insert("pid".to_owned(), json!(std::process::id()));
    let mut line = Value::Object(object).to_string();
    line.push('\n');
    line
}

impl EventSink for NotificationFile {
    /// A failing write is logged, not fatal: notifications must not stop a conversion.
    fn event(&self, event: &Event) {
        let Some(file) = &self.file else { return };
        let line = line(event);
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!("cannot write to the notification file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::Path;

    #[test]
    fn each_event_is_one_appended_line_with_time_pid_and_action() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"earlier\":1}\n").unwrap();
        let sink = NotificationFile::open(Some(&path)).unwrap();
        sink.event(&Event::WaitNextPass { seconds: 5 });
        sink.event(&Event::StartDucc {});
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["action"], "wait_next_pass");
        assert_eq!(lines[1]["seconds"], 5);
        assert_eq!(lines[1]["pid"], std::process::id());
        assert!(lines[1]["time"].as_f64().unwrap() > 1.0e9);
        assert_eq!(lines[2]["action"], "start_ducc");
    }

    #[test]
    fn an_unwritable_notification_file_is_a_setup_error_naming_it() {
        let err = NotificationFile::open(Some(Path::new("/nonexistent/dir/events.jsonl")))
            .err()
            .expect("cannot open");
        assert!(err.chain().contains("/nonexistent/dir/events.jsonl"));
    }
}
