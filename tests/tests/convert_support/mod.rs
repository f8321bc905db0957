//! Shared pieces of the `ducc convert` end-to-end tests: images built from given tar layers
//! (gzip, zstd or uncompressed) pushed with ducc-registry, and a work directory that runs `ducc`
//! on a wish list with the local or the `cvmfs` publisher.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ducc_registry::{Client, Repository};
use ducc_tests::images::{self, Blob};
use ducc_tests::tree::{Options, Tree};
use serde_json::json;

/// The repository name every test converts into.
pub const REPO: &str = "unpacked.test";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `...tar+gzip`.
    Gzip,
    /// `...tar+zstd`.
    Zstd,
    /// `...tar`.
    None,
}

impl Compression {
    fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
            Compression::None => tar.to_vec(),
        }
    }
}

/// A tar of regular files (directories implied by their paths are written first).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, content) in files {
        let mut parent = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for component in &components[..components.len() - 1] {
            parent = if parent.is_empty() {
                (*component).to_owned()
            } else {
                format!("{parent}/{component}")
            };
            if !dirs.contains(&parent) {
                dirs.push(parent.clone());
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_mtime(1_600_000_000);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{parent}/"), &[][..])
                    .unwrap();
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(1_600_000_000);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, path, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

/// One layer: the blob, its media type and the diff_id the config lists for it.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The (compressed) blob.
    pub blob: Blob,
    /// Its media type.
    pub media_type: &'static str,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

impl Layer {
    /// A layer of `tar` compressed with `compression`.
    pub fn new(tar: &[u8], compression: Compression) -> Layer {
        Layer {
            blob: Blob::new(compression.compress(tar)),
            media_type: compression.media_type(),
            diff_id: images::sha256(tar),
        }
    }

    /// A gzip layer holding `files`.
    pub fn files(files: &[(&str, &[u8])]) -> Layer {
        Layer::new(&tar_of(files), Compression::Gzip)
    }

    /// A gzip layer with one random file of `size` bytes at `path`.
    pub fn random(path: &str, size: usize) -> Layer {
        Layer::new(&images::random_tar(path, size), Compression::Gzip)
    }

    /// The blob digest's hex.
    pub fn hex(&self) -> &str {
        hex(&self.blob.digest)
    }
}

/// An OCI image built from layers, with a `created` time and a label that makes its config unique.
#[derive(Debug, Clone)]
pub struct Image {
    /// Layers in order.
    pub layers: Vec<Layer>,
    /// Config blob.
    pub config: Blob,
    /// Manifest blob.
    pub manifest: Blob,
}

impl Image {
    /// An image of these layers; `label` goes into the config so equal layers still make a new
    /// config.
    pub fn new(layers: Vec<Layer>, label: &str) -> Image {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        Image::with_diff_ids(layers.clone(), label, &diff_ids)
    }

    /// As [`Image::new`] with the config listing `diff_ids` (to make a config that lies).
    pub fn with_diff_ids(layers: Vec<Layer>, label: &str, diff_ids: &[&str]) -> Image {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-05-06T07:08:09Z",
            "config": {"Env": ["PATH=/usr/bin:/bin", "HELLO=world"], "Cmd": ["/bin/sh"], "Labels": {"test": label}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        Image::with_config(layers, &config)
    }

    /// An OCI image of `layers` with `config` as its config (which must list their diff_ids).
    pub fn with_config(layers: Vec<Layer>, config: &serde_json::Value) -> Image {
        Image::with_config_as(images::Format::Oci, layers, config)
    }

    /// As [`Image::with_config`], its manifest in `format` (Docker v2s2: Docker media types for
    /// the config and the layers).
    pub fn with_config_as(
        format: images::Format,
        layers: Vec<Layer>,
        config: &serde_json::Value,
    ) -> Image {
        let config = Blob::new(serde_json::to_vec(config).unwrap());
        let (config_type, layer_type) = match format {
            images::Format::Oci => ("application/vnd.oci.image.config.v1+json", None),
            images::Format::Docker => (
                "application/vnd.docker.container.image.v1+json",
                Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            ),
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_type(),
            "config": config.descriptor(config_type),
            "layers": layers
                .iter()
                .map(|l| l.blob.descriptor(layer_type.unwrap_or(l.media_type)))
                .collect::<Vec<_>>(),
        });
        Image {
            layers,
            config,
            manifest: Blob::new(serde_json::to_vec(&manifest).unwrap()),
        }
    }

    /// Pushes blobs and manifest and tags it `tag`.
    pub fn push(&self, client: &Client, repo: &Repository, tag: &str) {
        for layer in &self.layers {
            images::push_blob(client, repo, &layer.blob);
        }
        images::push_blob(client, repo, &self.config);
        images::push_manifest(
            client,
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &self.manifest.bytes,
        );
    }

    /// The config digest's hex.
    pub fn config_hex(&self) -> &str {
        hex(&self.config.digest)
    }
}

/// `sha256:<hex>` → `<hex>`.
pub fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// Where `ducc` publishes: the local publisher, or the `cvmfs_server` stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `--publisher local --root <work>/cvmfs`.
    Local,
    /// `--publisher cvmfs --cvmfs-server <stand-in wrapper>`.
    Cvmfs,
}

/// A work directory: wish list, cache, scratch, the repository, and for [`Backend::Cvmfs`] the
/// stand-in's state.
pub struct Work {
    /// The temporary directory holding everything.
    pub dir: tempfile::TempDir,
    /// The publisher.
    pub backend: Backend,
}

impl Work {
    /// A fresh work directory; for [`Backend::Cvmfs`] a stand-in repository [`REPO`] is created.
    pub fn new(backend: Backend) -> Work {
        Work::create(backend, false)
    }

    /// A fresh work directory whose stand-in repository [`REPO`] publishes through a gateway
    /// (`mkfs -u gw,...`; `cvmfs_server list` shows it as `(stratum0 / gw)`).
    #[allow(dead_code)] // not every test binary that shares this module runs it
    pub fn gateway() -> Work {
        Work::create(Backend::Cvmfs, true)
    }

    fn create(backend: Backend, gateway: bool) -> Work {
        let work = Work {
            dir: tempfile::tempdir().unwrap(),
            backend,
        };
        for sub in ["tmp", "docker", "cache"] {
            std::fs::create_dir_all(work.path(sub)).unwrap();
        }
        if backend == Backend::Cvmfs {
            let wrapper = work.path("cvmfs_server");
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nCVMFS_STANDIN_STATE='{}' exec '{}' \"$@\"\n",
                    work.path("standin").display(),
                    env!("CARGO_BIN_EXE_cvmfs_server_standin")
                ),
            )
            .unwrap();
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
            let mut mkfs = Command::new(&wrapper);
            mkfs.arg("mkfs");
            if gateway {
                mkfs.args(["-u", "gw,/srv/cvmfs/txn,http://127.0.0.1:4929/api/v1"]);
            }
            let out = mkfs.arg(REPO).output().unwrap();
            assert!(
                out.status.success(),
                "mkfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        work
    }

    /// `<work>/<sub>`.
    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Writes the wish list with these input lines (and optional extra YAML) and returns its path.
    pub fn wishlist(&self, inputs: &[String], extra: &str) -> PathBuf {
        let mut text = format!("version: 1\nuser: ''\ncvmfs_repo: {REPO}\ninput:\n");
        for input in inputs {
            text.push_str(&format!("  - '{input}'\n"));
        }
        text.push_str(extra);
        let path = self.path("wish.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The published repository tree.
    pub fn repo(&self) -> PathBuf {
        match self.backend {
            Backend::Local => self.path("cvmfs").join(REPO),
            Backend::Cvmfs => self.path("standin/repos").join(REPO).join("published"),
        }
    }

    /// The `ducc convert` command on the wish list, with `extra` arguments, not yet run.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut command = self.ducc("convert", &self.path("wish.yaml"));
        command.args(extra);
        command
    }

    /// `ducc SUBCOMMAND WISHLIST` with this work's cache, scratch space and publisher.
    #[allow(dead_code)] // not every test binary that shares this module runs it
    pub fn ducc(&self, subcommand: &str, wishlist: &std::path::Path) -> Command {
        let mut command = ducc_tests::ducc_command(&self.path("docker"));
        command
            .arg(subcommand)
            .arg(wishlist)
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .arg("-t")
            .arg(self.path("tmp"))
            .env("TMPDIR", self.path("tmp"));
        self.publisher_args(&mut command);
        command
    }

    /// The publisher flags of this work's backend.
    fn publisher_args(&self, command: &mut Command) {
        match self.backend {
            Backend::Local => {
                command.arg("--root").arg(self.path("cvmfs"));
            }
            Backend::Cvmfs => {
                command
                    .args(["--publisher", "cvmfs", "--cvmfs-server"])
                    .arg(self.path("cvmfs_server"))
                    .env("CVMFS_MOUNT_DIR", self.path("standin/mnt"));
            }
        }
    }

    /// `ducc SUBCOMMAND ARGS...` (`delete-image`, `prune`, `gc`) with this work's scratch space,
    /// publisher and `-n <work>/events.jsonl`, not yet run.
    #[allow(dead_code)] // not every test binary that shares this module runs it
    pub fn lifecycle_command(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut command = ducc_tests::ducc_command(&self.path("docker"));
        command
            .arg(subcommand)
            .args(args)
            .arg("-t")
            .arg(self.path("tmp"))
            .arg("-n")
            .arg(self.path("events.jsonl"))
            .env("TMPDIR", self.path("tmp"));
        self.publisher_args(&mut command);
        command
    }

    /// Runs [`Work::lifecycle_command`]: its exit code and stdout (stderr is printed).
    #[allow(dead_code)]
    pub fn lifecycle(&self, subcommand: &str, args: &[&str]) -> (i32, String) {
        let out = self.lifecycle_command(subcommand, args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "ducc {subcommand} {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), stdout)
    }

    /// Runs `ducc convert` with `extra` arguments and returns its output (stderr is printed).
    pub fn convert(&self, extra: &[&str]) -> Output {
        let out = self.command(extra).output().unwrap();
        eprintln!(
            "stderr of ducc convert {extra:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A local publisher's repository of `inputs`, converted with raw whiteouts
    /// (`--layer-whiteouts oci`) and no thin images: the reference a cvmfs run is compared with.
    #[allow(dead_code)] // not every test binary that shares this module runs it
    pub fn local_reference(inputs: &[String]) -> Work {
        let local = Work::new(Backend::Local);
        local.wishlist(inputs, "");
        assert!(
            local
                .convert(&["-i", "--layer-whiteouts", "oci"])
                .status
                .success()
        );
        local
    }

    /// Starts `command` (a `ducc` run of this work) with the stand-in paused at `point` on its
    /// first call whose arguments contain `filter` (see the stand-in's docs), and waits until
    /// it is there. Returns the running `ducc` and the paused stand-in's pid.
    #[allow(dead_code)] // not every test binary that shares this module runs it
    pub fn spawn_paused(
        &self,
        mut command: Command,
        point: &str,
        filter: &str,
    ) -> (std::process::Child, i32) {
        let pause = self.path("standin/pause");
        std::fs::create_dir_all(&pause).unwrap();
        std::fs::write(pause.join(point), filter).unwrap();
        let mut child = command.spawn().unwrap();
        let paused = self.path("standin/paused");
        ducc_tests::wait::until(
            &format!("the stand-in to pause at {point}"),
            ducc_tests::wait::DEADLINE,
            || {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "ducc ended before {point}"
                );
                paused.exists()
            },
        );
        let text = std::fs::read_to_string(&paused).unwrap();
        let standin = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        (child, standin)
    }

    /// Kills `ducc` and the stand-in paused at `point` with SIGKILL (a crash of the publisher
    /// node), waits for the stand-in's end, and takes the pause away.
    #[allow(dead_code)]
    pub fn kill_paused(&self, mut child: std::process::Child, standin: i32, point: &str) {
        child.kill().unwrap();
        child.wait().unwrap();
        let pid = rustix::process::Pid::from_raw(standin).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        ducc_tests::wait::until(
            "the killed stand-in to end",
            ducc_tests::wait::DEADLINE,
            || ducc_tests::wait::process_ended(standin),
        );
        std::fs::remove_file(self.path("standin/pause").join(point)).unwrap();
    }

    /// Makes the stand-in's next `command` fail with `message` on stderr (its `fail/COMMAND`
    /// file, used once); returns the file.
    #[allow(dead_code)] // not every test binary that shares this module uses it
    pub fn fail_next(&self, command: &str, message: &str) -> PathBuf {
        let dir = self.path("standin/fail");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(command);
        std::fs::write(&file, message).unwrap();
        file
    }

    /// The stand-in's log lines.
    pub fn standin_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("standin/log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The events of the `-n` file `name` (under the work dir).
    pub fn events(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// `.layers/<hh>/<hex>` of a layer, under `repo`.
pub fn layer_dir(repo: &Path, layer: &Layer) -> PathBuf {
    let h = layer.hex();
    repo.join(".layers").join(&h[..2]).join(h)
}

/// `.flat/<hh>/<cfg>` of an image, under `repo`.
pub fn flat_dir(repo: &Path, image: &Image) -> PathBuf {
    let h = image.config_hex();
    repo.join(".flat").join(&h[..2]).join(h)
}

/// The `origin` list of a layer's `origin.json`.
pub fn origin(repo: &Path, layer: &Layer) -> Vec<String> {
    let bytes = std::fs::read(layer_dir(repo, layer).join(".metadata/origin.json")).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    value["origin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The config digest recorded in an image's marker, if there is one.
pub fn marker_config(repo: &Path, host: &str, name: &str) -> Option<String> {
    let bytes = std::fs::read(
        repo.join(".metadata")
            .join(host)
            .join(name)
            .join("manifest.json"),
    )
    .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    Some(value["Config"]["Digest"].as_str().unwrap().to_owned())
}

/// Asserts that `cvmfs` published the same repository as `local` (the reference); `what` names
/// the run in the message.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn assert_same_repository(local: &Work, cvmfs: &Work, what: &str) {
    scan(&local.repo()).assert_same_as(
        &scan(&cvmfs.repo()),
        &run_options(),
        "local publisher",
        what,
    );
}

/// The tree of a repository, comparable across runs: everything but mtimes.
pub fn scan(repo: &Path) -> Tree {
    Tree::scan(repo).unwrap()
}

/// Comparison options for two runs' repositories: content, types, modes and owners, no mtimes
/// (directories the publisher creates take the time of the run).
pub fn run_options() -> Options {
    Options {
        mtimes: false,
        dir_mtimes: false,
        ..Options::default()
    }
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
