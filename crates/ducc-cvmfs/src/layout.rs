//! Every path of the repository layout (SPEC section 3), relative to the repository root.
//!
//! Names follow upstream DUCC (`ducc/cvmfs/cvmfs.go`, `ducc/lib/image.go`) so existing consumers
//! (containerd's cvmfs snapshotter, apptainer, podman, upstream `gc`) keep working.

use std::fmt;
use std::path::{Path, PathBuf};

use ducc_oci::{ConfigDigest, LayerDigest, Platform, RepositoryName};

/// A path that is not a clean relative path inside a repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// An absolute path, `..`, `.`, an empty component, or a non-UTF-8 name.
    #[error("path {path:?} is not a clean relative path inside the repository")]
    NotClean {
        /// The rejected path.
        path: String,
    },
    /// An image name part that cannot become a path (empty, `/` in a tag, `..` in a repository).
    #[error("image {what} {value:?} cannot be used in a repository path")]
    BadImagePart {
        /// Which part: `registry`, `repository`, `tag` or `digest`.
        what: &'static str,
        /// The rejected value.
        value: String,
    },
}

/// A clean path relative to the repository root: only normal UTF-8 components, no `..`, no `.`,
/// never absolute. The empty path is the repository root.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RepoPath(String);

impl RepoPath {
    /// The repository root (the empty path).
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Checks and wraps a relative path such as `.layers/0f/0f35…/layerfs`. A single trailing
    /// `/` is accepted and dropped.
    ///
    /// # Errors
    /// [`PathError::NotClean`] for absolute paths, `..`, `.`, `//` or non-UTF-8 names.
    pub fn new(path: impl AsRef<Path>) -> Result<Self, PathError> {
        let path = path.as_ref();
        let not_clean = || PathError::NotClean {
            path: path.to_string_lossy().into_owned(),
        };
        let text = path.to_str().ok_or_else(not_clean)?;
        let text = text.strip_suffix('/').unwrap_or(text);
        if text.is_empty() {
            return Ok(Self::root());
        }
        for part in text.split('/') {
            if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
                return Err(not_clean());
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// Appends a relative path (checked like [`RepoPath::new`]).
    ///
    /// # Errors
    /// [`PathError::NotClean`] when `tail` is not clean.
    pub fn join(&self, tail: impl AsRef<Path>) -> Result<Self, PathError> {
        let tail = Self::new(tail)?;
        Ok(self.join_clean(&tail))
    }

    fn join_clean(&self, tail: &RepoPath) -> Self {
        match (self.0.is_empty(), tail.0.is_empty()) {
            (true, _) => tail.clone(),
            (_, true) => self.clone(),
            _ => Self(format!("{}/{}", self.0, tail.0)),
        }
    }

    /// Appends one component known to be clean (layout constants and digest hex).
    pub(crate) fn child(&self, name: &str) -> Self {
        debug_assert!(!name.is_empty() && !name.contains('/') && name != "..");
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}/{name}", self.0))
        }
    }

    /// The path as text, without leading `/` (empty for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as a relative [`Path`].
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// Whether this is the repository root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent path; `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => Self(self.0[..i].to_owned()),
            None => Self::root(),
        })
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Whether `self` is `other` or lies below it, compared component by component.
    pub fn starts_with(&self, other: &RepoPath) -> bool {
        other.0.is_empty()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// Every ancestor from the outermost down to the parent (the root not included).
    pub fn ancestors(&self) -> Vec<RepoPath> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoPath({:?})", self.0)
    }
}

/// The relative symlink text that leads from the link at `link` to `target`, computed from the
/// link's own depth (upstream: `filepath.Rel` from the link's directory).
pub fn relative_target(link: &RepoPath, target: &RepoPath) -> PathBuf {
    let parent = link.parent().unwrap_or_default();
    let from: Vec<&str> = parent.components().collect();
    let to: Vec<&str> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to[common..] {
        out.push(part);
    }
    out
}

/// How an image is named in the public tree: `<registry>/<repository>:<tag>`, or, for an image
/// pulled by digest only, `<registry>/<repository>:sha256:<hex>` (upstream's form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicName {
    registry: String,
    repository: String,
    reference: String,
}

impl PublicName {
    /// The name of an image pulled by tag (a digest given besides the tag is not part of the name,
    /// as upstream's `GetSimpleName`).
    ///
    /// # Errors
    /// [`PathError::BadImagePart`] when a part is empty, contains `/` where it may not, or would
    /// leave the public tree (`..`).
    pub fn tagged(registry: &str, repository: &str, tag: &str) -> Result<Self, PathError> {
        check_plain("tag", tag)?;
        Self::build(registry, repository, tag.to_owned())
    }

    /// The name of an image pulled by digest only: `<repository>:sha256:<hex>`.
    ///
    /// # Errors
    /// [`PathError::BadImagePart`] as for [`PublicName::tagged`], or when the digest contains `/`.
    pub fn by_digest(registry: &str, repository: &str, digest: &str) -> Result<Self, PathError> {
        check_plain("digest", digest)?;
        Self::build(registry, repository, digest.to_owned())
    }

    fn build(registry: &str, repository: &str, reference: String) -> Result<Self, PathError> {
        check_plain("registry", registry)?;
        if repository.is_empty() {
            return Err(bad_part("repository", repository));
        }
        for part in repository.split('/') {
            check_plain("repository", part).map_err(|_| bad_part("repository", repository))?;
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            reference,
        })
    }

    /// The name a path below the layout root (or below `.metadata/`, `.multiarch/<arch>/`)
    /// spells: `<registry>/<repository>:<tag>` or `<registry>/<repository>:sha256:<hex>`, the
    /// inverse of [`Layout::public_link`]. `None` when the path is not such a name.
    pub fn from_path(path: &RepoPath) -> Option<PublicName> {
        let parts: Vec<&str> = path.components().collect();
        let (registry, rest) = parts.split_first()?;
        let (last, middle) = rest.split_last()?;
        let (name, reference) = last.split_once(':')?;
        let mut repository = middle.join("/");
        if !repository.is_empty() {
            repository.push('/');
        }
        repository.push_str(name);
        if reference.starts_with("sha256:") {
            PublicName::by_digest(registry, &repository, reference).ok()
        } else {
            PublicName::tagged(registry, &repository, reference).ok()
        }
    }

    /// The registry (`host[:port]`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository (`library/ubuntu`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, or `sha256:<hex>` for an image pulled by digest only.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The name podman lists the image under: `<registry>/<repository>:<tag>`, or
    /// `<registry>/<repository>@sha256:<hex>` for an image pulled by digest only.
    pub fn podman_name(&self) -> String {
        if self.reference.starts_with("sha256:") {
            format!("{}/{}@{}", self.registry, self.repository, self.reference)
        } else {
            format!("{}/{}:{}", self.registry, self.repository, self.reference)
        }
    }

    /// `<registry>/<repository>:<tag or digest>`, the path of the public symlink below the
    /// layout root.
    fn relative(&self) -> RepoPath {
        RepoPath(format!(
            "{}/{}:{}",
            self.registry, self.repository, self.reference
        ))
    }
}

impl fmt::Display for PublicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.relative().as_str())
    }
}

fn bad_part(what: &'static str, value: &str) -> PathError {
    PathError::BadImagePart {
        what,
        value: value.to_owned(),
    }
}

fn check_plain(what: &'static str, value: &str) -> Result<(), PathError> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
        Err(bad_part(what, value))
    } else {
        Ok(())
    }
}

/// The directory name of one platform of a multi-platform image under `.multiarch/`:
/// `<architecture>` or `<architecture>:<variant>` (upstream's `GetNameWithArch`), e.g. `amd64`,
/// `arm64:v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch(String);

impl Arch {
    /// The directory name for `architecture` and an optional, non-empty `variant`.
    ///
    /// # Errors
    /// [`PathError::BadImagePart`] when a part is empty, `.`/`..`, or holds `/` or `:`.
    pub fn new(architecture: &str, variant: Option<&str>) -> Result<Self, PathError> {
        let plain = |what: &'static str, value: &str| {
            check_plain(what, value)?;
            if value.contains(':') {
                return Err(bad_part(what, value));
            }
            Ok(())
        };
        plain("architecture", architecture)?;
        match variant.filter(|v| !v.is_empty()) {
            Some(variant) => {
                plain("variant", variant)?;
                Ok(Self(format!("{architecture}:{variant}")))
            }
            None => Ok(Self(architecture.to_owned())),
        }
    }

    /// The directory name of `platform` (its architecture and variant as the index names them;
    /// the os is not part of it).
    ///
    /// # Errors
    /// As [`Arch::new`].
    pub fn of(platform: &Platform) -> Result<Self, PathError> {
        Self::new(platform.architecture(), platform.variant())
    }

    /// The directory name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Other spellings of architectures (what `uname -m` and Debian say) and the `.multiarch/`
/// directories each may stand for, in order of preference (upstream's `archAliases`). A CernVM-FS
/// client resolves `$(CVMFS_ARCH)` to such a spelling, so each gets a symlink in `.multiarch/`.
pub const ARCH_ALIASES: [(&str, &[&str]); 7] = [
    ("aarch64", &["arm64", "arm64:v8"]),
    ("arm64", &["arm64:v8"]),
    ("armhf", &["arm"]),
    ("armel", &["arm:v6"]),
    ("i386", &["386"]),
    ("x86_64", &["amd64"]),
    ("x86-64", &["amd64"]),
];

/// Name of the file that makes its directory a nested catalog.
pub const CATALOG_MARKER: &str = ".cvmfscatalog";

/// All paths of SPEC section 3 below an optional repository subdir.
///
/// ```
/// use ducc_cvmfs::{Layout, PublicName};
/// use ducc_oci::{ConfigDigest, RepositoryName};
///
/// let repo = RepositoryName::parse("unpacked.cern.ch/sub").unwrap();
/// let layout = Layout::of(&repo);
/// let cfg = ConfigDigest::from_hex(&"0f".repeat(32)).unwrap();
/// let name = PublicName::tagged("registry.example.org", "library/ubuntu", "22.04").unwrap();
/// assert_eq!(layout.flat_image(&cfg).as_str(), format!("sub/.flat/0f/{}", "0f".repeat(32)));
/// assert_eq!(
///     layout.public_link_target(&name, &cfg).to_str().unwrap(),
///     format!("../../.flat/0f/{}", "0f".repeat(32)),
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: RepoPath,
}

impl Layout {
    /// A layout rooted at `root` (the repository subdir; [`RepoPath::root`] for none).
    pub fn new(root: RepoPath) -> Self {
        Self { root }
    }

    /// The layout of `repo`: rooted at its sub-directory, or at the repository root.
    pub fn of(repo: &RepositoryName) -> Self {
        // The repository name's grammar allows only clean sub-directories (no empty, `.` or
        // `..` component, no control characters), which is what a `RepoPath` holds.
        Self::new(RepoPath(repo.subdir().unwrap_or_default().to_owned()))
    }

    /// The directory everything goes under.
    pub fn root(&self) -> &RepoPath {
        &self.root
    }

    /// `.layers`
    pub fn layers_root(&self) -> RepoPath {
        self.root.child(".layers")
    }

    /// `.layers/<hh>`
    pub fn layer_shard(&self, layer: &LayerDigest) -> RepoPath {
        self.layers_root().child(&layer.shard())
    }

    /// `.layers/<hh>/<hex>`: everything about one layer.
    pub fn layer_dir(&self, layer: &LayerDigest) -> RepoPath {
        self.layer_shard(layer).child(&layer.hex())
    }

    /// `.layers/<hh>/<hex>/layerfs`: the unpacked layer.
    pub fn layerfs(&self, layer: &LayerDigest) -> RepoPath {
        self.layer_dir(layer).child("layerfs")
    }

    /// `.layers/<hh>/<hex>/.metadata`
    pub fn layer_metadata_dir(&self, layer: &LayerDigest) -> RepoPath {
        self.layer_dir(layer).child(".metadata")
    }

    /// `.layers/<hh>/<hex>/.metadata/origin.json`: which image configs use the layer.
    pub fn layer_origin(&self, layer: &LayerDigest) -> RepoPath {
        self.layer_metadata_dir(layer).child("origin.json")
    }

    /// `.layers/<hh>/<hex>/.metadata/layers.json`: containers/storage-style layer info.
    pub fn layer_info(&self, layer: &LayerDigest) -> RepoPath {
        self.layer_metadata_dir(layer).child("layers.json")
    }

    /// `.layers/<hh>/<hex>/.metadata/whiteouts.json`: the stack below that the layer's whiteout
    /// devices were written for, where they depend on it ([`crate::LayerWhiteouts`]).
    pub fn layer_whiteouts(&self, layer: &LayerDigest) -> RepoPath {
        self.layer_metadata_dir(layer).child("whiteouts.json")
    }

    /// `.flat`
    pub fn flat_root(&self) -> RepoPath {
        self.root.child(".flat")
    }

    /// `.flat/<hh>`
    pub fn flat_shard(&self, config: &ConfigDigest) -> RepoPath {
        self.flat_root().child(&config.shard())
    }

    /// `.flat/<hh>/<cfg>`: the flattened root filesystem of the image with that config.
    pub fn flat_image(&self, config: &ConfigDigest) -> RepoPath {
        self.flat_shard(config).child(&config.hex())
    }

    /// `.flat/<hh>/<cfg>/.singularity.d/.ducc-flat.json`: written after the flat tree, in the same
    /// transaction, so its presence says the tree is whole (an ingest cut by a kill may have
    /// published part of a tree; see the `cvmfs` publisher).
    pub fn flat_complete_record(&self, config: &ConfigDigest) -> RepoPath {
        self.flat_image(config)
            .child(".singularity.d")
            .child(".ducc-flat.json")
    }

    /// `<registry>/<repository>:<tag>`: the public symlink to the flat tree.
    pub fn public_link(&self, name: &PublicName) -> RepoPath {
        self.root.join_clean(&name.relative())
    }

    /// The text of the public symlink: `../`, once per directory level of the link, then
    /// `.flat/<hh>/<cfg>`.
    pub fn public_link_target(&self, name: &PublicName, config: &ConfigDigest) -> PathBuf {
        relative_target(&self.public_link(name), &self.flat_image(config))
    }

    /// `.metadata`
    pub fn metadata_root(&self) -> RepoPath {
        self.root.child(".metadata")
    }

    /// `.metadata/<registry>/<repository>:<tag>`
    pub fn marker_dir(&self, name: &PublicName) -> RepoPath {
        self.metadata_root().join_clean(&name.relative())
    }

    /// `.metadata/<registry>/<repository>:<tag>/manifest.json`: written last, it says "this image
    /// was converted" (see [`crate::MarkerManifest`]).
    pub fn marker_manifest(&self, name: &PublicName) -> RepoPath {
        self.marker_dir(name).child("manifest.json")
    }

    /// `.metadata/.gc`: garbage collection's own records.
    pub fn gc_dir(&self) -> RepoPath {
        self.metadata_root().child(".gc")
    }

    /// `.metadata/.gc/pending.json`: the pieces garbage collection found unreferenced, each with
    /// the time it was first found so (the grace period counts from there).
    pub fn gc_pending(&self) -> RepoPath {
        self.gc_dir().child("pending.json")
    }

    /// `.multiarch`: per-platform public symlinks of multi-platform images.
    pub fn multiarch_root(&self) -> RepoPath {
        self.root.child(".multiarch")
    }

    /// `.multiarch/<arch>`
    pub fn multiarch_dir(&self, arch: &Arch) -> RepoPath {
        self.multiarch_root().child(arch.as_str())
    }

    /// `.multiarch/<arch>/<registry>/<repository>:<tag>`: the public symlink of one platform of a
    /// multi-platform image.
    pub fn arch_link(&self, name: &PublicName, arch: &Arch) -> RepoPath {
        self.multiarch_dir(arch).join_clean(&name.relative())
    }

    /// The text of [`Layout::arch_link`]: relative, to `.flat/<hh>/<cfg>`.
    pub fn arch_link_target(
        &self,
        name: &PublicName,
        arch: &Arch,
        config: &ConfigDigest,
    ) -> PathBuf {
        relative_target(&self.arch_link(name, arch), &self.flat_image(config))
    }

    /// `.metadata/.multiarch/<arch>/<registry>/<repository>:<tag>`
    pub fn arch_marker_dir(&self, name: &PublicName, arch: &Arch) -> RepoPath {
        self.metadata_root()
            .child(".multiarch")
            .child(arch.as_str())
            .join_clean(&name.relative())
    }

    /// `.metadata/.multiarch/<arch>/<registry>/<repository>:<tag>/manifest.json`: the marker of one
    /// platform of a multi-platform image.
    pub fn arch_marker_manifest(&self, name: &PublicName, arch: &Arch) -> RepoPath {
        self.arch_marker_dir(name, arch).child("manifest.json")
    }

    /// The text of the public symlink of a multi-platform image: a CernVM-FS variant symlink,
    /// `../`.. then `.multiarch/$(CVMFS_ARCH:-<default>)/<registry>/<repository>:<tag>`, which each
    /// client resolves to its own platform (`default` where `CVMFS_ARCH` is unset).
    pub fn variant_link_target(&self, name: &PublicName, default: &Arch) -> PathBuf {
        let variable = format!("$(CVMFS_ARCH:-{default})");
        let target = self
            .multiarch_root()
            .child(&variable)
            .join_clean(&name.relative());
        relative_target(&self.public_link(name), &target)
    }

    /// `.multiarch/<name>` for a name of [`ARCH_ALIASES`]: an alias or one of its candidates.
    pub fn arch_alias(&self, alias: &str) -> RepoPath {
        self.multiarch_root().child(alias)
    }

    /// `podmanStore`: the podman additional image store (no leading dot, as upstream), at the
    /// base repository's root even when the layout has a subdir (upstream's place, and where
    /// sites point podman: `/cvmfs/REPO/podmanStore`).
    pub fn podman_store(&self) -> RepoPath {
        RepoPath::root().child("podmanStore")
    }

    /// `<dir>/.cvmfscatalog`
    pub fn catalog_marker(dir: &RepoPath) -> RepoPath {
        dir.child(CATALOG_MARKER)
    }

    /// Directories that are nested catalogs for one layer: `.layers`, `.layers/<hh>` and the
    /// layer's own directory `.layers/<hh>/<hex>` (outermost first). Not `layerfs`: its root is
    /// the root of a container that containerd's CernVM-FS snapshotter starts, where a
    /// `.cvmfscatalog` would show (issue 28). Layers written before keep theirs in `layerfs`.
    pub fn layer_catalog_dirs(&self, layer: &LayerDigest) -> [RepoPath; 3] {
        [
            self.layers_root(),
            self.layer_shard(layer),
            self.layer_dir(layer),
        ]
    }

    /// Directories that are nested catalogs for one flat image: `.flat`, `.flat/<hh>` and the
    /// image directory (outermost first).
    pub fn flat_catalog_dirs(&self, config: &ConfigDigest) -> [RepoPath; 3] {
        [
            self.flat_root(),
            self.flat_shard(config),
            self.flat_image(config),
        ]
    }

    /// Directories that are nested catalogs for the podman store: `podmanStore`.
    pub fn podman_catalog_dirs(&self) -> [RepoPath; 1] {
        [self.podman_store()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1";
    const C: &str = "0f35e3b1c9a0d8e7f6a5b4c3d2e1f00112233445566778899aabbccddeeff001";

    fn layer() -> LayerDigest {
        format!("sha256:{L}").parse().unwrap()
    }

    fn config() -> ConfigDigest {
        ConfigDigest::from_hex(C).unwrap()
    }

    fn name(registry: &str, repository: &str, tag: &str) -> PublicName {
        PublicName::tagged(registry, repository, tag).unwrap()
    }

    fn arch(a: &str, v: Option<&str>) -> Arch {
        Arch::new(a, v).unwrap()
    }

    #[test]
    fn a_platform_names_its_multiarch_directory_by_architecture_and_variant() {
        let arm: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(Arch::of(&arm).unwrap(), arch("arm64", Some("v8")));
        assert_eq!(
            Arch::of(&Platform::linux_amd64()).unwrap().as_str(),
            "amd64"
        );
        let hostile = Platform::new("linux", "..", None);
        assert!(matches!(
            Arch::of(&hostile),
            Err(PathError::BadImagePart { .. })
        ));
    }

    /// Upstream's newer `.multiarch` layout, with and without a repository subdir.
    #[test]
    fn multiarch_paths_follow_upstream() {
        let name = name("127.0.0.1:5000", "multi/app", "1");
        let arm = arch("arm64", Some("v8"));
        for (root, up) in [("", "../../"), ("sub", "../../")] {
            let layout = Layout::new(RepoPath::new(root).unwrap());
            let p = |s: &str| {
                if root.is_empty() {
                    s.to_owned()
                } else {
                    format!("{root}/{s}")
                }
            };
            assert_eq!(
                layout.arch_link(&name, &arm).as_str(),
                p(".multiarch/arm64:v8/127.0.0.1:5000/multi/app:1")
            );
            assert_eq!(
                layout.arch_link_target(&name, &arm, &config()),
                PathBuf::from(format!("../../../../.flat/0f/{C}"))
            );
            assert_eq!(
                layout.arch_marker_manifest(&name, &arm).as_str(),
                p(".metadata/.multiarch/arm64:v8/127.0.0.1:5000/multi/app:1/manifest.json")
            );
            assert_eq!(
                layout
                    .variant_link_target(&name, &arch("amd64", None))
                    .to_str()
                    .unwrap(),
                format!("{up}.multiarch/$(CVMFS_ARCH:-amd64)/127.0.0.1:5000/multi/app:1")
            );
            assert_eq!(layout.arch_alias("x86_64").as_str(), p(".multiarch/x86_64"));
        }
    }

    #[test]
    fn arch_names_are_checked() {
        assert_eq!(arch("amd64", None).as_str(), "amd64");
        assert_eq!(arch("amd64", Some("")).as_str(), "amd64");
        assert_eq!(arch("arm", Some("v7")).to_string(), "arm:v7");
        for (a, v) in [
            ("", None),
            ("..", None),
            ("arm/64", None),
            ("arm", Some("v/7")),
            ("arm:7", None),
            ("arm", Some("..")),
        ] {
            assert!(
                matches!(Arch::new(a, v), Err(PathError::BadImagePart { .. })),
                "{a:?} {v:?} accepted"
            );
        }
    }

    /// SPEC section 3, path by path, for a plain repository and one with a subdir.
    #[test]
    fn layout_paths_match_the_spec_table() {
        let ubuntu = name("registry.hub.docker.com", "library/ubuntu", "22.04");
        for (root, prefix) in [("", ""), ("sub/dir", "sub/dir/")] {
            let layout = Layout::new(RepoPath::new(root).unwrap());
            let cases: Vec<(RepoPath, String)> = vec![
                (layout.layers_root(), ".layers".into()),
                (layout.layer_shard(&layer()), ".layers/4f".into()),
                (layout.layer_dir(&layer()), format!(".layers/4f/{L}")),
                (layout.layerfs(&layer()), format!(".layers/4f/{L}/layerfs")),
                (
                    layout.layer_metadata_dir(&layer()),
                    format!(".layers/4f/{L}/.metadata"),
                ),
                (
                    layout.layer_origin(&layer()),
                    format!(".layers/4f/{L}/.metadata/origin.json"),
                ),
                (
                    layout.layer_info(&layer()),
                    format!(".layers/4f/{L}/.metadata/layers.json"),
                ),
                (layout.flat_root(), ".flat".into()),
                (layout.flat_shard(&config()), ".flat/0f".into()),
                (layout.flat_image(&config()), format!(".flat/0f/{C}")),
                (
                    layout.flat_complete_record(&config()),
                    format!(".flat/0f/{C}/.singularity.d/.ducc-flat.json"),
                ),
                (
                    layout.public_link(&ubuntu),
                    "registry.hub.docker.com/library/ubuntu:22.04".into(),
                ),
                (layout.metadata_root(), ".metadata".into()),
                (
                    layout.marker_dir(&ubuntu),
                    ".metadata/registry.hub.docker.com/library/ubuntu:22.04".into(),
                ),
                (
                    layout.marker_manifest(&ubuntu),
                    ".metadata/registry.hub.docker.com/library/ubuntu:22.04/manifest.json".into(),
                ),
                (
                    Layout::catalog_marker(&layout.flat_root()),
                    ".flat/.cvmfscatalog".into(),
                ),
            ];
            for (got, want) in cases {
                assert_eq!(got.as_str(), format!("{prefix}{want}"));
            }
            // The podman store stays at the base repository's root (issue 16).
            assert_eq!(layout.podman_store().as_str(), "podmanStore");
            assert_eq!(layout.podman_catalog_dirs()[0].as_str(), "podmanStore");
        }
    }

    #[test]
    fn catalog_dirs_are_the_spec_places() {
        let layout = Layout::new(RepoPath::root());
        let layer_dirs: Vec<String> = layout
            .layer_catalog_dirs(&layer())
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            layer_dirs,
            [
                ".layers".to_owned(),
                ".layers/4f".into(),
                format!(".layers/4f/{L}")
            ]
        );
        let flat_dirs: Vec<String> = layout
            .flat_catalog_dirs(&config())
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            flat_dirs,
            [
                ".flat".to_owned(),
                ".flat/0f".into(),
                format!(".flat/0f/{C}")
            ]
        );
        assert_eq!(layout.podman_catalog_dirs()[0].as_str(), "podmanStore");
    }

    /// One `../` per directory level between the link and the layout root.
    #[test]
    fn public_link_targets_climb_out_of_the_link_directory() {
        let flat = format!(".flat/0f/{C}");
        let cases = [
            ("", "reg.io", "ubuntu", 1),
            ("", "reg.io", "library/ubuntu", 2),
            ("", "registry.example.org", "a/b/c", 3),
            ("", "localhost:5000", "a/b/c/d/e", 5),
            ("sub", "reg.io", "library/ubuntu", 2),
            ("deep/er/sub", "reg.io", "a/b/c", 3),
        ];
        for (root, registry, repository, ups) in cases {
            let layout = Layout::new(RepoPath::new(root).unwrap());
            let target = layout.public_link_target(&name(registry, repository, "1.0"), &config());
            assert_eq!(
                target,
                PathBuf::from(format!("{}{flat}", "../".repeat(ups))),
                "{root} {repository}"
            );
            // The link text resolves to the flat tree from the link's directory.
            let link = layout.public_link(&name(registry, repository, "1.0"));
            let resolved = normalise(&link.parent().unwrap().as_path().join(&target));
            assert_eq!(resolved, layout.flat_image(&config()).as_path());
        }
    }

    fn normalise(path: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    }

    #[test]
    fn digest_only_images_are_named_repository_colon_digest() {
        let digest = format!("sha256:{C}");
        let n = PublicName::by_digest("reg.io", "library/ubuntu", &digest).unwrap();
        let layout = Layout::new(RepoPath::root());
        assert_eq!(
            layout.public_link(&n).as_str(),
            format!("reg.io/library/ubuntu:sha256:{C}")
        );
        assert_eq!(
            layout.public_link_target(&n, &config()),
            PathBuf::from(format!("../../.flat/0f/{C}"))
        );
    }

    #[test]
    fn image_parts_that_would_escape_the_tree_are_refused() {
        let cases = [
            ("", "a", "t", "registry"),
            ("..", "a", "t", "registry"),
            ("r/x", "a", "t", "registry"),
            ("r", "", "t", "repository"),
            ("r", "a/../../etc", "t", "repository"),
            ("r", "/a", "t", "repository"),
            ("r", "a//b", "t", "repository"),
            ("r", "a", "", "tag"),
            ("r", "a", "x/y", "tag"),
            ("r", "a", "..", "tag"),
        ];
        for (registry, repository, tag, what) in cases {
            match PublicName::tagged(registry, repository, tag) {
                Err(PathError::BadImagePart { what: w, .. }) => {
                    assert_eq!(w, what, "{registry} {repository} {tag}")
                }
                other => panic!("{registry} {repository} {tag}: {other:?}"),
            }
        }
    }

    #[test]
    fn repo_paths_must_be_clean_and_relative() {
        for bad in ["/abs", "a/../b", "..", "a//b", "./a", "a/./b"] {
            assert!(RepoPath::new(bad).is_err(), "{bad}");
        }
        assert_eq!(RepoPath::new("a/b/").unwrap().as_str(), "a/b");
        assert!(RepoPath::new("").unwrap().is_root());
        let p = RepoPath::new("a/b/c").unwrap();
        assert_eq!(
            p.ancestors(),
            vec![RepoPath::new("a").unwrap(), RepoPath::new("a/b").unwrap()]
        );
        assert!(p.starts_with(&RepoPath::new("a/b").unwrap()));
        assert!(
            !RepoPath::new("a/bc")
                .unwrap()
                .starts_with(&RepoPath::new("a/b").unwrap())
        );
        assert!(p.starts_with(&RepoPath::root()));
    }

    #[test]
    fn a_repository_layout_is_rooted_at_its_subdir() {
        let sub = RepositoryName::parse("unpacked.cern.ch/some/sub").unwrap();
        assert_eq!(Layout::of(&sub).root().as_str(), "some/sub");
        assert_eq!(Layout::of(&sub).flat_root().as_str(), "some/sub/.flat");
        let plain = RepositoryName::parse("unpacked.cern.ch").unwrap();
        assert!(Layout::of(&plain).root().is_root());
        assert_eq!(Layout::of(&plain).flat_root().as_str(), ".flat");
    }
}
