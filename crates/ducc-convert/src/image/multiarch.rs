//! `--multi-arch`: every linux platform of an index into `.multiarch/<arch>`, then the shared
//! links (the variant symlink, the architecture aliases) and the thin index.

use super::*;

/// One platform of a multi-platform image, converted.
struct PlatformDone<'e> {
    platform: Platform,
    arch: Arch,
    manifest: ImageManifest,
    slot: ImageSlot,
    /// Where its result is in the list of results.
    result: usize,
    /// Set when work was done and the marker is still to be written.
    pending: Option<Pending<'e>>,
}

impl Job<'_> {
    /// `--multi-arch`: every linux platform of an index, each into `.multiarch/<arch>`, then the
    /// variant symlink, the architecture aliases and the thin index. A plain manifest is
    /// converted as without the flag.
    pub(super) fn convert_multi(
        &self,
        input: &ImageRef,
        output: Option<&ImageRef>,
    ) -> Vec<ImageResult> {
        let whole = input.whole_name();
        let failed = |step: Step, error: ConvertError| {
            vec![ImageResult::new(
                whole.clone(),
                Err(ImageFailure::new(step, error)),
            )]
        };
        let repository = Repository::of(input);
        let fetched = match crate::source::fetch_image_manifest(
            &*self.engine.source,
            input,
            &ManifestSelection::Index,
        )
        .with_context(|| format!("cannot fetch the manifest of {input}"))
        {
            Ok(fetched) => fetched,
            Err(e) => return failed(Step::Manifest, e),
        };
        let Some(index) = fetched.index() else {
            return vec![ImageResult::new(
                whole.clone(),
                self.convert_single(input, output, &repository, &fetched),
            )];
        };
        let public = match public_name(input) {
            Ok(public) => public,
            Err(e) => return failed(Step::Manifest, e),
        };
        // The index's digest is what `cosign sign IMAGE:TAG` signs (see crate::signature).
        let index_digest = fetched.digest().clone();
        let entries = platform_entries(index);
        if entries.is_empty() {
            return failed(
                Step::Manifest,
                invalid!(
                    "the index of {input} lists no linux platform (it has: {})",
                    ducc_registry::available_platforms(index)
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        let mut results = Vec::new();
        let mut done = Vec::new();
        for (descriptor, platform) in entries {
            let label = format!("{whole} ({platform})");
            if self.stop.is_stopped() {
                results.push(ImageResult::new(
                    label,
                    Err(ImageFailure::new(
                        Step::Manifest,
                        ConvertError::interrupted(),
                    )),
                ));
                continue;
            }
            let converted = (|| {
                let arch = Arch::of(&platform)
                    .map_err(|e| invalid!("{label}: {e}"))
                    .map_err(at(Step::Manifest))?;
                let fetched = self
                    .engine
                    .source
                    .fetch_manifest(
                        &repository,
                        &Reference::digest(descriptor.digest().clone()),
                        &ManifestSelection::Platform(platform.clone()),
                    )
                    .with_context(|| format!("cannot fetch the manifest of {label}"))
                    .map_err(at(Step::Manifest))?;
                let manifest = fetched
                    .image_manifest()
                    .ok_or_else(|| invalid!("the index entry for {label} is not an image"))
                    .map_err(at(Step::Manifest))?;
                let slot = ImageSlot::platform(public.clone(), arch.clone());
                // The podman store holds the platform matching `--platform` (issue 16).
                let podman = self.engine.settings.platform.matches(&platform);
                let (outcome, mut pending) = self.convert_manifest(
                    input,
                    &label,
                    &repository,
                    &fetched,
                    &index_digest,
                    manifest,
                    &slot,
                    podman,
                )?;
                // The shared links read back what each platform published.
                if let Some(pending) = pending.as_mut()
                    && let Some(group) = pending.group.take()
                {
                    pending.published += group
                        .commit()
                        .map_err(|e| at(Step::Flat)(ConvertError::from(e)))?;
                }
                Ok((
                    outcome,
                    PlatformDone {
                        platform: platform.clone(),
                        arch,
                        manifest: manifest.clone(),
                        slot,
                        result: 0,
                        pending,
                    },
                ))
            })();
            match converted {
                Ok((outcome, mut platform_done)) => {
                    platform_done.result = results.len();
                    done.push(platform_done);
                    results.push(ImageResult::new(label, Ok(outcome)));
                }
                Err(e) => results.push(ImageResult::new(label, Err(e))),
            }
        }
        // The shared links, the thin index and then the markers describe the whole image: they
        // wait for a run in which every platform converted (the next run redoes what is done
        // already cheaply: layers and flat trees are there).
        if results.iter().any(|r| r.result().is_err()) {
            return results;
        }
        let whole_failed = |step: Step, error: ConvertError| {
            ImageResult::new(whole.clone(), Err(ImageFailure::new(step, error)))
        };
        if let Err(e) = self.check_stop() {
            results.push(whole_failed(Step::Symlink, e));
            return results;
        }
        if !self.engine.settings.skip_flat
            && let Err(e) = self.link_multiarch(&public, &done)
        {
            results.push(whole_failed(Step::Symlink, e));
            return results;
        }
        let converted_any = done.iter().any(|d| d.pending.is_some());
        if let Some(output) = output
            && converted_any
            && self.wants_thin()
        {
            let pushed = self.check_stop().and_then(|()| {
                let index = self.thin_index(input, &repository, &done)?;
                self.push_thin(input, output, |client, repository, tag| {
                    ducc_thin::push_index(client, repository, tag, &index)
                        .map(|o| (o, index.manifest.digest.to_string()))
                })
            });
            match pushed {
                Ok(pushed) => {
                    for d in &done {
                        if let Ok(outcome) = results[d.result].result_mut() {
                            *outcome = with_thin(outcome.clone(), pushed);
                        }
                    }
                }
                Err(e) => {
                    results.push(whole_failed(Step::Thin, e));
                    return results;
                }
            }
        }
        for d in &done {
            let Some(pending) = &d.pending else { continue };
            let result = &mut results[d.result];
            if let Ok(outcome) = result.result()
                && let Err(e) =
                    self.finish_image(result.image(), &d.slot, &d.manifest, outcome, pending, None)
            {
                *result.result_mut() = Err(e);
            }
        }
        results
    }

    /// The public variant symlink of a multi-platform image and the `.multiarch` aliases.
    fn link_multiarch(&self, public: &PublicName, done: &[PlatformDone<'_>]) -> Result<()> {
        let group = self.engine.publisher.group();
        let default = done
            .iter()
            .find(|d| self.engine.settings.platform.matches(&d.platform))
            .or_else(|| done.first())
            .map(|d| d.arch.clone())
            .ok_or_else(|| invalid!("no platform was converted"))?;
        let link = self.engine.layout.public_link(public);
        let target = self.engine.layout.variant_link_target(public, &default);
        self.set_symlink(&*group, &link, &target)?;
        for (alias, candidates) in ducc_cvmfs::ARCH_ALIASES {
            let alias_path = self.engine.layout.arch_alias(alias);
            if self.state().is_real_dir(&alias_path) {
                continue; // the repository holds real content under that name
            }
            let Some(candidate) = candidates
                .iter()
                .find(|c| self.state().is_real_dir(&self.engine.layout.arch_alias(c)))
            else {
                continue;
            };
            self.set_symlink(&*group, &alias_path, Path::new(candidate))?;
        }
        group.commit()?;
        Ok(())
    }

    /// Makes `link` a symlink with text `target`, unless it is one already.
    /// The thin index of a multi-platform image: each platform's thin image, in index order. The
    /// configs of platforms that were up to date are fetched (a small request each).
    fn thin_index(
        &self,
        input: &ImageRef,
        repository: &ducc_registry::Repository,
        done: &[PlatformDone<'_>],
    ) -> Result<ThinIndex> {
        let mut images = Vec::with_capacity(done.len());
        for platform_done in done {
            let fetched;
            let source = match &platform_done.pending {
                Some(pending) => &pending.source,
                None => {
                    let manifest_config = platform_done.manifest.config();
                    let config_digest = ConfigDigest::try_from(manifest_config.digest())
                        .map_err(|e| invalid!("{input} ({}): {e}", platform_done.platform))?;
                    let config = self
                        .engine
                        .source
                        .fetch_config(repository, &config_digest, manifest_config.size())
                        .with_context(|| {
                            format!(
                                "cannot fetch the config of {input} ({})",
                                platform_done.platform
                            )
                        })?;
                    fetched = ThinSource {
                        layers: crate::layers::plan_layers(
                            &platform_done.manifest,
                            config.config(),
                        )?,
                        config: config.config().clone(),
                    };
                    &fetched
                }
            };
            images.push((
                platform_done.platform.clone(),
                self.thin_image(input, source)?,
            ));
        }
        Ok(ThinIndex::build(images, self.engine.settings.thin_format)?)
    }
}

/// The entries of an index that `--multi-arch` converts, with their platforms: linux (or no os
/// given) with an architecture; attestation manifests (`unknown/unknown`, or annotated as a
/// reference to another manifest) and other operating systems are left out.
fn platform_entries(index: &ImageIndex) -> Vec<(&Descriptor, Platform)> {
    index
        .manifests()
        .iter()
        .filter(|d| {
            !d.annotations()
                .as_ref()
                .is_some_and(|a| a.contains_key("vnd.docker.reference.type"))
        })
        .filter_map(|d| {
            let platform = Platform::from_oci(d.platform().as_ref()?);
            let linux = platform.os().is_empty() || platform.os() == "linux";
            (linux && !platform.is_unknown() && !platform.architecture().is_empty())
                .then_some((d, platform))
        })
        .collect()
}
