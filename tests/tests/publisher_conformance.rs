//! One conformance suite for every publisher (issue 26): the same cases run against the local
//! publisher and the `cvmfs` publisher through the `cvmfs_server` stand-in, as a stratum 0
//! writing through the mounted repository, as a stratum 0 without a mount (every commit an
//! ingest), and behind a gateway. What the `Publisher`, `Transaction` and `Group` traits promise
//! holds for each; where the traits leave a choice to the backend (the local publisher
//! publishes each transaction at its own commit, even in a group; behind a gateway a transaction
//! that read the published tree does, since it read inside a server transaction of its own), the
//! case says which and checks it.
#![allow(clippy::unwrap_used)]

mod standin_support;

use std::fs;
use std::path::{Path, PathBuf};

use ducc_cvmfs::{IngestOptions, LocalPublisher, PublishError, Publisher, RepoPath};
use ducc_oci::RepositoryName;
use standin_support::{REPO, Stratum0, files_tar};

/// A publisher under test, with what keeps its repository alive.
struct Subject {
    name: &'static str,
    publisher: Box<dyn Publisher>,
    /// Whether a transaction committed into a group is published at once (the local
    /// publisher), rather than with the group.
    publishes_at_transaction_commit: bool,
    /// Whether a transaction that read the published tree is published at its own commit
    /// (behind a gateway: it read inside a server transaction of its own, since other nodes
    /// write the same files).
    reads_publish_at_transaction_commit: bool,
    _local: Option<tempfile::TempDir>,
    _standin: Option<Stratum0>,
}

impl Subject {
    fn published(&self, path: &str) -> PathBuf {
        self.publisher.published_path(&p(path))
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        fs::read(self.published(path)).ok()
    }

    /// `path` is published with `content`.
    fn assert_file(&self, path: &str, content: &[u8]) {
        assert_eq!(
            self.read(path).as_deref(),
            Some(content),
            "{}: {path}",
            self.name
        );
    }

    /// Nothing is published at `path`.
    fn assert_absent(&self, path: &str) {
        assert!(!self.published(path).exists(), "{}: {path}", self.name);
    }

    /// `path` is published as a symlink to `target`.
    fn assert_link(&self, path: &str, target: &str) {
        assert_eq!(
            fs::read_link(self.published(path)).ok().as_deref(),
            Some(Path::new(target)),
            "{}: {path}",
            self.name
        );
    }
}

/// The publishers every case runs against.
fn subjects() -> Vec<Subject> {
    let root = tempfile::tempdir().unwrap();
    let local = LocalPublisher::open(root.path(), &RepositoryName::parse(REPO).unwrap()).unwrap();
    let mut subjects = vec![Subject {
        name: "local",
        publisher: Box::new(local),
        publishes_at_transaction_commit: true,
        reads_publish_at_transaction_commit: true,
        _local: Some(root),
        _standin: None,
    }];
    for (name, gateway, mounted) in [
        ("cvmfs stratum 0, mounted", false, true),
        ("cvmfs stratum 0, ingest only", false, false),
        ("cvmfs gateway, mounted", true, true),
    ] {
        let standin = Stratum0::new(gateway);
        let publisher = if mounted {
            standin.mounted_publisher(gateway)
        } else {
            standin.publisher(gateway)
        };
        subjects.push(Subject {
            name,
            publisher: Box::new(publisher),
            publishes_at_transaction_commit: false,
            reads_publish_at_transaction_commit: gateway,
            _local: None,
            _standin: Some(standin),
        });
    }
    subjects
}

fn p(s: &str) -> RepoPath {
    RepoPath::new(s).unwrap()
}

fn plain() -> IngestOptions {
    IngestOptions::default()
}

#[test]
fn a_committed_transaction_publishes_its_files_and_symlinks_and_nothing_before() {
    for s in subjects() {
        let mut tx = s.publisher.begin(&p("a")).unwrap();
        tx.write_file(&p("a/sub/f"), &mut &b"content"[..]).unwrap();
        tx.symlink(&p("a/l"), Path::new("sub/f")).unwrap();
        s.assert_absent("a/sub/f");
        tx.commit().unwrap();
        s.assert_file("a/sub/f", b"content");
        s.assert_link("a/l", "sub/f");
        // A second commit replaces the file and the symlink in place.
        let mut tx = s.publisher.begin(&p("a")).unwrap();
        tx.write_file(&p("a/sub/f"), &mut &b"second"[..]).unwrap();
        tx.symlink(&p("a/l"), Path::new("elsewhere")).unwrap();
        tx.commit().unwrap();
        s.assert_file("a/sub/f", b"second");
        s.assert_link("a/l", "elsewhere");
    }
}

#[test]
fn an_aborted_or_dropped_transaction_publishes_nothing() {
    for s in subjects() {
        let mut tx = s.publisher.begin(&p("b")).unwrap();
        tx.write_file(&p("b/aborted"), &mut &b"x"[..]).unwrap();
        tx.abort().unwrap();
        let mut tx = s.publisher.begin(&p("b")).unwrap();
        tx.write_file(&p("b/dropped"), &mut &b"x"[..]).unwrap();
        tx.ingest_tar(&p("b/tree"), &mut &files_tar(&[("f", b"x")])[..], plain())
            .unwrap();
        drop(tx);
        for path in ["b/aborted", "b/dropped", "b/tree"] {
            assert!(!s.published(path).exists(), "{}: {path}", s.name);
        }
        // The lease is free again.
        let tx = s.publisher.begin(&p("b")).unwrap();
        tx.abort().unwrap();
    }
}

#[test]
fn an_ingested_tar_is_its_tree_and_a_tree_is_replaced_only_after_its_removal() {
    for s in subjects() {
        let mut tx = s.publisher.begin(&p("t")).unwrap();
        tx.ingest_tar(
            &p("t/dir"),
            &mut &files_tar(&[("x/one", b"1"), ("two", b"2")])[..],
            plain(),
        )
        .unwrap();
        tx.commit().unwrap();
        s.assert_file("t/dir/x/one", b"1");
        s.assert_file("t/dir/two", b"2");

        let mut tx = s.publisher.begin(&p("t")).unwrap();
        let again = tx.ingest_tar(&p("t/dir"), &mut &files_tar(&[("y", b"y")])[..], plain());
        assert!(
            matches!(again, Err(PublishError::AlreadyExists { .. })),
            "{}: {again:?}",
            s.name
        );
        drop(tx);
        s.assert_file("t/dir/two", b"2");

        let mut tx = s.publisher.begin(&p("t")).unwrap();
        tx.remove(&p("t/dir")).unwrap();
        tx.ingest_tar(&p("t/dir"), &mut &files_tar(&[("new", b"n")])[..], plain())
            .unwrap();
        tx.commit().unwrap();
        s.assert_file("t/dir/new", b"n");
        s.assert_absent("t/dir/two");
        s.assert_absent("t/dir/x");
    }
}

#[test]
fn a_filled_dir_is_published_at_commit_and_a_failed_fill_publishes_nothing() {
    for s in subjects() {
        let mut tx = s.publisher.begin(&p("f")).unwrap();
        tx.fill_dir(&p("f/built"), plain(), &mut |dest, _hints| {
            fs::create_dir(dest.join("d"))?;
            fs::write(dest.join("d/file"), b"filled")?;
            Ok(())
        })
        .unwrap();
        assert!(
            !s.published("f/built").exists(),
            "{}: before the commit",
            s.name
        );
        tx.commit().unwrap();
        s.assert_file("f/built/d/file", b"filled");

        let mut tx = s.publisher.begin(&p("f")).unwrap();
        let failed = tx.fill_dir(&p("f/failed"), plain(), &mut |dest, _hints| {
            fs::write(dest.join("half"), b"half")?;
            Err("the layer's digest did not match".into())
        });
        match failed {
            Err(PublishError::Fill { dir, source }) => {
                assert_eq!(dir, p("f/failed"), "{}", s.name);
                assert!(source.to_string().contains("digest"), "{}", s.name);
            }
            other => panic!("{}: {other:?}", s.name),
        }
        tx.commit().unwrap();
        s.assert_absent("f/failed");
    }
}

#[test]
fn paths_outside_the_lease_are_refused_and_a_file_never_replaces_a_directory() {
    for s in subjects() {
        let mut tx = s.publisher.begin(&p("o/in")).unwrap();
        let write = tx.write_file(&p("o/out/f"), &mut &b"x"[..]);
        assert!(
            matches!(write, Err(PublishError::OutsideLease { .. })),
            "{}: {write:?}",
            s.name
        );
        let link = tx.symlink(&p("o/l"), Path::new("x"));
        assert!(
            matches!(link, Err(PublishError::OutsideLease { .. })),
            "{}: {link:?}",
            s.name
        );
        let ingest = tx.ingest_tar(&p("o/t"), &mut &files_tar(&[("f", b"x")])[..], plain());
        assert!(
            matches!(ingest, Err(PublishError::OutsideLease { .. })),
            "{}: {ingest:?}",
            s.name
        );
        let read = tx.read_file(&p("o/other"));
        assert!(
            matches!(read, Err(PublishError::OutsideLease { .. })),
            "{}: {read:?}",
            s.name
        );
        tx.ingest_tar(&p("o/in/dir"), &mut &files_tar(&[("f", b"x")])[..], plain())
            .unwrap();
        tx.commit().unwrap();
        let mut tx = s.publisher.begin(&p("o/in")).unwrap();
        let over = tx.write_file(&p("o/in/dir"), &mut &b"x"[..]);
        assert!(
            matches!(over, Err(PublishError::AlreadyExists { .. })),
            "{}: {over:?}",
            s.name
        );
        drop(tx);
        s.assert_file("o/in/dir/f", b"x");
    }
}

#[test]
fn reads_see_the_transaction_then_its_group_then_the_published_tree() {
    for s in subjects() {
        let mut tx = s.publisher.begin(&p("r")).unwrap();
        tx.write_file(&p("r/published"), &mut &b"old"[..]).unwrap();
        tx.commit().unwrap();

        let group = s.publisher.group();
        let mut tx = group.begin(&p("r")).unwrap();
        assert_eq!(
            tx.read_file(&p("r/published")).unwrap().as_deref(),
            Some(&b"old"[..]),
            "{}",
            s.name
        );
        assert_eq!(tx.read_file(&p("r/missing")).unwrap(), None, "{}", s.name);
        tx.write_file(&p("r/published"), &mut &b"mine"[..]).unwrap();
        tx.symlink(&p("r/link"), Path::new("published")).unwrap();
        assert_eq!(
            tx.read_file(&p("r/published")).unwrap().as_deref(),
            Some(&b"mine"[..]),
            "{}: its own write",
            s.name
        );
        assert_eq!(
            tx.read_link(&p("r/link")).unwrap().as_deref(),
            Some(Path::new("published")),
            "{}",
            s.name
        );
        tx.commit().unwrap();
        // A later transaction of the group sees what the first one committed into it.
        let tx = group.begin(&p("r")).unwrap();
        assert_eq!(
            tx.read_file(&p("r/published")).unwrap().as_deref(),
            Some(&b"mine"[..]),
            "{}: the group's write",
            s.name
        );
        drop(tx);
        let before_the_group: &[u8] =
            if s.publishes_at_transaction_commit || s.reads_publish_at_transaction_commit {
                b"mine"
            } else {
                b"old"
            };
        assert_eq!(
            s.read("r/published").as_deref(),
            Some(before_the_group),
            "{}: published before the group's commit",
            s.name
        );
        group.commit().unwrap();
        s.assert_file("r/published", b"mine");
    }
}

#[test]
fn a_group_publishes_its_transactions_together_and_a_dropped_one_per_its_backend() {
    for s in subjects() {
        let group = s.publisher.group();
        for (lease, file) in [("g/one", "g/one/f"), ("g/two", "g/two/f")] {
            let mut tx = group.begin(&p(lease)).unwrap();
            tx.write_file(&p(file), &mut &b"g"[..]).unwrap();
            tx.commit().unwrap();
        }
        // An aborted transaction leaves nothing in the group.
        let mut tx = group.begin(&p("g/three")).unwrap();
        tx.write_file(&p("g/three/f"), &mut &b"g"[..]).unwrap();
        tx.abort().unwrap();
        assert_eq!(
            s.published("g/one/f").exists(),
            s.publishes_at_transaction_commit,
            "{}",
            s.name
        );
        group.commit().unwrap();
        for file in ["g/one/f", "g/two/f"] {
            s.assert_file(file, b"g");
        }
        s.assert_absent("g/three");

        // A group dropped uncommitted publishes nothing of what it holds.
        let group = s.publisher.group();
        let mut tx = group.begin(&p("g/dropped")).unwrap();
        tx.write_file(&p("g/dropped/f"), &mut &b"d"[..]).unwrap();
        tx.commit().unwrap();
        drop(group);
        assert_eq!(
            s.published("g/dropped/f").exists(),
            s.publishes_at_transaction_commit,
            "{}",
            s.name
        );
    }
}

#[test]
fn a_nested_group_hands_its_writes_to_its_parent_and_a_dropped_one_leaves_the_parent_whole() {
    for s in subjects() {
        let parent = s.publisher.group();
        let mut tx = parent.begin(&p("n/parent")).unwrap();
        tx.write_file(&p("n/parent/f"), &mut &b"p"[..]).unwrap();
        tx.commit().unwrap();
        {
            let nested = parent.nested();
            let mut tx = nested.begin(&p("n/kept")).unwrap();
            tx.write_file(&p("n/kept/f"), &mut &b"k"[..]).unwrap();
            tx.commit().unwrap();
            // The nested group's transactions see the parent's writes.
            let tx = nested.begin(&p("n/parent")).unwrap();
            assert_eq!(
                tx.read_file(&p("n/parent/f")).unwrap().as_deref(),
                Some(&b"p"[..]),
                "{}",
                s.name
            );
            drop(tx);
            let published = nested.commit().unwrap();
            assert_eq!(
                published.revisions, 0,
                "{}: a nested commit publishes nothing",
                s.name
            );
        }
        {
            let nested = parent.nested();
            let mut tx = nested.begin(&p("n/dropped")).unwrap();
            tx.write_file(&p("n/dropped/f"), &mut &b"d"[..]).unwrap();
            tx.commit().unwrap();
        }
        parent.commit().unwrap();
        s.assert_file("n/parent/f", b"p");
        s.assert_file("n/kept/f", b"k");
        assert_eq!(
            s.published("n/dropped/f").exists(),
            s.publishes_at_transaction_commit,
            "{}",
            s.name
        );
    }
}
