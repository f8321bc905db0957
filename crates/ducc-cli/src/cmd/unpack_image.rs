//! `ducc unpack-image IMAGE DEST [--platform P] [--layers]`: pull an image and write its flat
//! root filesystem to DEST, or with `--layers` one directory per layer, `DEST/<n>-<hex>/` (`n`
//! counts from 0 at the bottom layer, `hex` is the blob digest). Our `umoci unpack` /
//! `crane export`, for operators who want to look at an image.
//!
//! Blobs stream from the registry straight into ducc-unpack: the registry client checks the
//! blob digest and size as it reads, ducc-unpack checks the blob digest again and the config's
//! diff_id after draining the stream. Nothing is held in memory whole. Layer directories use the
//! overlayfs whiteout form when running as root (they can be stacked with `mount -t overlay`),
//! the raw `.wh.` names otherwise.

use std::io::BufReader;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use ducc_registry::oci_spec::image::Descriptor;
use ducc_registry::{Client, Environment, ImageName, ManifestSelection, Platform};
use ducc_unpack::{
    ExtractOptions, FlatExtractor, LayerDescriptor, LayerDirOptions, Report, WhiteoutFormat,
    unpack_layer_dir,
};
use ducc_wishlist::ImageRef;

use crate::args::{GlobalArgs, UnpackImageArgs};
use crate::exit::Failure;
use crate::registry;

/// Runs `ducc unpack-image`.
pub fn run(_global: &GlobalArgs, args: UnpackImageArgs) -> Result<(), Failure> {
    let image = ImageRef::parse(&args.image).map_err(|e| Failure::Usage(e.into()))?;
    if image.is_tag_glob() {
        return Err(Failure::Usage(anyhow!(
            "{}: unpack-image needs one image, not a tag glob",
            image.whole_name()
        )));
    }
    let platform: Platform = args
        .platform
        .parse()
        .map_err(|e: ducc_registry::PlatformError| {
            Failure::Usage(ducc_registry::Error::from(e).into())
        })?;
    prepare_dest(&args.dest).map_err(Failure::Usage)?;
    let name = ducc_registry::ImageName::from_ref(&image).map_err(|e| Failure::Usage(e.into()))?;
    let credentials =
        registry::credentials(&Environment::from_process()).map_err(Failure::Usage)?;
    let client = registry::client(credentials);
    let pull = Pull {
        client: &client,
        name: &name,
        image: &image,
    };
    let outcome = if args.layers {
        pull.layers(&platform, &args.dest)
    } else {
        pull.flat(&platform, &args.dest)
    };
    let report = outcome.map_err(Failure::Run)?;
    summarise(&image, &args.dest, &report);
    Ok(())
}

/// DEST is created if missing and must be an empty directory if it exists.
fn prepare_dest(dest: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{}: the destination exists and is not empty",
                    dest.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dest)
            .with_context(|| format!("cannot create the destination {}", dest.display())),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "{}: the destination is not a readable directory",
            dest.display()
        ))),
    }
}

/// One layer to unpack: what the manifest and config say about it.
struct Layer {
    descriptor: Descriptor,
    unpack: LayerDescriptor,
}

struct Pull<'a> {
    client: &'a Client,
    name: &'a ImageName,
    image: &'a ImageRef,
}

impl Pull<'_> {
    /// The platform's manifest, its config's diff_ids, and one [`Layer`] per manifest layer.
    fn plan(&self, platform: &Platform) -> anyhow::Result<Vec<Layer>> {
        let whole = self.image.whole_name();
        let manifest = self
            .client
            .fetch_manifest(self.name, &ManifestSelection::Platform(platform.clone()))
            .with_context(|| format!("cannot fetch the manifest of {whole}"))?;
        let image_manifest = manifest.image_manifest().ok_or_else(|| {
            anyhow!("{whole}: the registry answered with an index, not an image manifest")
        })?;
        let config = self
            .client
            .fetch_config(&self.name.repository, image_manifest.config())
            .with_context(|| format!("cannot fetch the config of {whole}"))?;
        let diff_ids = config.config().rootfs().diff_ids();
        let layers = image_manifest.layers();
        if diff_ids.len() != layers.len() {
            bail!(
                "{whole}: the manifest lists {} layers but the config {} diff_ids",
                layers.len(),
                diff_ids.len()
            );
        }
        tracing::info!(image = %whole, manifest = %manifest.digest(), layers = layers.len(), "pulling");
        layers
            .iter()
            .zip(diff_ids)
            .map(|(descriptor, diff_id)| {
                let digest = descriptor.digest().to_string();
                let unpack =
                    LayerDescriptor::new(digest.clone(), descriptor.media_type().to_string())
                        .with_blob_digest(
                            digest
                                .parse()
                                .with_context(|| format!("{whole}: layer digest {digest}"))?,
                        )
                        .with_diff_id(
                            diff_id
                                .parse()
                                .with_context(|| format!("{whole}: diff_id {diff_id}"))?,
                        );
                Ok(Layer {
                    descriptor: descriptor.clone(),
                    unpack,
                })
            })
            .collect()
    }

    /// A streaming reader over one layer blob.
    fn open(&self, layer: &Layer) -> anyhow::Result<BufReader<ducc_registry::BlobReader>> {
        let blob = self
            .client
            .open_blob(
                &self.name.repository,
                layer.descriptor.digest(),
                Some(layer.descriptor.size()),
            )
            .with_context(|| format!("cannot download layer {}", layer.descriptor.digest()))?;
        Ok(BufReader::with_capacity(1 << 20, blob))
    }

    fn flat(&self, platform: &Platform, dest: &Path) -> anyhow::Result<Report> {
        let layers = self.plan(platform)?;
        let mut flat = FlatExtractor::new(dest, &ExtractOptions::new())?;
        for layer in &layers {
            tracing::info!(layer = %layer.descriptor.digest(), "applying");
            flat.apply_blob(self.open(layer)?, &layer.unpack)
                .with_context(|| {
                    format!(
                        "{}: cannot unpack layer {}",
                        self.image.whole_name(),
                        layer.descriptor.digest()
                    )
                })?;
        }
        Ok(flat.finish())
    }

    fn layers(&self, platform: &Platform, dest: &Path) -> anyhow::Result<Report> {
        let layers = self.plan(platform)?;
        let whiteouts = if running_as_root() {
            WhiteoutFormat::Overlay
        } else {
            eprintln!(
                "ducc: not running as root: layer directories keep the raw .wh. whiteout names \
                 (overlay form needs device nodes and trusted.* xattrs)"
            );
            WhiteoutFormat::Oci
        };
        let mut report = Report::default();
        let mut done: Vec<PathBuf> = Vec::new();
        for (n, layer) in layers.iter().enumerate() {
            let hex = layer.descriptor.digest().digest().to_owned();
            let layer_dest = dest.join(format!("{n}-{hex}"));
            let lower: Vec<PathBuf> = done.iter().rev().cloned().collect();
            let options = LayerDirOptions::new()
                .whiteouts(whiteouts)
                .lower_layers(lower);
            tracing::info!(layer = %layer.descriptor.digest(), dest = %layer_dest.display(), "unpacking");
            let outcome = unpack_layer_dir(self.open(layer)?, &layer.unpack, &layer_dest, &options)
                .with_context(|| {
                    format!(
                        "{}: cannot unpack layer {}",
                        self.image.whole_name(),
                        layer.descriptor.digest()
                    )
                })?;
            report.merge(outcome.report);
            done.push(layer_dest);
        }
        Ok(report)
    }
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn summarise(image: &ImageRef, dest: &Path, report: &Report) {
    eprintln!(
        "ducc: unpacked {} into {}: {} entries, {} bytes of file data",
        image.whole_name(),
        dest.display(),
        report.entries,
        report.file_bytes
    );
    let warnings = report.warnings.len() as u64 + report.warnings_dropped;
    if warnings > 0 {
        eprintln!("ducc: {warnings} warning(s), for example:");
        for warning in report.warnings.iter().take(5) {
            eprintln!("  {}: /{}: {:?}", warning.layer, warning.path, warning.kind);
        }
    }
    let owners = report.owners_not_applied.len() as u64 + report.owners_dropped;
    if owners > 0 {
        eprintln!("ducc: not running as root: {owners} owner(s) were not applied");
    }
}
