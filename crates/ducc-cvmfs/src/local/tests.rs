//! Tests of the local publisher, including processes killed mid-transaction and racing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Child, Command, Stdio};

use super::*;

/// Test hook: a child process asked to stop mid-commit sleeps after this op.
pub(super) fn pause_after_op(i: usize) {
    let wanted = std::env::var("DUCC_CVMFS_TEST_PAUSE_AFTER_OP")
        .ok()
        .and_then(|v| v.parse().ok());
    if wanted == Some(i) {
        println!("paused");
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}

fn p(s: &str) -> RepoPath {
    RepoPath::new(s).unwrap()
}

fn repo_name() -> RepositoryName {
    RepositoryName::parse("test.repo").unwrap()
}

/// A canonical tar: directories first, then files (`name`, content) and symlinks (`name`, `->target`).
fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, name, &[][..]).unwrap();
        } else if let Some(target) = content.strip_prefix("->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, name, content.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

/// Path → file content, `->target` for symlinks, `/` for directories; below `dir`.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                out.insert(
                    rel,
                    format!("->{}", fs::read_link(&path).unwrap().display()),
                );
            } else if meta.is_dir() {
                out.insert(rel, "/".into());
                walk(base, &path, out);
            } else {
                out.insert(rel, fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn expect(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn staging_entries(root: &Path) -> Vec<String> {
    let dir = root.join(".ducc/test.repo/staging");
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Ingests a tar of `entries` (as [`tar_of`] takes them) at `path`, without a catalog.
fn ingest(tx: &mut dyn Transaction, path: &str, entries: &[(&str, &str)]) {
    tx.ingest_tar(
        &p(path),
        &mut &tar_of(entries)[..],
        IngestOptions::default(),
    )
    .unwrap();
}

/// Ingest options that mark the directory as a nested catalog.
fn with_catalog() -> IngestOptions {
    IngestOptions {
        catalog: true,
        ..Default::default()
    }
}

/// Publishes `a/` with one file, so tests have an old tree to keep or replace.
fn publish_old_tree(publisher: &LocalPublisher) {
    let mut tx = publisher.begin(&p("a")).unwrap();
    ingest(&mut *tx, "a/layer", &[("f", "old")]);
    tx.write_file(&p("a/meta.json"), &mut &b"{}"[..]).unwrap();
    tx.commit().unwrap();
}

/// A repository `test.repo` under a temporary root.
struct Repo {
    root: tempfile::TempDir,
    publisher: LocalPublisher,
}

impl Repo {
    /// Opens the repository under `root`, finishing or cleaning what dead processes left.
    fn open(root: tempfile::TempDir) -> Self {
        let publisher = LocalPublisher::open(root.path(), &repo_name()).unwrap();
        Self { root, publisher }
    }

    /// An empty repository.
    fn empty() -> Self {
        Self::open(tempfile::tempdir().unwrap())
    }

    /// A repository holding [`old_tree`].
    fn with_old_tree() -> Self {
        let repo = Self::empty();
        publish_old_tree(&repo.publisher);
        repo
    }

    /// The published tree (see [`tree`]).
    fn tree(&self) -> BTreeMap<String, String> {
        tree(self.publisher.repository_dir())
    }

    /// Leaves the staging of a dead commit whose journal is `journal`; returns its directory.
    fn dead_commit(&self, journal: &str) -> PathBuf {
        let dead = self.root.path().join(".ducc/test.repo/staging/tx-dead");
        fs::create_dir_all(&dead).unwrap();
        fs::write(dead.join("journal"), journal).unwrap();
        dead
    }

    /// Asserts that `want` is published and no staging is left behind.
    fn assert_published(&self, want: &BTreeMap<String, String>) {
        assert_eq!(&self.tree(), want);
        assert!(staging_entries(self.root.path()).is_empty());
    }
}

fn old_tree() -> BTreeMap<String, String> {
    expect(&[
        ("a", "/"),
        ("a/layer", "/"),
        ("a/layer/f", "old"),
        ("a/meta.json", "{}"),
    ])
}

#[test]
fn commit_publishes_ingested_trees_files_and_symlinks() {
    let repo = Repo::empty();
    let mut tx = repo.publisher.begin(&p("x")).unwrap();
    let layer = tar_of(&[("etc/", ""), ("etc/motd", "hello"), ("link", "->etc/motd")]);
    tx.ingest_tar(&p("x/layerfs"), &mut &layer[..], with_catalog())
        .unwrap();
    tx.write_file(&p("x/meta/info.json"), &mut &b"[1]"[..])
        .unwrap();
    tx.symlink(&p("x/latest"), Path::new("layerfs")).unwrap();
    // Nothing is visible before the commit.
    assert!(repo.tree().is_empty());
    tx.commit().unwrap();
    repo.assert_published(&expect(&[
        ("x", "/"),
        ("x/latest", "->layerfs"),
        ("x/layerfs", "/"),
        ("x/layerfs/.cvmfscatalog", ""),
        ("x/layerfs/etc", "/"),
        ("x/layerfs/etc/motd", "hello"),
        ("x/layerfs/link", "->etc/motd"),
        ("x/meta", "/"),
        ("x/meta/info.json", "[1]"),
    ]));
    let mode = fs::metadata(repo.publisher.published_path(&p("x/meta/info.json")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o644);
}

#[test]
fn abort_and_drop_leave_the_published_tree_as_it_was() {
    let repo = Repo::with_old_tree();
    for explicit_abort in [true, false] {
        let mut tx = repo.publisher.begin(&p("a")).unwrap();
        tx.remove(&p("a/layer")).unwrap();
        ingest(&mut *tx, "a/layer", &[("f", "new")]);
        tx.write_file(&p("a/meta.json"), &mut &b"new"[..]).unwrap();
        if explicit_abort {
            tx.abort().unwrap();
        } else {
            drop(tx);
        }
        repo.assert_published(&old_tree());
    }
}

#[test]
fn a_published_directory_is_replaced_after_removing_it_in_the_same_transaction() {
    let repo = Repo::with_old_tree();
    let layer_ino = || {
        fs::metadata(repo.publisher.published_path(&p("a/layer")))
            .unwrap()
            .ino()
    };
    let old_ino = layer_ino();
    let mut tx = repo.publisher.begin(&p("a")).unwrap();
    tx.remove(&p("a/layer")).unwrap();
    ingest(&mut *tx, "a/layer", &[("g", "new")]);
    tx.remove(&p("a/meta.json")).unwrap();
    tx.symlink(&p("a/meta.json"), Path::new("layer/g")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        repo.tree(),
        expect(&[
            ("a", "/"),
            ("a/layer", "/"),
            ("a/layer/g", "new"),
            ("a/meta.json", "->layer/g")
        ])
    );
    assert_ne!(layer_ino(), old_ino);
}

#[test]
fn removing_inside_a_staged_tree_and_removing_missing_paths_work() {
    let repo = Repo::with_old_tree();
    let mut tx = repo.publisher.begin(&p("")).unwrap();
    ingest(&mut *tx, "b", &[("keep", "k"), ("drop", "d")]);
    tx.remove(&p("b/drop")).unwrap();
    tx.write_file(&p("b/added"), &mut &b"+"[..]).unwrap();
    tx.remove(&p("never/there")).unwrap();
    tx.remove(&p("a/meta.json")).unwrap();
    tx.commit().unwrap();
    let mut want = old_tree();
    want.remove("a/meta.json");
    want.extend(expect(&[("b", "/"), ("b/keep", "k"), ("b/added", "+")]));
    assert_eq!(repo.tree(), want);
}

#[test]
fn refused_writes_name_the_path() {
    let repo = Repo::with_old_tree();
    let mut tx = repo.publisher.begin(&p("a")).unwrap();
    let empty = tar_of(&[]);
    match tx.ingest_tar(&p("a/layer"), &mut &empty[..], IngestOptions::default()) {
        Err(PublishError::AlreadyExists { path }) => assert_eq!(path.as_str(), "a/layer"),
        other => panic!("{other:?}"),
    }
    match tx.write_file(&p("a/layer"), &mut &b""[..]) {
        Err(PublishError::AlreadyExists { path }) => assert_eq!(path.as_str(), "a/layer"),
        other => panic!("{other:?}"),
    }
    match tx.symlink(&p("ab/x"), Path::new("y")) {
        Err(PublishError::OutsideLease { path, lease }) => {
            assert_eq!((path.as_str(), lease.as_str()), ("ab/x", "a"));
        }
        other => panic!("{other:?}"),
    }
    match tx.write_file(&p("a/meta.json/below"), &mut &b""[..]) {
        Err(e @ PublishError::NotADirectory { .. }) => {
            assert_eq!(e.to_string(), "a/meta.json is not a directory");
        }
        other => panic!("{other:?}"),
    }
    match tx.remove(&p("b")) {
        Err(e @ PublishError::OutsideLease { .. }) => {
            assert_eq!(e.to_string(), "path b is outside the transaction's lease a");
        }
        other => panic!("{other:?}"),
    }
    tx.commit().unwrap();
    assert_eq!(repo.tree(), old_tree());
}

#[test]
fn a_malformed_tar_fails_the_ingest_and_publishes_nothing() {
    let repo = Repo::with_old_tree();
    let mut tx = repo.publisher.begin(&p("a")).unwrap();
    let mut broken = tar_of(&[("f", "some content")]);
    broken[150] ^= 0xff; // corrupts the header checksum field
    match tx.ingest_tar(&p("a/new"), &mut &broken[..], IngestOptions::default()) {
        Err(e @ PublishError::Unpack { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("cannot unpack the tar stream into a/new"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    drop(tx);
    assert_eq!(repo.tree(), old_tree());
}

#[test]
fn transactions_on_disjoint_leases_are_open_at_once() {
    let repo = Repo::empty();
    let mut one = repo.publisher.begin(&p("x/one")).unwrap();
    let mut two = repo.publisher.begin(&p("x/two")).unwrap();
    one.write_file(&p("x/one/f"), &mut &b"1"[..]).unwrap();
    two.write_file(&p("x/two/f"), &mut &b"2"[..]).unwrap();
    two.commit().unwrap();
    one.commit().unwrap();
    assert_eq!(
        repo.tree(),
        expect(&[
            ("x", "/"),
            ("x/one", "/"),
            ("x/one/f", "1"),
            ("x/two", "/"),
            ("x/two/f", "2")
        ])
    );
}

// ---- child processes -------------------------------------------------------------------------

/// A child process that is killed if the test fails before it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `child_process` (below) in a new process of this test binary.
fn spawn_child(root: &Path, mode: &str, pause_after_op: Option<usize>) -> ChildGuard {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "local::tests::child_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("DUCC_CVMFS_CHILD_ROOT", root)
    .env("DUCC_CVMFS_CHILD_MODE", mode)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(i) = pause_after_op {
        cmd.env("DUCC_CVMFS_TEST_PAUSE_AFTER_OP", i.to_string());
    }
    ChildGuard(cmd.spawn().unwrap())
}

/// Waits for the child to print `line`.
fn wait_for(child: &mut ChildGuard, line: &str) {
    let out = child.0.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(out);
    let mut text = String::new();
    loop {
        text.clear();
        assert!(
            reader.read_line(&mut text).unwrap() > 0,
            "child ended before printing {line}"
        );
        // libtest prints `test child_process ... ` before the test's own output.
        if text.trim_end().ends_with(line) {
            return;
        }
    }
}

fn kill_9(child: &mut ChildGuard) {
    let pid = rustix::process::Pid::from_child(&child.0);
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    child.0.wait().unwrap();
}

/// Body of the child processes; not a test of its own.
#[test]
#[ignore = "run as a child process by the crash and race tests"]
fn child_process() {
    let root = PathBuf::from(std::env::var_os("DUCC_CVMFS_CHILD_ROOT").unwrap());
    let mode = std::env::var("DUCC_CVMFS_CHILD_MODE").unwrap();
    let publisher = LocalPublisher::open(&root, &repo_name()).unwrap();
    match mode.as_str() {
        // Rewrites `a/` and then either hangs before commit or commits (pausing mid-way when asked).
        "rewrite-and-hang" | "rewrite-and-commit" => {
            let mut tx = publisher.begin(&p("a")).unwrap();
            tx.remove(&p("a/layer")).unwrap();
            ingest(&mut *tx, "a/layer", &[("f", "new")]);
            tx.write_file(&p("a/meta.json"), &mut &b"new"[..]).unwrap();
            if mode == "rewrite-and-hang" {
                println!("ready");
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
            tx.commit().unwrap();
        }
        // Read-modify-write of a counter under the lease `counter`.
        "increment" => {
            for _ in 0..5 {
                let mut tx = publisher.begin(&p("counter")).unwrap();
                let path = publisher.published_path(&p("counter/n"));
                let n: u32 = fs::read_to_string(&path)
                    .map(|s| s.parse().unwrap())
                    .unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(30));
                tx.write_file(&p("counter/n"), &mut (n + 1).to_string().as_bytes())
                    .unwrap();
                tx.commit().unwrap();
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn a_process_killed_mid_transaction_leaves_the_old_tree_and_its_staging_is_cleaned() {
    let root = tempfile::tempdir().unwrap();
    publish_old_tree(&LocalPublisher::open(root.path(), &repo_name()).unwrap());
    let mut child = spawn_child(root.path(), "rewrite-and-hang", None);
    wait_for(&mut child, "ready");
    assert!(
        !staging_entries(root.path()).is_empty(),
        "the child stages its writes"
    );
    // A second process opening meanwhile must not take the live staging for a dead one.
    LocalPublisher::open(root.path(), &repo_name()).unwrap();
    assert_eq!(staging_entries(root.path()).len(), 2, "live staging kept");
    kill_9(&mut child);
    let repo = Repo::open(root);
    repo.assert_published(&old_tree());
    // The dead process's lease is free again.
    repo.publisher.begin(&p("a")).unwrap().commit().unwrap();
}

#[test]
fn a_process_killed_mid_commit_has_its_commit_finished_at_the_next_open() {
    let root = tempfile::tempdir().unwrap();
    publish_old_tree(&LocalPublisher::open(root.path(), &repo_name()).unwrap());
    // Ops: remove a/layer, replace a/layer, replace a/meta.json; stop after the second.
    let mut child = spawn_child(root.path(), "rewrite-and-commit", Some(1));
    wait_for(&mut child, "paused");
    kill_9(&mut child);
    let half = tree(&root.path().join("test.repo"));
    assert_eq!(half.get("a/layer/f").map(String::as_str), Some("new"));
    assert_eq!(half.get("a/meta.json").map(String::as_str), Some("{}"));
    let repo = Repo::open(root);
    repo.assert_published(&expect(&[
        ("a", "/"),
        ("a/layer", "/"),
        ("a/layer/f", "new"),
        ("a/meta.json", "new"),
    ]));
}

#[test]
fn two_processes_on_one_lease_never_interleave() {
    let root = tempfile::tempdir().unwrap();
    LocalPublisher::open(root.path(), &repo_name()).unwrap();
    let mut children = [
        spawn_child(root.path(), "increment", None),
        spawn_child(root.path(), "increment", None),
    ];
    for child in &mut children {
        assert!(child.0.wait().unwrap().success());
    }
    // Without the lease lock the read-modify-write cycles would lose updates.
    let n = fs::read_to_string(root.path().join("test.repo/counter/n")).unwrap();
    assert_eq!(n, "10");
}

#[test]
fn an_unreadable_journal_of_a_dead_commit_fails_the_open_naming_it() {
    let repo = Repo::empty();
    let dead = repo.dead_commit("not json");
    match LocalPublisher::open(repo.root.path(), &repo_name()) {
        Err(PublishError::Journal { path, .. }) => assert_eq!(path, dead.join("journal")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dead_commit_whose_staged_entry_is_gone_skips_it_and_finishes_the_rest() {
    let repo = Repo::with_old_tree();
    repo.dead_commit(
        r#"{"lease":"a","ops":[{"Replace":{"path":"a/gone","ino":1}},{"Remove":{"path":"a/meta.json"}}]}"#,
    );
    let repo = Repo::open(repo.root);
    let mut want = old_tree();
    want.remove("a/meta.json");
    repo.assert_published(&want);
}

#[test]
fn a_directory_filled_in_place_is_published_at_commit_with_its_catalog() {
    let repo = Repo::with_old_tree();
    let mut tx = repo.publisher.begin(&p("a")).unwrap();
    tx.remove(&p("a/layer")).unwrap();
    tx.fill_dir(&p("a/layer"), with_catalog(), &mut |dir, _| {
        assert_eq!(fs::read_dir(dir)?.count(), 0, "the directory starts empty");
        fs::create_dir(dir.join("etc"))?;
        fs::write(dir.join("etc/motd"), "new")?;
        Ok(())
    })
    .unwrap();
    // Nothing changes before the commit.
    assert_eq!(repo.tree(), old_tree());
    tx.commit().unwrap();
    repo.assert_published(&expect(&[
        ("a", "/"),
        ("a/layer", "/"),
        ("a/layer/.cvmfscatalog", ""),
        ("a/layer/etc", "/"),
        ("a/layer/etc/motd", "new"),
        ("a/meta.json", "{}"),
    ]));
}

#[test]
fn a_failing_fill_publishes_nothing_and_returns_its_error() {
    let repo = Repo::with_old_tree();
    let mut tx = repo.publisher.begin(&p("a")).unwrap();
    let result = tx.fill_dir(&p("a/new"), IngestOptions::default(), &mut |dir, _| {
        fs::write(dir.join("half"), "written")?;
        Err("digest mismatch".into())
    });
    match result {
        Err(e @ PublishError::Fill { .. }) => {
            assert_eq!(e.to_string(), "cannot build a/new");
            assert_eq!(
                std::error::Error::source(&e).unwrap().to_string(),
                "digest mismatch"
            );
        }
        other => panic!("{other:?}"),
    }
    // The half-built tree is gone even if the caller commits what else it wrote.
    tx.write_file(&p("a/meta.json"), &mut &b"{\"n\":1}"[..])
        .unwrap();
    tx.commit().unwrap();
    let mut expected = old_tree();
    expected.insert("a/meta.json".into(), "{\"n\":1}".into());
    repo.assert_published(&expected);
}

#[test]
fn fill_refuses_an_existing_directory_and_paths_outside_the_lease() {
    let repo = Repo::with_old_tree();
    let mut tx = repo.publisher.begin(&p("a")).unwrap();
    let mut never = |_: &Path, _| -> Result<(), FillError> { panic!("fill must not run") };
    assert!(matches!(
        tx.fill_dir(&p("a/layer"), IngestOptions::default(), &mut never),
        Err(PublishError::AlreadyExists { .. })
    ));
    assert!(matches!(
        tx.fill_dir(&p("b/layer"), IngestOptions::default(), &mut never),
        Err(PublishError::OutsideLease { .. })
    ));
}
