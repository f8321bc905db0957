//! The `cvmfs_server` stand-in's own mechanics (log, injected failures, tar engine); the measured
//! scenarios, with exit status and messages, are in cvmfs_scenarios.rs.
//! The stand-in behaves as the real server does where ducc-rs depends on it
//! (SPEC section 4, reference/cvmfs-server-semantics.md sections A and C).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

mod standin_support;

use standin_support::REPO;
use standin_support::cli::Standin;

/// A fresh stand-in repository owned by 1234:1234, behind a gateway if `gateway`.
fn standin(gateway: bool) -> Standin {
    Standin::mkfs("1234:1234", gateway.then_some("http://gateway:4929/api/v1"))
}

/// Builds a tar from (name, type, content/target, mode, uid).
fn tar_of(entries: &[(&str, char, &str, u32, u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, mode, uid) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*uid);
        h.set_mtime(1_000_000_000);
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
            'l' => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, name, data).unwrap();
            }
            'h' => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, name, data).unwrap();
            }
            'c' => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(0).unwrap();
                h.set_device_minor(0).unwrap();
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            other => panic!("unknown kind {other}"),
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn every_call_is_logged_with_its_arguments() {
    let s = standin(false);
    s.run(&["transaction", REPO]);
    s.run(&["abort", "-f", REPO]);
    s.run(&["publish", REPO]);
    assert_eq!(
        s.log(),
        [
            "mkfs -o 1234:1234 test.repo",
            "transaction test.repo",
            "abort -f test.repo",
            "publish test.repo"
        ]
    );
}

#[test]
fn list_shows_repositories_and_open_transactions() {
    let s = standin(true);
    assert_eq!(s.run(&["list"]).stdout, "test.repo (stratum0 / gw)\n");
    assert!(s.run(&["transaction", REPO]).ok());
    assert_eq!(
        s.run(&["list"]).stdout,
        "test.repo (stratum0 / gw - in transaction)\n"
    );
}

#[test]
fn a_write_without_an_open_transaction_is_detected() {
    let s = standin(false);
    fs::write(s.mount("sneaky"), "x").unwrap();
    let out = s.run(&["transaction", REPO]);
    assert!(!out.ok());
    assert!(
        out.stderr
            .contains("test.repo/sneaky was written outside a transaction"),
        "{}",
        out.stderr
    );
}

#[test]
fn publish_makes_mount_writes_visible_and_abort_throws_them_away() {
    let s = standin(false);
    assert!(s.run(&["transaction", REPO]).ok());
    fs::write(s.mount("kept"), "1").unwrap();
    assert!(s.run(&["publish", REPO]).ok());
    assert_eq!(fs::read_to_string(s.published("kept")).unwrap(), "1");
    assert!(s.run(&["transaction", REPO]).ok());
    fs::write(s.mount("dropped"), "2").unwrap();
    fs::remove_file(s.mount("kept")).unwrap();
    assert!(s.run(&["abort", "-f", REPO]).ok());
    assert!(!s.mount("dropped").exists() && !s.published("dropped").exists());
    assert_eq!(fs::read_to_string(s.mount("kept")).unwrap(), "1");
}

#[test]
fn ingest_rejects_a_compressed_stream() {
    let s = standin(false);
    let tar = tar_of(&[("f", 'f', "x", 0o644, 0)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let out = s.ingest(&["-t", "-", "-b", "layer"], &gz.finish().unwrap());
    assert!(!out.ok());
    assert!(
        out.stderr.contains("Unrecognized archive format"),
        "{}",
        out.stderr
    );
    assert!(!s.published("layer").exists());
}

#[test]
fn ingest_aborts_whole_on_a_duplicate_path_or_a_dangling_hardlink() {
    let s = standin(false);
    let cases = [
        (
            tar_of(&[
                ("a", 'f', "1", 0o644, 0),
                ("b", 'f', "2", 0o644, 0),
                ("a", 'f', "3", 0o644, 0),
            ]),
            "Assertion",
        ),
        (
            tar_of(&[("a", 'f', "1", 0o644, 0), ("hl", 'h', "not/here", 0o644, 0)]),
            "cannot be found",
        ),
    ];
    for (tar, message) in cases {
        let out = s.ingest(&["-t", "-", "-b", "layer"], &tar);
        assert!(!out.ok());
        assert!(out.stderr.contains(message), "{}", out.stderr);
        assert!(!s.published("layer").exists() && !s.mount("layer").exists());
        // Its own transaction is closed again.
        assert_eq!(s.run(&["list"]).stdout, "test.repo (stratum0 / local)\n");
    }
}

#[test]
fn ingest_stores_hardlinks_as_independent_copies_of_earlier_targets() {
    let s = standin(false);
    let tar = tar_of(&[("t", 'f', "data", 0o600, 0), ("hl", 'h', "t", 0o644, 0)]);
    assert!(s.ingest(&["-t", "-", "-b", "layer"], &tar).ok());
    let (t, hl) = (
        fs::metadata(s.published("layer/t")).unwrap(),
        fs::metadata(s.published("layer/hl")).unwrap(),
    );
    assert_eq!(fs::read_to_string(s.published("layer/hl")).unwrap(), "data");
    assert_ne!(t.ino(), hl.ino());
    assert_eq!((hl.nlink(), hl.mode() & 0o7777), (1, 0o600));
}

#[test]
fn a_directory_listed_after_its_child_keeps_the_placeholder_0755_and_now() {
    let s = standin(false);
    let tar = tar_of(&[
        ("late/child", 'f', "c", 0o644, 0),
        ("late", 'd', "", 0o700, 0),
        ("early", 'd', "", 0o700, 0),
    ]);
    assert!(s.ingest(&["-t", "-", "-b", "layer"], &tar).ok());
    let late = fs::metadata(s.published("layer/late")).unwrap();
    assert_eq!(late.mode() & 0o7777, 0o755);
    assert!(
        late.mtime() > 1_000_000_000,
        "placeholder time is the ingest time"
    );
    let early = fs::metadata(s.published("layer/early")).unwrap();
    assert_eq!(
        (early.mode() & 0o7777, early.mtime()),
        (0o700, 1_000_000_000)
    );
}

#[test]
fn ingest_drops_xattrs_and_stores_whiteout_names_literally() {
    let s = standin(false);
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.user.foo", &b"bar"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_size(1);
    b.append_data(&mut h, "d/file", &b"x"[..]).unwrap();
    for name in ["d/.wh.gone", "d/.wh..wh..opq"] {
        h.set_size(0);
        b.append_data(&mut h, name, &[][..]).unwrap();
    }
    assert!(
        s.ingest(&["-t", "-", "-b", "layer"], &b.into_inner().unwrap())
            .ok()
    );
    let mut names = vec![0u8; 1024];
    let n = rustix::fs::llistxattr(s.published("layer/d/file"), &mut names).unwrap();
    // Only the magic xattrs the stand-in keeps for reading by name (issue 24).
    let listed: Vec<_> = names[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| !["user.hash", "user.compression", "user.chunks"].contains(&n.as_str()))
        .collect();
    assert!(listed.is_empty(), "xattrs: {listed:?}");
    for name in ["layer/d/.wh.gone", "layer/d/.wh..wh..opq"] {
        assert!(fs::metadata(s.published(name)).unwrap().is_file(), "{name}");
    }
}

#[test]
fn ingest_replaces_owners_unless_asked_to_keep_them() {
    if !ducc_tests::require_root("owners can only be given away by root") {
        return;
    }
    let s = standin(false);
    let tar = tar_of(&[
        ("d", 'd', "", 0o755, 42),
        ("d/f", 'f', "x", 0o644, 42),
        ("l", 'l', "d/f", 0o777, 42),
    ]);
    assert!(s.ingest(&["-t", "-", "-b", "replaced"], &tar).ok());
    assert!(s.ingest(&["-k", "-t", "-", "-b", "kept"], &tar).ok());
    for path in ["d", "d/f", "l"] {
        let replaced = fs::symlink_metadata(s.published(&format!("replaced/{path}"))).unwrap();
        let kept = fs::symlink_metadata(s.published(&format!("kept/{path}"))).unwrap();
        assert_eq!((replaced.uid(), replaced.gid()), (1234, 1234), "{path}");
        assert_eq!((kept.uid(), kept.gid()), (42, 42), "{path}");
    }
}

#[test]
fn catalog_flag_creates_the_marker_and_delete_removes_paths() {
    let s = standin(false);
    let tar = tar_of(&[("f", 'f', "x", 0o644, 0)]);
    assert!(
        s.ingest(&["--catalog", "-t", "-", "-b", "a/layer"], &tar)
            .ok()
    );
    assert!(
        fs::metadata(s.published("a/layer/.cvmfscatalog"))
            .unwrap()
            .is_file()
    );
    assert!(
        s.mount("a/layer/f").exists(),
        "the mount shows what was published"
    );
    assert!(s.ingest(&["--delete", "a/layer"], &[]).ok());
    assert!(!s.published("a/layer").exists() && !s.mount("a/layer").exists());
    assert!(s.published("a").is_dir());
}

#[test]
fn ingest_never_updates_a_published_directory() {
    let s = standin(false);
    s.publish_dirs(&["d/existing"]);
    for root in [s.published("d/existing"), s.mount("d/existing")] {
        fs::set_permissions(root, fs::Permissions::from_mode(0o750)).unwrap();
    }
    let tar = tar_of(&[
        ("existing", 'd', "", 0o700, 0),
        ("existing/new", 'f', "n", 0o644, 0),
    ]);
    assert!(s.ingest(&["-t", "-", "-b", "d"], &tar).ok());
    assert_eq!(
        fs::metadata(s.published("d/existing")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        fs::read_to_string(s.published("d/existing/new")).unwrap(),
        "n"
    );
}

#[test]
fn device_files_are_stored_on_a_stratum_0_and_dropped_by_a_gateway() {
    if !ducc_tests::require_root("creating device files needs root") {
        return;
    }
    let tar = tar_of(&[("wh", 'c', "", 0o000, 0), ("f", 'f', "x", 0o644, 0)]);
    let local = standin(false);
    assert!(local.ingest(&["-t", "-", "-b", "layer"], &tar).ok());
    let meta = fs::symlink_metadata(local.published("layer/wh")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &meta.file_type()
    ));
    assert_eq!(meta.rdev(), 0);
    let gateway = standin(true);
    gateway.publish_dirs(&["x"]);
    assert!(gateway.ingest(&["-t", "-", "-b", "x/layer"], &tar).ok());
    assert!(fs::symlink_metadata(gateway.published("x/layer/wh")).is_err());
    assert!(gateway.published("x/layer/f").exists());
}

#[test]
fn an_injected_failure_fails_the_next_call_of_that_command_once() {
    let s = standin(false);
    fs::create_dir_all(s.state.path().join("fail")).unwrap();
    fs::write(s.state.path().join("fail/publish"), "publish exploded").unwrap();
    assert!(s.run(&["transaction", REPO]).ok());
    let out = s.run(&["publish", REPO]);
    assert!(!out.ok());
    assert_eq!(out.stderr.trim(), "publish exploded");
    assert!(s.run(&["publish", REPO]).ok());
}

#[test]
fn the_stand_in_needs_its_state_directory() {
    let out = Command::new(env!("CARGO_BIN_EXE_cvmfs_server_standin"))
        .arg("list")
        .env_remove("CVMFS_STANDIN_STATE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CVMFS_STANDIN_STATE is not set"));
}

#[test]
fn a_hardlink_may_point_to_a_published_file_under_the_same_base() {
    let s = standin(false);
    assert!(
        s.ingest(
            &["-t", "-", "-b", "layer"],
            &tar_of(&[("t", 'f', "old", 0o644, 0)])
        )
        .ok()
    );
    let out = s.ingest(
        &["-t", "-", "-b", "layer"],
        &tar_of(&[("hl", 'h', "t", 0o644, 0)]),
    );
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(fs::read_to_string(s.published("layer/hl")).unwrap(), "old");
}
