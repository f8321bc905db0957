//! `-n FILE`: one JSON object per line per event, appended, so several ducc processes can share
//! one file (each line is written with a single `write` on an `O_APPEND` file). The same events
//! drive the progress bars on a terminal.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{Map, Value, json};

use super::progress::Progress;

/// Where events go; a run without `-n` and without bars has neither and events cost nothing.
pub struct Events {
    file: Option<Mutex<File>>,
    progress: Option<Progress>,
}

impl Events {
    /// Events appended to `path`, or none.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Events> {
        let file = match path {
            Some(path) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open notification file {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Events {
            file,
            progress: None,
        })
    }

    /// These events, also shown on `progress` when there is one.
    pub fn with_progress(self, progress: Option<Progress>) -> Events {
        Events { progress, ..self }
    }

    /// Appends `{"time":..,"pid":..,"action":action, ...fields}`. A failing write is logged, not
    /// fatal: notifications must not stop a conversion.
    pub fn emit(&self, action: &str, fields: Value) {
        if let Some(progress) = &self.progress {
            progress.event(action, &fields);
        }
        let Some(file) = &self.file else { return };
        let mut object = Map::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        object.insert("time".to_owned(), json!(now.as_secs_f64()));
        object.insert("pid".to_owned(), json!(std::process::id()));
        object.insert("action".to_owned(), json!(action));
        if let Value::Object(extra) = fields {
            object.extend(extra);
        }
        let mut line = Value::Object(object).to_string();
        line.push('\n');
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!("cannot write to the notification file: {e}");
        }
    }
}
