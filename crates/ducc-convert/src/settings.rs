//! How images are converted: the flags of `ducc convert`, as a builder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ducc_oci::ImageFormat;
use ducc_oci::Platform;
use ducc_trust::Policy;
use ducc_unpack::{Privileges, WhiteoutFormat};

use crate::batch::BatchLimits;
use crate::plan::SignaturePolicy;
use crate::shard::Shard;

/// How images are converted. Start from [`Settings::new`] (upstream DUCC's defaults: layers,
/// flat tree and thin image, `linux/amd64`) and change what differs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) overwrite_layers: bool,
    pub(crate) convert_again: bool,
    pub(crate) skip_flat: bool,
    pub(crate) skip_layers: bool,
    pub(crate) skip_thin: bool,
    pub(crate) skip_podman: bool,
    pub(crate) platform: Platform,
    pub(crate) whiteouts: Option<WhiteoutFormat>,
    pub(crate) privileges: Privileges,
    pub(crate) thin_format: ImageFormat,
    pub(crate) multi_arch: bool,
    pub(crate) scratch_dir: PathBuf,
    pub(crate) parallel_layers: usize,
    pub(crate) download_ahead: bool,
    pub(crate) attempts: u32,
    pub(crate) policy: Option<Arc<Policy>>,
    pub(crate) shard: Shard,
    pub(crate) batch: BatchLimits,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::new()
    }
}

impl Settings {
    /// Everything converted (layers, flat tree, thin image, podman store), `linux/amd64` from an
    /// index, the publisher's whiteout form, privileges as the process has them, Docker v2 thin
    /// manifests, scratch space in the system temp directory, 4 layer downloads at once, one
    /// attempt per image.
    pub fn new() -> Settings {
        Settings {
            overwrite_layers: false,
            convert_again: false,
            skip_flat: false,
            skip_layers: false,
            skip_thin: false,
            skip_podman: false,
            platform: Platform::linux_amd64(),
            whiteouts: None,
            privileges: Privileges::Auto,
            thin_format: ImageFormat::DockerV2,
            multi_arch: false,
            scratch_dir: std::env::temp_dir(),
            parallel_layers: 4,
            download_ahead: true,
            attempts: 1,
            policy: None,
            shard: Shard::all(),
            batch: BatchLimits::none(),
        }
    }

    /// Publish only images that this signature policy accepts (`--policy`, issue 25): checked
    /// on the digest converted before any blob is downloaded, and again for an image converted
    /// earlier when the policy changed since.
    pub fn signature_policy(mut self, policy: &SignaturePolicy) -> Settings {
        self.policy = Some(policy.shared());
        self
    }

    /// Unpack layers again even where their directory is complete.
    pub fn overwrite_layers(mut self, yes: bool) -> Settings {
        self.overwrite_layers = yes;
        self
    }

    /// Convert again even where the marker records the same config.
    pub fn convert_again(mut self, yes: bool) -> Settings {
        self.convert_again = yes;
        self
    }

    /// No flat trees (and so no podman store entries).
    pub fn skip_flat(mut self, yes: bool) -> Settings {
        self.skip_flat = yes;
        self
    }

    /// No layer directories (and so no thin images and no podman store entries).
    pub fn skip_layers(mut self, yes: bool) -> Settings {
        self.skip_layers = yes;
        self
    }

    /// No thin images.
    pub fn skip_thin(mut self, yes: bool) -> Settings {
        self.skip_thin = yes;
        self
    }

    /// No podman store entries.
    pub fn skip_podman(mut self, yes: bool) -> Settings {
        self.skip_podman = yes;
        self
    }

    /// The platform chosen from an index (and, with [`Settings::multi_arch`], the default one).
    pub fn platform(mut self, platform: Platform) -> Settings {
        self.platform = platform;
        self
    }

    /// The whiteout form of layer directories (`--layer-whiteouts`): the overlayfs form
    /// (device nodes and `trusted.overlay.opaque`) or, with `false`, raw `.wh.` names as in the
    /// layer tar (OCI). Without it the engine asks the publisher
    /// ([`ducc_cvmfs::Publisher::prefers_overlay_whiteouts`]).
    pub fn overlay_whiteouts(mut self, overlay: bool) -> Settings {
        self.whiteouts = Some(if overlay {
            WhiteoutFormat::Overlay
        } else {
            WhiteoutFormat::Oci
        });
        self
    }

    /// The privileges of extraction (owners, device nodes, xattrs).
    pub fn privileges(mut self, privileges: Privileges) -> Settings {
        self.privileges = privileges;
        self
    }

    /// The manifest format of thin images.
    pub fn thin_format(mut self, format: ImageFormat) -> Settings {
        self.thin_format = format;
        self
    }

    /// Every linux platform of an index, each into `.multiarch/<arch>` (`--multi-arch`).
    pub fn multi_arch(mut self, yes: bool) -> Settings {
        self.multi_arch = yes;
        self
    }

    /// Scratch space for trees that are checked before they are published.
    pub fn scratch_dir(mut self, dir: &Path) -> Settings {
        dir.clone_into(&mut self.scratch_dir);
        self
    }

    /// Layer blobs downloaded at once, ahead of the decoding (at least 1).
    pub fn parallel_layers(mut self, count: usize) -> Settings {
        self.parallel_layers = count.max(1);
        self
    }

    /// Whether the next image's blobs download while an image converts (default: yes; they
    /// then take cache space beside the current image's).
    pub fn download_ahead(mut self, yes: bool) -> Settings {
        self.download_ahead = yes;
        self
    }

    /// How often a failed image is converted again before its failure counts (at least 1;
    /// `convert-single-image -r`). Each attempt redoes only what the last one left undone.
    pub fn attempts(mut self, attempts: u32) -> Settings {
        self.attempts = attempts.max(1);
        self
    }

    /// Publishes what several images write besides their layers as one commit (`--batch`,
    /// `--batch-seconds`; see [`BatchLimits`]) in [`Engine::convert_list`](crate::Engine::convert_list).
    /// Default: [`BatchLimits::none`], every image its own commit. `--multi-arch` images are
    /// never batched (their shared links read back what each platform published).
    pub fn batch(mut self, limits: BatchLimits) -> Settings {
        self.batch = limits;
        self
    }

    /// The batch limits set.
    pub fn batch_limits(&self) -> BatchLimits {
        self.batch
    }

    /// Converts only the images of this node's shard of the wish list (`--shard K/N`); the
    /// others end as [`Outcome::OtherShard`](crate::Outcome::OtherShard). Default: all of them.
    pub fn shard(mut self, shard: Shard) -> Settings {
        self.shard = shard;
        self
    }

    /// This node's shard.
    pub fn shard_of(&self) -> Shard {
        self.shard
    }

    /// Whether thin images are pushed (not with `skip_thin` or `skip_layers`).
    pub(crate) fn wants_thin(&self) -> bool {
        !self.skip_thin && !self.skip_layers
    }

    /// Whether podman store entries are written: not with `skip_podman`, and they need the flat
    /// tree and the layers (upstream skips the store with `--skip-layers` too).
    pub(crate) fn wants_podman(&self) -> bool {
        !self.skip_podman && !self.skip_flat && !self.skip_layers
    }
}
