//! Converting one image: manifest and config, the "already converted" check, layer directories,
//! the flat tree, the public symlink, the marker (last), and the thin image.
//!
//! Every write goes through a publisher transaction on its own sub-path; a failure drops the open
//! transaction, which aborts it, so a failed image leaves nothing half-published and no marker.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use ducc_cvmfs::{
    Arch, FillHints, FlatRecord, Group, ImageSlot, IngestOptions, LayerInfo, Layout,
    MarkerDescriptor, MarkerManifest, PublicName, Published, RepoPath, RepositoryState,
};
use ducc_oci::{ConfigDigest, DiffId, ImageRef, LayerDigest, Platform};
use ducc_registry::oci_spec::image::Digest;
use ducc_registry::oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use ducc_registry::{Client, FetchedManifest, Login, ManifestSelection, Reference, Repository};
use ducc_thin::{PushOutcome, ThinDescriptor, ThinImage, ThinIndex, ThinLayer};
use ducc_unpack::{
    ExtractOptions, FlatExtractor, ImageRuntime, LayerDigests, LayerDirOptions, LayerReader,
};

use crate::batch::{Batch, Deferred};
use crate::cache::Fetch;
use crate::engine::{Engine, ImageResult, Outcome, StopToken};
use crate::error::{Context as _, ConvertError, ImageFailure, Step, at, bail_invalid, invalid};
use crate::events::{EndStatus, Event};
use crate::layers::PlannedLayer;
use crate::signature::SignatureRecord;

mod multiarch;

type Result<T, E = ConvertError> = std::result::Result<T, E>;

/// One conversion of one image: the engine, the stop token, the push login of its thin image and
/// the batch it joins.
pub(crate) struct Job<'e> {
    pub(crate) engine: &'e Engine,
    stop: &'e StopToken,
    thin_login: Option<&'e Login>,
    /// What the image being converted loses to the repository (issue 30).
    left_out: crate::dropped::LeftOut,
    /// The batch the image joins once complete (`--batch`), when batching: its session's.
    batch: Option<&'e Batch<'e>>,
    /// Whether the wish list's `ignore_errors` covers the image.
    ignored: bool,
    /// Revisions made by the conversion running (its layers, and its commit when unbatched).
    revisions: AtomicUsize,
    /// Layers of the image being converted that another publisher node published meanwhile
    /// (found inside their lease: [`Event::LayerFound`]).
    layers_found: AtomicUsize,
    /// The engine's lease waits when the conversion running started.
    waits_before: AtomicUsize,
}

/// What the thin image of a converted image is made from.
struct ThinSource {
    layers: Vec<PlannedLayer>,
    config: ImageConfiguration,
}

/// A converted image whose marker is not written yet: it goes last, after the thin image, so a
/// run killed before it does the (then cheap) remaining work again.
struct Pending<'e> {
    source: ThinSource,
    started: Instant,
    /// What the image publishes besides its layers (flat tree, link, podman store, origins),
    /// held to be published with the marker; `None` once published.
    group: Option<Box<dyn Group + 'e>>,
    /// What publishing its layers took, and how long.
    published: Published,
    layers_publish_s: f64,
    layers_s: f64,
    /// What the signature policy accepted, written beside the marker.
    signature: Option<SignatureRecord>,
    /// What its trees left out, recorded beside the marker.
    dropped: ducc_cvmfs::DroppedRecord,
    /// Layers it was to write that another publisher node published meanwhile.
    layers_found: usize,
    /// The flat tree it built (config and apparent size), published with its group.
    flat_tree: Option<(ConfigDigest, u64)>,
}

impl<'e> Job<'e> {
    pub(crate) fn new(
        engine: &'e Engine,
        stop: &'e StopToken,
        thin_login: Option<&'e Login>,
        batch: Option<&'e Batch<'e>>,
        ignored: bool,
    ) -> Job<'e> {
        Job {
            ignored,
            engine,
            stop,
            thin_login,
            left_out: crate::dropped::LeftOut::default(),
            batch,
            revisions: AtomicUsize::new(0),
            layers_found: AtomicUsize::new(0),
            waits_before: AtomicUsize::new(0),
        }
    }

    /// Lease waits of the conversion running so far.
    fn lease_waits(&self) -> usize {
        self.engine
            .lease_waits()
            .saturating_sub(self.waits_before.load(Ordering::SeqCst))
    }

    fn emit(&self, event: Event) {
        self.engine.events.event(&event);
    }

    fn state(&self) -> RepositoryState<'_> {
        RepositoryState::new(&*self.engine.publisher, &self.engine.layout)
    }

    /// Converts `input` (a plain tag or digest, no glob) and pushes `output` as its thin image:
    /// one result, or, with `--multi-arch` and an index, one per platform (plus one for the
    /// image as a whole when its shared links or thin index fail).
    pub fn convert(&self, input: &ImageRef, output: Option<&ImageRef>) -> Vec<ImageResult> {
        self.revisions.store(0, Ordering::SeqCst);
        self.waits_before
            .store(self.engine.lease_waits(), Ordering::SeqCst);
        let mut results =
            crate::bug::catch_bug("the conversion", || self.convert_unguarded(input, output))
                .unwrap_or_else(|error| {
                    vec![ImageResult::new(
                        input.whole_name(),
                        Err(ImageFailure::new(Step::Internal, error)),
                    )]
                });
        if let Some(first) = results.first_mut() {
            first.add_revisions(self.revisions.swap(0, Ordering::SeqCst));
            first.add_lease_waits(self.lease_waits());
        }
        results
    }

    fn convert_unguarded(&self, input: &ImageRef, output: Option<&ImageRef>) -> Vec<ImageResult> {
        // Held from the marker check to the marker: a gc of this host waits for it (issue 15).
        let _gc = match self.engine.publisher.gc_lock(ducc_cvmfs::GcLock::Convert) {
            Ok(guard) => guard,
            Err(e) => {
                return vec![ImageResult::new(
                    input.whole_name(),
                    Err(ImageFailure::new(Step::Manifest, e.into())),
                )];
            }
        };
        if self.engine.settings.multi_arch {
            return self.convert_multi(input, output);
        }
        let result = (|| {
            let fetched = crate::source::fetch_image_manifest(
                &*self.engine.source,
                input,
                &ManifestSelection::Platform(self.engine.settings.platform.clone()),
            )
            .with_context(|| format!("cannot fetch the manifest of {input}"))
            .map_err(at(Step::Manifest))?;
            self.convert_single(input, output, &Repository::of(input), &fetched)
        })();
        vec![ImageResult::new(input.whole_name(), result)]
    }

    /// An image manifest converted into the plain layout, then its thin image.
    fn convert_single(
        &self,
        input: &ImageRef,
        output: Option<&ImageRef>,
        repository: &ducc_registry::Repository,
        fetched: &FetchedManifest,
    ) -> Result<Outcome, ImageFailure> {
        let manifest = fetched
            .image_manifest()
            .ok_or_else(|| invalid!("{input} names an index, not an image"))
            .map_err(at(Step::Manifest))?;
        let slot = ImageSlot::plain(public_name(input).map_err(at(Step::Manifest))?);
        let label = input.whole_name();
        // What the wish names is what is signed: an index's digest when the tag names one.
        let signed = fetched.index_digest().unwrap_or(fetched.digest());
        let (mut outcome, pending) = self.convert_manifest(
            input, &label, repository, fetched, signed, manifest, &slot, true,
        )?;
        let Some(mut pending) = pending else {
            return Ok(outcome);
        };
        if let Some(output) = output
            && self.wants_thin()
        {
            self.check_stop().map_err(at(Step::Thin))?;
            let image = self
                .thin_image(input, &pending.source)
                .map_err(at(Step::Thin))?;
            let pushed = self
                .push_thin(input, output, |client, repository, tag| {
                    ducc_thin::push(client, repository, tag, &image)
                        .map(|o| (o, image.manifest.digest.to_string()))
                })
                .map_err(at(Step::Thin))?;
            outcome = with_thin(outcome, pushed);
        }
        let group = pending.group.take();
        self.finish_image(&label, &slot, manifest, &outcome, &pending, group)?;
        Ok(outcome)
    }

    /// The marker, last, and the end of the image.
    fn finish_image(
        &self,
        label: &str,
        slot: &ImageSlot,
        manifest: &ImageManifest,
        outcome: &Outcome,
        pending: &Pending<'_>,
        group: Option<Box<dyn Group + '_>>,
    ) -> Result<(), ImageFailure> {
        self.check_stop().map_err(at(Step::Marker))?;
        // The marker goes last into what the image publishes besides its layers: on a stratum
        // 0 all of it is one revision, published whole or not at all (with its batch's).
        let group_is_batched = group.is_some();
        let group = group.unwrap_or_else(|| self.engine.publisher.group());
        self.write_marker(
            &*group,
            slot,
            manifest,
            pending.signature.as_ref(),
            &pending.dropped,
        )
        .map_err(at(Step::Marker))?;
        let mut published = pending.published;
        let publish_started = Instant::now();
        let batched = self.batch.is_some() && group_is_batched;
        published += group
            .commit()
            .map_err(|e| at(Step::Marker)(ConvertError::from(e)))?;
        if !batched {
            self.revisions.fetch_add(
                published.revisions - pending.published.revisions,
                Ordering::SeqCst,
            );
        }
        let mut events = vec![Event::Published {
            image: label.to_owned(),
            revisions: published.revisions,
            grafted_files: published.grafted_files,
            copied_files: published.copied_files,
            layers_publish_s: pending.layers_publish_s,
            layers_s: pending.layers_s,
            image_publish_s: publish_started.elapsed().as_secs_f64(),
        }];
        let dropped = &pending.dropped;
        if !dropped.dropped.is_empty() {
            let first = crate::dropped::first_entries(dropped);
            tracing::warn!(
                "{label}: the repository cannot store device files and FIFOs (a cvmfs gateway): \
                 {} left out of its layers and flat tree, listed in {}: {}{}",
                dropped.dropped.len(),
                slot.dropped_record(&self.engine.layout),
                first.join(", "),
                if first.len() < dropped.dropped.len() {
                    ", ..."
                } else {
                    ""
                }
            );
            events.push(Event::EntriesDropped {
                image: label.to_owned(),
                count: dropped.dropped.len(),
                first,
            });
        }
        events.push(Event::Marker {
            image: label.to_owned(),
            marker: slot.marker(&self.engine.layout).as_str().to_owned(),
        });
        if let Outcome::Converted {
            layers_unpacked,
            flat_built,
            ..
        } = outcome
        {
            events.push(Event::EndImage {
                image: label.to_owned(),
                status: EndStatus::Ok {
                    layers_unpacked: *layers_unpacked,
                    layers_found: pending.layers_found,
                    flat_built: *flat_built,
                    time_elapsed_s: pending.started.elapsed().as_secs_f64(),
                },
            });
        }
        match self.batch {
            Some(batch) if batched => {
                let config = ConfigDigest::try_from(manifest.config().digest())
                    .map_err(|e| invalid!("{label}: {e}"))
                    .map_err(at(Step::Marker))?;
                batch.add(
                    Deferred {
                        label: label.to_owned(),
                        outcome: outcome.clone(),
                        ignored: self.ignored,
                        revisions: self.revisions.load(Ordering::SeqCst),
                        lease_waits: self.lease_waits(),
                        events,
                        marker: (slot.clone(), config),
                    },
                    pending.flat_tree,
                );
            }
            _ => {
                for event in &events {
                    self.emit(event.clone());
                }
            }
        }
        Ok(())
    }

    fn wants_thin(&self) -> bool {
        self.engine.settings.wants_thin()
    }

    fn set_symlink(&self, group: &dyn Group, link: &RepoPath, target: &Path) -> Result<()> {
        if self.state().symlink_is(link, target) {
            return Ok(());
        }
        let mut tx = group.begin(link)?;
        tx.symlink(link, target)?;
        tx.commit()?;
        self.emit(Event::Symlink {
            link: link.as_str().to_owned(),
            target: target.display().to_string(),
        });
        Ok(())
    }

    /// Converts one image manifest into `slot`: the marker check, layers, flat tree, symlink and
    /// (where `podman`) the podman store entry. When work was done, returns what is pending: the
    /// marker (see [`Pending`]).
    #[allow(clippy::too_many_arguments)]
    fn convert_manifest(
        &self,
        input: &ImageRef,
        label: &str,
        repository: &ducc_registry::Repository,
        fetched: &FetchedManifest,
        signed_digest: &Digest,
        manifest: &ImageManifest,
        slot: &ImageSlot,
        podman: bool,
    ) -> Result<(Outcome, Option<Pending<'_>>), ImageFailure> {
        let started = Instant::now();
        let manifest_digest = fetched.digest();
        let config_digest = crate::layers::check_blob_digests(manifest)
            .map_err(|e| at(Step::Manifest)(e.context(label)))?;
        let up_to_date = !self.engine.settings.convert_again
            && self.state().marker_config(slot).as_ref() == Some(&config_digest);
        // Before any blob (issue 25); an image converted earlier is checked again only when
        // the policy (or the digest) changed since its record.
        let signature = if up_to_date && self.signature_recorded(slot, signed_digest) {
            None
        } else {
            self.check_signature(input, label, repository, signed_digest)
                .map_err(at(Step::Signature))?
        };
        if up_to_date {
            if let Some(record) = &signature {
                self.write_signature_record(slot, record)
                    .map_err(at(Step::Signature))?;
            }
            // A kill between the marker of one platform and the shared links is repaired by the
            // caller; a plain image's symlink was written before its marker.
            self.emit(Event::ImageUpToDate {
                image: label.to_owned(),
                config: config_digest.to_string(),
            });
            return Ok((Outcome::UpToDate, None));
        }
        // Nothing gathered for an image before (one that failed) is this one's.
        self.left_out.take();
        self.layers_found.store(0, Ordering::SeqCst);
        self.emit(Event::StartImage {
            image: label.to_owned(),
            manifest: manifest_digest.to_string(),
            config: config_digest.to_string(),
            layers: manifest.layers().len(),
        });

        let config = self
            .engine
            .source
            .fetch_config(repository, &config_digest, manifest.config().size())
            .with_context(|| format!("cannot fetch the config of {label}"))
            .map_err(at(Step::Config))?;
        let layers = crate::layers::plan_layers(manifest, config.config())
            .map_err(|e| at(Step::Config)(e.context(format!("image {label}"))))?;
        let created = layer_created(config.config());
        // Everything later steps need from the config comes from this one parse, here, before
        // anything of the image is published (issue 27): a config that fails, fails now.
        let podman_image = if podman && self.engine.settings.wants_podman() {
            let image = ducc_cvmfs::PodmanImage::new(
                slot.public(),
                config_digest,
                config.bytes().to_vec(),
                fetched.bytes().to_vec(),
            )
            .map_err(at(Step::Config))?;
            Some(image.created(config.config().created().as_deref()))
        } else {
            None
        };

        self.check_stop().map_err(at(Step::Layers))?;
        // Two groups: the new layers (one ingest on a stratum 0, each layer streamed into it
        // while the next one decodes), then everything else the image publishes, with its
        // marker last (one mounted transaction on a stratum 0).
        let write_layer = self.layers_to_write(&layers);
        let written: Vec<RepoPath> = layers
            .iter()
            .zip(&write_layer)
            .filter(|(_, write)| **write)
            .map(|(l, _)| self.engine.layout.layer_dir(&l.digest))
            .collect();
        let layers_started = Instant::now();
        let layers_group = self.engine.publisher.streaming_group(&written);
        let image_group = match self.batch {
            Some(batch) => batch.image_group(),
            None => self.engine.publisher.group(),
        };
        self.ensure_catalog_dirs(&*layers_group, &*image_group)
            .map_err(at(Step::Layers))?;
        let (layers_unpacked, flat) = self.build_trees(
            repository,
            &layers,
            &write_layer,
            &config_digest,
            config.config(),
            created,
            input,
            &*layers_group,
            &*image_group,
        );
        // Layers another node published meanwhile were not written by this one.
        let layers_found = self.layers_found.swap(0, Ordering::SeqCst);
        let layers_unpacked = layers_unpacked
            .map_err(at(Step::Layers))?
            .saturating_sub(layers_found);
        // The layers go in first, even when the flat tree failed: the flat tree's grafts name
        // their stored objects, and a rerun need not unpack them again.
        let layers_publish_started = Instant::now();
        let layers_published = layers_group
            .commit()
            .map_err(|e| at(Step::Layers)(ConvertError::from(e)))?;
        self.revisions
            .fetch_add(layers_published.revisions, Ordering::SeqCst);
        let flat_built = flat?;
        // A flat tree an earlier image of the batch built is not published yet.
        let flat_size = flat_built
            .or_else(|| self.batch?.flat_tree(&config_digest))
            .or_else(|| self.state().flat_size(&config_digest));
        self.check_stop().map_err(at(Step::Symlink))?;
        if !self.engine.settings.skip_flat {
            self.set_symlink(
                &*image_group,
                &slot.link(&self.engine.layout),
                &slot.link_target(&self.engine.layout, &config_digest),
            )
            .map_err(at(Step::Symlink))?;
        }
        if let Some(image) = &podman_image {
            self.add_to_podman_store(&*image_group, label, image, flat_size)
                .map_err(at(Step::Podman))?;
        }
        Ok((
            Outcome::Converted {
                layers_unpacked,
                flat_built: flat_built.is_some(),
                thin: None,
            },
            Some(Pending {
                flat_tree: flat_built.map(|size| (config_digest, size)),
                source: ThinSource {
                    layers,
                    config: config.config().clone(),
                },
                started,
                group: Some(image_group),
                published: layers_published,
                layers_publish_s: layers_publish_started.elapsed().as_secs_f64(),
                layers_s: layers_started.elapsed().as_secs_f64(),
                signature,
                dropped: self.left_out.take(),
                layers_found,
            }),
        ))
    }

    /// The image in the podman store, on its complete flat tree, before the marker (issue 16).
    fn add_to_podman_store(
        &self,
        group: &dyn Group,
        label: &str,
        image: &ducc_cvmfs::PodmanImage,
        flat_size: Option<u64>,
    ) -> Result<()> {
        self.check_stop()?;
        let outcome = ducc_cvmfs::PodmanStore::new(&*self.engine.publisher, &self.engine.layout)
            .add_image_to(group, image, flat_size)?;
        self.emit(Event::PodmanStore {
            image: label.to_owned(),
            name: image.name().to_owned(),
            id: image.id().to_owned(),
            outcome: outcome.as_str().to_owned(),
        });
        Ok(())
    }

    /// `Err` once SIGINT or SIGTERM arrived.
    fn check_stop(&self) -> Result<()> {
        if self.stop.is_stopped() {
            return Err(ConvertError::interrupted());
        }
        Ok(())
    }

    fn published(&self, path: &RepoPath) -> PathBuf {
        self.engine.publisher.published_path(path)
    }

    /// `.cvmfscatalog` in `.layers/` and `.flat/`, before the transactions below them start.
    fn ensure_catalog_dirs(&self, layers: &dyn Group, image: &dyn Group) -> Result<()> {
        if !self.engine.settings.skip_layers {
            self.ensure_catalogs(layers, &[self.engine.layout.layers_root()])?;
        }
        if !self.engine.settings.skip_flat {
            self.ensure_catalogs(image, &[self.engine.layout.flat_root()])?;
        }
        Ok(())
    }

    fn ensure_catalogs(&self, group: &dyn Group, dirs: &[RepoPath]) -> Result<()> {
        Ok(ducc_cvmfs::ensure_catalog_markers(group, dirs)?)
    }

    /// The layer directories and the flat tree of an image, from one decode of each layer:
    /// layers in order, each layer's entries written into its directory and onto the flat tree
    /// in the same pass (see [`FlatExtractor::apply_blob_with_layer_dir`]). The flat tree
    /// before a layer is the stack below it, so an implicit parent in a layer directory takes
    /// the metadata that directory has beneath, and the overlay of the layer directories shows
    /// the flat tree.
    ///
    /// A layer directory is written once per layer digest, by the first image that needs it:
    /// another image with the same blob on a different stack below reuses it as it is (its
    /// implicit parents then carry the first image's lower metadata; the files, whiteouts and
    /// opaque markers of the layer itself are the same on any stack).
    ///
    /// Layers go into `layers_group`, the flat tree into `image_group`. Returns the layer
    /// directories written (or the `layers` error) and the flat tree's apparent size when it was
    /// built (or the error of its step).
    #[allow(clippy::too_many_arguments)]
    fn build_trees(
        &self,
        repository: &ducc_registry::Repository,
        layers: &[PlannedLayer],
        write_layer: &[bool],
        config: &ConfigDigest,
        image_config: &ImageConfiguration,
        created: Option<&str>,
        input: &ImageRef,
        layers_group: &dyn Group,
        image_group: &dyn Group,
    ) -> (Result<usize>, Result<Option<u64>, ImageFailure>) {
        let written = write_layer.iter().filter(|w| **w).count();
        let prepared = self.prepare_layers(layers, write_layer, config, layers_group, image_group);
        if let Err(e) = prepared {
            return (Err(e), Ok(None));
        }
        let flat_wanted = !self.engine.settings.skip_flat
            && !self.state().flat_complete(config)
            && self.batch.is_none_or(|b| b.flat_tree(config).is_none());
        let needed: Vec<&PlannedLayer> = layers
            .iter()
            .zip(write_layer)
            .filter(|(_, write)| flat_wanted || **write)
            .map(|(l, _)| l)
            .collect();
        let done = AtomicBool::new(false);
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            // Downloads run ahead of the decoding, bottom layer first: a layer waits for its own
            // blob only. A failed download is retried, and reported, by the decoding side.
            for _ in 0..self
                .engine
                .settings
                .parallel_layers
                .clamp(1, needed.len().max(1))
            {
                scope.spawn(|| {
                    while let Some(layer) = needed.get(next.fetch_add(1, Ordering::SeqCst)) {
                        if done.load(Ordering::SeqCst) || self.check_stop().is_err() {
                            break;
                        }
                        if let Err(e) = self.fetch_blob(repository, layer, input) {
                            tracing::debug!("{input}: prefetching layer {}: {e:#}", layer.digest);
                            break;
                        }
                    }
                });
            }
            let result = if flat_wanted {
                self.build_flat(
                    repository,
                    layers,
                    write_layer,
                    config,
                    image_config,
                    created,
                    input,
                    layers_group,
                    image_group,
                )
                .map(|size| (written, Some(size)))
            } else {
                self.layers_in_order(
                    repository,
                    layers,
                    write_layer,
                    config,
                    created,
                    input,
                    layers_group,
                    None,
                )
                .map(|()| (written, None))
                .map_err(at(Step::Layers))
            };
            done.store(true, Ordering::SeqCst);
            match result {
                Ok((written, size)) => (Ok(written), Ok(size)),
                Err(e) if e.step() == Step::Layers => (Err(e.into_error()), Ok(None)),
                Err(e) => (Ok(written), Err(e)),
            }
        })
    }

    /// Which of `layers` get their directory written by this image. A blob listed twice (empty
    /// layers often are) is written once, where it first appears.
    fn layers_to_write(&self, layers: &[PlannedLayer]) -> Vec<bool> {
        let mut seen = std::collections::HashSet::new();
        layers
            .iter()
            .map(|l| {
                !self.engine.settings.skip_layers
                    && seen.insert(l.digest)
                    && (self.engine.settings.overwrite_layers
                        || !self.state().layer_complete(&l.digest))
            })
            .collect()
    }

    /// Before the layers are written: this image in the origin.json of the layers whose
    /// directory exists, and the shard catalogs of those to write.
    fn prepare_layers(
        &self,
        layers: &[PlannedLayer],
        write_layer: &[bool],
        config: &ConfigDigest,
        layers_group: &dyn Group,
        image_group: &dyn Group,
    ) -> Result<()> {
        if self.engine.settings.skip_layers {
            return Ok(());
        }
        let written = |digest: &LayerDigest| {
            layers
                .iter()
                .zip(write_layer)
                .any(|(l, write)| *write && l.digest == *digest)
        };
        let mut origins_done = std::collections::HashSet::new();
        for layer in layers {
            if !written(&layer.digest) && origins_done.insert(layer.digest) {
                self.add_origin(image_group, &layer.digest, config)?;
            }
        }
        // Shard catalogs first: their leases are prefixes of the layer leases.
        let mut shards: Vec<RepoPath> = layers
            .iter()
            .zip(write_layer)
            .filter(|(_, write)| **write)
            .map(|(l, _)| self.engine.layout.layer_shard(&l.digest))
            .collect();
        shards.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        shards.dedup();
        self.ensure_catalogs(layers_group, &shards)?;
        Ok(())
    }

    /// Goes through the layers bottom first: those marked in `write_layer` get their directory
    /// (together with the flat tree when there is one), the others only go onto the flat tree.
    /// Without a flat tree a layer directory's stack below is the lower layer directories.
    #[allow(clippy::too_many_arguments)]
    fn layers_in_order(
        &self,
        repository: &ducc_registry::Repository,
        layers: &[PlannedLayer],
        write_layer: &[bool],
        config: &ConfigDigest,
        created: Option<&str>,
        input: &ImageRef,
        layers_group: &dyn Group,
        mut flat: Option<&mut FlatExtractor>,
    ) -> Result<()> {
        for (below, (layer, write)) in layers.iter().zip(write_layer).enumerate() {
            self.check_stop()?;
            let lower_ids: Vec<DiffId> = layers[..below].iter().map(|l| l.diff_id).collect();
            if *write {
                let lower: Vec<PathBuf> = if flat.is_some() {
                    Vec::new()
                } else {
                    layers[..below]
                        .iter()
                        .rev()
                        .map(|l| self.published(&self.engine.layout.layerfs(&l.digest)))
                        .collect()
                };
                self.unpack_layer(
                    repository,
                    layer,
                    config,
                    created,
                    input,
                    layers_group,
                    flat.as_deref_mut(),
                    &lower,
                    &lower_ids,
                )?;
                if flat.is_none() {
                    // Without a flat tree the next layer's stack below is the published
                    // layer directories: this one must be there.
                    layers_group.flush()?;
                }
            } else if let Some(flat) = flat.as_deref_mut() {
                if !self.engine.settings.skip_layers {
                    self.engine.check_reused_whiteouts(
                        &input.whole_name(),
                        &layer.digest,
                        &lower_ids,
                        flat.root(),
                    );
                }
                let file = self.open_blob(repository, layer, input)?;
                flat.apply_blob(
                    Interrupted {
                        inner: file,
                        stop: self.stop.flag(),
                    },
                    &layer.unpack_descriptor(),
                )
                .with_context(|| format!("layer {} of {input}", layer.digest))?;
            }
        }
        Ok(())
    }

    fn fetch_blob(
        &self,
        repository: &ducc_registry::Repository,
        layer: &PlannedLayer,
        input: &ImageRef,
    ) -> Result<PathBuf> {
        let started = Instant::now();
        let (path, fetch) = self.engine.cache.get(
            &*self.engine.source,
            repository,
            &layer.digest,
            layer.descriptor.size(),
        )?;
        if let Fetch::Downloaded(size) = fetch {
            self.emit(Event::LayerDownload {
                image: input.whole_name(),
                layer: layer.digest.to_string(),
                size,
                time_elapsed_s: started.elapsed().as_secs_f64(),
            });
        }
        Ok(path)
    }

    /// The blob of a layer, opened for reading: followed as it downloads when a download of it
    /// is under way (the decoding overlaps with the download), else from the cache (downloaded
    /// first if needed). Either way the reader reaches the end of the blob only once its digest
    /// was checked. Unbuffered: the decoder buffers what it reads (a second buffer would copy
    /// every compressed byte once more).
    fn open_blob<'a>(
        &'a self,
        repository: &'a ducc_registry::Repository,
        layer: &PlannedLayer,
        input: &ImageRef,
    ) -> Result<LayerBlob<'a>> {
        let size = layer.descriptor.size();
        if let Some(followed) = self.engine.cache.follow(
            &*self.engine.source,
            repository,
            &layer.digest,
            size,
            self.stop.flag(),
        ) {
            return Ok(LayerBlob::Followed(followed));
        }
        let blob = self.fetch_blob(repository, layer, input)?;
        let file = File::open(&blob)
            .with_context(|| format!("cannot open cached blob {}", blob.display()))?;
        Ok(LayerBlob::Cached(file))
    }

    /// Writes one layer directory (and, in the same pass, the layer onto `flat` when given),
    /// with its metadata, in one transaction.
    #[allow(clippy::too_many_arguments)]
    fn unpack_layer(
        &self,
        repository: &ducc_registry::Repository,
        layer: &PlannedLayer,
        config: &ConfigDigest,
        created: Option<&str>,
        input: &ImageRef,
        layers_group: &dyn Group,
        mut flat: Option<&mut FlatExtractor>,
        lower: &[PathBuf],
        lower_ids: &[DiffId],
    ) -> Result<()> {
        let started = Instant::now();
        self.engine.tell_raw_whiteouts(&input.whole_name());
        let layerfs = self.engine.layout.layerfs(&layer.digest);
        let descriptor = layer.unpack_descriptor();
        let stop = self.stop.flag();
        let options = LayerDirOptions::new()
            .whiteouts(self.engine.whiteouts)
            .privileges(self.engine.settings.privileges)
            .lower_layers(lower.to_vec());
        // Decodes the blob into `dest`, an existing empty directory, and onto the flat tree.
        // Also returns the layer directory's report (whiteouts that depend on the stack below).
        let mut decode =
            |dest: &Path, hints: FillHints| -> Result<(LayerDigests, ducc_unpack::Report)> {
                let options = options
                    .clone()
                    .leave_out_special_files(hints.leave_out_special_files);
                let blob = Interrupted {
                    inner: self.open_blob(repository, layer, input)?,
                    stop,
                };
                let (digests, report) = match flat.as_deref_mut() {
                    Some(flat) => {
                        let outcome =
                            flat.apply_blob_with_layer_dir(blob, &descriptor, dest, &options)?;
                        (outcome.digests, outcome.report)
                    }
                    None => {
                        let mut reader = LayerReader::open(blob, &descriptor)?;
                        let report = ducc_unpack::extract_layer_dir(
                            &mut reader,
                            &descriptor.name,
                            dest,
                            &options,
                        )?;
                        (reader.finish()?, report)
                    }
                };
                self.left_out.add(&report);
                Ok((digests, report))
            };
        let context = || format!("layer {} of {input}", layer.digest);
        let mut tx = layers_group.begin(&self.engine.layout.layer_dir(&layer.digest))?;
        if self.published(&layerfs).exists() {
            tx.remove(&layerfs)?;
        }
        // The layer is unpacked where the publisher wants it (its staging area, or scratch
        // space): one pass; a digest mismatch at the end drops the tree, publishing nothing.
        let mut digests = None;
        tx.fill_dir(
            &layerfs,
            IngestOptions {
                catalog: false,
                from_layers: false,
            },
            &mut |dest, hints| {
                digests = Some(decode(dest, hints)?);
                Ok(())
            },
        )
        .with_context(context)?;
        let digests =
            digests.ok_or_else(|| invalid!("{}: the layer was not unpacked", context()))?;
        let (digests, report) = digests;
        // Another publisher node may have published this layer since this one looked (its view
        // of the repository lags): checked again inside the layer's lease, where nobody else
        // can publish it until this transaction ends. Found there, only this image joins its
        // origin.json.
        if !self.engine.settings.overwrite_layers
            && tx
                .read_file(&self.engine.layout.layer_info(&layer.digest))?
                .is_some()
        {
            tx.abort()?;
            tracing::info!(
                "{input}: layer {} was published meanwhile (by another publisher node): not written again",
                layer.digest
            );
            self.add_origin(layers_group, &layer.digest, config)?;
            self.layers_found.fetch_add(1, Ordering::SeqCst);
            self.emit(Event::LayerFound {
                image: input.whole_name(),
                layer: layer.digest.to_string(),
            });
            return Ok(());
        }
        // The layer's nested catalog is its own directory (layers written before have theirs in
        // layerfs, where a container would see it: issue 28).
        tx.write_file(
            &Layout::catalog_marker(&self.engine.layout.layer_dir(&layer.digest)),
            &mut std::io::empty(),
        )?;
        let whiteouts_path = self.engine.layout.layer_whiteouts(&layer.digest);
        match self.engine.whiteouts_record(lower_ids, &report) {
            Some(record) => tx.write_file(&whiteouts_path, &mut &record.to_json()[..])?,
            None if self.published(&whiteouts_path).exists() => tx.remove(&whiteouts_path)?,
            None => {}
        }
        let mut info = LayerInfo::new(
            &layer.digest,
            &layer.diff_id,
            digests.uncompressed_size,
            SystemTime::now(),
        );
        if let Some(created) = created {
            created.clone_into(&mut info.created);
        }
        tx.write_file(
            &self.engine.layout.layer_info(&layer.digest),
            &mut &info.to_layers_json()[..],
        )?;
        let mut origin = self.read_origin(&*tx, &layer.digest)?;
        origin.add(config);
        tx.write_file(
            &self.engine.layout.layer_origin(&layer.digest),
            &mut &origin.to_json()[..],
        )?;
        self.check_stop()?;
        tx.commit()?;
        self.emit(Event::LayerUnpack {
            image: input.whole_name(),
            layer: layer.digest.to_string(),
            diff_size: digests.uncompressed_size,
            time_elapsed_s: started.elapsed().as_secs_f64(),
        });
        Ok(())
    }

    /// The layer's `origin.json`, read inside the transaction that rewrites it (a corrupt one is
    /// an error, never overwritten with a shorter list).
    fn read_origin(
        &self,
        tx: &dyn ducc_cvmfs::Transaction,
        layer: &LayerDigest,
    ) -> Result<ducc_cvmfs::Origin> {
        let path = self.engine.layout.layer_origin(layer);
        Ok(match tx.read_file(&path)? {
            Some(bytes) => ducc_cvmfs::Origin::from_slice(&bytes).map_err(|e| {
                ducc_cvmfs::PublishError::CorruptFile {
                    path: self.published(&path),
                    reason: e.to_string(),
                }
            })?,
            None => ducc_cvmfs::Origin::default(),
        })
    }

    fn add_origin(
        &self,
        group: &dyn Group,
        layer: &LayerDigest,
        config: &ConfigDigest,
    ) -> Result<()> {
        ducc_cvmfs::add_origin(group, &self.engine.layout, layer, config)?;
        Ok(())
    }

    /// The flat tree, with the layer directories marked in `write_layer` written on the way
    /// (into `layers_group`); the tree itself goes into `image_group`. Returns its apparent
    /// size. Errors of a layer are the `layers` step's, the others the `flat` step's.
    #[allow(clippy::too_many_arguments)]
    fn build_flat(
        &self,
        repository: &ducc_registry::Repository,
        layers: &[PlannedLayer],
        write_layer: &[bool],
        config_digest: &ConfigDigest,
        config: &ImageConfiguration,
        created: Option<&str>,
        input: &ImageRef,
        layers_group: &dyn Group,
        image_group: &dyn Group,
    ) -> Result<u64, ImageFailure> {
        let flat = self.engine.layout.flat_image(config_digest);
        let started = Instant::now();
        self.ensure_catalogs(image_group, &[self.engine.layout.flat_shard(config_digest)])
            .map_err(at(Step::Flat))?;
        let mut record = FlatRecord {
            config: *config_digest,
            layers: layers.iter().map(|l| l.digest).collect(),
            tree_bytes: None,
        };
        // Which step failed: a layer's error is the layers step's.
        let layer_failed = AtomicBool::new(false);
        let mut build = |dest: &Path, hints: FillHints| -> Result<()> {
            let options = ExtractOptions::new()
                .privileges(self.engine.settings.privileges)
                .record_sources(hints.record_sources)
                .leave_out_special_files(hints.leave_out_special_files);
            let mut extractor = FlatExtractor::new(dest, &options)?;
            self.layers_in_order(
                repository,
                layers,
                write_layer,
                config_digest,
                created,
                input,
                layers_group,
                Some(&mut extractor),
            )
            .inspect_err(|_| layer_failed.store(true, Ordering::SeqCst))?;
            self.left_out.add(&extractor.finish());
            ducc_unpack::add_apptainer_files(dest, &runtime(config))?;
            // What podman's store records as the tree's size, measured before it is published,
            // and kept in the completion record (part of the published tree) for the tags
            // that come later.
            record.tree_bytes = Some(ducc_cvmfs::tree_size(dest)?);
            Ok(())
        };
        let step = |e: ConvertError| {
            let step = if layer_failed.load(Ordering::SeqCst) {
                Step::Layers
            } else {
                Step::Flat
            };
            ImageFailure::new(step, e)
        };
        let mut tx = image_group
            .begin(&flat)
            .map_err(|e| at(Step::Flat)(ConvertError::from(e)))?;
        if self.published(&flat).exists() {
            // Left incomplete by a killed run.
            tx.remove(&flat)
                .map_err(|e| at(Step::Flat)(ConvertError::from(e)))?;
        }
        tx.fill_dir(
            &flat,
            IngestOptions {
                catalog: true,
                from_layers: true,
            },
            &mut |dest, hints| Ok(build(dest, hints)?),
        )
        .map_err(|e| step(e.into()))?;
        let tree_bytes = record.tree_bytes.ok_or_else(|| {
            at(Step::Flat)(ConvertError::new(
                crate::ErrorKind::Bug,
                "internal error (bug): the publisher filled the flat tree without building it",
            ))
        })?;
        let record = record.to_json();
        let size = record.len() as u64 + tree_bytes;
        (|| -> Result<()> {
            tx.write_file(
                &self.engine.layout.flat_complete_record(config_digest),
                &mut &record[..],
            )?;
            self.check_stop()?;
            tx.commit()?;
            Ok(())
        })()
        .map_err(at(Step::Flat))?;
        self.emit(Event::FlatBuilt {
            image: input.whole_name(),
            config: config_digest.to_string(),
            time_elapsed_s: started.elapsed().as_secs_f64(),
        });
        Ok(size)
    }

    fn write_marker(
        &self,
        group: &dyn Group,
        slot: &ImageSlot,
        manifest: &ImageManifest,
        signature: Option<&SignatureRecord>,
        dropped: &ducc_cvmfs::DroppedRecord,
    ) -> Result<()> {
        let describe = |d: &Descriptor| MarkerDescriptor {
            media_type: d.media_type().to_string(),
            size: d.size(),
            digest: d.digest().to_string(),
        };
        let marker = MarkerManifest {
            schema_version: 2,
            media_type: manifest
                .media_type()
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            config: describe(manifest.config()),
            layers: manifest.layers().iter().map(describe).collect(),
        };
        let mut tx = group.begin(&slot.marker_dir(&self.engine.layout))?;
        if let Some(record) = signature {
            // Before the marker, in its transaction: a marker never lacks its record.
            let path = crate::signature::record_path(self, slot)?;
            tx.write_file(&path, &mut &record.to_json()[..])?;
        }
        // What the image lost goes with its marker (a conversion that lost nothing takes an
        // older record away).
        let record = slot.dropped_record(&self.engine.layout);
        if !dropped.dropped.is_empty() {
            tx.write_file(&record, &mut &dropped.to_json()[..])?;
        } else if std::fs::symlink_metadata(self.published(&record)).is_ok() {
            tx.remove(&record)?;
        }
        tx.write_file(
            &slot.marker(&self.engine.layout),
            &mut &marker.to_json()[..],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The thin image of one converted image.
    fn thin_image(&self, input: &ImageRef, source: &ThinSource) -> Result<ThinImage> {
        let thin_layers = source
            .layers
            .iter()
            .map(|l| {
                ThinLayer::in_repository(
                    self.engine.repo.name(),
                    self.engine.repo.subdir(),
                    &l.digest,
                )
            })
            .collect();
        let descriptor = ThinDescriptor::new(&input.whole_name(), thin_layers);
        Ok(ThinImage::build(
            &descriptor,
            &source.config,
            self.engine.settings.thin_format,
        )?)
    }

    /// Pushes to `output` with the push login; `push` returns the outcome and the digest pushed.
    fn push_thin(
        &self,
        input: &ImageRef,
        output: &ImageRef,
        push: impl FnOnce(
            &Client,
            &ducc_registry::Repository,
            &str,
        ) -> Result<(PushOutcome, String), ducc_thin::ThinError>,
    ) -> Result<PushOutcome> {
        let tag = output
            .tag()
            .ok_or_else(|| invalid!("thin image {output} has no tag to push to"))?;
        let repository = Repository::of(output);
        let mut credentials = self.engine.credentials.clone();
        if let Some(login) = self.thin_login {
            credentials = credentials.with_login(output.registry(), login.clone());
        }
        let client = Client::new(
            ducc_registry::ClientOptions::new()
                .credentials(credentials)
                .max_config_bytes(ducc_unpack::Limits::default().max_config_bytes),
        );
        let (outcome, digest) = push(&client, &repository, tag)?;
        self.emit(Event::ThinPush {
            image: input.whole_name(),
            thin_image: output.whole_name(),
            digest,
            pushed: outcome != PushOutcome::AlreadyPresent,
        });
        Ok(outcome)
    }
}

/// `outcome` with the thin image's push recorded.
fn with_thin(outcome: Outcome, pushed: PushOutcome) -> Outcome {
    match outcome {
        Outcome::Converted {
            layers_unpacked,
            flat_built,
            ..
        } => Outcome::Converted {
            layers_unpacked,
            flat_built,
            thin: Some(pushed),
        },
        up_to_date => up_to_date,
    }
}

/// The public name of an image: by tag, or by digest when it has none.
pub(crate) fn public_name(input: &ImageRef) -> Result<PublicName> {
    Ok(match (input.tag(), input.digest()) {
        (Some(tag), _) => PublicName::tagged(input.registry(), input.repository(), tag)?,
        (None, Some(digest)) => {
            PublicName::by_digest(input.registry(), input.repository(), digest)?
        }
        (None, None) => bail_invalid!("image {input} has neither a tag nor a digest"),
    })
}

/// The layers to convert with their diff_ids; foreign layers (Windows base layers that may not be
/// redistributed) are skipped, as upstream does.
/// The `created` of layers.json: the image's creation time, so reruns and interrupted runs write
/// the same bytes; without one, the time of conversion.
fn layer_created(config: &ImageConfiguration) -> Option<&str> {
    config.created().as_deref().filter(|c| !c.is_empty())
}

/// A reader that fails once SIGINT or SIGTERM arrived, so a long extraction stops early and its
/// transaction is aborted.
struct Interrupted<'s, R> {
    inner: R,
    stop: &'s AtomicBool,
}

impl<R: std::io::Read> std::io::Read for Interrupted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("interrupted by a signal"));
        }
        self.inner.read(buf)
    }
}

/// A layer blob being read: from the blob cache, or followed while it downloads.
enum LayerBlob<'a> {
    Cached(File),
    Followed(crate::cache::FollowedBlob<'a>),
}

impl std::io::Read for LayerBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            LayerBlob::Cached(file) => file.read(buf),
            LayerBlob::Followed(blob) => blob.read(buf),
        }
    }
}

fn runtime(config: &ImageConfiguration) -> ImageRuntime {
    let Some(runtime) = config.config() else {
        return ImageRuntime::default();
    };
    ImageRuntime {
        env: runtime.env().clone().unwrap_or_default(),
        entrypoint: runtime.entrypoint().clone().unwrap_or_default(),
        cmd: runtime.cmd().clone().unwrap_or_default(),
        labels: runtime
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}
