//! The plan of one command line: which publisher, where scratch space and events go, and the
//! registry environment, read once and shared by every command (`convert`, `loop`, `serve`, the
//! lifecycle commands, `list`, `download-manifest`, `unpack-image`, `verify`).
//!
//! A front end builds one [`Plan`] from its flags and asks it for what a command needs: an
//! [`Engine`], a listing, a manifest, an unpacked image, a signature check. It never names the
//! registry client, the publishers or the unpacker: they stay behind the plan.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ducc_cvmfs::lifecycle::Listing;
use ducc_cvmfs::{CvmfsOptions, CvmfsPublisher, Layout, LocalPublisher, Publisher};
use ducc_oci::{ImageRef, Platform, RepositoryName};
use ducc_registry::{Client, ClientOptions, Credentials, Environment, ManifestSelection};
use ducc_trust::{Acceptance, Policy};
use ducc_unpack::{Report, WhiteoutFormat};

use crate::error::{ConvertError, ErrorKind};
use crate::events::EventSink;
use crate::listing::RepositoryListing;
use crate::pull::{PullTarget, pull_image};
use crate::{BlobCache, Engine, NotificationFile, Settings};

/// Where a repository is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublisherChoice {
    /// A plain directory tree per repository under `root` (`--publisher local --root DIR`).
    Local {
        /// The directory that holds one directory per repository.
        root: PathBuf,
    },
    /// `cvmfs_server` transactions (`--publisher cvmfs`), with the server command to run.
    Cvmfs {
        /// The `cvmfs_server` command (a path, or a name looked up on `PATH`).
        server: PathBuf,
    },
}

/// A command's failure, split by whose it is: the command line or its environment (`Setup`: a
/// front end exits 2) or the work itself (`Run`: exit 1).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Something the command line or the environment names cannot be used.
    #[error(transparent)]
    Setup(ConvertError),
    /// The work failed.
    #[error(transparent)]
    Run(ConvertError),
}

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct DownloadedManifest {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// Their digest (`sha256:<hex>`).
    pub digest: String,
    /// The media type the registry gave.
    pub media_type: String,
}

/// What [`Plan::unpack_image`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpackInto {
    /// The flat root filesystem.
    Flat,
    /// One directory per layer; `overlay_whiteouts` writes whiteouts in the overlayfs form
    /// (device nodes and `trusted.*` xattrs, root only), else as raw `.wh.` names.
    Layers {
        /// Whether whiteouts take the overlayfs form.
        overlay_whiteouts: bool,
    },
}

/// What [`Plan::unpack_image`] did, as an operator reads it.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// Entries written.
    pub entries: u64,
    /// Bytes of file data written.
    pub file_bytes: u64,
    /// Entries not written as the archive asked (devices without privileges, xattrs refused).
    pub warnings: u64,
    /// The first few of those, one line each (`layer: /path: what`).
    pub first_warnings: Vec<String>,
    /// Owners that could not be set (not running as root).
    pub owners_not_applied: u64,
}

impl Unpacked {
    /// How many warnings [`Unpacked::first_warnings`] keeps.
    pub const FIRST_WARNINGS: usize = 5;

    fn of(report: &Report) -> Unpacked {
        Unpacked {
            entries: report.entries,
            file_bytes: report.file_bytes,
            warnings: report.warnings.len() as u64 + report.warnings_dropped,
            first_warnings: report
                .warnings
                .iter()
                .take(Self::FIRST_WARNINGS)
                .map(|w| format!("{}: /{}: {:?}", w.layer, w.path, w.kind))
                .collect(),
            owners_not_applied: report.owners_not_applied.len() as u64 + report.owners_dropped,
        }
    }
}

/// A signature policy, read and checked once (`--policy FILE`).
#[derive(Debug, Clone)]
pub struct SignaturePolicy(Arc<Policy>);

impl SignaturePolicy {
    /// Reads the policy at `path`.
    ///
    /// # Errors
    /// The file cannot be read, does not parse (the error names the line and column), or names
    /// a requirement ducc-rs does not support (the error names its scope).
    pub fn load(path: &Path) -> Result<SignaturePolicy, ConvertError> {
        Policy::load(path)
            .map(|p| SignaturePolicy(Arc::new(p)))
            .map_err(|e| {
                ConvertError::from_cause(ErrorKind::Signature, e)
                    .context("the signature policy cannot be used")
            })
    }

    pub(crate) fn shared(&self) -> Arc<Policy> {
        Arc::clone(&self.0)
    }
}

/// One command line's publisher, scratch space, event file and registry environment.
pub struct Plan {
    publisher: Option<PublisherChoice>,
    temporary_dir: Option<PathBuf>,
    notification_file: Option<PathBuf>,
    env: Environment,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan::new()
    }
}

impl Plan {
    /// A plan with the registry environment of this process (`DUCC_AUTH_REGISTRIES`, docker's
    /// config.json, the thin-image password variables), publishing nowhere until
    /// [`Plan::publisher`] says where.
    pub fn new() -> Plan {
        Plan {
            publisher: None,
            temporary_dir: None,
            notification_file: None,
            env: Environment::from_process(),
        }
    }

    /// Scratch space and the default blob cache go under `dir` (`-t`) instead of the system
    /// temp directory.
    pub fn temporary_dir(mut self, dir: Option<PathBuf>) -> Plan {
        self.temporary_dir = dir;
        self
    }

    /// Events are appended to `path` (`-n`), as JSON lines.
    pub fn notification_file(mut self, path: Option<PathBuf>) -> Plan {
        self.notification_file = path;
        self
    }

    /// Repositories are published through `publisher` (`--publisher`, `--root`,
    /// `--cvmfs-server`).
    pub fn publisher(mut self, publisher: PublisherChoice) -> Plan {
        self.publisher = Some(publisher);
        self
    }

    /// The engine's default settings with this plan's scratch directory: what a command
    /// starts from before its own flags.
    pub fn settings(&self) -> Settings {
        let scratch = self
            .temporary_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        Settings::new().scratch_dir(&scratch)
    }

    /// The blob cache in `dir`, or in the default directory under the temporary directory,
    /// with at most `max_downloads` at once.
    ///
    /// # Errors
    /// The directory cannot be created or locked.
    pub fn blob_cache(
        &self,
        dir: Option<&Path>,
        max_downloads: usize,
    ) -> Result<BlobCache, ConvertError> {
        let dir = dir.map_or_else(
            || BlobCache::default_dir(self.temporary_dir.as_deref()),
            Path::to_owned,
        );
        BlobCache::open(&dir, max_downloads)
    }

    /// The event file (`-n`), or no events.
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub fn notifications(&self) -> Result<NotificationFile, ConvertError> {
        NotificationFile::open(self.notification_file.as_deref())
    }

    /// The engine for `repo`: the publisher opened, the registry credentials read, thin images
    /// pushed as `thin_user` (with the password from `DUCC_OUTPUT_REGISTRY_PASS`) where a wish
    /// list names no user; `cache` defaults to a private one per run.
    ///
    /// # Errors
    /// The publisher cannot be opened, the credentials cannot be read, or the settings do not
    /// fit the publisher.
    pub fn engine(
        &self,
        repo: &RepositoryName,
        settings: Settings,
        events: Arc<dyn EventSink>,
        cache: Option<BlobCache>,
        thin_user: &str,
    ) -> Result<Engine, ConvertError> {
        let publisher = self.open_publisher(repo)?;
        let mut builder = Engine::builder(publisher, repo.clone())
            .settings(settings)
            .credentials(self.credentials()?)
            .thin_login(ducc_registry::output_login(thin_user, &self.env))
            .environment(self.env.clone())
            .events(events);
        if let Some(cache) = cache {
            builder = builder.cache(cache);
        }
        builder.build()
    }

    /// What `repo` holds, read from its published tree; nothing is written, and a local
    /// repository that does not exist is an error rather than created.
    ///
    /// # Errors
    /// [`PlanError::Setup`] when the repository cannot be opened, [`PlanError::Run`] when
    /// what it holds cannot be read.
    pub fn list(&self, repo: &RepositoryName) -> Result<RepositoryListing, PlanError> {
        if let Some(PublisherChoice::Local { root }) = &self.publisher
            && !root.join(repo.name()).is_dir()
        {
            return Err(PlanError::Setup(ConvertError::new(
                ErrorKind::Io,
                format!(
                    "no repository {} under {} (see --root)",
                    repo.name(),
                    root.display()
                ),
            )));
        }
        let publisher = self.open_publisher(repo).map_err(PlanError::Setup)?;
        Listing::read(&*publisher, &Layout::of(repo))
            .map(RepositoryListing::new)
            .map_err(|e| PlanError::Run(e.into()))
    }

    /// The manifest `image` names: the index itself with `index`, else the manifest of
    /// `platform` (from an index) or the single manifest. With `username`, the registry of
    /// `image` is logged in to as that user, with the password from `DUCC_OUTPUT_REGISTRY_PASS`
    /// or from a credential source that has the same user.
    ///
    /// # Errors
    /// [`PlanError::Setup`] for a tag glob or missing credentials, [`PlanError::Run`] when the
    /// registry does not give the manifest.
    pub fn download_manifest(
        &self,
        image: &ImageRef,
        index: bool,
        platform: &Platform,
        username: Option<&str>,
    ) -> Result<DownloadedManifest, PlanError> {
        // A tag glob names no manifest: a usage error, before any request.
        ducc_registry::Reference::of(image).map_err(|e| PlanError::Setup(e.into()))?;
        let credentials = self
            .credentials_as(image, username)
            .map_err(PlanError::Setup)?;
        let selection = if index {
            ManifestSelection::Index
        } else {
            ManifestSelection::Platform(platform.clone())
        };
        let manifest = client(credentials)
            .fetch_manifest(image, &selection)
            .map_err(|e| {
                PlanError::Run(ConvertError::from(e).context(format!(
                    "cannot download the manifest of {}",
                    image.whole_name()
                )))
            })?;
        Ok(DownloadedManifest {
            digest: manifest.digest().to_string(),
            media_type: manifest.media_type().to_string(),
            bytes: manifest.into_bytes(),
        })
    }

    /// Pulls `image` (the manifest of `platform` from an index) and writes it into `dest`, an
    /// existing empty directory.
    ///
    /// # Errors
    /// [`PlanError::Setup`] when the credentials cannot be read, [`PlanError::Run`] for
    /// registry failures and layers that cannot be unpacked.
    pub fn unpack_image(
        &self,
        image: &ImageRef,
        platform: &Platform,
        dest: &Path,
        into: UnpackInto,
    ) -> Result<Unpacked, PlanError> {
        let client = client(self.credentials().map_err(PlanError::Setup)?);
        let target = match into {
            UnpackInto::Flat => PullTarget::Flat,
            UnpackInto::Layers { overlay_whiteouts } => PullTarget::Layers(if overlay_whiteouts {
                WhiteoutFormat::Overlay
            } else {
                WhiteoutFormat::Oci
            }),
        };
        pull_image(&client, image, platform, dest, target)
            .map(|report| Unpacked::of(&report))
            .map_err(PlanError::Run)
    }

    /// Checks each of `images` against `policy` as a conversion would, without converting:
    /// `each` gets the image and its acceptance (which key verified which digest) or refusal.
    ///
    /// # Errors
    /// The registry credentials cannot be read (nothing was checked).
    pub fn verify_images(
        &self,
        policy: &SignaturePolicy,
        images: &[ImageRef],
        mut each: impl FnMut(&ImageRef, Result<Acceptance, ConvertError>),
    ) -> Result<(), ConvertError> {
        let client = client(self.credentials()?);
        for image in images {
            each(image, crate::verify_image(&client, &policy.0, image));
        }
        Ok(())
    }

    fn open_publisher(&self, repo: &RepositoryName) -> Result<Box<dyn Publisher>, ConvertError> {
        Ok(match &self.publisher {
            None => {
                return Err(ConvertError::new(
                    ErrorKind::Bug,
                    format!("no publisher was chosen for repository {}", repo.name()),
                ));
            }
            Some(PublisherChoice::Local { root }) => {
                Box::new(LocalPublisher::open(root, repo).map_err(|e| {
                    ConvertError::from(e).context(format!(
                        "cannot open the local repository under {}",
                        root.display()
                    ))
                })?)
            }
            Some(PublisherChoice::Cvmfs { server }) => Box::new(
                CvmfsPublisher::open(repo, CvmfsOptions::new().server(server)).map_err(|e| {
                    ConvertError::from(e).context(format!("cannot use repository {}", repo.name()))
                })?,
            ),
        })
    }

    /// Credentials from `DUCC_AUTH_REGISTRIES` and docker's config.json.
    fn credentials(&self) -> Result<Credentials, ConvertError> {
        Credentials::from_environment(&self.env)
            .map_err(|e| ConvertError::from(e).context("cannot read registry credentials"))
    }

    /// [`Plan::credentials`], logged in to `image`'s registry as `username` when one is given.
    fn credentials_as(
        &self,
        image: &ImageRef,
        username: Option<&str>,
    ) -> Result<Credentials, ConvertError> {
        let credentials = self.credentials()?;
        let Some(user) = username else {
            return Ok(credentials);
        };
        let login = match ducc_registry::output_login(user, &self.env) {
            Some(login) => login,
            None => credentials
                .login_for(image.registry())?
                .filter(|login| login.username() == user)
                .ok_or_else(|| {
                    ConvertError::new(
                        ErrorKind::Registry,
                        format!(
                            "no password for user {user:?} on {}: set DUCC_OUTPUT_REGISTRY_PASS \
                             or log in with docker",
                            image.registry()
                        ),
                    )
                })?,
        };
        Ok(credentials.with_login(image.registry(), login))
    }
}

/// A registry client with `credentials` and the default timeouts and retries.
fn client(credentials: Credentials) -> Client {
    Client::new(ClientOptions::new().credentials(credentials))
}
