//! Taking images out of the repository: `delete-image`, `prune` against wish lists, and garbage
//! collection (issue 15). The mechanics are `ducc_cvmfs::lifecycle`'s; this adds wish-list
//! expansion, the safety limits, events and the text an operator reads.

use std::fmt;
use std::time::Instant;

use ducc_cvmfs::lifecycle::{
    self, DeletePlan, DeleteReport, GcOptions, GcReport, Inventory, RecordedImage,
};
use ducc_cvmfs::{PublicName, RepoPath};
use ducc_oci::ImageRef;
use ducc_wishlist::WishList;

use crate::engine::Engine;
use crate::error::ConvertError;
use crate::events::Event;
use crate::shard::Shard;

/// Settings of [`Engine::prune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneOptions {
    /// Plan only.
    pub dry_run: bool,
    /// Most images one prune deletes; with more, it deletes none.
    pub max_deletions: usize,
    /// This node's shard (`--shard K/N`): recorded images of other shards are never deleted.
    pub shard: Shard,
}

impl Default for PruneOptions {
    fn default() -> PruneOptions {
        PruneOptions {
            dry_run: false,
            max_deletions: 50,
            shard: Shard::all(),
        }
    }
}

/// A wish whose expansion failed, and the recorded images it keeps from deletion.
#[derive(Debug, Clone)]
pub struct Protected {
    /// The wish, as written.
    pub wish: String,
    /// Why it could not be expanded.
    pub error: String,
    /// The recorded images it could match (same registry and repository, its tag glob).
    pub images: Vec<PublicName>,
}

/// What [`Engine::delete_images`] did, or would do.
#[derive(Debug, Clone)]
pub struct DeleteOutcome {
    /// Whether this was a plan only.
    pub dry_run: bool,
    /// The images found and the names not recorded.
    pub plan: DeletePlan,
    /// The paths of each image (markers, then links).
    pub paths: Vec<Vec<RepoPath>>,
    /// What was removed (none on a dry run).
    pub report: DeleteReport,
}

impl DeleteOutcome {
    /// Whether every name asked for was recorded.
    pub fn is_complete(&self) -> bool {
        self.plan.missing.is_empty()
    }
}

/// What [`Engine::prune`] did, or would do.
#[derive(Debug, Clone)]
pub struct PruneOutcome {
    /// Whether this was a plan only.
    pub dry_run: bool,
    /// Images the wish lists stand for now.
    pub desired: usize,
    /// Images recorded in the repository.
    pub recorded: usize,
    /// Recorded images of other nodes' shards (`--shard`), left alone.
    pub other_shard: usize,
    /// Recorded images that no wish stands for: deleted (planned, on a dry run; none when over
    /// the limit).
    pub undesired: Vec<PublicName>,
    /// Wishes that could not be expanded, with the images they protect.
    pub protected: Vec<Protected>,
    /// The limit, when `undesired` is longer (nothing was deleted).
    pub over_limit: Option<usize>,
    /// What was removed.
    pub report: DeleteReport,
}

impl PruneOutcome {
    /// Whether the prune did all it should: no wish failed and the limit held.
    pub fn is_complete(&self) -> bool {
        self.protected.is_empty() && self.over_limit.is_none()
    }
}

impl Engine {
    /// Deletes each image's markers, links and podman names (see
    /// `ducc_cvmfs::lifecycle::delete_images`); content is left to the gc. Names the repository
    /// does not record are listed in the outcome; the others are still deleted.
    ///
    /// # Errors
    /// A name that cannot be a repository path, and publisher failures.
    pub fn delete_images(
        &self,
        images: &[ImageRef],
        dry_run: bool,
    ) -> Result<DeleteOutcome, ConvertError> {
        let names = images
            .iter()
            .map(crate::image::public_name)
            .collect::<Result<Vec<_>, _>>()?;
        let inventory = Inventory::read(&*self.publisher, &self.layout)?;
        let plan = lifecycle::plan_delete(&inventory, &names);
        self.delete_planned(plan, dry_run)
    }

    fn delete_planned(
        &self,
        plan: DeletePlan,
        dry_run: bool,
    ) -> Result<DeleteOutcome, ConvertError> {
        let paths: Vec<Vec<RepoPath>> = plan
            .images
            .iter()
            .map(|i| DeletePlan::paths(&self.layout, i))
            .collect();
        for (image, paths) in plan.images.iter().zip(&paths) {
            self.events.event(&Event::DeleteImage {
                image: image.name().to_string(),
                paths: paths.iter().map(|p| p.as_str().to_owned()).collect(),
                dry_run,
            });
        }
        let report = if dry_run || plan.images.is_empty() {
            DeleteReport::default()
        } else {
            lifecycle::delete_images(&*self.publisher, &self.layout, &plan.images, &mut |path| {
                tracing::info!("removed {path}");
            })?
        };
        Ok(DeleteOutcome {
            dry_run,
            plan,
            paths,
            report,
        })
    }

    /// Deletes every image the repository records that none of `lists` stands for now. A wish
    /// whose tags cannot be listed protects the recorded images it could match; more than
    /// [`PruneOptions::max_deletions`] deletions delete nothing.
    ///
    /// # Errors
    /// A list whose `cvmfs_repo` is not the engine's, and publisher failures.
    pub fn prune(
        &self,
        lists: &[WishList],
        options: &PruneOptions,
    ) -> Result<PruneOutcome, ConvertError> {
        let mut desired = std::collections::BTreeSet::new();
        let inventory = Inventory::read(&*self.publisher, &self.layout)?;
        let mut protected = Vec::new();
        for list in lists {
            if list.cvmfs_repo() != &self.repo {
                return Err(ConvertError::image(format!(
                    "{}: cvmfs_repo {} is not {} (every wish list given to prune must name the \
                     same repository)",
                    list.path().display(),
                    list.cvmfs_repo(),
                    self.repo
                )));
            }
            for wish in list.wishes() {
                match self.expand(&wish.input, None, None) {
                    Ok(images) => {
                        for (image, _) in images {
                            if !options.shard.contains(&image) {
                                continue;
                            }
                            desired.insert(crate::image::public_name(&image)?.to_string());
                        }
                    }
                    Err(error) => {
                        let images: Vec<PublicName> = inventory
                            .images()
                            .map(RecordedImage::name)
                            .filter(|name| wish_could_match(&wish.input, name))
                            .cloned()
                            .collect();
                        let error = error.chain();
                        tracing::error!(
                            "{}: {error}; the {} recorded image(s) it could match are kept",
                            wish.input,
                            images.len()
                        );
                        self.events.event(&Event::PruneProtected {
                            wish: wish.input.to_string(),
                            error: error.clone(),
                            images: images.iter().map(ToString::to_string).collect(),
                        });
                        protected.push(Protected {
                            wish: wish.input.to_string(),
                            error,
                            images,
                        });
                    }
                }
            }
        }
        let kept: std::collections::BTreeSet<String> = protected
            .iter()
            .flat_map(|p| p.images.iter().map(ToString::to_string))
            .collect();
        let mine = |i: &&RecordedImage| options.shard.contains_name(&i.name().to_string());
        let other_shard = inventory.images().filter(|i| !mine(i)).count();
        let undesired: Vec<RecordedImage> = inventory
            .images()
            .filter(mine)
            .filter(|i| {
                let name = i.name().to_string();
                !desired.contains(&name) && !kept.contains(&name)
            })
            .cloned()
            .collect();
        let names: Vec<PublicName> = undesired.iter().map(|i| i.name().clone()).collect();
        let mut outcome = PruneOutcome {
            dry_run: options.dry_run,
            desired: desired.len(),
            recorded: inventory.len(),
            other_shard,
            undesired: names,
            protected,
            over_limit: None,
            report: DeleteReport::default(),
        };
        if outcome.undesired.len() > options.max_deletions {
            outcome.over_limit = Some(options.max_deletions);
            return Ok(outcome);
        }
        let plan = DeletePlan {
            images: undesired,
            missing: Vec::new(),
        };
        outcome.report = self.delete_planned(plan, options.dry_run)?.report;
        Ok(outcome)
    }

    /// Garbage collection of the engine's repository (see
    /// `ducc_cvmfs::lifecycle::collect_garbage`), with an event per removed piece and one at
    /// the end.
    ///
    /// # Errors
    /// As `collect_garbage`: a record it cannot read, or a failing transaction.
    pub fn collect_garbage(&self, options: &GcOptions) -> Result<GcReport, ConvertError> {
        let started = Instant::now();
        let dry_run = options.dry_run;
        let mut tell = |piece: &lifecycle::Piece| {
            self.events.event(&Event::GcRemove {
                kind: piece.kind.as_str().to_owned(),
                id: piece.id.clone(),
                path: piece.path.as_str().to_owned(),
                bytes: piece.bytes,
                dry_run,
            });
        };
        let report =
            lifecycle::collect_garbage(&*self.publisher, &self.layout, options, &mut tell)?;
        if dry_run {
            report.removed.iter().for_each(&mut tell);
        }
        self.events.event(&Event::GcEnd {
            removed: report.removed.len(),
            removed_bytes: report.removed_bytes(),
            waiting: report.waiting.len(),
            waiting_bytes: report.waiting_bytes(),
            dry_run,
            time_elapsed_s: started.elapsed().as_secs_f64(),
        });
        Ok(report)
    }
}

/// Whether the recorded image `name` could be one that `wish` expands to: same registry and
/// repository, and a tag its glob (or its tag) matches.
fn wish_could_match(wish: &ImageRef, name: &PublicName) -> bool {
    if wish.registry() != name.registry() || wish.repository() != name.repository() {
        return false;
    }
    match (wish.tag_glob(), wish.tag()) {
        (Some(glob), _) => glob.matches(name.reference()),
        (None, Some(tag)) => tag == name.reference(),
        (None, None) => true,
    }
}

/// `12.3 MiB`.
/// A byte count as an operator reads it: `512 B`, `1.5 KiB`, `3.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    bytes(n)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl fmt::Display for DeleteOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        for (image, paths) in self.plan.images.iter().zip(&self.paths) {
            writeln!(f, "{verb} {}", image.name())?;
            for path in paths {
                writeln!(f, "  {path}")?;
            }
        }
        for name in &self.plan.missing {
            writeln!(f, "not in the repository: {name}")?;
        }
        write!(
            f,
            "{} image(s) {verb}, {} not found; layers and flat trees stay until \
             `ducc garbage-collection`",
            self.plan.images.len(),
            self.plan.missing.len()
        )
    }
}

impl fmt::Display for PruneOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.protected {
            writeln!(
                f,
                "wish {} could not be expanded ({}); kept {} recorded image(s) it could match",
                p.wish,
                p.error,
                p.images.len()
            )?;
        }
        let verb = match (self.over_limit, self.dry_run) {
            (Some(_), _) => "would delete",
            (None, true) => "would delete",
            (None, false) => "deleted",
        };
        for name in &self.undesired {
            writeln!(f, "{verb} {name}")?;
        }
        if let Some(limit) = self.over_limit {
            writeln!(
                f,
                "{} image(s) to delete is more than --max-deletions {limit}: nothing was deleted \
                 (check the wish lists, or raise --max-deletions)",
                self.undesired.len()
            )?;
        }
        write!(f, "{} image(s) recorded", self.recorded)?;
        if self.other_shard > 0 {
            write!(f, " ({} of other shards, left alone)", self.other_shard)?;
        }
        write!(
            f,
            ", {} wished for, {} {verb}, {} protected by failed wishes",
            self.desired,
            if self.over_limit.is_some() {
                0
            } else {
                self.undesired.len()
            },
            self.protected.iter().map(|p| p.images.len()).sum::<usize>()
        )
    }
}

/// The plan or summary of a gc, as an operator reads it.
pub struct GcSummary<'a>(pub &'a GcReport);

impl fmt::Display for GcSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        let verb = if r.dry_run { "would remove" } else { "removed" };
        for piece in &r.removed {
            writeln!(
                f,
                "{verb} {} {} ({})",
                piece.kind.as_str(),
                piece.path,
                bytes(piece.bytes)
            )?;
        }
        for path in &r.leftovers {
            writeln!(f, "{verb} leftover {}", path.display())?;
        }
        // When each waiting piece becomes due: unreferenced since its first sighting, plus the
        // grace period (a gc at or after that time removes it).
        for piece in &r.waiting {
            let due = piece.since.saturating_add(r.grace.as_secs());
            let due = i64::try_from(due)
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .unwrap_or(jiff::Timestamp::MAX);
            writeln!(
                f,
                "waiting {} {} ({}) until {}",
                piece.kind.as_str(),
                piece.path,
                bytes(piece.bytes),
                due.strftime("%Y-%m-%dT%H:%M:%SZ")
            )?;
        }
        for problem in &r.problems {
            writeln!(f, "left alone: {problem}")?;
        }
        let days = r.grace.as_secs() / 86_400;
        write!(
            f,
            "{} image(s) recorded; {verb} {} piece(s), {}",
            r.images,
            r.removed.len(),
            bytes(r.removed_bytes()),
        )?;
        if r.origins_updated > 0 {
            write!(f, "; {} origin.json file(s) updated", r.origins_updated)?;
        }
        if !r.waiting.is_empty() {
            write!(
                f,
                "; {} piece(s), {}, wait for the grace period ({days} day(s)): \
                 `ducc garbage-collection --grace-period 0` removes them now",
                r.waiting.len(),
                bytes(r.waiting_bytes()),
            )?;
        }
        if !r.reclaimed.is_empty() {
            write!(
                f,
                "; {} piece(s) were taken into use again",
                r.reclaimed.len()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_wish_protects_its_repository_and_glob_only() {
        let wish = ImageRef::parse("https://reg.io/lib/app:1.*").unwrap();
        let name = |r: &str, repo: &str, t: &str| PublicName::tagged(r, repo, t).unwrap();
        assert!(wish_could_match(&wish, &name("reg.io", "lib/app", "1.2")));
        assert!(!wish_could_match(&wish, &name("reg.io", "lib/app", "2.0")));
        assert!(!wish_could_match(
            &wish,
            &name("reg.io", "lib/other", "1.2")
        ));
        assert!(!wish_could_match(
            &wish,
            &name("other.io", "lib/app", "1.2")
        ));
    }

    #[test]
    fn sizes_read_as_an_operator_expects() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
