//! The `cvmfs_server` stand-in as a stratum 0 (or a gateway) of one repository, for the tests
//! that drive a publisher directly.
#![allow(dead_code)] // not every test binary that shares this module uses all of it

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use ducc_cvmfs::{CvmfsOptions, CvmfsPublisher};

pub mod cli;
use ducc_oci::RepositoryName;

/// The repository's name.
pub const REPO: &str = "test.repo";

/// A stand-in stratum 0 plus the wrapper script the publisher runs as its `cvmfs_server`.
pub struct Stratum0 {
    /// The stand-in's state (`state/`), its wrapper and the publisher's state.
    pub dir: tempfile::TempDir,
}

impl Stratum0 {
    pub fn new(gateway: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let wrapper = dir.path().join("cvmfs_server");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nCVMFS_STANDIN_STATE='{}' exec '{}' \"$@\"\n",
                state.display(),
                env!("CARGO_BIN_EXE_cvmfs_server_standin")
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        let s = Stratum0 { dir };
        let mut mkfs = vec!["mkfs"];
        if gateway {
            mkfs.extend(["-u", "gw,/srv/txn,http://gateway:4929/api/v1"]);
        }
        mkfs.push(REPO);
        let out = std::process::Command::new(s.wrapper())
            .args(&mkfs)
            .output()
            .unwrap();
        assert!(out.status.success());
        s
    }

    pub fn wrapper(&self) -> PathBuf {
        self.dir.path().join("cvmfs_server")
    }

    /// The publisher without mounted writes: every commit through `cvmfs_server ingest`, the
    /// form used where the repository is not mounted on the publisher (the convert tests cover
    /// the mounted form).
    pub fn publisher(&self, gateway: bool) -> CvmfsPublisher {
        self.publisher_with(gateway, false)
    }

    /// The publisher writing through the mounted repository (`/cvmfs/REPO`, here the
    /// stand-in's `mnt/REPO`): mounted transactions, and ingests for layers.
    #[allow(dead_code)] // not every test binary that shares this module uses it
    pub fn mounted_publisher(&self, gateway: bool) -> CvmfsPublisher {
        self.publisher_with(gateway, true)
    }

    fn publisher_with(&self, gateway: bool, mounted: bool) -> CvmfsPublisher {
        let options = CvmfsOptions::new()
            .server(self.wrapper())
            .mount_dir(self.dir.path().join("state/mnt"))
            .state_dir(self.dir.path().join("ducc-state"))
            .gateway(gateway)
            .mounted(mounted);
        CvmfsPublisher::open(&RepositoryName::parse(REPO).unwrap(), options).unwrap()
    }

    pub fn published(&self) -> PathBuf {
        self.dir
            .path()
            .join("state/repos")
            .join(REPO)
            .join("published")
    }

    /// Log lines from index `from` on.
    pub fn log_since(&self, from: usize) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("state/log"))
            .unwrap()
            .lines()
            .skip(from)
            .map(str::to_owned)
            .collect()
    }

    pub fn log_len(&self) -> usize {
        self.log_since(0).len()
    }

    pub fn fail_next(&self, command: &str, message: &str) {
        let dir = self.dir.path().join("state/fail");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(command), message).unwrap();
    }
}

/// A tar of regular files (0644, 0:0, mtime 1600000000), in the order given.
pub fn files_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        tar.append_data(&mut header, name, *data).unwrap();
    }
    tar.into_inner().unwrap()
}
