//! Command-line flags, as plain data. Commands turn them into the library crates' own types.
// The doc comments are clap's `--help` text, not markdown: URLs and `<n>` stay as typed.
#![allow(rustdoc::bare_urls, rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ducc_convert::{BatchLimits, Shard};

pub use crate::logging::LogFormat;

const EXIT_CODES: &str = "\
Exit status:
  0  everything asked for was done (failures matched by ignore_errors count as done)
  1  the run finished but some images failed (they are listed at the end)
  2  usage, wish-list or setup error";

/// Unpack container images into a CernVM-FS repository.
///
/// ducc reads a wish list of container images, unpacks each layer into its own directory, builds a
/// flattened root filesystem for Apptainer, publishes both into a CernVM-FS repository and pushes a
/// thin image that points at the unpacked layers.
#[derive(Debug, Parser)]
#[command(name = "ducc", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory for temporary files
    #[arg(
        short = 't',
        long = "temporary-dir",
        env = "DUCC_TMP_DIR",
        global = true
    )]
    pub temporary_dir: Option<PathBuf>,
    /// Append one JSON object per event to this file
    #[arg(short = 'n', long = "notification-file", global = true)]
    pub notification_file: Option<PathBuf>,
    /// More log detail (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as text (coloured only on a terminal without NO_COLOR) or as JSON objects
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

const SERVE_EXIT_CODES: &str = "\
Exit status:
  0  stopped by SIGTERM or SIGINT (the running conversion finished or was aborted)
  1  the conversion worker died (a bug)
  2  usage, wish-list or setup error (no token, address in use, ...)

SIGHUP re-reads the wish list; a broken one keeps the last good one.";

const VERIFY_EXIT_CODES: &str = "\
Exit status:
  0  every image is accepted by the policy
  1  some image is refused, or its signatures could not be read (each line says why)
  2  usage or policy error (a malformed policy, an unsupported requirement)";

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert every image of a wish list once
    #[command(after_help = EXIT_CODES)]
    Convert(ConvertArgs),
    /// Convert a wish list over and over, re-reading it each pass
    #[command(after_help = EXIT_CODES)]
    Loop(LoopArgs),
    /// Convert one image into a repository
    #[command(after_help = EXIT_CODES)]
    ConvertSingleImage(ConvertSingleArgs),
    /// Convert images when their registry notifies a push; serve /status and /metrics
    #[command(after_help = SERVE_EXIT_CODES)]
    Serve(ServeArgs),
    /// Take images out of a repository (their links and markers; content goes at gc)
    #[command(after_help = EXIT_CODES)]
    DeleteImage(DeleteImageArgs),
    /// Delete every image of the repository that the wish lists no longer stand for
    #[command(visible_alias = "prune-images", after_help = EXIT_CODES)]
    Prune(PruneArgs),
    /// Remove layers, flat trees and podman entries that no image uses any more
    #[command(name = "garbage-collection", visible_alias = "gc", after_help = EXIT_CODES)]
    GarbageCollection(GcArgs),
    /// Parse an image name and print its fields
    #[command(visible_aliases = ["check-image", "image-check"], after_help = EXIT_CODES)]
    CheckImageSyntax(CheckImageSyntaxArgs),
    /// Validate a wish list and print each input with the thin image it maps to
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Print the manifest the registry serves for an image
    #[command(visible_alias = "get-manifest", after_help = EXIT_CODES)]
    DownloadManifest(DownloadManifestArgs),
    /// Pull an image and write its flat root filesystem (or its layers) to a directory
    #[command(after_help = EXIT_CODES)]
    UnpackImage(UnpackImageArgs),
    /// Check images against a signature policy: accepted (by which key) or refused (and why)
    #[command(after_help = VERIFY_EXIT_CODES)]
    Verify(VerifyArgs),
    /// Print the version
    #[command(visible_alias = "v")]
    Version,
    /// Show what a repository holds: images, layers, and what gc would remove (reads only)
    #[command(visible_alias = "ls", after_help = EXIT_CODES)]
    List(ListArgs),
    /// Print a shell completion script for bash, zsh or fish
    Completions(CompletionsArgs),
    /// Print the man page (roff) of ducc and its commands
    Man,
}

/// How the publisher writes whiteouts into layer directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayerWhiteouts {
    /// Overlayfs form: character device 0/0 and `trusted.overlay.opaque=y` (on a cvmfs stratum 0,
    /// which drops xattrs, an opaque directory becomes whiteout devices for what the layers below
    /// hold in it)
    Overlay,
    /// OCI form: the raw `.wh.` names, as in the layer tar
    Oci,
}

/// Where the repository is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublisherKind {
    /// A plain directory (`--root`, default ./cvmfs)
    Local,
    /// A CernVM-FS repository through `cvmfs_server` transactions
    Cvmfs,
}

/// Flags shared by the converting commands.
#[derive(Debug, Args)]
pub struct ConversionFlags {
    /// Unpack layers again even where their directory exists
    #[arg(short = 'f', long)]
    pub overwrite_layers: bool,
    /// Convert images again even where the repository records them as done
    #[arg(short = 'g', long)]
    pub convert_again: bool,
    /// Do not build the flat root filesystem
    #[arg(short = 's', long)]
    pub skip_flat: bool,
    /// Do not write layer directories (implies --skip-thin-image and --skip-podman)
    #[arg(short = 'd', long)]
    pub skip_layers: bool,
    /// Do not push thin images
    #[arg(short = 'i', long)]
    pub skip_thin_image: bool,
    /// Do not write the podman image store
    #[arg(short = 'p', long)]
    pub skip_podman: bool,
    #[command(flatten)]
    pub target: PublisherFlags,
    /// Platform to convert, os/arch[/variant]
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Convert every platform of a multi-platform image
    #[arg(short = 'm', long)]
    pub multi_arch: bool,
    /// Layers downloaded at once
    #[arg(long, default_value_t = 4, env = "DUCC_MAX_CONCURRENT_DOWNLOADS")]
    pub max_concurrent_downloads: usize,
    /// Do not download the next image's blobs while an image converts (they take cache space
    /// beside the current image's)
    #[arg(long)]
    pub no_download_ahead: bool,
    /// Content-addressed blob cache (default: under --temporary-dir or the user cache dir)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Whiteout form in layer directories (default: overlay where the publisher can store it,
    /// so containerd's CernVM-FS snapshotter runs exactly the image; oci behind a cvmfs gateway)
    #[arg(long, value_enum)]
    pub layer_whiteouts: Option<LayerWhiteouts>,
    /// Manifest format of thin images
    #[arg(long, value_enum, default_value_t = ThinFormatArg::Docker)]
    pub thin_format: ThinFormatArg,
    /// Never draw progress bars (drawn only when stderr is a terminal; else plain log lines)
    #[arg(long)]
    pub no_progress: bool,
    /// Signature policy (containers-policy.json(5)): publish only images whose cosign signature
    /// by one of its keys covers the digest converted; an unsupported requirement is an error
    #[arg(long, value_name = "FILE", env = "DUCC_SIGNATURE_POLICY")]
    pub policy: Option<PathBuf>,
    /// Attempts per image (set by `convert-single-image -r`)
    #[arg(skip = 1u32)]
    pub attempts: u32,
    /// This node's shard (`--shard` of convert, loop and serve).
    #[arg(skip = Shard::all())]
    pub shard: Shard,
    /// Batch limits (`--batch`, `--batch-seconds` of convert, loop and serve).
    #[arg(skip = BatchLimits::none())]
    pub batch: BatchLimits,
}

/// Manifest format of thin images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ThinFormatArg {
    /// Docker image manifest v2 schema 2, as the cvmfs graph driver expects
    Docker,
    /// OCI image manifest
    Oci,
}

/// `ducc convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The wish list (YAML)
    pub wishlist: PathBuf,
    /// This node's part of the wish list, K/N (node K of N publisher nodes sharing one list);
    /// the other images are left to the other nodes
    #[arg(long, value_name = "K/N", default_value = "1/1")]
    pub shard: Shard,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub flags: ConversionFlags,
}

/// `ducc loop`.
#[derive(Debug, Args)]
pub struct LoopArgs {
    /// The wish list (YAML), re-read on every pass
    pub wishlist: PathBuf,
    /// Seconds to sleep between passes
    #[arg(long, default_value_t = 60)]
    pub interval: u64,
    /// This node's part of the wish list, K/N (node K of N publisher nodes sharing one list);
    /// the other images are left to the other nodes
    #[arg(long, value_name = "K/N", default_value = "1/1")]
    pub shard: Shard,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub flags: ConversionFlags,
}

/// `--batch N --batch-seconds S` of convert, loop and serve.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Images whose commits go in together: all an image publishes besides its layers (flat
    /// tree, links, podman store, marker) waits for the batch and is one revision with it
    /// (1: each image its own commit; serve publishes a batch as soon as it has nothing else
    /// to convert)
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub batch: usize,
    /// Seconds after its first image at most before a batch is published (looked at between
    /// images)
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub batch_seconds: u64,
}

/// `ducc serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The wish list (YAML), re-read at every full pass and on SIGHUP
    pub wishlist: PathBuf,
    /// Address to listen on, ADDR:PORT (e.g. 127.0.0.1:8080)
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Seconds between full passes over the wish list (the first runs at start)
    #[arg(long, default_value_t = 3600)]
    pub interval: u64,
    /// File holding the bearer token of notify requests (else $DUCC_WEBHOOK_TOKEN)
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Accept notifications without a token (only on a loopback address)
    #[arg(long)]
    pub no_auth: bool,
    /// Seconds before the first retry of a failed image; doubles per failure, up to --interval
    #[arg(long, default_value_t = 30)]
    pub retry_backoff: u64,
    /// Most images waiting for conversion; notifications beyond it are answered 503
    #[arg(long, default_value_t = 1024)]
    pub queue_capacity: usize,
    /// This node's part of the wish list, K/N (node K of N publisher nodes sharing one list);
    /// the other images are left to the other nodes
    #[arg(long, value_name = "K/N", default_value = "1/1")]
    pub shard: Shard,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub flags: ConversionFlags,
}

/// `ducc convert-single-image`.
#[derive(Debug, Args)]
pub struct ConvertSingleArgs {
    /// The image, e.g. https://registry.hub.docker.com/library/ubuntu:22.04
    pub image: String,
    /// The CernVM-FS repository (may be repo/subdir)
    pub repo: String,
    /// Name of the thin image to push (empty: no thin image)
    #[arg(long, default_value = "")]
    pub thin_image_name: String,
    /// User for pushing the thin image
    #[arg(short = 'u', long, default_value = "")]
    pub username: String,
    /// Attempts per step
    #[arg(short = 'r', long, default_value_t = 1)]
    pub attempts: u32,
    #[command(flatten)]
    pub flags: ConversionFlags,
}

/// Where the repository is: the publisher flags of every command that writes it.
#[derive(Debug, Args)]
pub struct PublisherFlags {
    /// Publisher backend
    #[arg(long, value_enum, default_value_t = PublisherKind::Local)]
    pub publisher: PublisherKind,
    /// Root directory of the local publisher
    #[arg(long, default_value = "./cvmfs")]
    pub root: PathBuf,
    /// The cvmfs_server program used by the cvmfs publisher
    #[arg(long, default_value = "cvmfs_server")]
    pub cvmfs_server: PathBuf,
}

/// `ducc delete-image`.
#[derive(Debug, Args)]
pub struct DeleteImageArgs {
    /// The CernVM-FS repository (may be repo/subdir)
    pub repo: String,
    /// The images, as in a wish list (https://registry.example.org/library/app:1.0)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Only list what would be deleted
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub target: PublisherFlags,
}

/// `ducc prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The wish lists (YAML) that together say which images the repository keeps
    #[arg(required = true)]
    pub wishlists: Vec<PathBuf>,
    /// Only list what would be deleted
    #[arg(long)]
    pub dry_run: bool,
    /// Delete nothing when more images than this would go
    #[arg(long, default_value_t = 50)]
    pub max_deletions: usize,
    /// This node's part of the wish lists, K/N: only recorded images of this shard are deleted
    #[arg(long, value_name = "K/N", default_value = "1/1")]
    pub shard: Shard,
    #[command(flatten)]
    pub target: PublisherFlags,
}

/// `ducc garbage-collection`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The CernVM-FS repository (may be repo/subdir)
    pub repo: String,
    /// Only list what would be removed
    #[arg(long)]
    pub dry_run: bool,
    /// Remove a piece only once it has been unreferenced this many days (counted from the gc
    /// that first found it so; 0 removes now)
    #[arg(long, default_value_t = 1)]
    pub grace_period: u32,
    #[command(flatten)]
    pub target: PublisherFlags,
}

/// `ducc check-image-syntax`.
#[derive(Debug, Args)]
pub struct CheckImageSyntaxArgs {
    /// The image name to check
    pub image: String,
    /// Print two CSV lines (header and values) instead of `field: value` lines
    #[arg(short = 'z', long)]
    pub machine_friendly: bool,
}

/// `ducc check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The wish list (YAML)
    pub wishlist: PathBuf,
}

/// `ducc download-manifest`.
#[derive(Debug, Args)]
pub struct DownloadManifestArgs {
    /// The image
    pub image: String,
    /// Platform to choose from an index, os/arch[/variant]
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Print the index (or manifest list) itself instead of one platform's manifest
    #[arg(long)]
    pub index: bool,
    /// User name for the registry (password from the environment or docker config)
    #[arg(short = 'u', long)]
    pub username: Option<String>,
}

/// `ducc unpack-image`.
#[derive(Debug, Args)]
pub struct UnpackImageArgs {
    /// The image
    pub image: String,
    /// Destination directory (created; must be empty if it exists)
    pub dest: PathBuf,
    /// Platform to choose from an index, os/arch[/variant]
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Write one directory per layer (DEST/<n>-<hex>/) instead of the flat tree
    #[arg(long)]
    pub layers: bool,
}

/// `ducc list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The CernVM-FS repository (may be repo/subdir)
    pub repo: String,
    /// Print JSON (stable: sorted by name, full digests, sizes in bytes, times in seconds)
    #[arg(long)]
    pub json: bool,
    /// List the layers instead: each with its size and the images that use it
    #[arg(long, conflicts_with = "garbage")]
    pub layers: bool,
    /// List what `garbage-collection` would remove now and when the rest becomes due (its
    /// `--dry-run` output)
    #[arg(long)]
    pub garbage: bool,
    /// With --garbage: the grace period gc would use, in days
    #[arg(long, default_value_t = 1, requires = "garbage")]
    pub grace_period: u32,
    #[command(flatten)]
    pub target: PublisherFlags,
}

/// `ducc completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells `ducc completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// bash (source it, or put it in /usr/share/bash-completion/completions/ducc)
    Bash,
    /// zsh (put it as `_ducc` in a directory of $fpath)
    Zsh,
    /// fish (put it in ~/.config/fish/completions/ducc.fish)
    Fish,
}

/// `ducc verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The images to verify
    #[arg(
        required = true,
        value_name = "IMAGE",
        help = "Images, [SCHEME://]REGISTRY/REPOSITORY[:TAG][@DIGEST]"
    )]
    pub images: Vec<String>,
    /// Signature policy (containers-policy.json(5))
    #[arg(long, value_name = "FILE", env = "DUCC_SIGNATURE_POLICY")]
    pub policy: PathBuf,
}

/// The platform `--platform` names for one pull (`download-manifest`, `unpack-image`), or a
/// usage error quoting it.
pub fn platform(text: &str) -> Result<ducc_oci::Platform, crate::exit::Failure> {
    text.parse().map_err(|_: ducc_oci::PlatformError| {
        crate::exit::Failure::Usage(anyhow::anyhow!(
            "invalid platform (want os/arch[/variant]): {text:?}"
        ))
    })
}

impl PublisherFlags {
    /// Where these flags publish.
    pub fn choice(&self) -> ducc_convert::PublisherChoice {
        match self.publisher {
            PublisherKind::Local => ducc_convert::PublisherChoice::Local {
                root: self.root.clone(),
            },
            PublisherKind::Cvmfs => ducc_convert::PublisherChoice::Cvmfs {
                server: self.cvmfs_server.clone(),
            },
        }
    }
}

impl Cli {
    /// The one plan of this command line: the global flags, and where the command publishes
    /// when it does.
    pub fn plan(&self) -> ducc_convert::Plan {
        let plan = ducc_convert::Plan::new()
            .temporary_dir(self.global.temporary_dir.clone())
            .notification_file(self.global.notification_file.clone());
        let target = match &self.command {
            Command::Convert(a) => Some(&a.flags.target),
            Command::Loop(a) => Some(&a.flags.target),
            Command::ConvertSingleImage(a) => Some(&a.flags.target),
            Command::Serve(a) => Some(&a.flags.target),
            Command::DeleteImage(a) => Some(&a.target),
            Command::Prune(a) => Some(&a.target),
            Command::GarbageCollection(a) => Some(&a.target),
            Command::List(a) => Some(&a.target),
            Command::CheckImageSyntax(_)
            | Command::Check(_)
            | Command::DownloadManifest(_)
            | Command::UnpackImage(_)
            | Command::Verify(_)
            | Command::Version
            | Command::Completions(_)
            | Command::Man => None,
        };
        match target {
            Some(target) => plan.publisher(target.choice()),
            None => plan,
        }
    }
}
