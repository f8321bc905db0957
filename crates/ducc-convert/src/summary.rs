//! What a run did: counts of converted, up-to-date and failed images, and the failures.

use std::fmt;

use crate::engine::{ImageResult, Outcome};

/// What a run (or one pass of a loop) did, built from its [`ImageResult`]s. Its `Display` is the
/// end-of-run report: `ducc: 2 converted, 1 up to date, 1 failed` and a line per failure.
#[derive(Debug, Default)]
pub struct Summary {
    converted: usize,
    up_to_date: usize,
    other_shard: usize,
    revisions: usize,
    lease_waits: usize,
    failed: Vec<ImageResult>,
}

impl Summary {
    /// Nothing done yet.
    pub fn new() -> Summary {
        Summary::default()
    }

    /// Counts `result` (and logs what a converted image did).
    pub fn add(&mut self, result: ImageResult) {
        let image = result.image().to_owned();
        self.revisions += result.revisions();
        self.lease_waits += result.lease_waits();
        match result.result() {
            Ok(Outcome::UpToDate) => {
                tracing::info!(image = %image, "up to date");
                self.up_to_date += 1;
            }
            Ok(Outcome::OtherShard) => {
                tracing::debug!(image = %image, "other shard");
                self.other_shard += 1;
            }
            Ok(Outcome::Converted {
                layers_unpacked,
                flat_built,
                thin,
            }) => {
                tracing::info!(
                    image = %image,
                    "converted ({layers_unpacked} layers unpacked, flat tree {}, thin image {})",
                    if *flat_built { "built" } else { "kept" },
                    match thin {
                        Some(ducc_thin::PushOutcome::AlreadyPresent) => "already pushed",
                        Some(_) => "pushed",
                        None => "skipped",
                    }
                );
                self.converted += 1;
            }
            Err(_) => self.failed.push(result),
        }
    }

    /// Images converted.
    pub fn converted(&self) -> usize {
        self.converted
    }

    /// Images already up to date.
    pub fn up_to_date(&self) -> usize {
        self.up_to_date
    }

    /// Images left to other nodes (`--shard`).
    pub fn other_shard(&self) -> usize {
        self.other_shard
    }

    /// Revisions the run made in the repository (each `cvmfs_server` ingest and publish: see
    /// [`ImageResult::revisions`]); 0 with the local publisher.
    pub fn revisions(&self) -> usize {
        self.revisions
    }

    /// Waits for a repository lease that another publisher node held (see
    /// [`ImageResult::lease_waits`]).
    pub fn lease_waits(&self) -> usize {
        self.lease_waits
    }

    /// The failed images that `ignore_errors` does not cover.
    pub fn failed(&self) -> impl Iterator<Item = &ImageResult> {
        self.failed.iter().filter(|f| !f.is_ignored())
    }

    /// The failed images that `ignore_errors` covers.
    pub fn ignored(&self) -> impl Iterator<Item = &ImageResult> {
        self.failed.iter().filter(|f| f.is_ignored())
    }

    /// Whether some image failed that `ignore_errors` does not cover.
    pub fn has_failures(&self) -> bool {
        self.failed().next().is_some()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failed().count();
        write!(
            f,
            "ducc: {} converted, {} up to date",
            self.converted, self.up_to_date
        )?;
        if self.other_shard > 0 {
            write!(f, ", {} other shard", self.other_shard)?;
        }
        write!(f, ", {failed} failed")?;
        match self.failed.len() - failed {
            0 => {}
            n => write!(f, " ({n} more ignored by ignore_errors)")?,
        }
        if self.revisions > 0 {
            write!(f, "; {} revisions", self.revisions)?;
            if self.converted > 0 {
                write!(
                    f,
                    " ({:.1} per converted image)",
                    self.revisions as f64 / self.converted as f64
                )?;
            }
        }
        match self.lease_waits {
            0 => {}
            1 => write!(f, "; 1 lease wait")?,
            n => write!(f, "; {n} lease waits")?,
        }
        let line = |r: &ImageResult| match r.failure() {
            Some(failure) => format!(
                "{} ({}): {}",
                r.image(),
                failure.step(),
                failure.error().chain()
            ),
            None => r.image().to_owned(),
        };
        for r in self.failed() {
            write!(f, "\n  {}", line(r))?;
        }
        for r in self.ignored() {
            write!(f, "\n  ignored: {}", line(r))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConvertError, ErrorKind, Step};

    #[test]
    fn the_report_counts_and_lists_failures_ignored_ones_last() {
        let mut summary = Summary::new();
        summary.add(ImageResult::new("a".into(), Ok(Outcome::UpToDate)));
        summary.add(ImageResult::new(
            "b".into(),
            Ok(Outcome::Converted {
                layers_unpacked: 1,
                flat_built: true,
                thin: None,
            }),
        ));
        let failed = |image: &str, message: &str| {
            ImageResult::failed(
                image.into(),
                Step::Layers,
                ConvertError::new(ErrorKind::Unpack, message),
            )
        };
        summary.add(failed("c", "bad tar"));
        summary.add(failed("d", "gone").with_ignored(true));
        assert!(summary.has_failures());
        assert_eq!(
            summary.to_string(),
            "ducc: 1 converted, 1 up to date, 1 failed (1 more ignored by ignore_errors)\n  c (layers): bad tar\n  ignored: d (layers): gone"
        );
        let mut clean = Summary::new();
        clean.add(failed("e", "gone").with_ignored(true));
        assert!(!clean.has_failures());
    }

    #[test]
    fn revisions_are_counted_and_given_per_converted_image_when_there_are_any() {
        let converted = || {
            Ok(Outcome::Converted {
                layers_unpacked: 1,
                flat_built: true,
                thin: None,
            })
        };
        let mut summary = Summary::new();
        let mut first = ImageResult::new("a".into(), converted());
        first.add_revisions(2);
        summary.add(first);
        let mut second = ImageResult::new("b".into(), converted());
        second.add_revisions(1);
        summary.add(second);
        summary.add(ImageResult::new("c".into(), Ok(Outcome::UpToDate)));
        assert_eq!(summary.revisions(), 3);
        assert_eq!(
            summary.to_string(),
            "ducc: 2 converted, 1 up to date, 0 failed; 3 revisions (1.5 per converted image)"
        );
    }

    #[test]
    fn lease_waits_are_counted_and_told_when_there_were_any() {
        let mut summary = Summary::new();
        let mut waited = ImageResult::new(
            "a".into(),
            Ok(Outcome::Converted {
                layers_unpacked: 1,
                flat_built: true,
                thin: None,
            }),
        );
        waited.add_lease_waits(2);
        summary.add(waited);
        let mut failed = ImageResult::failed(
            "b".into(),
            Step::Layers,
            ConvertError::new(ErrorKind::Publish, "lease path busy"),
        );
        failed.add_lease_waits(1);
        summary.add(failed);
        assert_eq!(summary.lease_waits(), 3);
        assert_eq!(
            summary.to_string(),
            "ducc: 1 converted, 0 up to date, 1 failed; 3 lease waits\n  b (layers): lease path busy"
        );
        let mut none = Summary::new();
        none.add(ImageResult::new("c".into(), Ok(Outcome::UpToDate)));
        assert!(!none.to_string().contains("lease"), "{none}");
    }

    #[test]
    fn images_of_other_shards_are_counted_apart_from_up_to_date_ones() {
        let mut summary = Summary::new();
        summary.add(ImageResult::new("a".into(), Ok(Outcome::UpToDate)));
        summary.add(ImageResult::new("b".into(), Ok(Outcome::OtherShard)));
        summary.add(ImageResult::new("c".into(), Ok(Outcome::OtherShard)));
        assert_eq!(summary.up_to_date(), 1);
        assert_eq!(summary.other_shard(), 2);
        assert!(!summary.has_failures());
        assert_eq!(
            summary.to_string(),
            "ducc: 0 converted, 1 up to date, 2 other shard, 0 failed"
        );
    }
}
