//! What an image loses to its repository (issue 30): the device files and FIFOs that a publisher
//! asked to leave out of its trees (`FillHints::leave_out_special_files`, behind a cvmfs
//! gateway), gathered from the layer directories and the flat tree as they are written, then
//! told once (a warning and [`crate::Event::EntriesDropped`]) and recorded in `dropped.json`
//! beside the marker.

use std::collections::BTreeSet;
use std::sync::Mutex;

use ducc_cvmfs::{DroppedEntry, DroppedRecord};

/// How many entries a warning or an event names.
const NAMED: usize = 5;

/// The entries left out while one image is converted.
#[derive(Debug, Default)]
pub(crate) struct LeftOut {
    entries: Mutex<BTreeSet<DroppedEntry>>,
}

impl LeftOut {
    /// Adds what an extraction left out (a layer directory and the flat tree list the same
    /// entries: they are kept once).
    pub(crate) fn add(&self, report: &ducc_unpack::Report) {
        if report.left_out.is_empty() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for l in &report.left_out {
            entries.insert(DroppedEntry {
                path: l.path.to_string(),
                kind: l.kind.as_str().to_owned(),
                layer: l.layer.clone(),
            });
        }
    }

    /// The record of what was gathered since the last call, which starts a new one.
    pub(crate) fn take(&self) -> DroppedRecord {
        let entries = std::mem::take(&mut *self.entries.lock().unwrap_or_else(|e| e.into_inner()));
        DroppedRecord {
            dropped: entries.into_iter().collect(),
        }
    }
}

/// The first few entries of `record`, as `layer path (kind)`.
pub(crate) fn first_entries(record: &DroppedRecord) -> Vec<String> {
    record
        .dropped
        .iter()
        .take(NAMED)
        .map(|e| format!("{} {} ({})", e.layer, e.path, e.kind))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ducc_unpack::{EntryPath, Report, SpecialKind};

    fn report(entries: &[(&str, SpecialKind)]) -> Report {
        Report {
            left_out: entries
                .iter()
                .map(|(path, kind)| ducc_unpack::LeftOut {
                    layer: "sha256:ab".to_owned(),
                    path: EntryPath::normalise(path.as_bytes()).unwrap(),
                    kind: *kind,
                })
                .collect(),
            ..Report::default()
        }
    }

    #[test]
    fn entries_listed_by_both_trees_are_recorded_once_in_path_order() {
        let left_out = LeftOut::default();
        let layer_dir = report(&[("z", SpecialKind::Fifo), ("a", SpecialKind::Char)]);
        left_out.add(&layer_dir);
        left_out.add(&report(&[
            ("a", SpecialKind::Char),
            ("m", SpecialKind::Block),
        ]));
        let record = left_out.take();
        let paths: Vec<&str> = record.dropped.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "m", "z"]);
        assert_eq!(
            first_entries(&record),
            [
                "sha256:ab a (char)",
                "sha256:ab m (block)",
                "sha256:ab z (fifo)"
            ]
        );
        assert_eq!(
            String::from_utf8(record.to_json()).unwrap(),
            r#"{"dropped":[{"path":"a","kind":"char","layer":"sha256:ab"},{"path":"m","kind":"block","layer":"sha256:ab"},{"path":"z","kind":"fifo","layer":"sha256:ab"}]}"#
        );
        // A new image starts empty.
        assert!(left_out.take().dropped.is_empty());
    }
}
