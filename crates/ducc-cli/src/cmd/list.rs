//! `ducc list`: what a repository holds, read from its published tree (issue 27). It opens the
//! publisher as `convert` does (for `cvmfs`, that runs only `cvmfs_server list`, and behind a
//! gateway `cvmfs_server mount` to see the newest revision: issue 30), publishes nothing and
//! takes no lock but the publisher's own while remounting; `--garbage` is gc's own dry run.

use std::time::Duration;

use anyhow::anyhow;
use ducc_convert::{GcSummary, human_bytes};
use ducc_cvmfs::Layout;
use ducc_cvmfs::lifecycle::{GcOptions, GcReport, ListedImage, ListedLayer, Listing, Piece};
use serde_json::json;

use crate::args::{GlobalArgs, ListArgs, PublisherKind};
use crate::cmd::lifecycle;
use crate::convert::{open_publisher, repository};
use crate::exit::{Failure, print_stdout};

/// Runs `ducc list`.
pub fn run(global: &GlobalArgs, args: ListArgs) -> Result<(), Failure> {
    if args.garbage {
        return garbage(global, &args);
    }
    let repo = repository(&args.repo)?;
    if args.target.publisher == PublisherKind::Local {
        // Listing must not create an empty repository where there was none.
        let dir = args.target.root.join(repo.name());
        if !dir.is_dir() {
            return Err(Failure::Usage(anyhow!(
                "no repository {} under {} (see --root)",
                repo.name(),
                args.target.root.display()
            )));
        }
    }
    let publisher = open_publisher(&args.target, &repo).map_err(Failure::Usage)?;
    let listing = Listing::read(&*publisher, &Layout::of(&repo))
        .map_err(|e| Failure::Run(anyhow!(ducc_oci::error_chain(&e))))?;
    let text = match (args.json, args.layers) {
        (true, false) => json_text(&json!({ "images": listing.images })),
        (true, true) => json_text(&json!({ "layers": listing.layers })),
        (false, false) => images_table(&listing.images),
        (false, true) => layers_table(&listing.layers),
    };
    print_stdout(&text)
}

/// `--garbage`: gc's dry run, printed as `gc --dry-run` prints it (or as JSON).
fn garbage(global: &GlobalArgs, args: &ListArgs) -> Result<(), Failure> {
    let engine = lifecycle::engine(global, &args.target, &repository(&args.repo)?)?;
    let mut options = GcOptions::new(Duration::from_secs(u64::from(args.grace_period) * 86_400));
    options.dry_run = true;
    let report = engine
        .collect_garbage(&options)
        .map_err(|e| Failure::Run(anyhow!(e.chain())))?;
    if args.json {
        print_stdout(&json_text(&garbage_json(&report)))
    } else {
        print_stdout(&format!("{}\n", GcSummary(&report)))
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

/// The images, one line each, in aligned columns under a header.
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
        let one = |value: &dyn Fn(&ducc_cvmfs::lifecycle::ListedPlatform) -> String| match image
            .platforms
            .as_slice()
        {
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

/// The layers, one line each: digest, sizes, how many images use it and which.
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
