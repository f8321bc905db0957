//! The `cvmfs_server` stand-in reproduces the scenarios measured on a real CernVM-FS 2.12.0:
//! one test per scenario of reference/cvmfs-real-behaviour.md (`s01_` ... `s14_`, stratum 0)
//! and reference/cvmfs-gateway-behaviour.md (`g1_` ... `g5_`), asserting the recorded owner,
//! mode, exit status, error text and whether a revision was published. Runs as root (owners).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};

mod standin_support;

use standin_support::REPO;
use standin_support::cli::Standin;

const MTIME: u64 = 1_600_000_000;
const NOBODY: u32 = 65534;

/// A fresh stand-in repository owned by root (`mkfs -o 0:0`), behind a gateway if `gateway`;
/// `None` when the test cannot run here (not root) and `DUCC_ALLOW_SKIP=1` lets it skip
/// (otherwise that fails the test).
fn standin(gateway: bool) -> Option<Standin> {
    if !ducc_tests::require_root("these scenarios check owners") {
        return None;
    }
    Some(Standin::mkfs(
        "0:0",
        gateway.then_some("http://localhost:4929/api/v1"),
    ))
}

/// (mode & 07777, uid, gid, mtime)
fn st(path: &PathBuf) -> (u32, u32, u32, i64) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A tar of (kind, name, mode, uid:gid, content or link target), mtime 1600000000.
fn tar_of(entries: &[(char, &str, u32, u64, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (kind, name, mode, id, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_uid(*id);
        h.set_gid(*id);
        h.set_mtime(MTIME);
        h.set_size(0);
        match kind {
            'd' => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            'f' => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data.as_bytes()).unwrap();
            }
            'l' | 'h' => {
                h.set_entry_type(if *kind == 'l' {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                b.append_link(&mut h, name, data).unwrap();
            }
            'c' | 'p' => {
                h.set_entry_type(if *kind == 'c' {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Fifo
                });
                h.set_device_major(0).unwrap();
                h.set_device_minor(0).unwrap();
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            other => panic!("kind {other}"),
        }
    }
    b.into_inner().unwrap()
}

fn x_tar() -> Vec<u8> {
    tar_of(&[
        ('d', "x/", 0o750, 1000, ""),
        ('f', "x/file", 0o644, 1000, "hello"),
    ])
}

#[test]
fn s01_ingest_k_catalog_into_an_empty_repo_leaves_placeholders_owned_by_nobody() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(s.rev(), 1);
    let before = now();
    let out = s.ingest(&["--catalog", "-k", "-t", "-", "-b", "A/B/C"], &x_tar());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.rev(), 2);
    for dir in ["A", "A/B", "A/B/C"] {
        let (mode, uid, gid, mtime) = st(&s.published(dir));
        assert_eq!((mode, uid, gid), (0o755, NOBODY, NOBODY), "{dir}");
        assert!(mtime >= before, "{dir} mtime is the ingest time");
    }
    let (mode, uid, gid, _) = st(&s.published("A/B/C/.cvmfscatalog"));
    assert_eq!((mode, uid, gid), (0o664, 0, 0));
    assert_eq!(
        st(&s.published("A/B/C/x")),
        (0o750, 1000, 1000, MTIME as i64)
    );
    assert_eq!(
        st(&s.published("A/B/C/x/file")),
        (0o644, 1000, 1000, MTIME as i64)
    );
    assert_eq!(s.catalogs(), ["/", "/A/B/C"]);
}

#[test]
fn s02_a_dot_slash_entry_gives_a_new_base_its_metadata_and_parents_stay_placeholders() {
    let Some(s) = standin(false) else {
        return;
    };
    let tar = tar_of(&[
        ('d', "./", 0o700, 7, ""),
        ('f', "./x/file", 0o644, 1000, "hi"),
    ]);
    let out = s.ingest(&["-k", "-t", "-", "-b", "A/B/C"], &tar);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(st(&s.published("A/B/C")), (0o700, 7, 7, MTIME as i64));
    let (mode, uid, _, _) = st(&s.published("A/B"));
    assert_eq!((mode, uid), (0o755, NOBODY));
    // Leading `/` is stripped and `-b /LEAD/` is `-b LEAD`.
    // The tar crate refuses to write an absolute name: set the header's name field by hand.
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(1);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h.as_ustar_mut().unwrap().name[..6].copy_from_slice(b"/abs/f");
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.push(b'a');
    tar.resize(512 * 2 + 1024, 0);
    let out = s.ingest(&["-k", "-t", "-", "-b", "/LEAD/"], &tar);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(s.published("LEAD/abs/f").is_file());
}

#[test]
fn s03_transaction_writes_at_or_below_a_nobody_directory_never_reach_the_repository() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(
        s.ingest(&["--catalog", "-k", "-t", "-", "-b", "A/B/C"], &x_tar())
            .code,
        0
    );
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    fs::create_dir(s.mount("A/B/C/meta")).unwrap();
    fs::write(s.mount("A/B/C/x/g"), b"g").unwrap();
    fs::write(s.mount("topfile"), b"t").unwrap();
    fs::create_dir_all(s.mount("topdir2/sub")).unwrap();
    let rev = s.rev();
    let out = s.run(&["publish", REPO]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.rev(), rev + 1);
    assert!(
        out.stderr.contains("A/B/C/meta: Permission denied"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("A/B/C/x/g: Permission denied"),
        "{}",
        out.stderr
    );
    assert!(!s.published("A/B/C/meta").exists() && !s.mount("A/B/C/meta").exists());
    assert!(!s.published("A/B/C/x/g").exists());
    assert!(s.published("topfile").is_file() && s.published("topdir2/sub").is_dir());
}

#[test]
fn s04a_reingest_replaces_files_adds_placeholders_and_keeps_the_base_and_its_catalog() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(
        s.ingest(&["--catalog", "-k", "-t", "-", "-b", "A/B/C"], &x_tar())
            .code,
        0
    );
    let base = st(&s.published("A/B/C"));
    let tar = tar_of(&[
        ('f', "meta/origin.json", 0o644, 1000, "{}"),
        ('f', "x/file", 0o600, 2000, "world!"),
    ]);
    let rev = s.rev();
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "A/B/C"], &tar).code, 0);
    assert_eq!(s.rev(), rev + 1);
    assert_eq!(st(&s.published("A/B/C")), base);
    assert_eq!(
        st(&s.published("A/B/C/x/file")),
        (0o600, 2000, 2000, MTIME as i64)
    );
    assert_eq!(fs::read(s.published("A/B/C/x/file")).unwrap(), b"world!");
    let (mode, uid, _, _) = st(&s.published("A/B/C/meta"));
    assert_eq!((mode, uid), (0o755, NOBODY));
    assert_eq!(st(&s.published("A/B/C/meta/origin.json")).1, 1000);
    assert_eq!(s.catalogs(), ["/", "/A/B/C"]);
}

#[test]
fn s04b_existing_directories_are_never_updated_by_directory_entries() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(
        s.ingest(&["--catalog", "-k", "-t", "-", "-b", "A/B/C"], &x_tar())
            .code,
        0
    );
    s.publish_dirs(&["topdir"]);
    let (base, x, top) = (
        st(&s.published("A/B/C")),
        st(&s.published("A/B/C/x")),
        st(&s.published("topdir")),
    );
    let tar = tar_of(&[
        ('d', "./", 0o700, 7, ""),
        ('d', "x/", 0o700, 3, ""),
        ('f', "x/file2", 0o644, 0, "2"),
    ]);
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "A/B/C"], &tar).code, 0);
    assert_eq!(st(&s.published("A/B/C")), base);
    assert_eq!(st(&s.published("A/B/C/x")), x);
    assert!(s.published("A/B/C/x/file2").is_file());
    // 4c: a new child dir under an existing -b dir is a placeholder; the root-owned -b stays.
    let tar = tar_of(&[('f', "C2/y", 0o644, 1000, "y")]);
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "topdir"], &tar).code, 0);
    assert_eq!(st(&s.published("topdir")), top);
    assert_eq!((st(&s.published("topdir")).1), 0);
    assert_eq!(st(&s.published("topdir/C2")).1, NOBODY);
    assert_eq!(st(&s.published("topdir/C2/y")).1, 1000);
}

#[test]
fn s04d_catalog_on_an_existing_base_resets_it() {
    let Some(s) = standin(false) else {
        return;
    };
    let tar = tar_of(&[('d', "./", 0o700, 0, ""), ('f', "f", 0o644, 0, "f")]);
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "D/B/C"], &tar).code, 0);
    assert_eq!(st(&s.published("D/B/C")).0, 0o700);
    let before = now();
    let tar = tar_of(&[('f', "g", 0o644, 0, "g")]);
    assert_eq!(
        s.ingest(&["--catalog", "-k", "-t", "-", "-b", "D/B/C"], &tar)
            .code,
        0
    );
    let (mode, uid, gid, mtime) = st(&s.published("D/B/C"));
    assert_eq!((mode, uid, gid), (0o755, NOBODY, NOBODY));
    assert!(mtime >= before);
    // Without -k the reset owner is the repository owner (0:0).
    assert_eq!(
        s.ingest(&["--catalog", "-t", "-", "-b", "D/B"], &tar).code,
        0
    );
    let (mode, uid, gid, _) = st(&s.published("D/B"));
    assert_eq!((mode, uid, gid), (0o755, 0, 0));
    assert_eq!(s.catalogs(), ["/", "/D/B", "/D/B/C"]);
}

#[test]
fn s04e_a_file_replaces_a_directory_and_a_directory_entry_over_a_file_keeps_the_file() {
    let Some(s) = standin(false) else {
        return;
    };
    let tar = tar_of(&[
        ('d', "e/", 0o755, 0, ""),
        ('f', "e/child", 0o644, 0, "c"),
        ('f', "d", 0o644, 0, "file"),
    ]);
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "T"], &tar).code, 0);
    let tar = tar_of(&[
        ('f', "e", 0o644, 0, "now a file"),
        ('d', "d/", 0o755, 0, ""),
        ('f', "d/inner", 0o644, 0, "i"),
    ]);
    let out = s.ingest(&["-k", "-t", "-", "-b", "T"], &tar);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fs::read(s.published("T/e")).unwrap(), b"now a file");
    assert_eq!(fs::read(s.published("T/d")).unwrap(), b"file");
}

#[test]
fn s05_without_k_every_owner_is_the_repository_owner() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(
        s.ingest(&["--catalog", "-t", "-", "-b", "A/B/C"], &x_tar())
            .code,
        0
    );
    for dir in ["A", "A/B", "A/B/C"] {
        let (mode, uid, gid, _) = st(&s.published(dir));
        assert_eq!((mode, uid, gid), (0o755, 0, 0), "{dir}");
    }
    assert_eq!(st(&s.published("A/B/C/x")), (0o750, 0, 0, MTIME as i64));
    assert_eq!(st(&s.published("A/B/C/x/file")).1, 0);
    let tar = tar_of(&[('d', "./", 0o700, 7, ""), ('f', "f", 0o644, 7, "f")]);
    assert_eq!(s.ingest(&["-t", "-", "-b", "E/C"], &tar).code, 0);
    assert_eq!(st(&s.published("E/C")), (0o700, 0, 0, MTIME as i64));
}

#[test]
fn s06_a_transaction_sub_path_is_only_syntax_on_a_stratum_0() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(
        s.ingest(&["-k", "-t", "-", "-b", "A/B/C"], &x_tar()).code,
        0
    );
    let out = s.run(&["transaction", "test.repo/nonexistent/x"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "CernVM-FS transaction error: cannot open transaction on non-existing path /nonexistent"
        ),
        "{}",
        out.stderr
    );
    let out = s.run(&["transaction", "test.repo/A/B/C/x/file/z"]);
    assert_eq!(out.code, 20);
    assert!(
        out.stderr
            .contains("cannot open transaction on /A/B/C/x/file, which is not a directory")
    );
    // The leaf may be missing or a file.
    assert_eq!(s.run(&["transaction", "test.repo/A/nonexist"]).code, 0);
    assert_eq!(s.run(&["abort", "-f", "test.repo/A"]).code, 0);
    assert_eq!(s.run(&["transaction", "test.repo/A/B/C/x/file"]).code, 0);
    assert_eq!(s.run(&["abort", "-f", REPO]).code, 0);
    assert_eq!(s.run(&["transaction", "test.repo/A/B"]).code, 0);
    assert!(
        s.run(&["list"])
            .stdout
            .contains("test.repo (stratum0 / local - in transaction)")
    );
    fs::write(s.mount("topf"), b"t").unwrap();
    let rev = s.rev();
    assert_eq!(s.run(&["publish", "test.repo/D/zzz"]).code, 0);
    assert_eq!(s.rev(), rev + 1);
    assert!(
        s.published("topf").is_file(),
        "the whole repository was writable"
    );
}

#[test]
fn s07_state_errors_have_the_recorded_exit_status_and_text() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    let out = s.run(&["transaction", REPO]);
    assert_eq!(out.code, 17);
    assert!(
        out.stderr
            .contains("CernVM-FS transaction error: another transaction is already open")
    );
    let rev = s.rev();
    let out = s.ingest(&["-k", "-t", "-", "-b", "Z"], &x_tar());
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("CernVM-FS transaction error: another transaction is already open")
    );
    assert!(out.stderr.contains("Impossible to start a transaction"));
    let out = s.run(&["ingest", "--delete", "Z", REPO]);
    assert_eq!(out.code, 1);
    assert_eq!(s.rev(), rev, "no revision");
    assert!(
        s.run(&["list"]).stdout.contains("in transaction"),
        "left open"
    );
    assert_eq!(s.run(&["abort", "-f", REPO]).code, 0);
    let out = s.run(&["publish", REPO]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout.trim(),
        "Repository test.repo is not in a transaction"
    );
    let out = s.run(&["abort", "-f", REPO]);
    assert_eq!(out.code, 22);
    assert!(
        out.stderr
            .contains("Repository test.repo is not in a transaction")
    );
}

#[test]
fn s08_delete_removes_paths_and_nested_catalogs_and_an_overlap_with_the_tar_aborts() {
    let Some(s) = standin(false) else {
        return;
    };
    for b in ["A/B/C", ".layers/ab/hex1", ".layers/ab/hex2"] {
        assert_eq!(
            s.ingest(&["--catalog", "-k", "-t", "-", "-b", b], &x_tar())
                .code,
            0
        );
    }
    let rev = s.rev();
    assert_eq!(s.run(&["ingest", "--delete", "/A/B/C", REPO]).code, 0);
    assert_eq!(s.rev(), rev + 1);
    assert!(!s.published("A/B/C").exists());
    let out = s.run(&[
        "ingest",
        "--delete",
        ".layers/ab/hex1",
        "--delete",
        ".layers/ab/hex2",
        REPO,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.rev(), rev + 2, "several paths, one revision");
    assert_eq!(s.catalogs(), ["/"]);
    let out = s.run(&["ingest", "--delete", "does/not/exist", REPO]);
    assert_eq!(out.code, 0);
    assert!(
        out.stderr
            .contains("[WARNING] 'does/not/exist' cannot be deleted. Unrecognized file type.")
    );
    assert_eq!(s.rev(), rev + 3, "a revision anyway");
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "P"], &x_tar()).code, 0);
    let rev = s.rev();
    let out = s.ingest(&["-d", "P", "-k", "-t", "-", "-b", "P"], &x_tar());
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("PANIC: catalog_mgr_rw.cc")
            && out.stderr.contains("Synchronization failed"),
        "{}",
        out.stderr
    );
    assert_eq!(s.rev(), rev);
    assert!(
        !s.run(&["list"]).stdout.contains("in transaction"),
        "aborted automatically"
    );
    let out = s.ingest(&["-d", "P/x", "-k", "-t", "-", "-b", "Q"], &x_tar());
    assert_eq!(out.code, 0, "an unrelated delete goes with a tar");
    assert_eq!(s.rev(), rev + 1);
}

#[test]
fn s09_an_empty_publish_or_tar_is_still_a_revision_and_creates_no_base() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    assert_eq!(s.run(&["publish", REPO]).code, 0);
    assert_eq!(s.rev(), 2);
    assert_eq!(
        s.ingest(&["-k", "-t", "-", "-b", "EMPTY"], &[0; 10240])
            .code,
        0
    );
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "EMPTY2"], &[]).code, 0);
    assert_eq!(s.rev(), 4);
    assert!(!s.published("EMPTY").exists() && !s.published("EMPTY2").exists());
}

#[test]
fn s10_transaction_writes_publish_with_their_owners_and_symlinks() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    fs::create_dir_all(s.mount("mine/sub")).unwrap();
    fs::set_permissions(s.mount("mine/sub"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(s.mount("mine/f"), b"f").unwrap();
    fs::write(s.mount("mine/sub/g"), b"g").unwrap();
    std::os::unix::fs::chown(s.mount("mine/sub/g"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::symlink("f", s.mount("mine/l")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.mount("mine/abs")).unwrap();
    std::os::unix::fs::lchown(s.mount("mine/l"), Some(1000), Some(1000)).unwrap();
    assert_eq!(s.run(&["publish", REPO]).code, 0);
    assert_eq!(st(&s.published("mine/sub")).0, 0o750);
    assert_eq!(st(&s.published("mine/sub/g")).1, 1000);
    assert_eq!(st(&s.published("mine/l")).1, 1000);
    assert_eq!(
        fs::read_link(s.published("mine/abs")).unwrap(),
        PathBuf::from("/etc/passwd")
    );
}

#[test]
fn s11_a_directory_entry_after_its_child_is_ignored_and_the_first_duplicate_wins() {
    let Some(s) = standin(false) else {
        return;
    };
    let tar = tar_of(&[
        ('f', "d/f", 0o644, 1000, "f"),
        ('d', "d/", 0o700, 42, ""),
        ('d', "e/", 0o700, 42, ""),
        ('f', "e/sub/f", 0o644, 0, "f"),
        ('d', "e/sub/", 0o711, 43, ""),
        ('d', "g/", 0o700, 5, ""),
        ('d', "g/", 0o755, 6, ""),
    ]);
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "S11"], &tar).code, 0);
    let (mode, uid, _, _) = st(&s.published("S11/d"));
    assert_eq!((mode, uid), (0o755, NOBODY));
    assert_eq!(st(&s.published("S11/e")), (0o700, 42, 42, MTIME as i64));
    assert_eq!(st(&s.published("S11/e/sub")).1, NOBODY);
    assert_eq!(st(&s.published("S11/g")).1, 5);
}

#[test]
fn s12_whiteout_names_and_devices_are_stored_literally_and_bad_tars_abort_whole() {
    let Some(s) = standin(false) else {
        return;
    };
    let tar = tar_of(&[
        ('d', "w/", 0o755, 0, ""),
        ('f', "w/.wh.foo", 0o644, 0, ""),
        ('f', "w/.wh..wh..opq", 0o644, 0, ""),
        ('c', "w/cdev", 0o644, 0, ""),
        ('p', "w/fifo", 0o644, 0, ""),
        ('f', "w/keep", 0o644, 0, "k"),
        ('f', "t", 0o644, 7, "target"),
        ('h', "hl", 0o600, 1, "t"),
        ('l', "ln", 0o777, 1000, "t"),
    ]);
    assert_eq!(s.ingest(&["-k", "-b", "S12", "-t", "-"], &tar).code, 0);
    assert!(s.published("S12/w/.wh.foo").is_file() && s.published("S12/w/.wh..wh..opq").is_file());
    let cdev = fs::symlink_metadata(s.published("S12/w/cdev")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &cdev.file_type()
    ));
    assert_eq!(
        st(&s.published("S12/hl")).1,
        7,
        "a hardlink is a copy of its target's entry"
    );
    assert_eq!(
        fs::symlink_metadata(s.published("S12/hl")).unwrap().nlink(),
        1
    );
    assert_eq!(st(&s.published("S12/ln")).1, 1000);
    let rev = s.rev();
    let dup = tar_of(&[('f', "a", 0o644, 0, "1"), ('f', "a", 0o644, 0, "2")]);
    let out = s.ingest(&["-k", "-t", "-", "-b", "DUP"], &dup);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Assertion `retval' failed"),
        "{}",
        out.stderr
    );
    let dangling = tar_of(&[('h', "hl", 0o644, 0, "not/here")]);
    let out = s.ingest(&["-k", "-t", "-", "-b", "HL"], &dangling);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot be found"));
    let out = s.ingest(
        &["-k", "-t", "-", "-b", "GZ"],
        b"\x1f\x8b\x08\x00garbage-garbage",
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Unrecognized archive format"));
    assert_eq!(s.rev(), rev, "no revision from an aborted ingest");
    assert!(!s.published("DUP").exists() && !s.published("HL").exists());
}

#[test]
fn s14_cvmfscatalog_entries_make_nested_catalogs_and_explicit_dirs_stay_writable() {
    let Some(s) = standin(false) else {
        return;
    };
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    fs::create_dir_all(s.mount(".layers/ab")).unwrap();
    fs::write(s.mount(".layers/.cvmfscatalog"), b"").unwrap();
    fs::write(s.mount(".layers/ab/.cvmfscatalog"), b"").unwrap();
    assert_eq!(s.run(&["publish", REPO]).code, 0);
    let shard = st(&s.published(".layers/ab"));
    for hex in ["hex1", "hex2"] {
        let tar = tar_of(&[
            ('d', &format!("{hex}/"), 0o755, 0, ""),
            ('d', &format!("{hex}/layerfs/"), 0o755, 0, ""),
            ('f', &format!("{hex}/layerfs/.cvmfscatalog"), 0o644, 0, ""),
            ('f', &format!("{hex}/layerfs/file"), 0o644, 0, "f"),
            ('d', &format!("{hex}/.metadata/"), 0o755, 0, ""),
            ('f', &format!("{hex}/.metadata/origin.json"), 0o644, 0, "{}"),
        ]);
        assert_eq!(
            s.ingest(&["-k", "-t", "-", "-b", ".layers/ab"], &tar).code,
            0
        );
    }
    assert_eq!(st(&s.published(".layers/ab")), shard);
    assert_eq!(st(&s.published(".layers/ab/hex1")).1, 0);
    assert_eq!(st(&s.published(".layers/ab/hex1/layerfs")).1, 0);
    assert_eq!(
        s.catalogs(),
        [
            "/",
            "/.layers",
            "/.layers/ab",
            "/.layers/ab/hex1/layerfs",
            "/.layers/ab/hex2/layerfs"
        ]
    );
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    fs::write(
        s.mount(".layers/ab/hex1/.metadata/origin.json"),
        b"{\"origin\":[]}",
    )
    .unwrap();
    let out = s.run(&["publish", REPO]);
    assert_eq!(out.code, 0);
    assert!(!out.stderr.contains("Permission denied"), "{}", out.stderr);
    assert_eq!(
        fs::read(s.published(".layers/ab/hex1/.metadata/origin.json")).unwrap(),
        b"{\"origin\":[]}"
    );
}

#[test]
fn g1_gateway_lease_needs_its_parent_and_changes_outside_it_are_dropped() {
    let Some(s) = standin(true) else {
        return;
    };
    s.publish_dirs(&[]);
    let out = s.run(&["transaction", "test.repo/a/b"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("cannot open transaction on non-existing path /a")
    );
    assert!(
        !s.run(&["list"]).stdout.contains("in transaction"),
        "no lease left"
    );
    // Whole-repository transaction to make `a` and a file in it.
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    fs::create_dir(s.mount("a")).unwrap();
    fs::write(s.mount("a/top.txt"), b"top").unwrap();
    fs::write(s.mount("smoke.txt"), b"s").unwrap();
    assert_eq!(s.run(&["publish", REPO]).code, 0);
    assert_eq!(s.run(&["transaction", "test.repo/a/top.txt/z"]).code, 20);
    assert_eq!(s.run(&["transaction", "test.repo/a/b"]).code, 0);
    fs::create_dir(s.mount("a/b")).unwrap();
    fs::write(s.mount("a/b/in.txt"), b"in").unwrap();
    fs::write(s.mount("a/out.txt"), b"out").unwrap();
    fs::remove_file(s.mount("smoke.txt")).unwrap();
    let rev = s.rev();
    let out = s.run(&["publish", REPO]);
    assert_eq!(out.code, 0);
    assert!(out.stderr.is_empty(), "no warning: {}", out.stderr);
    assert_eq!(s.rev(), rev + 1);
    assert!(s.published("a/b/in.txt").is_file());
    assert!(!s.published("a/out.txt").exists() && !s.mount("a/out.txt").exists());
    assert!(s.published("smoke.txt").is_file() && s.mount("smoke.txt").is_file());
}

#[test]
fn g2_gateway_leases_conflict_by_case_insensitive_string_prefix_with_wildcards() {
    let Some(s) = standin(true) else {
        return;
    };
    s.publish_dirs(&["a", "b", "zz"]);
    let on = |node: &str, path: &str| {
        s.run_on(node, &["transaction", &format!("{REPO}/{path}")], None, &[])
    };
    assert_eq!(on("local", "a").code, 0);
    for other in ["b", "", "a"] {
        let out = on("local", other);
        assert_eq!(out.code, 17, "same node, {other:?}");
    }
    assert_eq!(on("node2", "b").code, 0);
    for (path, busy) in [
        ("a/x", true),
        ("ab", true),
        ("A", true),
        ("", true),
        ("zz/yy", false),
    ] {
        let out = on("node3", path);
        if busy {
            assert_eq!(out.code, 16, "{path}: {}", out.stderr);
            assert!(
                out.stderr.contains("Path busy. Time remaining = ")
                    && out.stderr.contains("lease path busy")
            );
        } else {
            assert_eq!(out.code, 0, "{path}: {}", out.stderr);
            assert_eq!(s.run_on("node3", &["abort", "-f", REPO], None, &[]).code, 0);
        }
    }
    assert_eq!(on("node3", "z_").code, 0);
    assert_eq!(
        on("node4", "zz/yy").code,
        16,
        "`_` matches any one character"
    );
}

#[test]
fn g3_gateway_ingest_needs_the_base_parent_and_drops_devices_and_splits_hardlinks() {
    let Some(s) = standin(true) else {
        return;
    };
    s.publish_dirs(&["a"]);
    let rev = s.rev();
    let out = s.ingest(&["--catalog", "-k", "-t", "-", "-b", "x/new"], &x_tar());
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("cannot open transaction on non-existing path /x")
    );
    assert!(out.stderr.contains("Impossible to start a transaction"));
    assert_eq!(s.rev(), rev);
    let tar = tar_of(&[
        ('d', "d/", 0o750, 1234, ""),
        ('f', "d/f1", 0o644, 1234, "one"),
        ('h', "d/h1", 0o644, 1234, "d/f1"),
        ('p', "fifo", 0o644, 0, ""),
        ('c', "cdev", 0o644, 0, ""),
    ]);
    let out = s.ingest(&["--catalog", "-k", "-t", "-", "-b", "a/new"], &tar);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.rev(), rev + 1);
    let (mode, uid, _, _) = st(&s.published("a/new"));
    assert_eq!((mode, uid), (0o755, NOBODY));
    assert_eq!(
        st(&s.published("a/new/d")),
        (0o750, 1234, 1234, MTIME as i64)
    );
    assert!(!s.published("a/new/fifo").exists() && !s.published("a/new/cdev").exists());
    assert_eq!(fs::read(s.published("a/new/d/h1")).unwrap(), b"one");
    assert_eq!(
        fs::symlink_metadata(s.published("a/new/d/h1"))
            .unwrap()
            .nlink(),
        1
    );
    // One revision per call, also behind a gateway (scenario 6).
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    assert_eq!(s.run(&["publish", REPO]).code, 0);
    assert_eq!(s.rev(), rev + 2);
}

#[test]
fn g4_gateway_delete_takes_one_path_and_needs_its_parent() {
    let Some(s) = standin(true) else {
        return;
    };
    s.publish_dirs(&["a"]);
    assert_eq!(
        s.ingest(&["--catalog", "-k", "-t", "-", "-b", "a/new"], &x_tar())
            .code,
        0
    );
    let rev = s.rev();
    assert_eq!(s.run(&["ingest", "--delete", "a/new", REPO]).code, 0);
    assert!(!s.published("a/new").exists());
    assert_eq!(s.catalogs(), ["/"]);
    let out = s.run(&["ingest", "--delete", "a/doesnotexist", REPO]);
    assert_eq!(out.code, 0);
    assert!(
        out.stderr
            .contains("[WARNING] 'a/doesnotexist' cannot be deleted. Unrecognized file type.")
    );
    assert_eq!(s.rev(), rev + 2);
    let out = s.run(&["ingest", "--delete", "nope/deeper", REPO]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("non-existing path /nope")
            && out.stderr.contains("Impossible to start a transaction")
    );
    let out = s.run(&["ingest", "-d", "a/b", "-d", "a/sp", REPO]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("Could not delete multiple paths using a gateway in a single transaction.")
    );
    assert_eq!(s.rev(), rev + 2);
}

#[test]
fn g5_gateway_an_expired_lease_fails_the_publish_and_stays_in_transaction() {
    let Some(s) = standin(true) else {
        return;
    };
    s.publish_dirs(&["a"]);
    let short = [("CVMFS_STANDIN_MAX_LEASE_TIME", "1")];
    assert_eq!(
        s.run_on("local", &["transaction", "test.repo/a"], None, &short)
            .code,
        0
    );
    fs::write(s.mount("a/x.txt"), b"x").unwrap();
    // Once expired, another node may take the path: until then it is busy (rc 16).
    let mut take = Vec::new();
    ducc_tests::wait::until("the lease to expire", ducc_tests::wait::DEADLINE, || {
        let out = s.run_on("node2", &["transaction", "test.repo/a/q"], None, &[]);
        take.push(out.code);
        out.code != 16
    });
    assert_eq!(take.last(), Some(&0), "{take:?}");
    let rev = s.rev();
    let out = s.run(&["publish", REPO]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("invalid lease"), "{}", out.stderr);
    assert_eq!(s.rev(), rev);
    assert!(
        s.mount("a/x.txt").is_file(),
        "still in transaction with its changes"
    );
    assert_eq!(
        s.run(&["publish", REPO]).code,
        1,
        "a retry fails the same way"
    );
    assert_eq!(s.run(&["abort", "-f", REPO]).code, 0);
    assert!(!s.published("a/x.txt").exists());
}

/// `<state>/mnt-NODE/REPO/path`: another node's view of the repository.
fn node_mount(s: &Standin, node: &str, path: &str) -> PathBuf {
    s.state
        .path()
        .join(format!("mnt-{node}"))
        .join(REPO)
        .join(path)
}

#[test]
fn g7_a_node_sees_other_nodes_publishes_only_after_its_transaction_and_is_pinned_by_it() {
    let Some(s) = standin(true) else {
        return;
    };
    s.publish_dirs(&["a", "b", "c"]);
    let on = |node: &str, args: &[&str], stdin: Option<&[u8]>| s.run_on(node, args, stdin, &[]);
    // node2's first call mounts the newest revision.
    assert_eq!(on("node2", &["list"], None).code, 0);
    assert!(node_mount(&s, "node2", "a").is_dir());
    // Both nodes hold leases side by side; each has one transaction only.
    assert_eq!(on("local", &["transaction", "test.repo/a"], None).code, 0);
    assert_eq!(on("node2", &["transaction", "test.repo/b"], None).code, 0);
    assert_eq!(on("node2", &["transaction", "test.repo/c"], None).code, 17);
    assert!(
        on("node2", &["list"], None)
            .stdout
            .contains("in transaction")
            && on("node3", &["list"], None)
                .stdout
                .lines()
                .all(|l| !l.contains("in transaction")),
        "a node's list shows its own transaction only"
    );
    fs::write(node_mount(&s, "node2", "b/node2.txt"), b"2").unwrap();
    assert_eq!(on("node2", &["publish", REPO], None).code, 0);
    fs::write(s.mount("a/local.txt"), b"1").unwrap();
    let out = on("local", &["publish", REPO], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(s.published("a/local.txt").is_file() && s.published("b/node2.txt").is_file());
    // node2 does not see local's publish until it remounts.
    assert!(!node_mount(&s, "node2", "a/local.txt").exists());
    assert_eq!(on("node2", &["transaction", "test.repo/c"], None).code, 0);
    assert!(
        node_mount(&s, "node2", "a/local.txt").is_file(),
        "remounted first"
    );
    assert_eq!(on("node2", &["abort", "-f", REPO], None).code, 0);
    // That repair pinned node2: its own ingest does not move its view.
    let out = on(
        "node2",
        &["ingest", "-k", "-t", "-", "-b", "c/new", REPO],
        Some(&x_tar()),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(s.published("c/new/x/file").is_file());
    assert!(!node_mount(&s, "node2", "c/new").exists(), "pinned");
    // `cvmfs_server mount` (or the next transaction) brings it to the newest revision.
    assert_eq!(on("node2", &["mount", REPO], None).code, 0);
    assert!(node_mount(&s, "node2", "c/new/x/file").is_file());
    // The local node was never repaired (its publish moved it): it lags behind node2's ingest
    // until its own ingest, which (unpinned) moves it to the newest revision.
    assert!(!s.mount("c/new").exists(), "node2's ingest is not seen yet");
    let out = s.ingest(&["-k", "-t", "-", "-b", "a/mine"], &x_tar());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(s.mount("a/mine/x/file").is_file() && s.mount("c/new/x/file").is_file());
    // A paused call of one node lets other nodes' calls run; its lease stays held.
    fs::create_dir_all(s.state.path().join("pause")).unwrap();
    fs::write(s.state.path().join("pause/transaction"), "node=node2").unwrap();
    let waiting = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvmfs_server_standin"));
        cmd.args(["transaction", "test.repo/b"])
            .env("CVMFS_STANDIN_STATE", s.state.path())
            .env("CVMFS_STANDIN_NODE", "node2")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    let paused = s.state.path().join("paused");
    let started = std::time::Instant::now();
    while !paused.exists() {
        assert!(started.elapsed().as_secs() < 30, "node2 never paused");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let busy = on("local", &["transaction", "test.repo/b/x"], None);
    assert_eq!(
        busy.code, 16,
        "node2's lease is held while it waits: {}",
        busy.stderr
    );
    assert_eq!(on("local", &["transaction", "test.repo/c"], None).code, 0);
    assert_eq!(on("local", &["abort", "-f", REPO], None).code, 0);
    fs::remove_file(s.state.path().join("pause/transaction")).unwrap();
    let status = { waiting }.wait_with_output().unwrap().status;
    assert!(status.success());
    assert_eq!(on("node2", &["abort", "-f", REPO], None).code, 0);
}

// Scenarios of reference/cvmfs-flat-without-rehash.md (issue 24), numbered `fNN` after it.

fn xattr(path: &PathBuf, name: &str) -> Option<String> {
    let mut buffer = [0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// Ingests `x/file` ("hello") and returns its object's hash as the mount shows it.
fn ingested_hello(s: &Standin) -> String {
    assert_eq!(s.ingest(&["-k", "-t", "-", "-b", "src"], &x_tar()).code, 0);
    xattr(&s.mount("src/x/file"), "user.hash").expect("user.hash of an ingested file")
}

/// After [`ingested_hello`]: a transaction open with an empty placeholder `flat/file`. Returns
/// the object's hash and the revision before the transaction.
fn placeholder_in_transaction(s: &Standin) -> (String, u64) {
    let hash = ingested_hello(s);
    let rev = s.rev();
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    fs::create_dir_all(s.mount("flat")).unwrap();
    fs::write(s.mount("flat/file"), b"").unwrap();
    (hash, rev)
}

#[test]
fn f01_ingested_files_show_hash_compression_and_chunks_by_name() {
    let Some(s) = standin(false) else {
        return;
    };
    let hash = ingested_hello(&s);
    // The SHA-1 of the stored object (zlib), not of the content (scenario 2).
    let object = fs::read(
        s.state
            .path()
            .join("repos")
            .join(REPO)
            .join("objects")
            .join(&hash),
    )
    .expect("the object named by user.hash");
    use sha1::Digest as _;
    assert_eq!(hash, hex::encode(sha1::Sha1::digest(&object)));
    assert_eq!(&object[..2], b"\x78\x9c", "a zlib stream");
    let mut content = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::ZlibDecoder::new(&object[..]),
        &mut content,
    )
    .unwrap();
    assert_eq!(content, b"hello");
    for path in [s.mount("src/x/file"), s.published("src/x/file")] {
        assert_eq!(xattr(&path, "user.compression").as_deref(), Some("zlib"));
        assert_eq!(xattr(&path, "user.chunks").as_deref(), Some("1"));
    }
    // The same content has the same object wherever it is ingested.
    assert_eq!(
        s.ingest(&["-k", "-t", "-", "-b", "again"], &x_tar()).code,
        0
    );
    assert_eq!(xattr(&s.mount("again/x/file"), "user.hash"), Some(hash));
}

#[test]
fn f05_a_graft_marker_publishes_the_stored_object_with_the_placeholder_metadata() {
    let Some(s) = standin(false) else {
        return;
    };
    let (hash, rev) = placeholder_in_transaction(&s);
    std::os::unix::fs::chown(s.mount("flat/file"), Some(1000), Some(1001)).unwrap();
    fs::set_permissions(s.mount("flat/file"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(
        s.mount("flat/.cvmfsgraft-file"),
        format!("size=5\nchecksum={hash}\ncompression=zlib\n"),
    )
    .unwrap();
    // A hardlink with a marker of its own (scenario 9): split into two files.
    fs::hard_link(s.mount("flat/file"), s.mount("flat/second")).unwrap();
    fs::write(
        s.mount("flat/.cvmfsgraft-second"),
        format!("size=5\nchecksum={hash}\ncompression=zlib\n"),
    )
    .unwrap();
    let out = s.run(&["publish", REPO]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.rev(), rev + 1);
    for name in ["flat/file", "flat/second"] {
        assert_eq!(fs::read(s.published(name)).unwrap(), b"hello", "{name}");
        assert_eq!(st(&s.published(name)).0, 0o4755);
        assert_eq!(st(&s.published(name)).1, 1000);
        assert_eq!(st(&s.published(name)).2, 1001);
        assert_eq!(
            xattr(&s.published(name), "user.hash").as_deref(),
            Some(hash.as_str())
        );
    }
    let a = fs::metadata(s.published("flat/file")).unwrap();
    let b = fs::metadata(s.published("flat/second")).unwrap();
    assert_ne!(a.ino(), b.ino(), "hardlinks are split");
    assert_eq!(a.nlink(), 1);
    // Markers never appear in the published tree.
    assert!(!s.published("flat/.cvmfsgraft-file").exists());
    assert!(!s.mount("flat/.cvmfsgraft-second").exists());
}

#[test]
fn f09_a_marker_without_size_fails_the_publish_and_leaves_the_transaction_open() {
    let Some(s) = standin(false) else {
        return;
    };
    let (hash, rev) = placeholder_in_transaction(&s);
    fs::write(
        s.mount("flat/.cvmfsgraft-file"),
        format!("checksum={hash}\ncompression=zlib\n"),
    )
    .unwrap();
    let out = s.run(&["publish", REPO]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("invalid grafting information"),
        "{}",
        out.stderr
    );
    assert_eq!(s.rev(), rev, "nothing published");
    assert!(!s.published("flat").exists());
    assert!(
        s.run(&["list"]).stdout.contains("in transaction"),
        "the transaction stays open"
    );
    assert_eq!(s.run(&["abort", "-f", REPO]).code, 0);
    assert!(!s.mount("flat").exists());
}

#[test]
fn f09_a_marker_naming_an_unknown_object_publishes_an_unreadable_file() {
    let Some(s) = standin(false) else {
        return;
    };
    ingested_hello(&s);
    assert_eq!(s.run(&["transaction", REPO]).code, 0);
    fs::write(s.mount("ghost"), b"").unwrap();
    fs::write(
        s.mount(".cvmfsgraft-ghost"),
        format!("size=5\nchecksum={}\ncompression=zlib\n", "0".repeat(40)),
    )
    .unwrap();
    let out = s.run(&["publish", REPO]);
    assert_eq!(out.code, 0, "nothing checks the object: {}", out.stderr);
    assert_eq!(fs::metadata(s.published("ghost")).unwrap().len(), 5);
    let unreadable =
        fs::read_to_string(s.state.path().join("repos").join(REPO).join("unreadable")).unwrap();
    assert_eq!(unreadable.trim(), "ghost");
}

/// A tar of 100 one-block files under `d/`, as the reference's section 6 feeds.
fn hundred_files() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..100 {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(300);
        b.append_data(&mut h, format!("d/f{i:03}"), &[b'x'; 300][..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// Kills a spawned call's whole process group and reaps it.
fn kill_group(child: &mut std::process::Child) {
    let pgid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn f20_an_ingest_killed_before_its_input_ends_publishes_nothing_and_stays_in_transaction() {
    let Some(s) = standin(false) else {
        return;
    };
    let tar = hundred_files();
    let rev = s.rev();
    s.pause_at("ingest");
    let mut child = s.spawn_ingest(&["-k", "-t", "-", "-b", "killed"]);
    // Half the tar, the cut inside a file's data; the ingest holds its transaction meanwhile.
    let half = tar.len() / 2 + 100;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &tar[..half]).unwrap();
    s.wait_paused();
    kill_group(&mut child);
    assert_eq!(s.rev(), rev, "nothing published");
    assert!(!s.published("killed").exists());
    assert!(
        s.run(&["list"])
            .stdout
            .contains("(stratum0 / local - in transaction - unhealthy)"),
        "the killed ingest's transaction stays open"
    );
    assert_eq!(s.run(&["abort", "-f", REPO]).code, 0);
    assert!(!s.run(&["list"]).stdout.contains("in transaction"));
    assert_eq!(s.rev(), rev);
}

#[test]
fn f21_an_input_closed_inside_a_file_or_a_header_fails_the_ingest_and_publishes_nothing() {
    let Some(s) = standin(false) else {
        return;
    };
    let tar = hundred_files();
    let rev = s.rev();
    // Inside file data (recorded), inside a header block and one byte past a block boundary
    // (libarchive's "Truncated tar archive": ducc's streams stop only there).
    for cut in [tar.len() / 2 + 100, 512 * 10 + 200, 512 * 21 + 1] {
        let out = s.ingest(&["-k", "-t", "-", "-b", "closed"], &tar[..cut]);
        assert_eq!(out.code, 1, "cut at {cut}: {}", out.stderr);
        assert!(
            out.stderr.contains("Truncated tar archive"),
            "{}",
            out.stderr
        );
        assert_eq!(s.rev(), rev, "cut at {cut}: nothing published");
        assert!(!s.published("closed").exists());
        assert!(
            !s.run(&["list"]).stdout.contains("in transaction"),
            "cut at {cut}: no transaction left open"
        );
    }
}

#[test]
fn f23_a_damaged_header_after_valid_entries_leaves_the_ingest_waiting_until_killed() {
    let Some(s) = standin(false) else {
        return;
    };
    let mut tar = hundred_files();
    tar.truncate(512 * 20);
    tar.extend_from_slice(&[0xff; 512]);
    let rev = s.rev();
    let mut child = s.spawn_ingest(&["-k", "-t", "-", "-b", "damaged"]);
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &tar).unwrap();
    drop(stdin);
    // Its whole input read and closed, the ingest still runs: it never exits by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        assert!(child.try_wait().unwrap().is_none(), "the ingest exited");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    kill_group(&mut child);
    assert_eq!(s.rev(), rev, "nothing published");
    assert!(
        s.run(&["list"])
            .stdout
            .contains("(stratum0 / local - in transaction - unhealthy)")
    );
    assert_eq!(s.run(&["abort", "-f", REPO]).code, 0);
    assert!(!s.published("damaged").exists());
}

#[test]
fn f22_a_tar_cut_at_an_entry_boundary_is_published_as_if_complete() {
    let Some(s) = standin(false) else {
        return;
    };
    let whole = tar_of(&[
        ('d', "d/", 0o755, 0, ""),
        ('f', "d/one", 0o644, 0, "1"),
        ('f', "d/two", 0o644, 0, "2"),
    ]);
    // Cut right after `d/one`'s data block: no `d/two`, no end-of-archive blocks.
    let cut = &whole[..512 * 3];
    let rev = s.rev();
    let out = s.ingest(&["-k", "-t", "-", "-b", "cut"], cut);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.rev(), rev + 1);
    assert_eq!(fs::read(s.published("cut/d/one")).unwrap(), b"1");
    assert!(!s.published("cut/d/two").exists());
}
