//! What a repository holds and what gc would remove, as an operator reads them: aligned tables
//! (`ducc list`) and JSON (`ducc list --json`, `ducc list --garbage --json`).

use std::time::Duration;

use ducc_cvmfs::lifecycle::{
    GcOptions, GcReport, ListedImage, ListedLayer, ListedPlatform, Listing, Piece,
};
use serde_json::json;

use crate::Engine;
use crate::error::ConvertError;
use crate::lifecycle::{GcSummary, human_bytes};

/// A repository's converted images and layers ([`crate::Plan::list`]).
#[derive(Debug, Clone)]
pub struct RepositoryListing(Listing);

impl RepositoryListing {
    pub(crate) fn new(listing: Listing) -> RepositoryListing {
        RepositoryListing(listing)
    }

    /// The images, one line each, in aligned columns under a header.
    pub fn images_table(&self) -> String {
        images_table(&self.0.images)
    }

    /// The layers, one line each: digest, sizes, how many images use it and which.
    pub fn layers_table(&self) -> String {
        layers_table(&self.0.layers)
    }

    /// `{"images": [...]}`, pretty-printed, with a final newline.
    pub fn images_json(&self) -> String {
        json_text(&json!({ "images": self.0.images }))
    }

    /// `{"layers": [...]}`, pretty-printed, with a final newline.
    pub fn layers_json(&self) -> String {
        json_text(&json!({ "layers": self.0.layers }))
    }
}

impl Engine {
    /// [`Engine::collect_garbage`] with a grace period of `grace_days` days, from now; with
    /// `dry_run` only the plan.
    ///
    /// # Errors
    /// As [`Engine::collect_garbage`].
    pub fn collect_garbage_after(
        &self,
        grace_days: u32,
        dry_run: bool,
    ) -> Result<GcReport, ConvertError> {
        let mut options = GcOptions::new(Duration::from_secs(u64::from(grace_days) * 86_400));
        options.dry_run = dry_run;
        self.collect_garbage(&options)
    }
}

impl GcSummary<'_> {
    /// The plan or summary as JSON: the pieces removable now, those waiting for the grace
    /// period (with when each is due) and the leftovers; pretty-printed, with a final newline.
    pub fn json(&self) -> String {
        json_text(&garbage_json(self.0))
    }
}

fn garbage_json(report: &GcReport) -> serde_json::Value {
    let grace = report.grace.as_secs();
    let piece = |p: &Piece, due: Option<u64>| {
        let mut value = json!({
            "kind": p.kind.as_str(),
            "id": p.id,
            "path": p.path.as_str(),
            "bytes": p.bytes,
            "unreferenced_since": p.since,
        });
        if let Some(due) = due {
            value["due"] = json!(due);
        }
        value
    };
    json!({
        "images": report.images,
        "grace_period_seconds": grace,
        "removable": report.removed.iter().map(|p| piece(p, None)).collect::<Vec<_>>(),
        "waiting": report
            .waiting
            .iter()
            .map(|p| piece(p, Some(p.since.saturating_add(grace))))
            .collect::<Vec<_>>(),
        "leftovers": report.leftovers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    })
}

fn json_text(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// `sha256:<hex>` shortened to 12 hex digits, as `docker images` shows IDs.
fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .chars()
        .take(12)
        .collect()
}

fn time(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || "-".to_owned(),
            |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

fn images_table(images: &[ListedImage]) -> String {
    let mut rows = vec![
        [
            "NAME",
            "MANIFEST",
            "CONFIG",
            "CONVERTED",
            "PLATFORMS",
            "FLAT",
            "LAYERS",
            "SHARED",
            "SIGNATURE",
            "DROPPED",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for image in images {
        let one = |value: &dyn Fn(&ListedPlatform) -> String| match image.platforms.as_slice() {
            [only] => value(only),
            _ => "(per platform)".to_owned(),
        };
        let platforms: Vec<&str> = image
            .platforms
            .iter()
            .map(|p| p.platform.as_deref().unwrap_or("default"))
            .collect();
        rows.push(vec![
            image.name.clone(),
            one(&|p| p.manifest.as_deref().map_or_else(|| "-".to_owned(), short)),
            one(&|p| short(&p.config)),
            time(
                image
                    .platforms
                    .iter()
                    .map(|p| p.converted_at)
                    .max()
                    .unwrap_or(0),
            ),
            platforms.join(","),
            human_bytes(image.platforms.iter().map(|p| p.flat_bytes).sum()),
            image.layers.to_string(),
            image.shared_layers.to_string(),
            image.signature.as_str().to_owned(),
            image
                .dropped
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ]);
    }
    table(&rows)
}

fn layers_table(layers: &[ListedLayer]) -> String {
    let mut rows = vec![
        ["LAYER", "SIZE", "COMPRESSED", "USERS", "IMAGES"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for layer in layers {
        let size = |bytes: Option<u64>| bytes.map_or_else(|| "-".to_owned(), human_bytes);
        rows.push(vec![
            short(&layer.digest),
            size(layer.diff_bytes),
            size(layer.compressed_bytes),
            layer.images.len().to_string(),
            if layer.images.is_empty() {
                "(none: garbage)".to_owned()
            } else {
                layer.images.join(",")
            },
        ]);
    }
    table(&rows)
}

/// Rows in columns two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_leaves_the_last_unpadded() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            vec!["aaa".to_owned(), "b".to_owned(), "c c".to_owned()],
        ];
        assert_eq!(table(&rows), "A    BB  C\naaa  b   c c\n");
    }

    #[test]
    fn digests_are_shortened_to_twelve_hex_digits() {
        assert_eq!(
            short(&format!("sha256:{}", "ab".repeat(32))),
            "abababababab"
        );
    }
}
