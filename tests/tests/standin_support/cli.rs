//! The `cvmfs_server` stand-in called command by command, without a publisher: the harness of
//! the stand-in's own tests (cvmfs_standin.rs) and of the measured scenarios it reproduces
//! (cvmfs_scenarios.rs).

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::REPO;

/// One stand-in state directory holding the repository [`REPO`].
pub struct Standin {
    /// The state directory (`CVMFS_STANDIN_STATE`).
    pub state: tempfile::TempDir,
}

/// The outcome of one call.
pub struct Out {
    /// The exit status (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Whether the call exited 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

impl Standin {
    /// A fresh repository made by `mkfs -o OWNER`, behind a gateway at `gateway_url` if given.
    pub fn mkfs(owner: &str, gateway_url: Option<&str>) -> Self {
        let s = Standin {
            state: tempfile::tempdir().unwrap(),
        };
        let upstream = gateway_url.map(|url| format!("gw,/srv/cvmfs/{REPO}/data/txn,{url}"));
        let mut args = vec!["mkfs", "-o", owner];
        if let Some(upstream) = &upstream {
            args.extend(["-u", upstream.as_str()]);
        }
        args.push(REPO);
        let out = s.run(&args);
        assert!(out.ok(), "{}", out.stderr);
        s
    }

    /// Runs `cvmfs_server ARGS` on the node `local`, with nothing on stdin.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_on("local", args, None, &[])
    }

    /// Runs `cvmfs_server ARGS` on `node` with `stdin` and the extra environment `env`.
    pub fn run_on(
        &self,
        node: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, &str)],
    ) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvmfs_server_standin"));
        cmd.args(args)
            .env("CVMFS_STANDIN_STATE", self.state.path())
            .env("CVMFS_STANDIN_NODE", node)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            // The stand-in may stop reading early (a rejected stream); that is its answer.
            let _ = pipe.write_all(bytes);
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `cvmfs_server ingest FLAGS REPO` with `tar` on stdin.
    pub fn ingest(&self, flags: &[&str], tar: &[u8]) -> Out {
        let mut args = vec!["ingest"];
        args.extend(flags);
        args.push(REPO);
        self.run_on("local", &args, Some(tar), &[])
    }

    /// `cvmfs_server ingest FLAGS REPO` started in a process group of its own, its stdin a
    /// pipe the caller writes (scenarios where the input stops early).
    pub fn spawn_ingest(&self, flags: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_cvmfs_server_standin"))
            .arg("ingest")
            .args(flags)
            .arg(REPO)
            .env("CVMFS_STANDIN_STATE", self.state.path())
            .env("CVMFS_STANDIN_NODE", "local")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    /// Makes every call reaching pause point `point` (see the stand-in) wait there while the
    /// flag exists.
    pub fn pause_at(&self, point: &str) {
        let dir = self.state.path().join("pause");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(point), "").unwrap();
    }

    /// Waits until a call waits at a pause point.
    pub fn wait_paused(&self) {
        let paused = self.state.path().join("paused");
        ducc_tests::wait::until(
            "a stand-in call at its pause point",
            std::time::Duration::from_secs(120),
            || paused.exists(),
        );
    }

    /// `path` in the published repository.
    pub fn published(&self, path: &str) -> PathBuf {
        self.state
            .path()
            .join("repos")
            .join(REPO)
            .join("published")
            .join(path)
    }

    /// `path` in the repository's mount (`/cvmfs/REPO`).
    pub fn mount(&self, path: &str) -> PathBuf {
        self.state.path().join("mnt").join(REPO).join(path)
    }

    /// The published revision.
    pub fn rev(&self) -> u64 {
        fs::read_to_string(self.state.path().join("repos").join(REPO).join("revision"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The catalogs `list-catalogs` prints, one a line.
    pub fn catalogs(&self) -> Vec<String> {
        let out = self.run(&["list-catalogs", REPO]);
        assert!(out.ok(), "{}", out.stderr);
        out.stdout.lines().map(str::to_owned).collect()
    }

    /// The calls logged so far, one a line.
    pub fn log(&self) -> Vec<String> {
        fs::read_to_string(self.state.path().join("log"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Publishes directories (owned by the mount's user) through a whole-repository transaction.
    pub fn publish_dirs(&self, dirs: &[&str]) {
        assert!(self.run(&["transaction", REPO]).ok());
        for d in dirs {
            fs::create_dir_all(self.mount(d)).unwrap();
        }
        let out = self.run(&["publish", REPO]);
        assert!(out.ok(), "{}", out.stderr);
    }
}
